//! `nn.MultiheadAttention` on the GPU: parameters uploaded once, then forwards of one submit
//! each — in-projection (one launch when query, key and value are the same tensor), the
//! attention core, out-projection — with one readback at the end.

use std::path::Path;

use crate::attention::{Core, WeightsTarget, record_core, scoped};
use crate::batch::Batch;
use crate::buffer::{self, bytes_of_f32, check_binding, check_buffer};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::linear::{self, At, Linear};
use crate::kernels::{HeadView, MaskBinding};
use crate::options::{MhaConfig, MhaOptions, MhaOutput};
use crate::problem::{MaskView, MhaProblem, validate_mha};
use crate::tensor::Tensor;
use crate::weights::{InProjWeight, MhaWeights, Proj};

/// The projection weights on the GPU.
enum GpuInProj {
    Packed(wgpu::Buffer),
    Separate {
        q: wgpu::Buffer,
        k: wgpu::Buffer,
        v: wgpu::Buffer,
    },
}

/// A multi-head attention module bound to a device, like a PyTorch `nn.MultiheadAttention`
/// in eval mode. `Send + Sync`: forwards may run from several threads.
pub struct MultiHeadAttention {
    gpu: Gpu,
    config: MhaConfig,
    in_proj: GpuInProj,
    in_proj_bias: Option<wgpu::Buffer>,
    out_proj_weight: wgpu::Buffer,
    out_proj_bias: Option<wgpu::Buffer>,
}

impl std::fmt::Debug for MultiHeadAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiHeadAttention")
            .field("config", &self.config)
            .field("gpu", &self.gpu)
            .finish()
    }
}

impl MultiHeadAttention {
    /// Uploads `weights` (validated against `config`) to `gpu`.
    pub fn new(gpu: &Gpu, config: MhaConfig, weights: &MhaWeights) -> Result<Self> {
        weights.validate(&config)?;
        scoped(gpu, "uploading weights", || {
            let up = |name: &str, data: &[f32]| -> Result<wgpu::Buffer> {
                check_binding(gpu, name, bytes_of_f32(data.len()))?;
                Ok(buffer::upload(gpu, name, data))
            };
            let in_proj = match &weights.in_proj {
                InProjWeight::Packed(w) => GpuInProj::Packed(up("in_proj_weight", w)?),
                InProjWeight::Separate { q, k, v } => GpuInProj::Separate {
                    q: up("q_proj_weight", q)?,
                    k: up("k_proj_weight", k)?,
                    v: up("v_proj_weight", v)?,
                },
            };
            Ok(Self {
                gpu: gpu.clone(),
                config,
                in_proj,
                in_proj_bias: weights
                    .in_proj_bias
                    .as_deref()
                    .map(|b| up("in_proj_bias", b))
                    .transpose()?,
                out_proj_weight: up("out_proj.weight", &weights.out_proj_weight)?,
                out_proj_bias: weights
                    .out_proj_bias
                    .as_deref()
                    .map(|b| up("out_proj.bias", b))
                    .transpose()?,
            })
        })
    }

    /// Loads a safetensors state dict exported from PyTorch.
    pub fn load(gpu: &Gpu, config: MhaConfig, path: &Path) -> Result<Self> {
        Self::new(gpu, config, &MhaWeights::load(&config, path)?)
    }

    pub fn config(&self) -> &MhaConfig {
        &self.config
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// `nn.MultiheadAttention.forward(query, key, value, ...)`. Passing the same tensor as
    /// query, key and value (self-attention) projects all three in one launch.
    pub fn forward(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        opts: &MhaOptions,
    ) -> Result<MhaOutput> {
        let problem = validate_mha(&self.config, query, key, value, opts)?;
        let same = |a: &Tensor, b: &Tensor| std::ptr::eq(a.data.as_ptr(), b.data.as_ptr());
        let self_attention = same(query, key) && same(key, value) && self.config.packed_in_proj();
        scoped(&self.gpu, "multi-head attention forward", || {
            self.run(&problem, query, key, value, self_attention)
        })
    }

    fn run(
        &self,
        p: &MhaProblem,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        self_attention: bool,
    ) -> Result<MhaOutput> {
        let gpu = &self.gpu;
        let d = &p.dims;
        let e = p.embed_dim;
        let (rows_q, rows_kv) = (d.batch * d.len_q, d.batch * d.len_kv);
        let mut batch = Batch::new(gpu);
        let kernels = gpu.kernels();

        let input = |name: &str, t: &Tensor| -> Result<wgpu::Buffer> {
            check_binding(gpu, name, bytes_of_f32(t.numel()))?;
            Ok(buffer::upload(gpu, name, &t.data))
        };
        let output = |name: &str, len: usize| -> Result<wgpu::Buffer> {
            check_binding(gpu, name, bytes_of_f32(len))?;
            Ok(buffer::storage(gpu, name, len))
        };
        // In-projection. Rows stay in the caller's layout; heads and batches become strides.
        let (q_buf, k_buf, v_buf, q_width, kv_width, offsets);
        if self_attention {
            let x = input("query", query)?;
            let qkv = output("projected qkv", rows_q * 3 * e)?;
            self.project(&mut batch, Proj::Q, (&x, rows_q, e), (&qkv, 3 * e, 3 * e));
            (q_buf, k_buf, v_buf) = (qkv.clone(), qkv.clone(), qkv);
            (q_width, kv_width, offsets) = (3 * e, 3 * e, [0, e, 2 * e]);
        } else {
            let xq = input("query", query)?;
            let xk = input("key", key)?;
            let xv = input("value", value)?;
            q_buf = output("projected q", rows_q * e)?;
            k_buf = output("projected k", rows_kv * e)?;
            v_buf = output("projected v", rows_kv * e)?;
            self.project(&mut batch, Proj::Q, (&xq, rows_q, e), (&q_buf, e, e));
            self.project(&mut batch, Proj::K, (&xk, rows_kv, p.kdim), (&k_buf, e, e));
            self.project(&mut batch, Proj::V, (&xv, rows_kv, p.vdim), (&v_buf, e, e));
            (q_width, kv_width, offsets) = (e, e, [0, 0, 0]);
        }
        let masks =
            [p.attn_mask, p.key_padding_mask].map(|m| m.map(|m| upload_mask(gpu, &m)).transpose());
        let [m0, m1] = masks;
        let (m0, m1) = (m0?, m1?);
        let attn = output("attention output", rows_q * e)?;
        let weights_len = p.weights_shape().iter().product::<usize>();
        let weights = if p.need_weights {
            check_buffer(gpu, "attention weights", bytes_of_f32(weights_len))?;
            Some(buffer::storage(gpu, "attention weights", weights_len))
        } else {
            None
        };
        record_core(
            gpu,
            &mut batch,
            &Core {
                dims: *d,
                q: head_view(p, &q_buf, offsets[0], d.len_q, q_width),
                k: head_view(p, &k_buf, offsets[1], d.len_kv, kv_width),
                v: head_view(p, &v_buf, offsets[2], d.len_kv, kv_width),
                out: head_view(p, &attn, 0, d.len_q, e),
                scale: 1.0 / (d.head_dim as f32).sqrt(),
                causal: p.causal,
                masks: [mask_binding(&m0), mask_binding(&m1)],
                weights: weights.as_ref().map(|buffer| WeightsTarget {
                    buffer,
                    average: p.average_attn_weights,
                }),
            },
        )?;

        // Out-projection.
        let out = output("attn_output", rows_q * e)?;
        linear::record(
            &mut batch,
            kernels,
            &Linear {
                rows: rows_q as u32,
                cols: e as u32,
                depth: e as u32,
                x: At {
                    buffer: &attn,
                    offset: 0,
                },
                w: At {
                    buffer: &self.out_proj_weight,
                    offset: 0,
                },
                bias: self.out_proj_bias.as_ref().map(|b| At {
                    buffer: b,
                    offset: 0,
                }),
                y: At {
                    buffer: &out,
                    offset: 0,
                },
                y_row_stride: e as u32,
            },
        );

        // One readback of everything asked for.
        let out_staging = buffer::staging(gpu, "attn_output readback", rows_q * e);
        batch.copy(&out, 0, &out_staging, 0, bytes_of_f32(rows_q * e));
        let weights_staging = weights.as_ref().map(|w| {
            let staging = buffer::staging(gpu, "attention weights readback", weights_len);
            batch.copy(w, 0, &staging, 0, bytes_of_f32(weights_len));
            staging
        });
        batch.submit();
        let mut reads = vec![(&out_staging, rows_q * e)];
        if let Some(w) = &weights_staging {
            reads.push((w, weights_len));
        }
        let mut data = buffer::read_back(gpu, &reads)?.into_iter();
        let attn_output = Tensor::new(p.out_shape(), data.next().unwrap_or_default())?;
        let attn_weights = data
            .next()
            .map(|w| Tensor::new(p.weights_shape(), w))
            .transpose()?;
        Ok(MhaOutput {
            attn_output,
            attn_weights,
        })
    }
}

impl MultiHeadAttention {
    /// Records the in-projection `proj` of `x` (`rows × width`, contiguous) into the first
    /// `cols` columns of `y` (`rows × y_row_stride`).
    fn project<'k>(
        &'k self,
        batch: &mut Batch<'k>,
        proj: Proj,
        (x, rows, width): (&wgpu::Buffer, usize, usize),
        (y, cols, y_row_stride): (&wgpu::Buffer, usize, usize),
    ) {
        let e = self.config.embed_dim;
        let (w, w_offset) = match (&self.in_proj, proj) {
            (GpuInProj::Packed(w), p) => (w, p as usize * e * e),
            (GpuInProj::Separate { q, .. }, Proj::Q) => (q, 0),
            (GpuInProj::Separate { k, .. }, Proj::K) => (k, 0),
            (GpuInProj::Separate { v, .. }, Proj::V) => (v, 0),
        };
        linear::record(
            batch,
            self.gpu.kernels(),
            &Linear {
                rows: rows as u32,
                cols: cols as u32,
                depth: width as u32,
                x: At {
                    buffer: x,
                    offset: 0,
                },
                w: At {
                    buffer: w,
                    offset: w_offset as u32,
                },
                bias: self.in_proj_bias.as_ref().map(|b| At {
                    buffer: b,
                    offset: (proj as usize * e) as u32,
                }),
                y: At {
                    buffer: y,
                    offset: 0,
                },
                y_row_stride: y_row_stride as u32,
            },
        );
    }
}

/// Heads of a `[B, len, width]` / `[len, B, width]` projected buffer, starting at column
/// `offset`.
fn head_view<'a>(
    p: &MhaProblem,
    buffer: &'a wgpu::Buffer,
    offset: usize,
    len: usize,
    width: usize,
) -> HeadView<'a> {
    let (stride_b, stride_l) = p.strides(len, width);
    HeadView {
        buffer,
        offset: offset as u32,
        stride_b: stride_b as u32,
        stride_h: p.dims.head_dim as u32,
        stride_l: stride_l as u32,
    }
}

fn mask_binding(m: &Option<(wgpu::Buffer, [u32; 4])>) -> Option<MaskBinding<'_>> {
    m.as_ref().map(|(buffer, strides)| MaskBinding {
        buffer,
        strides: *strides,
    })
}

/// Uploads a mask as additive floats (bool masks become 0 / -inf) with its grid strides.
pub(crate) fn upload_mask(gpu: &Gpu, m: &MaskView) -> Result<(wgpu::Buffer, [u32; 4])> {
    let additive = m.mask.to_additive(m.bool_true_blocks);
    check_binding(gpu, "mask", bytes_of_f32(additive.len()))?;
    Ok((
        buffer::upload(gpu, "mask", &additive),
        m.strides.map(|s| s as u32),
    ))
}
