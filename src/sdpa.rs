//! `F.scaled_dot_product_attention` on the GPU: the attention core alone, on `[B, H, L, d]`
//! tensors.

use crate::attention::{Core, record_core, scoped};
use crate::batch::Batch;
use crate::buffer::{self, bytes_of_f32, check_binding};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::{HeadView, MaskBinding};
use crate::mha::upload_mask;
use crate::options::SdpaOptions;
use crate::problem::validate_sdpa;
use crate::tensor::Tensor;

/// `F.scaled_dot_product_attention(query, key, value, ...)`: `query [B, Hq, L, d]` (or
/// `[Hq, L, d]`), `key [B, Hkv, S, d]`, `value [B, Hkv, S, dv]`; returns `[B, Hq, L, dv]`.
pub fn scaled_dot_product_attention(
    gpu: &Gpu,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    opts: &SdpaOptions,
) -> Result<Tensor> {
    let problem = validate_sdpa(query, key, value, opts)?;
    let d = problem.dims;
    scoped(gpu, "scaled dot-product attention", || {
        let upload = |name: &str, t: &Tensor| -> Result<wgpu::Buffer> {
            check_binding(gpu, name, bytes_of_f32(t.numel()))?;
            Ok(buffer::upload(gpu, name, &t.data))
        };
        let (q, k, v) = (
            upload("query", query)?,
            upload("key", key)?,
            upload("value", value)?,
        );
        let out_len = d.batch * d.heads_q * d.len_q * d.head_dim_v;
        check_binding(gpu, "attn_output", bytes_of_f32(out_len))?;
        let out = buffer::storage(gpu, "attn_output", out_len);
        let mask = problem.mask.map(|m| upload_mask(gpu, &m)).transpose()?;
        // Row-major [B, H, len, width]: a head is a contiguous [len, width] matrix.
        let view = |buffer, heads: usize, len: usize, width: usize| HeadView {
            buffer,
            offset: 0,
            stride_b: (heads * len * width) as u32,
            stride_h: (len * width) as u32,
            stride_l: width as u32,
        };
        let mut batch = Batch::new(gpu);
        record_core(
            gpu,
            &mut batch,
            &Core {
                dims: d,
                q: view(&q, d.heads_q, d.len_q, d.head_dim),
                k: view(&k, d.heads_kv, d.len_kv, d.head_dim),
                v: view(&v, d.heads_kv, d.len_kv, d.head_dim_v),
                out: view(&out, d.heads_q, d.len_q, d.head_dim_v),
                scale: problem.scale,
                causal: problem.causal,
                masks: [
                    mask.as_ref().map(|(buffer, strides)| MaskBinding {
                        buffer,
                        strides: *strides,
                    }),
                    None,
                ],
                weights: None,
            },
        )?;
        let staging = buffer::staging(gpu, "attn_output readback", out_len);
        batch.copy(&out, 0, &staging, 0, bytes_of_f32(out_len));
        batch.submit();
        let data = buffer::read_back(gpu, &[(&staging, out_len)])?;
        Tensor::new(
            problem.out_shape.clone(),
            data.into_iter().next().unwrap_or_default(),
        )
    })
}
