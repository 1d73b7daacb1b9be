//! `nn.MultiheadAttention` on the GPU: parameters uploaded once, then forwards of one submit
//! each — in-projection (one launch when query, key and value are the same tensor), the
//! attention core, out-projection — with one readback at the end.
//!
//! A forward has three stages, kept apart so they can be timed apart and so results can stay
//! on the GPU: [`MultiHeadAttention::prepare`] uploads inputs and allocates every buffer,
//! [`PreparedMha::run`] records and submits the kernels, [`PreparedMha::read`] copies the
//! results back. [`MultiHeadAttention::forward`] does all three with a single submit.

use std::path::Path;
use std::sync::Arc;

use crate::attention::{
    Core, CoreNeeds, CorePlan, record_core, run_recorded, run_recorded_timed, scoped,
};
use crate::batch::{Batch, RunTiming};
use crate::buffer::{self, Pooled, bytes_of, bytes_of_f32, check_binding, check_buffer};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::linear::{self, At, Linear};
use crate::kernels::{HeadView, MaskBinding, Storage};
use crate::options::{AttentionPath, Causal, Dtype, MhaConfig, MhaOptions, MhaOutput};
use crate::problem::{CoreDims, MaskView, validate_mha};
use crate::tensor::Tensor;
use crate::weights::{InProjWeight, MhaWeights, Proj};

/// The projection weights on the GPU.
enum GpuInProj {
    Packed(Pooled),
    Separate { q: Pooled, k: Pooled, v: Pooled },
}

/// A multi-head attention module bound to a device, like a PyTorch `nn.MultiheadAttention`
/// in eval mode. `Send + Sync`: forwards may run from several threads.
pub struct MultiHeadAttention {
    gpu: Gpu,
    config: MhaConfig,
    in_proj: GpuInProj,
    in_proj_bias: Option<Pooled>,
    out_proj_weight: Pooled,
    out_proj_bias: Option<Pooled>,
}

impl std::fmt::Debug for MultiHeadAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiHeadAttention")
            .field("config", &self.config)
            .field("gpu", &self.gpu)
            .finish()
    }
}

/// A buffer and where one operand's heads sit in it: `[offset, stride_b, stride_h, stride_l]`.
/// q, k and v projected together share one buffer.
struct Placed {
    buffer: Arc<Pooled>,
    layout: [u32; 4],
}

impl Placed {
    fn view(&self) -> HeadView<'_> {
        let [offset, stride_b, stride_h, stride_l] = self.layout;
        HeadView {
            buffer: &self.buffer,
            offset,
            stride_b,
            stride_h,
            stride_l,
        }
    }
}

/// The inputs as uploaded: one buffer for self-attention, else one each.
enum Inputs {
    SelfAttention(Pooled),
    Separate {
        query: Pooled,
        key: Pooled,
        value: Pooled,
    },
}

/// One forward's inputs, intermediates and outputs on the GPU, ready to run (possibly many
/// times: the benchmark times [`PreparedMha::run`] alone).
pub struct PreparedMha<'m> {
    mha: &'m MultiHeadAttention,
    dims: CoreDims,
    kdim: usize,
    vdim: usize,
    causal: Option<Causal>,
    inputs: Inputs,
    q: Placed,
    k: Placed,
    v: Placed,
    masks: [Option<(Pooled, [u32; 4])>; 2],
    attn: Placed,
    out: Pooled,
    weights: Option<Pooled>,
    out_shape: Vec<usize>,
    weights_shape: Vec<usize>,
    plan: CorePlan,
    bytes: u64,
}

impl MultiHeadAttention {
    /// Uploads `weights` (validated against `config`) to `gpu`.
    pub fn new(gpu: &Gpu, config: MhaConfig, weights: &MhaWeights) -> Result<Self> {
        weights.validate(&config)?;
        gpu.check_dtype(config.dtype)?;
        scoped(gpu, "uploading weights", || {
            let up = |name: &str, data: &[f32]| -> Result<Pooled> {
                check_binding(gpu, name, bytes_of(data.len(), config.dtype))?;
                buffer::upload_as(gpu, name, data, config.dtype)
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

    /// `nn.MultiheadAttention.forward(query, key, value, ...)`: one submit, one readback.
    /// Passing the same tensor as query, key and value (self-attention) projects all three in
    /// one launch.
    pub fn forward(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        opts: &MhaOptions,
    ) -> Result<MhaOutput> {
        scoped(&self.gpu, "multi-head attention forward", || {
            let prepared = self.prepare_unscoped(query, key, value, opts)?;
            let mut batch = Batch::new(&self.gpu);
            prepared.record(&mut batch)?;
            prepared.read_into(batch)
        })
    }

    /// Validates the call, uploads the inputs and masks, and allocates every buffer.
    pub fn prepare(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        opts: &MhaOptions,
    ) -> Result<PreparedMha<'_>> {
        scoped(&self.gpu, "preparing a forward", || {
            self.prepare_unscoped(query, key, value, opts)
        })
    }

    fn prepare_unscoped(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        opts: &MhaOptions,
    ) -> Result<PreparedMha<'_>> {
        let p = validate_mha(&self.config, query, key, value, opts)?;
        let gpu = &self.gpu;
        let d = &p.dims;
        let e = p.embed_dim;
        let (rows_q, rows_kv) = (d.batch * d.len_q, d.batch * d.len_kv);
        linear::check_rows(gpu.kernels(), rows_q.max(rows_kv))?;
        let dtype = self.config.dtype;
        let mut bytes = 0u64;
        let mut input = |name: &str, t: &Tensor| -> Result<Pooled> {
            let size = bytes_of(t.numel(), dtype);
            check_binding(gpu, name, size)?;
            bytes += size;
            buffer::upload_as(gpu, name, &t.data, dtype)
        };
        // Self-attention (PyTorch checks `query is key is value`): one input, one projection.
        let same = |a: &Tensor, b: &Tensor| std::ptr::eq(a.data.as_ptr(), b.data.as_ptr());
        let inputs = if same(query, key) && same(key, value) && self.config.packed_in_proj() {
            Inputs::SelfAttention(input("query", query)?)
        } else {
            Inputs::Separate {
                query: input("query", query)?,
                key: input("key", key)?,
                value: input("value", value)?,
            }
        };
        let masks = [
            p.attn_mask
                .map(|m| upload_mask(gpu, "attn_mask", &m))
                .transpose()?,
            p.key_padding_mask
                .map(|m| upload_mask(gpu, "key_padding_mask", &m))
                .transpose()?,
        ];

        // Intermediates are stored as `dtype`, the output as f32.
        let mut output = |name: &str, len: usize, dtype| -> Result<Pooled> {
            check_binding(gpu, name, bytes_of(len, dtype))?;
            bytes += bytes_of(len, dtype);
            Ok(buffer::storage_as(gpu, name, len, dtype))
        };
        // Projected q, k, v keep the caller's row order; heads and batches are strides.
        let place = |buffer: &Arc<Pooled>, column: usize, len: usize, width: usize| {
            let (stride_b, stride_l) = p.strides(len, width);
            Placed {
                buffer: buffer.clone(),
                layout: [
                    column as u32,
                    stride_b as u32,
                    d.head_dim as u32,
                    stride_l as u32,
                ],
            }
        };
        let (q, k, v) = match &inputs {
            Inputs::SelfAttention(_) => {
                let qkv = Arc::new(output("projected qkv", rows_q * 3 * e, dtype)?);
                (
                    place(&qkv, 0, d.len_q, 3 * e),
                    place(&qkv, e, d.len_kv, 3 * e),
                    place(&qkv, 2 * e, d.len_kv, 3 * e),
                )
            }
            Inputs::Separate { .. } => (
                place(
                    &Arc::new(output("projected q", rows_q * e, dtype)?),
                    0,
                    d.len_q,
                    e,
                ),
                place(
                    &Arc::new(output("projected k", rows_kv * e, dtype)?),
                    0,
                    d.len_kv,
                    e,
                ),
                place(
                    &Arc::new(output("projected v", rows_kv * e, dtype)?),
                    0,
                    d.len_kv,
                    e,
                ),
            ),
        };
        let attn = place(
            &Arc::new(output("attention output", rows_q * e, dtype)?),
            0,
            d.len_q,
            e,
        );
        let out = output("attn_output", rows_q * e, Dtype::F32)?;
        let weights_shape = p.weights_shape();
        let weights = if p.need_weights {
            let len = weights_shape.iter().product::<usize>();
            // Only copied into, never bound: it may exceed one binding.
            check_buffer(gpu, "attention weights", bytes_of_f32(len))?;
            bytes += bytes_of_f32(len);
            Some(buffer::storage(gpu, "attention weights", len))
        } else {
            None
        };
        let needs = CoreNeeds {
            weights: p.need_weights.then_some(p.average_attn_weights),
            storage: Storage::inner(dtype),
            vec4_views: [&q, &k, &v, &attn].iter().all(|p| p.view().vec4_aligned())
                && d.head_dim.is_multiple_of(4)
                && d.head_dim_v.is_multiple_of(4),
        };
        let plan = CorePlan::new(gpu, d, opts.path, needs)?;
        bytes += plan.bytes();
        Ok(PreparedMha {
            mha: self,
            dims: *d,
            kdim: p.kdim,
            vdim: p.vdim,
            causal: p.causal,
            inputs,
            q,
            k,
            v,
            masks,
            attn,
            out,
            weights,
            out_shape: p.out_shape(),
            weights_shape,
            plan,
            bytes,
        })
    }

    /// Records the in-projection `proj` of `x` (`rows × width`, contiguous) into `y`, whose
    /// rows are `cols` wide (3E when q, k and v are projected together).
    fn project<'k>(
        &'k self,
        batch: &mut Batch<'k>,
        proj: Proj,
        (x, rows, width): (&wgpu::Buffer, usize, usize),
        y: &Placed,
        cols: usize,
    ) {
        let e = self.config.embed_dim;
        let (w, w_offset) = match (&self.in_proj, proj) {
            (GpuInProj::Packed(w), p) => (w, p as usize * e * e),
            (GpuInProj::Separate { q, .. }, Proj::Q) => (q, 0),
            (GpuInProj::Separate { k, .. }, Proj::K) => (k, 0),
            (GpuInProj::Separate { v, .. }, Proj::V) => (v, 0),
        };
        let kernels = self.gpu.kernels();
        linear::record(
            batch,
            kernels,
            kernels.matmuls(self.gpu.device(), self.config.dtype),
            Storage::inner(self.config.dtype),
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
                    buffer: &y.buffer,
                    offset: 0,
                },
                y_row_stride: cols as u32,
            },
        );
    }
}

impl PreparedMha<'_> {
    /// Bytes of GPU memory this forward allocated: inputs, intermediates (the score block
    /// included) and outputs; not the module's weights.
    pub fn allocated_bytes(&self) -> u64 {
        self.bytes
    }

    /// The `attn_output` buffer (`out_shape`, caller's layout), for callers that keep results
    /// on the GPU. A buffer handed out here is the caller's to keep: it does not return to the
    /// device's pool of reusable buffers when this call is dropped.
    pub fn output_buffer(&self) -> &wgpu::Buffer {
        self.out.lend()
    }

    /// The algorithm this forward's attention core runs.
    pub fn path(&self) -> AttentionPath {
        self.plan.path()
    }

    /// Into how many runs of keys the fused kernel splits each query row, so that a call
    /// with few query rows still fills the device (1: not split; the three-pass path never
    /// splits). Set by [`Tuning::fused_split_groups`](crate::Tuning::fused_split_groups).
    pub fn key_splits(&self) -> u32 {
        self.plan.key_splits()
    }

    /// The attention weights buffer, when the forward was prepared with `need_weights` (the
    /// caller's to keep, as with [`output_buffer`](Self::output_buffer)).
    pub fn weights_buffer(&self) -> Option<&wgpu::Buffer> {
        self.weights.as_ref().map(|w| w.lend())
    }

    /// Shape of `attn_output`.
    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }

    /// Records and submits the kernels and waits for them: one submit.
    pub fn run(&self) -> Result<()> {
        run_recorded(&self.mha.gpu, None, |batch| self.record(batch))
    }

    /// Like [`run`](Self::run), timed: the host's wall clock, and per-dispatch GPU
    /// timestamps where the device has them (each dispatch then gets its own compute pass).
    /// The wall time includes recording the commands.
    pub fn run_timed(&self) -> Result<RunTiming> {
        run_recorded_timed(&self.mha.gpu, |batch| self.record(batch))
    }

    /// Runs only the dispatches of kernel `name` (one of
    /// [`KERNEL_NAMES`](crate::kernels::KERNEL_NAMES)), on whatever its inputs hold: the
    /// benchmark's per-pass wall clock. Run [`run`](Self::run) first for meaningful inputs.
    pub fn run_kernel(&self, name: &str) -> Result<()> {
        run_recorded(&self.mha.gpu, Some(name), |batch| self.record(batch))
    }

    /// Copies the results of the last [`run`](Self::run) back to the host.
    pub fn read(&self) -> Result<MhaOutput> {
        scoped(&self.mha.gpu, "reading results", || {
            self.read_into(Batch::new(&self.mha.gpu))
        })
    }

    /// Adds the readback copies to `batch`, submits it and reads the results.
    fn read_into<'k>(&'k self, mut batch: Batch<'k>) -> Result<MhaOutput> {
        let gpu = &self.mha.gpu;
        let out_len = self.out_shape.iter().product::<usize>();
        let mut out_staging = buffer::staging(gpu, "attn_output readback", out_len);
        batch.copy(&self.out, 0, &out_staging, 0, bytes_of_f32(out_len));
        let weights_len = self.weights_shape.iter().product::<usize>();
        let mut weights_staging = self.weights.as_ref().map(|w| {
            let staging = buffer::staging(gpu, "attention weights readback", weights_len);
            batch.copy(w, 0, &staging, 0, bytes_of_f32(weights_len));
            staging
        });
        batch.submit();
        let mut reads = vec![(&*out_staging, out_len)];
        if let Some(w) = &weights_staging {
            reads.push((w, weights_len));
        }
        let mut data = buffer::read_back(gpu, &reads)?.into_iter();
        out_staging.mark_unmapped();
        if let Some(w) = &mut weights_staging {
            w.mark_unmapped();
        }
        let attn_output = Tensor::new(self.out_shape.clone(), data.next().unwrap_or_default())?;
        let attn_weights = data
            .next()
            .map(|w| Tensor::new(self.weights_shape.clone(), w))
            .transpose()?;
        Ok(MhaOutput {
            attn_output,
            attn_weights,
        })
    }

    /// Records in-projection, attention core and out-projection into `batch`.
    fn record<'k>(&'k self, batch: &mut Batch<'k>) -> Result<()> {
        let mha = self.mha;
        let d = &self.dims;
        let e = mha.config.embed_dim;
        let (rows_q, rows_kv) = (d.batch * d.len_q, d.batch * d.len_kv);
        match &self.inputs {
            Inputs::SelfAttention(x) => mha.project(batch, Proj::Q, (x, rows_q, e), &self.q, 3 * e),
            Inputs::Separate { query, key, value } => {
                mha.project(batch, Proj::Q, (query, rows_q, e), &self.q, e);
                mha.project(batch, Proj::K, (key, rows_kv, self.kdim), &self.k, e);
                mha.project(batch, Proj::V, (value, rows_kv, self.vdim), &self.v, e);
            }
        }
        let mask = |i: usize| {
            self.masks[i].as_ref().map(|(buffer, strides)| MaskBinding {
                buffer,
                strides: *strides,
            })
        };
        record_core(
            &mha.gpu,
            batch,
            &Core {
                dims: *d,
                q: self.q.view(),
                k: self.k.view(),
                v: self.v.view(),
                out: self.attn.view(),
                scale: 1.0 / (d.head_dim as f32).sqrt(),
                causal: self.causal,
                masks: [mask(0), mask(1)],
                weights: self.weights.as_deref(),
                storage: Storage::inner(mha.config.dtype),
            },
            &self.plan,
        )?;
        let kernels = mha.gpu.kernels();
        linear::record(
            batch,
            kernels,
            kernels.matmuls(mha.gpu.device(), mha.config.dtype),
            Storage::last(mha.config.dtype),
            &Linear {
                rows: rows_q as u32,
                cols: e as u32,
                depth: e as u32,
                x: At {
                    buffer: &self.attn.buffer,
                    offset: 0,
                },
                w: At {
                    buffer: &mha.out_proj_weight,
                    offset: 0,
                },
                bias: mha.out_proj_bias.as_ref().map(|b| At {
                    buffer: b,
                    offset: 0,
                }),
                y: At {
                    buffer: &self.out,
                    offset: 0,
                },
                y_row_stride: e as u32,
            },
        );
        Ok(())
    }
}

/// Uploads the mask `name` as additive floats (bool masks become 0 / -inf) with its grid
/// strides.
pub(crate) fn upload_mask(gpu: &Gpu, name: &str, m: &MaskView) -> Result<(Pooled, [u32; 4])> {
    let additive = m.mask.to_additive(m.bool_true_blocks);
    check_binding(gpu, name, bytes_of_f32(additive.len()))?;
    Ok((
        buffer::upload(gpu, name, &additive),
        m.strides.map(|s| s as u32),
    ))
}
