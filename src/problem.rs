//! Validation: turns what a caller passed (PyTorch-shaped tensors and options) into the sizes
//! of one attention problem, or a typed error naming what is wrong. The GPU path and the CPU
//! reference both start here, so they accept and refuse exactly the same inputs.

use crate::error::{Error, Result};
use crate::options::{Causal, MhaConfig, MhaOptions, SdpaOptions};
use crate::tensor::{Mask, Tensor};

/// Sizes of one attention core: `batch × heads_q` query heads of `len_q` rows against
/// `heads_kv` key/value heads of `len_kv` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreDims {
    pub batch: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub len_q: usize,
    pub len_kv: usize,
    /// Head size of queries and keys.
    pub head_dim: usize,
    /// Head size of values (and of the output).
    pub head_dim_v: usize,
}

impl CoreDims {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads_q / self.heads_kv
    }

    /// FLOPs of `Q·Kᵀ` and `P·V` over the full score matrix.
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.heads_q * self.len_q * self.len_kv) as f64
            * (self.head_dim + self.head_dim_v) as f64
    }
}

/// A mask placed on the `[B, H, L, S]` score grid: element `(b, h, l, s)` of the scores uses
/// `mask` at flat index `b·strides[0] + h·strides[1] + l·strides[2] + s·strides[3]`
/// (stride 0 = broadcast).
#[derive(Clone, Copy, Debug)]
pub struct MaskView<'a> {
    pub mask: &'a Mask,
    pub strides: [usize; 4],
    /// Bool polarity: `true` means blocked (MHA) or allowed (SDPA).
    pub bool_true_blocks: bool,
}

impl MaskView<'_> {
    /// The additive value for score `(b, h, l, s)`.
    pub fn at(&self, b: usize, h: usize, l: usize, s: usize) -> f32 {
        let [sb, sh, sl, ss] = self.strides;
        self.mask
            .additive(b * sb + h * sh + l * sl + s * ss, self.bool_true_blocks)
    }
}

/// A validated SDPA call.
#[derive(Clone, Debug)]
pub struct SdpaProblem<'a> {
    pub dims: CoreDims,
    pub scale: f32,
    pub causal: Option<Causal>,
    pub mask: Option<MaskView<'a>>,
    /// The output shape: the query's, with the last dim replaced by the value head size.
    pub out_shape: Vec<usize>,
}

/// A validated MHA forward.
#[derive(Clone, Debug)]
pub struct MhaProblem<'a> {
    pub dims: CoreDims,
    pub embed_dim: usize,
    pub kdim: usize,
    pub vdim: usize,
    pub batch_first: bool,
    /// Whether the caller passed 2-D (unbatched) inputs.
    pub batched: bool,
    pub causal: Option<Causal>,
    pub attn_mask: Option<MaskView<'a>>,
    pub key_padding_mask: Option<MaskView<'a>>,
    pub need_weights: bool,
    pub average_attn_weights: bool,
}

impl MhaProblem<'_> {
    /// Shape of `attn_output`, in the caller's layout.
    pub fn out_shape(&self) -> Vec<usize> {
        let d = &self.dims;
        match (self.batched, self.batch_first) {
            (false, _) => vec![d.len_q, self.embed_dim],
            (true, true) => vec![d.batch, d.len_q, self.embed_dim],
            (true, false) => vec![d.len_q, d.batch, self.embed_dim],
        }
    }

    /// Shape of `attn_output_weights`.
    pub fn weights_shape(&self) -> Vec<usize> {
        let d = &self.dims;
        let mut shape = Vec::with_capacity(4);
        if self.batched {
            shape.push(d.batch);
        }
        if !self.average_attn_weights {
            shape.push(d.heads_q);
        }
        shape.extend([d.len_q, d.len_kv]);
        shape
    }

    /// Element `(b, l, e)` of an input in the caller's layout is at
    /// `b·batch_stride + l·row_stride + e` for a tensor of `width` columns.
    pub fn strides(&self, len: usize, width: usize) -> (usize, usize) {
        if self.batch_first || !self.batched {
            (len * width, width)
        } else {
            (width, self.dims.batch * width)
        }
    }

    /// FLOPs of the whole forward: in-projections, attention core, out-projection.
    pub fn flops(&self) -> f64 {
        let d = &self.dims;
        let e = self.embed_dim as f64;
        let rows_q = (d.batch * d.len_q) as f64;
        let rows_kv = (d.batch * d.len_kv) as f64;
        2.0 * rows_q * e * e
            + 2.0 * rows_kv * e * (self.kdim + self.vdim) as f64
            + d.flops()
            + 2.0 * rows_q * e * e
    }
}

fn shape_err(tensor: &'static str, expected: String, got: &[usize]) -> Error {
    Error::Shape {
        tensor,
        expected,
        got: got.to_vec(),
    }
}

fn nonzero(what: &'static str, n: usize) -> Result<()> {
    if n == 0 {
        Err(Error::ZeroSize { what })
    } else {
        Ok(())
    }
}

/// Checks the module configuration alone.
pub fn validate_config(config: &MhaConfig) -> Result<()> {
    nonzero("embed_dim", config.embed_dim)?;
    nonzero("num_heads", config.num_heads)?;
    nonzero("kdim", config.kdim)?;
    nonzero("vdim", config.vdim)?;
    if !config.embed_dim.is_multiple_of(config.num_heads) {
        return Err(Error::Config(format!(
            "embed_dim ({}) must be divisible by num_heads ({})",
            config.embed_dim, config.num_heads
        )));
    }
    Ok(())
}

/// Validates an `nn.MultiheadAttention` forward.
pub fn validate_mha<'a>(
    config: &MhaConfig,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    opts: &MhaOptions<'a>,
) -> Result<MhaProblem<'a>> {
    validate_config(config)?;
    query.validate("query")?;
    key.validate("key")?;
    value.validate("value")?;
    let (e, h) = (config.embed_dim, config.num_heads);

    let batched = match query.shape.len() {
        3 => true,
        2 => false,
        _ => {
            return Err(shape_err(
                "query",
                "a 3-D [L, B, E] / [B, L, E] or 2-D [L, E] tensor".into(),
                &query.shape,
            ));
        }
    };
    let layout = match (batched, config.batch_first) {
        (false, _) => "[S, {}]",
        (true, true) => "[B, S, {}]",
        (true, false) => "[S, B, {}]",
    };
    let (batch, len_q, q_width) = dims3(&query.shape, batched, config.batch_first);
    if q_width != e {
        return Err(shape_err(
            "query",
            layout.replace('S', "L").replace("{}", &format!("E={e}")),
            &query.shape,
        ));
    }
    let expect_kv = |name: &'static str, t: &Tensor, width: usize| -> Result<usize> {
        let expected = || layout.replace("{}", &format!("{width}"));
        if t.shape.len() != query.shape.len() {
            return Err(shape_err(name, expected(), &t.shape));
        }
        let (b, s, w) = dims3(&t.shape, batched, config.batch_first);
        if b != batch || w != width {
            return Err(shape_err(
                name,
                expected() + &format!(" with B={batch}"),
                &t.shape,
            ));
        }
        Ok(s)
    };
    let len_kv = expect_kv("key", key, config.kdim)?;
    let len_v = expect_kv("value", value, config.vdim)?;
    if len_v != len_kv {
        return Err(shape_err(
            "value",
            format!("the same sequence length as key (S={len_kv})"),
            &value.shape,
        ));
    }
    nonzero("batch size", batch)?;
    nonzero("query length", len_q)?;
    nonzero("key length", len_kv)?;

    let key_padding_mask = match opts.key_padding_mask {
        None => None,
        Some(m) => {
            m.validate("key_padding_mask")?;
            let expected: Vec<usize> = if batched {
                vec![batch, len_kv]
            } else {
                vec![len_kv]
            };
            if m.shape != expected {
                return Err(shape_err(
                    "key_padding_mask",
                    format!("{expected:?} ([B, S], or [S] unbatched)"),
                    &m.shape,
                ));
            }
            Some(MaskView {
                mask: m,
                strides: [len_kv, 0, 0, 1],
                bool_true_blocks: true,
            })
        }
    };
    let attn_mask = match opts.attn_mask {
        None => None,
        Some(m) => {
            m.validate("attn_mask")?;
            let per_head = vec![batch * h, len_q, len_kv];
            let strides = if m.shape == [len_q, len_kv] {
                [0, 0, len_kv, 1]
            } else if m.shape == per_head {
                [h * len_q * len_kv, len_q * len_kv, len_kv, 1]
            } else {
                return Err(shape_err(
                    "attn_mask",
                    format!("[L, S] = [{len_q}, {len_kv}] or [B·num_heads, L, S] = {per_head:?}"),
                    &m.shape,
                ));
            };
            Some(MaskView {
                mask: m,
                strides,
                bool_true_blocks: true,
            })
        }
    };

    Ok(MhaProblem {
        dims: CoreDims {
            batch,
            heads_q: h,
            heads_kv: h,
            len_q,
            len_kv,
            head_dim: e / h,
            head_dim_v: e / h,
        },
        embed_dim: e,
        kdim: config.kdim,
        vdim: config.vdim,
        batch_first: config.batch_first,
        batched,
        causal: opts.causal,
        attn_mask,
        key_padding_mask,
        need_weights: opts.need_weights,
        average_attn_weights: opts.average_attn_weights,
    })
}

/// `(batch, length, width)` of a 3-D input in the given layout (2-D: batch 1).
fn dims3(shape: &[usize], batched: bool, batch_first: bool) -> (usize, usize, usize) {
    match (batched, batch_first, shape) {
        (false, _, [l, w]) => (1, *l, *w),
        (true, true, [b, l, w]) => (*b, *l, *w),
        (true, false, [l, b, w]) => (*b, *l, *w),
        _ => (0, 0, 0),
    }
}

/// Validates a `scaled_dot_product_attention` call: `query [B, Hq, L, d]` (or `[Hq, L, d]`),
/// `key [B, Hkv, S, d]`, `value [B, Hkv, S, dv]`.
pub fn validate_sdpa<'a>(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    opts: &SdpaOptions<'a>,
) -> Result<SdpaProblem<'a>> {
    query.validate("query")?;
    key.validate("key")?;
    value.validate("value")?;
    let rank = query.shape.len();
    if rank != 3 && rank != 4 {
        return Err(shape_err(
            "query",
            "a 4-D [B, H, L, d] or 3-D [H, L, d] tensor".into(),
            &query.shape,
        ));
    }
    let split = |t: &Tensor| -> Option<[usize; 4]> {
        match *t.shape.as_slice() {
            [b, h, l, d] if rank == 4 => Some([b, h, l, d]),
            [h, l, d] if rank == 3 => Some([1, h, l, d]),
            _ => None,
        }
    };
    let [batch, heads_q, len_q, head_dim] = split(query).expect("rank checked");
    let kv_layout = if rank == 4 {
        "[B, Hkv, S, d]"
    } else {
        "[Hkv, S, d]"
    };
    let [kb, heads_kv, len_kv, kd] = split(key).ok_or_else(|| {
        shape_err(
            "key",
            format!("{kv_layout} (same rank as query)"),
            &key.shape,
        )
    })?;
    if kb != batch || kd != head_dim {
        return Err(shape_err(
            "key",
            format!("{kv_layout} with B={batch}, d={head_dim}"),
            &key.shape,
        ));
    }
    let [vb, vh, vs, head_dim_v] = split(value).ok_or_else(|| {
        shape_err(
            "value",
            format!("{kv_layout} (same rank as query)"),
            &value.shape,
        )
    })?;
    if vb != batch || vh != heads_kv || vs != len_kv {
        return Err(shape_err(
            "value",
            format!("[B={batch}, Hkv={heads_kv}, S={len_kv}, dv]"),
            &value.shape,
        ));
    }
    nonzero("batch size", batch)?;
    nonzero("query heads", heads_q)?;
    nonzero("key/value heads", heads_kv)?;
    nonzero("query length", len_q)?;
    nonzero("key length", len_kv)?;
    nonzero("head size", head_dim)?;
    nonzero("value head size", head_dim_v)?;
    if heads_kv != heads_q {
        if !opts.enable_gqa {
            return Err(Error::Config(format!(
                "query has {heads_q} heads but key/value have {heads_kv}: pass enable_gqa for grouped-query attention"
            )));
        }
        if !heads_q.is_multiple_of(heads_kv) {
            return Err(Error::Config(format!(
                "grouped-query attention needs the query heads ({heads_q}) to be a multiple of the key/value heads ({heads_kv})"
            )));
        }
    }
    let mask = match opts.attn_mask {
        None => None,
        Some(m) => {
            m.validate("attn_mask")?;
            let strides = broadcast_strides(&m.shape, [batch, heads_q, len_q, len_kv])
                .ok_or_else(|| {
                    shape_err(
                        "attn_mask",
                        format!(
                            "a shape broadcastable to [B, H, L, S] = [{batch}, {heads_q}, {len_q}, {len_kv}]"
                        ),
                        &m.shape,
                    )
                })?;
            Some(MaskView {
                mask: m,
                strides,
                bool_true_blocks: false,
            })
        }
    };
    let scale = opts.scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    if !scale.is_finite() {
        return Err(Error::Config(format!("scale must be finite, got {scale}")));
    }
    let mut out_shape = query.shape.clone();
    *out_shape.last_mut().expect("rank >= 3") = head_dim_v;
    Ok(SdpaProblem {
        dims: CoreDims {
            batch,
            heads_q,
            heads_kv,
            len_q,
            len_kv,
            head_dim,
            head_dim_v,
        },
        scale,
        causal: opts.causal,
        mask,
        out_shape,
    })
}

/// Strides that broadcast a row-major tensor of `shape` (rank ≤ 4, right-aligned) onto
/// `target`; `None` when it does not broadcast.
pub fn broadcast_strides(shape: &[usize], target: [usize; 4]) -> Option<[usize; 4]> {
    if shape.len() > 4 {
        return None;
    }
    let mut strides = [0usize; 4];
    let mut stride = 1usize;
    for (i, &dim) in shape.iter().enumerate().rev() {
        let t = 4 - shape.len() + i;
        if dim == target[t] {
            strides[t] = if dim == 1 { 0 } else { stride };
        } else if dim != 1 {
            return None;
        }
        stride *= dim;
    }
    Some(strides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy_rules() {
        assert_eq!(broadcast_strides(&[4, 5], [2, 3, 4, 5]), Some([0, 0, 5, 1]));
        assert_eq!(
            broadcast_strides(&[3, 1, 5], [2, 3, 4, 5]),
            Some([0, 5, 0, 1])
        );
        assert_eq!(
            broadcast_strides(&[2, 3, 4, 5], [2, 3, 4, 5]),
            Some([60, 20, 5, 1])
        );
        assert_eq!(
            broadcast_strides(&[2, 1, 1, 5], [2, 3, 4, 5]),
            Some([5, 0, 0, 1])
        );
        assert_eq!(broadcast_strides(&[3, 5], [2, 3, 4, 5]), None);
        assert_eq!(broadcast_strides(&[1, 1, 1, 1, 5], [2, 3, 4, 5]), None);
    }

    #[test]
    fn causal_offsets() {
        assert_eq!(Causal::TopLeft.offset(3, 7), 0);
        assert_eq!(Causal::BottomRight.offset(3, 7), 4);
        assert_eq!(Causal::BottomRight.offset(7, 3), -4);
    }
}
