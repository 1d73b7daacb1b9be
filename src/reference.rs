//! The CPU reference: plain loops, `f64` accumulation, `f32` storage. Every GPU result is
//! checked against it, so it favours being obviously right over being fast.
//!
//! It starts from the same validation as the GPU path ([`crate::problem`]), so both accept
//! and refuse the same inputs. A query row that may attend to nothing yields zeros (output
//! and weights), never NaN; NaN or infinite inputs propagate through the arithmetic as they
//! would in PyTorch, without panicking.

use crate::error::{Error, Result};
use crate::options::{Causal, MhaConfig, MhaOptions, MhaOutput, SdpaOptions};
use crate::problem::{CoreDims, MaskView, MhaProblem, validate_mha, validate_sdpa};
use crate::tensor::Tensor;
use crate::weights::{MhaWeights, Proj};

/// `F.scaled_dot_product_attention`: `softmax(Q·Kᵀ·scale + mask + causal)·V` per head.
///
/// `query [B, Hq, L, d]` (or `[Hq, L, d]`), `key [B, Hkv, S, d]`, `value [B, Hkv, S, dv]`;
/// the output has the query's shape with `dv` as its last dimension.
pub fn sdpa(query: &Tensor, key: &Tensor, value: &Tensor, opts: &SdpaOptions) -> Result<Tensor> {
    let p = validate_sdpa(query, key, value, opts)?;
    let d = p.dims;
    let core = Core {
        dims: d,
        scale: f64::from(p.scale),
        causal: p.causal,
        masks: [p.mask, None],
        q: Operand::contiguous(&query.data, d.heads_q, d.len_q, d.head_dim),
        k: Operand::contiguous(&key.data, d.heads_kv, d.len_kv, d.head_dim),
        v: Operand::contiguous(&value.data, d.heads_kv, d.len_kv, d.head_dim_v),
    };
    let rows: Vec<usize> = (0..d.len_q).collect();
    let (out, _) = attention(&core, &rows, false);
    Tensor::new(p.out_shape, out)
}

/// `nn.MultiheadAttention.forward` in eval mode (no dropout).
///
/// `attn_output` is in the caller's layout ([`MhaProblem::out_shape`]); `attn_weights`, when
/// `need_weights`, has [`MhaProblem::weights_shape`].
pub fn mha_forward(
    config: &MhaConfig,
    weights: &MhaWeights,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    opts: &MhaOptions,
) -> Result<MhaOutput> {
    let p = validate_mha(config, query, key, value, opts)?;
    weights.validate(config)?;
    let rows: Vec<usize> = (0..p.dims.len_q).collect();
    let (out, probs) = mha_rows(&p, weights, query, key, value, &rows);

    // `out` is batch-first [B, L, E]; place it in the caller's layout.
    let (e, len_q) = (p.embed_dim, p.dims.len_q);
    let (batch_stride, row_stride) = p.strides(len_q, e);
    let mut data = vec![0.0f32; out.len()];
    for b in 0..p.dims.batch {
        for l in 0..len_q {
            let src = (b * len_q + l) * e;
            let dst = b * batch_stride + l * row_stride;
            data[dst..dst + e].copy_from_slice(&out[src..src + e]);
        }
    }
    let attn_output = Tensor::new(p.out_shape(), data)?;
    let attn_weights = match probs {
        Some(w) => Some(Tensor::new(p.weights_shape(), w)?),
        None => None,
    };
    Ok(MhaOutput {
        attn_output,
        attn_weights,
    })
}

/// [`mha_forward`] for the query positions `rows` only (indices into `L`), to check huge
/// problems on sampled rows without computing the whole `L × S` grid.
///
/// Always batch-first, with `B = 1` for unbatched input: `attn_output [B, rows.len(), E]`,
/// `attn_weights [B, rows.len(), S]` averaged or `[B, h, rows.len(), S]` per head.
pub fn mha_forward_rows(
    config: &MhaConfig,
    weights: &MhaWeights,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    opts: &MhaOptions,
    rows: &[usize],
) -> Result<MhaOutput> {
    let p = validate_mha(config, query, key, value, opts)?;
    weights.validate(config)?;
    let d = p.dims;
    if let Some(&bad) = rows.iter().find(|&&l| l >= d.len_q) {
        return Err(Error::Config(format!(
            "query row {bad} is out of range for query length L={}",
            d.len_q
        )));
    }
    let (out, probs) = mha_rows(&p, weights, query, key, value, rows);
    let attn_output = Tensor::new([d.batch, rows.len(), p.embed_dim], out)?;
    let attn_weights = match probs {
        Some(w) => {
            let shape = if p.average_attn_weights {
                vec![d.batch, rows.len(), d.len_kv]
            } else {
                vec![d.batch, d.heads_q, rows.len(), d.len_kv]
            };
            Some(Tensor::new(shape, w)?)
        }
        None => None,
    };
    Ok(MhaOutput {
        attn_output,
        attn_weights,
    })
}

/// The MHA forward for query positions `rows` of a validated problem: the output
/// batch-first `[B, R, E]` and, when asked, the weights `[B, R, S]` or `[B, h, R, S]`.
fn mha_rows(
    p: &MhaProblem,
    weights: &MhaWeights,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    rows: &[usize],
) -> (Vec<f32>, Option<Vec<f32>>) {
    let d = p.dims;
    let e = p.embed_dim;
    let all_keys: Vec<usize> = (0..d.len_kv).collect();
    let input = |t: &'_ Tensor, len: usize, width: usize, proj: Proj, rows: &[usize]| {
        let (batch_stride, row_stride) = p.strides(len, width);
        let x = Rows {
            data: &t.data,
            batch_stride,
            row_stride,
            width,
        };
        let (w, offset) = weights.proj_weight(proj, e);
        let w = Linear {
            weight: &w[offset..offset + e * width],
            bias: weights.proj_bias(proj, e),
        };
        project(x, d.batch, rows, w)
    };
    // Projected Q holds only the chosen rows; K and V hold every key. All [B, rows, E].
    let q = input(query, d.len_q, e, Proj::Q, rows);
    let k = input(key, d.len_kv, p.kdim, Proj::K, &all_keys);
    let v = input(value, d.len_kv, p.vdim, Proj::V, &all_keys);

    let core = Core {
        dims: d,
        scale: 1.0 / (d.head_dim as f64).sqrt(),
        causal: p.causal,
        masks: [p.attn_mask, p.key_padding_mask],
        q: Operand::column_heads(&q, rows.len(), e, d.head_dim),
        k: Operand::column_heads(&k, d.len_kv, e, d.head_dim),
        v: Operand::column_heads(&v, d.len_kv, e, d.head_dim),
    };
    let (out, probs) = attention(&core, rows, p.need_weights);

    let concat = concat_heads(&out, d, rows.len());
    let all_rows: Vec<usize> = (0..rows.len()).collect();
    let x = Rows {
        data: &concat,
        batch_stride: rows.len() * e,
        row_stride: e,
        width: e,
    };
    let w = Linear {
        weight: &weights.out_proj_weight,
        bias: weights.out_proj_bias.as_deref(),
    };
    let y = project(x, d.batch, &all_rows, w);

    let probs = probs.map(|probs| {
        if p.average_attn_weights {
            average_heads(&probs, d, rows.len())
        } else {
            probs.iter().map(|&x| x as f32).collect()
        }
    });
    (y, probs)
}

/// Rows of a caller's input: row `r` of batch `b` is `data[b·batch_stride + r·row_stride ..][..width]`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    batch_stride: usize,
    row_stride: usize,
    width: usize,
}

/// An `nn.Linear`: row-major `weight [out, in]` and an optional `bias [out]`.
#[derive(Clone, Copy)]
struct Linear<'a> {
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
}

/// `x · Wᵀ + b` for the given rows of every batch, batch-first `[batch, rows.len(), out]`.
fn project(x: Rows, batch: usize, rows: &[usize], w: Linear) -> Vec<f32> {
    let out_width = w.weight.len() / x.width;
    let mut y = Vec::with_capacity(batch * rows.len() * out_width);
    for b in 0..batch {
        for &r in rows {
            let start = b * x.batch_stride + r * x.row_stride;
            let xr = &x.data[start..start + x.width];
            for o in 0..out_width {
                let wr = &w.weight[o * x.width..(o + 1) * x.width];
                let bias = w.bias.map_or(0.0, |bias| f64::from(bias[o]));
                y.push((bias + dot(xr, wr)) as f32);
            }
        }
    }
    y
}

/// `Σ a_i·b_i` accumulated in `f64`.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// One operand of the attention core: row `r` of head `h` in batch `b` is
/// `data[b·batch_stride + h·head_stride + r·row_stride ..][..width]`. Strides let the core
/// read SDPA's `[B, H, L, d]` and MHA's projected `[B, L, E]` (heads as column blocks) alike.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    batch_stride: usize,
    head_stride: usize,
    row_stride: usize,
    width: usize,
}

impl<'a> Operand<'a> {
    /// A contiguous `[B, heads, len, width]` tensor (SDPA's layout).
    fn contiguous(data: &'a [f32], heads: usize, len: usize, width: usize) -> Self {
        Self {
            data,
            batch_stride: heads * len * width,
            head_stride: len * width,
            row_stride: width,
            width,
        }
    }

    /// A batch-first `[B, len, E]` projection whose head `i` is columns `i·d .. (i+1)·d`:
    /// splitting heads is a stride, not a copy.
    fn column_heads(data: &'a [f32], len: usize, embed_dim: usize, head_dim: usize) -> Self {
        Self {
            data,
            batch_stride: len * embed_dim,
            head_stride: head_dim,
            row_stride: embed_dim,
            width: head_dim,
        }
    }

    fn row(&self, b: usize, h: usize, r: usize) -> &[f32] {
        let start = b * self.batch_stride + h * self.head_stride + r * self.row_stride;
        &self.data[start..start + self.width]
    }
}

/// One validated attention core, shared by SDPA and MHA.
struct Core<'a> {
    dims: CoreDims,
    scale: f64,
    causal: Option<Causal>,
    /// Additive masks on the `[B, H, L, S]` grid (MHA: attn_mask and key_padding_mask).
    masks: [Option<MaskView<'a>>; 2],
    /// Query rows in the order of the `rows` passed to [`attention`] (position `i` is
    /// query row `rows[i]`).
    q: Operand<'a>,
    /// Indexed by key/value head (`h / group`).
    k: Operand<'a>,
    v: Operand<'a>,
}

/// Attention for every batch, query head and the query rows `rows` (indices into `L`, used
/// for the masks and causal visibility). Returns the output `[B, Hq, R, dv]` and, when
/// `keep_probs`, the probabilities `[B, Hq, R, S]` in `f64`.
fn attention(core: &Core, rows: &[usize], keep_probs: bool) -> (Vec<f32>, Option<Vec<f64>>) {
    let d = core.dims;
    let mut out = Vec::with_capacity(d.batch * d.heads_q * rows.len() * d.head_dim_v);
    let mut all_probs =
        keep_probs.then(|| Vec::with_capacity(out.capacity() / d.head_dim_v * d.len_kv));
    let mut probs = vec![0.0f64; d.len_kv];
    for b in 0..d.batch {
        for h in 0..d.heads_q {
            let hkv = h / d.group();
            for (i, &l) in rows.iter().enumerate() {
                scores_row(core, b, h, l, core.q.row(b, h, i), &mut probs);
                softmax_row(&mut probs);
                for j in 0..d.head_dim_v {
                    // A key with probability 0 contributes nothing, even a non-finite
                    // value: masked keys never touch a row. "0" as the f32 GPU sees it: a
                    // probability below f32's smallest normal underflows there (or is
                    // flushed), so it counts as 0 here too.
                    let acc: f64 = (0..d.len_kv)
                        .filter(|&s| probs[s] >= f64::from(f32::MIN_POSITIVE) || probs[s].is_nan())
                        .map(|s| probs[s] * f64::from(core.v.row(b, hkv, s)[j]))
                        .sum();
                    out.push(acc as f32);
                }
                if let Some(all) = all_probs.as_mut() {
                    all.extend_from_slice(&probs);
                }
            }
        }
    }
    (out, all_probs)
}

/// Scores of query row `l` (head `h`, batch `b`) against every key: `q·k·scale` plus the
/// masks. A key hidden by the causal mask or by a mask entry of `-inf` (a blocked bool) is
/// `-inf` outright, whatever its dot product — so a non-finite key never reaches a row
/// that may not attend to it.
fn scores_row(core: &Core, b: usize, h: usize, l: usize, q: &[f32], scores: &mut [f64]) {
    let d = core.dims;
    let hkv = h / d.group();
    let offset = core.causal.map(|c| c.offset(d.len_q, d.len_kv));
    for (s, score) in scores.iter_mut().enumerate() {
        let visible = offset.is_none_or(|off| s as i64 <= l as i64 + off);
        let masks: Vec<f64> = core
            .masks
            .iter()
            .flatten()
            .map(|m| f64::from(m.at(b, h, l, s)))
            .collect();
        let blocked = !visible || masks.contains(&f64::NEG_INFINITY);
        *score = if blocked {
            f64::NEG_INFINITY
        } else {
            dot(q, core.k.row(b, hkv, s)) * core.scale + masks.iter().sum::<f64>()
        };
    }
}

/// In-place softmax with max subtraction. A row that may attend to nothing (max `-inf`)
/// becomes all zeros instead of `0/0`; a NaN or `+inf` score anywhere makes the whole row
/// NaN (there is no meaningful distribution), and the GPU kernels do the same.
fn softmax_row(row: &mut [f64]) {
    if row.iter().any(|x| x.is_nan() || *x == f64::INFINITY) {
        row.fill(f64::NAN);
        return;
    }
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in row.iter_mut() {
        *x /= sum;
    }
}

/// `[B, h, R, d]` head outputs to the concatenated `[B, R, h·d]` (head `i` in columns
/// `i·d .. (i+1)·d`), the layout the out-projection reads.
fn concat_heads(heads: &[f32], d: CoreDims, rows: usize) -> Vec<f32> {
    let (hd, e) = (d.head_dim_v, d.heads_q * d.head_dim_v);
    let mut concat = vec![0.0f32; heads.len()];
    for b in 0..d.batch {
        for h in 0..d.heads_q {
            for r in 0..rows {
                let src = ((b * d.heads_q + h) * rows + r) * hd;
                let dst = (b * rows + r) * e + h * hd;
                concat[dst..dst + hd].copy_from_slice(&heads[src..src + hd]);
            }
        }
    }
    concat
}

/// Mean over heads of `[B, h, R, S]` probabilities: `[B, R, S]`.
fn average_heads(probs: &[f64], d: CoreDims, rows: usize) -> Vec<f32> {
    let per_head = rows * d.len_kv;
    let mut avg = Vec::with_capacity(d.batch * per_head);
    for b in 0..d.batch {
        for i in 0..per_head {
            let sum: f64 = (0..d.heads_q)
                .map(|h| probs[(b * d.heads_q + h) * per_head + i])
                .sum();
            avg.push((sum / d.heads_q as f64) as f32);
        }
    }
    avg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Mask;
    use crate::weights::InProjWeight;

    /// Small deterministic values in [-1, 1], not zero, different per `seed`.
    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 101 + 11) % 23) as f32 - 11.0) / 11.5)
            .collect()
    }

    fn tensor(shape: &[usize], seed: usize) -> Tensor {
        Tensor::new(shape, data(shape.iter().product(), seed)).unwrap()
    }

    fn weights(config: &MhaConfig, seed: usize) -> MhaWeights {
        let e = config.embed_dim;
        let scaled = |n, s| data(n, s).iter().map(|x| x * 0.5).collect::<Vec<_>>();
        let in_proj = if config.packed_in_proj() {
            InProjWeight::Packed(scaled(3 * e * e, seed))
        } else {
            InProjWeight::Separate {
                q: scaled(e * e, seed),
                k: scaled(e * config.kdim, seed + 1),
                v: scaled(e * config.vdim, seed + 2),
            }
        };
        MhaWeights {
            in_proj,
            in_proj_bias: config.bias.then(|| scaled(3 * e, seed + 3)),
            out_proj_weight: scaled(e * e, seed + 4),
            out_proj_bias: config.bias.then(|| scaled(e, seed + 5)),
        }
    }

    /// Identity projections, no bias: MHA reduces to SDPA on the inputs' column blocks.
    fn identity_weights(e: usize) -> MhaWeights {
        let eye: Vec<f32> = (0..e * e)
            .map(|i| if i / e == i % e { 1.0 } else { 0.0 })
            .collect();
        MhaWeights {
            in_proj: InProjWeight::Packed([eye.clone(), eye.clone(), eye.clone()].concat()),
            in_proj_bias: None,
            out_proj_weight: eye,
            out_proj_bias: None,
        }
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "lengths differ");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    /// Seq-first `[L, B, E]` to batch-first `[B, L, E]`.
    fn to_batch_first(t: &Tensor) -> Tensor {
        let [l, b, e] = t.shape[..] else { panic!() };
        let mut out = Vec::with_capacity(t.numel());
        for bi in 0..b {
            for li in 0..l {
                let start = (li * b + bi) * e;
                out.extend_from_slice(&t.data[start..start + e]);
            }
        }
        Tensor::new([b, l, e], out).unwrap()
    }

    #[test]
    fn one_key_returns_its_value() {
        let q = tensor(&[1, 2, 3, 4], 1);
        let k = tensor(&[1, 2, 1, 4], 2);
        let v = tensor(&[1, 2, 1, 5], 3);
        let out = sdpa(&q, &k, &v, &SdpaOptions::default()).unwrap();
        assert_eq!(out.shape, [1, 2, 3, 5]);
        for h in 0..2 {
            for l in 0..3 {
                let got = &out.data[(h * 3 + l) * 5..][..5];
                assert_eq!(got, &v.data[h * 5..][..5]);
            }
        }
    }

    #[test]
    fn equal_scores_average_the_values() {
        // Two identical keys: every query weighs both values 1/2.
        let q = tensor(&[1, 3, 2], 1);
        let k = Tensor::new([1, 2, 2], vec![0.3, -0.7, 0.3, -0.7]).unwrap();
        let v = Tensor::new([1, 2, 3], vec![1.0, 2.0, 3.0, 5.0, -2.0, 0.5]).unwrap();
        let out = sdpa(&q, &k, &v, &SdpaOptions::default()).unwrap();
        for l in 0..3 {
            assert_close(&out.data[l * 3..][..3], &[3.0, 0.0, 1.75], 1e-6);
        }
    }

    #[test]
    fn softmax_matches_hand_computation() {
        // Scores q·k·scale = [1, 2]·1 → p = [1, e] / (1 + e).
        let q = Tensor::new([1, 1, 1], vec![1.0]).unwrap();
        let k = Tensor::new([1, 2, 1], vec![1.0, 2.0]).unwrap();
        let v = Tensor::new([1, 2, 1], vec![0.0, 1.0]).unwrap();
        let out = sdpa(&q, &k, &v, &SdpaOptions::default()).unwrap();
        let e = std::f32::consts::E;
        assert_close(&out.data, &[e / (1.0 + e)], 1e-6);
        // scale 2 → scores [2, 4] → p1 = e² / (1 + e²).
        let opts = SdpaOptions {
            scale: Some(2.0),
            ..Default::default()
        };
        let out = sdpa(&q, &k, &v, &opts).unwrap();
        assert_close(&out.data, &[e * e / (1.0 + e * e)], 1e-6);
    }

    #[test]
    fn sdpa_bool_mask_true_means_allowed() {
        let q = tensor(&[2, 3, 4], 1);
        let k = tensor(&[2, 3, 4], 2);
        let v = tensor(&[2, 3, 2], 3);
        // Only key 1 allowed, for every query: output = value row 1 of each head.
        let mask = Mask::bool([1, 3], vec![false, true, false]).unwrap();
        let opts = SdpaOptions {
            attn_mask: Some(&mask),
            ..Default::default()
        };
        let out = sdpa(&q, &k, &v, &opts).unwrap();
        for h in 0..2 {
            for l in 0..3 {
                assert_eq!(
                    &out.data[(h * 3 + l) * 2..][..2],
                    &v.data[(h * 3 + 1) * 2..][..2]
                );
            }
        }
        // And the float equivalent gives the same.
        let inf = f32::NEG_INFINITY;
        let float = Mask::float([3], vec![inf, 0.0, inf]).unwrap();
        let opts = SdpaOptions {
            attn_mask: Some(&float),
            ..Default::default()
        };
        assert_eq!(sdpa(&q, &k, &v, &opts).unwrap(), out);
    }

    #[test]
    fn mha_bool_masks_true_means_blocked() {
        let config = MhaConfig::new(4, 2).with_batch_first(true);
        let w = weights(&config, 7);
        let (q, k, v) = (
            tensor(&[2, 3, 4], 1),
            tensor(&[2, 3, 4], 2),
            tensor(&[2, 3, 4], 3),
        );
        // attn_mask blocks key 0, key_padding_mask blocks key 2: only key 1 remains.
        let attn = Mask::bool([3, 3], [true, false, false].repeat(3)).unwrap();
        let kpm = Mask::bool([2, 3], [false, false, true].repeat(2)).unwrap();
        let opts = MhaOptions {
            attn_mask: Some(&attn),
            key_padding_mask: Some(&kpm),
            need_weights: true,
            average_attn_weights: false,
            ..Default::default()
        };
        let out = mha_forward(&config, &w, &q, &k, &v, &opts).unwrap();
        let weights = out.attn_weights.unwrap();
        assert_eq!(weights.shape, [2, 2, 3, 3]);
        for row in weights.data.chunks(3) {
            assert_eq!(row, [0.0, 1.0, 0.0]);
        }
        // The float masks with -inf where the bool ones are true give the same output.
        let inf = f32::NEG_INFINITY;
        let attn_f = Mask::float([3, 3], [inf, 0.0, 0.0].repeat(3)).unwrap();
        let kpm_f = Mask::float([2, 3], [0.0, 0.0, inf].repeat(2)).unwrap();
        let opts_f = MhaOptions {
            attn_mask: Some(&attn_f),
            key_padding_mask: Some(&kpm_f),
            ..opts
        };
        let out_f = mha_forward(&config, &w, &q, &k, &v, &opts_f).unwrap();
        assert_eq!(out_f.attn_output, out.attn_output);
    }

    #[test]
    fn per_batch_and_head_attn_mask_is_indexed_by_b_times_h_plus_h() {
        // [B·h, L, S] bool mask: slice b·h + i leaves only key (b·h + i) % S visible.
        let config = MhaConfig::new(4, 2).with_batch_first(true);
        let w = weights(&config, 8);
        let (q, k, v) = (
            tensor(&[2, 2, 4], 1),
            tensor(&[2, 3, 4], 2),
            tensor(&[2, 3, 4], 3),
        );
        let data = (0..4 * 2 * 3).map(|i| i % 3 != (i / 6) % 3).collect();
        let attn = Mask::bool([4, 2, 3], data).unwrap();
        let opts = MhaOptions {
            attn_mask: Some(&attn),
            need_weights: true,
            average_attn_weights: false,
            ..Default::default()
        };
        let out = mha_forward(&config, &w, &q, &k, &v, &opts).unwrap();
        let weights = out.attn_weights.unwrap();
        for (i, row) in weights.data.chunks(3).enumerate() {
            let mut want = [0.0; 3];
            want[(i / 2) % 3] = 1.0;
            assert_eq!(row, want, "row {i}");
        }
    }

    #[test]
    fn fully_masked_row_gives_zeros() {
        let q = tensor(&[1, 2, 3], 1);
        let k = tensor(&[1, 3, 3], 2);
        let v = tensor(&[1, 3, 2], 3);
        // Row 0 may attend to nothing; row 1 to everything.
        let mask = Mask::bool([2, 3], vec![false, false, false, true, true, true]).unwrap();
        let opts = SdpaOptions {
            attn_mask: Some(&mask),
            ..Default::default()
        };
        let out = sdpa(&q, &k, &v, &opts).unwrap();
        assert_eq!(&out.data[..2], [0.0, 0.0]);
        assert!(out.data[2..].iter().all(|x| x.is_finite() && *x != 0.0));

        // MHA: weights row zero, output row = out_proj bias (concat of zero heads).
        let config = MhaConfig::new(4, 2);
        let w = weights(&config, 5);
        let (q, k, v) = (
            tensor(&[2, 1, 4], 1),
            tensor(&[3, 1, 4], 2),
            tensor(&[3, 1, 4], 3),
        );
        let kpm = Mask::bool([1, 3], vec![true, true, true]).unwrap();
        let opts = MhaOptions {
            key_padding_mask: Some(&kpm),
            need_weights: true,
            ..Default::default()
        };
        let out = mha_forward(&config, &w, &q, &k, &v, &opts).unwrap();
        assert!(out.attn_weights.unwrap().data.iter().all(|&x| x == 0.0));
        let bias = w.out_proj_bias.as_ref().unwrap();
        assert_eq!(out.attn_output.data, [bias.clone(), bias.clone()].concat());
    }

    /// Output row `l` of SDPA with equal keys and one-hot values: `1/n` on the `n` visible keys.
    fn causal_visibility(causal: Causal, len_q: usize, len_kv: usize) -> Vec<Vec<f32>> {
        let q = tensor(&[1, len_q, 2], 1);
        let k = Tensor::new([1, len_kv, 2], [0.5, -0.25].repeat(len_kv)).unwrap();
        let eye = (0..len_kv * len_kv)
            .map(|i| if i / len_kv == i % len_kv { 1.0 } else { 0.0 })
            .collect();
        let v = Tensor::new([1, len_kv, len_kv], eye).unwrap();
        let opts = SdpaOptions {
            causal: Some(causal),
            ..Default::default()
        };
        let out = sdpa(&q, &k, &v, &opts).unwrap();
        out.data.chunks(len_kv).map(<[f32]>::to_vec).collect()
    }

    #[test]
    fn causal_alignments_for_short_queries() {
        // L=2, S=4. Top-left: row 0 sees {0}, row 1 sees {0, 1}.
        let tl = causal_visibility(Causal::TopLeft, 2, 4);
        assert_close(&tl[0], &[1.0, 0.0, 0.0, 0.0], 1e-6);
        assert_close(&tl[1], &[0.5, 0.5, 0.0, 0.0], 1e-6);
        // Bottom-right: row 0 sees {0, 1, 2}, row 1 sees all four.
        let br = causal_visibility(Causal::BottomRight, 2, 4);
        let third = 1.0 / 3.0;
        assert_close(&br[0], &[third, third, third, 0.0], 1e-6);
        assert_close(&br[1], &[0.25; 4], 1e-6);
        // They agree when L == S.
        assert_eq!(
            causal_visibility(Causal::TopLeft, 3, 3),
            causal_visibility(Causal::BottomRight, 3, 3)
        );
    }

    #[test]
    fn bottom_right_with_more_queries_than_keys_masks_early_rows() {
        // L=3, S=2: offset -1, so row 0 sees nothing and becomes zeros.
        let rows = causal_visibility(Causal::BottomRight, 3, 2);
        assert_eq!(rows[0], [0.0, 0.0]);
        assert_close(&rows[1], &[1.0, 0.0], 1e-6);
        assert_close(&rows[2], &[0.5, 0.5], 1e-6);
    }

    #[test]
    fn gqa_maps_query_heads_to_kv_groups() {
        // Hq=4, Hkv=2, one key: query head h returns value head h / 2.
        let q = tensor(&[2, 4, 3, 2], 1);
        let k = tensor(&[2, 2, 1, 2], 2);
        let v = tensor(&[2, 2, 1, 3], 3);
        let opts = SdpaOptions {
            enable_gqa: true,
            ..Default::default()
        };
        let out = sdpa(&q, &k, &v, &opts).unwrap();
        assert_eq!(out.shape, [2, 4, 3, 3]);
        for b in 0..2 {
            for h in 0..4 {
                let want = &v.data[(b * 2 + h / 2) * 3..][..3];
                for l in 0..3 {
                    assert_eq!(&out.data[((b * 4 + h) * 3 + l) * 3..][..3], want);
                }
            }
        }
        // Without enable_gqa the head mismatch is refused.
        assert!(matches!(
            sdpa(&q, &k, &v, &SdpaOptions::default()),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn gqa_equals_repeated_kv_heads() {
        let q = tensor(&[1, 4, 3, 2], 1);
        let k = tensor(&[1, 2, 5, 2], 2);
        let v = tensor(&[1, 2, 5, 3], 3);
        let repeat = |t: &Tensor| {
            let head = t.numel() / 2;
            let [a, b] = [&t.data[..head], &t.data[head..]];
            let data = [a, a, b, b].concat();
            Tensor::new([1, 4, t.shape[2], t.shape[3]], data).unwrap()
        };
        let opts = SdpaOptions {
            enable_gqa: true,
            causal: Some(Causal::BottomRight),
            ..Default::default()
        };
        let gqa = sdpa(&q, &k, &v, &opts).unwrap();
        let full = sdpa(&q, &repeat(&k), &repeat(&v), &opts).unwrap();
        assert_eq!(gqa, full);
    }

    #[test]
    fn mha_with_identity_weights_is_sdpa_per_head() {
        // E=4, h=2, B=1 batch-first: head i is columns 2i..2i+2 of the inputs.
        let config = MhaConfig::new(4, 2).with_bias(false).with_batch_first(true);
        let w = identity_weights(4);
        let (q, k, v) = (
            tensor(&[1, 3, 4], 1),
            tensor(&[1, 5, 4], 2),
            tensor(&[1, 5, 4], 3),
        );
        let opts = MhaOptions {
            causal: Some(Causal::BottomRight),
            ..Default::default()
        };
        let out = mha_forward(&config, &w, &q, &k, &v, &opts).unwrap();
        let split = |t: &Tensor, len: usize| {
            let mut data = Vec::new();
            for h in 0..2 {
                for r in 0..len {
                    data.extend_from_slice(&t.data[r * 4 + h * 2..][..2]);
                }
            }
            Tensor::new([1, 2, len, 2], data).unwrap()
        };
        let sdpa_opts = SdpaOptions {
            causal: Some(Causal::BottomRight),
            ..Default::default()
        };
        let heads = sdpa(&split(&q, 3), &split(&k, 5), &split(&v, 5), &sdpa_opts).unwrap();
        assert_eq!(out.attn_output.shape, [1, 3, 4]);
        assert_close(&out.attn_output.data, &split_back(&heads.data, 3), 1e-6);
    }

    /// `[1, 2, L, 2]` heads back to `[1, L, 4]`.
    fn split_back(heads: &[f32], len: usize) -> Vec<f32> {
        let mut out = vec![0.0; len * 4];
        for h in 0..2 {
            for r in 0..len {
                out[r * 4 + h * 2..][..2].copy_from_slice(&heads[(h * len + r) * 2..][..2]);
            }
        }
        out
    }

    #[test]
    fn rows_agree_with_full_forward() {
        let config = MhaConfig::new(6, 3)
            .with_kv_dims(4, 5)
            .with_batch_first(true);
        let w = weights(&config, 9);
        let (q, k, v) = (
            tensor(&[2, 5, 6], 1),
            tensor(&[2, 4, 4], 2),
            tensor(&[2, 4, 5], 3),
        );
        let attn = Mask::float([5, 4], data(20, 4)).unwrap();
        for average in [true, false] {
            let opts = MhaOptions {
                attn_mask: Some(&attn),
                causal: Some(Causal::BottomRight),
                need_weights: true,
                average_attn_weights: average,
                ..Default::default()
            };
            let full = mha_forward(&config, &w, &q, &k, &v, &opts).unwrap();
            let rows = [4, 0, 2];
            let part = mha_forward_rows(&config, &w, &q, &k, &v, &opts, &rows).unwrap();
            assert_eq!(part.attn_output.shape, [2, 3, 6]);
            for b in 0..2 {
                for (i, &l) in rows.iter().enumerate() {
                    assert_eq!(
                        &part.attn_output.data[(b * 3 + i) * 6..][..6],
                        &full.attn_output.data[(b * 5 + l) * 6..][..6]
                    );
                }
            }
            let (pw, fw) = (part.attn_weights.unwrap(), full.attn_weights.unwrap());
            let heads = if average { 1 } else { 3 };
            let mut shape = vec![2, 3, 4];
            if !average {
                shape.insert(1, 3);
            }
            assert_eq!(pw.shape, shape);
            for bh in 0..2 * heads {
                for (i, &l) in rows.iter().enumerate() {
                    assert_eq!(
                        &pw.data[(bh * 3 + i) * 4..][..4],
                        &fw.data[(bh * 5 + l) * 4..][..4]
                    );
                }
            }
        }
        let opts = MhaOptions::default();
        assert!(matches!(
            mha_forward_rows(&config, &w, &q, &k, &v, &opts, &[1, 5]),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn averaged_weights_are_the_mean_of_per_head_weights() {
        let config = MhaConfig::new(4, 2);
        let w = weights(&config, 3);
        let (q, k, v) = (
            tensor(&[3, 2, 4], 1),
            tensor(&[5, 2, 4], 2),
            tensor(&[5, 2, 4], 3),
        );
        let per_head_opts = MhaOptions {
            need_weights: true,
            average_attn_weights: false,
            ..Default::default()
        };
        let per_head = mha_forward(&config, &w, &q, &k, &v, &per_head_opts).unwrap();
        let avg_opts = MhaOptions {
            average_attn_weights: true,
            ..per_head_opts
        };
        let avg = mha_forward(&config, &w, &q, &k, &v, &avg_opts).unwrap();
        let (ph, av) = (per_head.attn_weights.unwrap(), avg.attn_weights.unwrap());
        assert_eq!(
            (ph.shape.as_slice(), av.shape.as_slice()),
            (&[2, 2, 3, 5][..], &[2, 3, 5][..])
        );
        for b in 0..2 {
            for i in 0..15 {
                let mean = (ph.data[(b * 2) * 15 + i] + ph.data[(b * 2 + 1) * 15 + i]) / 2.0;
                assert!((av.data[b * 15 + i] - mean).abs() < 1e-6);
            }
        }
        for row in av.data.chunks(5) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert_eq!(avg.attn_output, per_head.attn_output);
    }

    #[test]
    fn unbatched_equals_batched_with_one_batch() {
        let config = MhaConfig::new(4, 2);
        let w = weights(&config, 2);
        let (q, k, v) = (tensor(&[3, 4], 1), tensor(&[5, 4], 2), tensor(&[5, 4], 3));
        let kpm = Mask::bool([5], vec![false, true, false, false, true]).unwrap();
        let opts = MhaOptions {
            key_padding_mask: Some(&kpm),
            need_weights: true,
            ..Default::default()
        };
        let un = mha_forward(&config, &w, &q, &k, &v, &opts).unwrap();
        assert_eq!(un.attn_output.shape, [3, 4]);
        let batched =
            |t: &Tensor| Tensor::new([t.shape[0], 1, t.shape[1]], t.data.clone()).unwrap();
        let kpm_b = Mask::bool([1, 5], vec![false, true, false, false, true]).unwrap();
        let opts_b = MhaOptions {
            key_padding_mask: Some(&kpm_b),
            ..opts
        };
        let ba = mha_forward(
            &config,
            &w,
            &batched(&q),
            &batched(&k),
            &batched(&v),
            &opts_b,
        )
        .unwrap();
        assert_eq!(ba.attn_output.shape, [3, 1, 4]);
        assert_eq!(un.attn_output.data, ba.attn_output.data);
        let (uw, bw) = (un.attn_weights.unwrap(), ba.attn_weights.unwrap());
        assert_eq!(
            (uw.shape.as_slice(), bw.shape.as_slice()),
            (&[3, 5][..], &[1, 3, 5][..])
        );
        assert_eq!(uw.data, bw.data);
        // Unbatched rows come back with B = 1.
        let rows = mha_forward_rows(&config, &w, &q, &k, &v, &opts, &[2]).unwrap();
        assert_eq!(rows.attn_output.shape, [1, 1, 4]);
        assert_eq!(rows.attn_output.data, &un.attn_output.data[8..12]);
        assert_eq!(rows.attn_weights.unwrap().shape, [1, 1, 5]);
    }

    #[test]
    fn seq_first_equals_batch_first_transposed() {
        let seq_first = MhaConfig::new(6, 2).with_kv_dims(3, 4);
        let batch_first = seq_first.with_batch_first(true);
        let w = weights(&seq_first, 4);
        let (q, k, v) = (
            tensor(&[4, 2, 6], 1),
            tensor(&[3, 2, 3], 2),
            tensor(&[3, 2, 4], 3),
        );
        // Per-head float mask [B·h, L, S].
        let attn = Mask::float([4, 4, 3], data(48, 6)).unwrap();
        let opts = MhaOptions {
            attn_mask: Some(&attn),
            causal: Some(Causal::TopLeft),
            need_weights: true,
            ..Default::default()
        };
        let sf = mha_forward(&seq_first, &w, &q, &k, &v, &opts).unwrap();
        let (qb, kb, vb) = (to_batch_first(&q), to_batch_first(&k), to_batch_first(&v));
        let bf = mha_forward(&batch_first, &w, &qb, &kb, &vb, &opts).unwrap();
        assert_eq!(sf.attn_output.shape, [4, 2, 6]);
        assert_eq!(to_batch_first(&sf.attn_output), bf.attn_output);
        assert_eq!(sf.attn_weights, bf.attn_weights);
    }

    #[test]
    fn non_finite_inputs_stay_in_their_row() {
        let mut q = tensor(&[1, 3, 2], 1);
        q.data[2] = f32::NAN; // query row 1
        let k = tensor(&[1, 4, 2], 2);
        let v = tensor(&[1, 4, 2], 3);
        let out = sdpa(&q, &k, &v, &SdpaOptions::default()).unwrap();
        assert!(out.data[2..4].iter().all(|x| x.is_nan()));
        assert!(
            out.data[..2]
                .iter()
                .chain(&out.data[4..])
                .all(|x| x.is_finite())
        );
        // An infinite query entry must not panic either.
        q.data[2] = f32::INFINITY;
        assert!(sdpa(&q, &k, &v, &SdpaOptions::default()).is_ok());
    }

    #[test]
    fn validation_errors_pass_through() {
        let config = MhaConfig::new(4, 3);
        let w = weights(&MhaConfig::new(4, 2), 1);
        let x = tensor(&[2, 1, 4], 1);
        let opts = MhaOptions::default();
        assert!(matches!(
            mha_forward(&config, &w, &x, &x, &x, &opts),
            Err(Error::Config(_))
        ));
        let config = MhaConfig::new(4, 2).with_bias(false);
        assert!(matches!(
            mha_forward(&config, &w, &x, &x, &x, &opts),
            Err(Error::UnexpectedWeight { .. })
        ));
        let q = tensor(&[1, 2, 3], 1);
        let k = tensor(&[1, 2, 4], 2);
        assert!(matches!(
            sdpa(&q, &k, &k, &SdpaOptions::default()),
            Err(Error::Shape { tensor: "key", .. })
        ));
    }
}
