//! `F.scaled_dot_product_attention` on the GPU: the attention core alone, on `[B, H, L, d]`
//! tensors. Like the MHA module it has a one-call form and a prepared form whose stages
//! (upload, run, read) can be timed apart.

use crate::attention::{
    Core, CoreNeeds, CorePlan, record_core, run_recorded, run_recorded_timed, scoped,
};
use crate::batch::{Batch, RunTiming};
use crate::buffer::{self, Pooled, bytes_of, bytes_of_f32, check_binding};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::{HeadView, MaskBinding, Storage};
use crate::mha::upload_mask;
use crate::options::{AttentionPath, Causal, Dtype, SdpaOptions};
use crate::problem::{CoreDims, validate_sdpa};
use crate::tensor::Tensor;

/// `F.scaled_dot_product_attention(query, key, value, ...)`: `query [B, Hq, L, d]` (or
/// `[Hq, L, d]`), `key [B, Hkv, S, d]`, `value [B, Hkv, S, dv]`; returns `[B, Hq, L, dv]`.
/// One submit, one readback.
pub fn scaled_dot_product_attention(
    gpu: &Gpu,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    opts: &SdpaOptions,
) -> Result<Tensor> {
    scoped(gpu, "scaled dot-product attention", || {
        let prepared = PreparedSdpa::prepare_unscoped(gpu, query, key, value, opts)?;
        let mut batch = Batch::new(gpu);
        prepared.record(&mut batch)?;
        prepared.read_into(batch)
    })
}

/// One SDPA call's buffers on the GPU, ready to run.
pub struct PreparedSdpa {
    gpu: Gpu,
    dims: CoreDims,
    scale: f32,
    causal: Option<Causal>,
    q: Pooled,
    k: Pooled,
    v: Pooled,
    mask: Option<(Pooled, [u32; 4])>,
    out: Pooled,
    out_shape: Vec<usize>,
    plan: CorePlan,
    dtype: Dtype,
    bytes: u64,
}

/// Row-major `[B, H, len, width]`: a head is a contiguous `[len, width]` matrix.
fn view(buffer: &wgpu::Buffer, heads: usize, len: usize, width: usize) -> HeadView<'_> {
    HeadView {
        buffer,
        offset: 0,
        stride_b: (heads * len * width) as u32,
        stride_h: (len * width) as u32,
        stride_l: width as u32,
    }
}

impl PreparedSdpa {
    /// Validates the call, uploads inputs and mask, allocates the output.
    pub fn prepare(
        gpu: &Gpu,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        opts: &SdpaOptions,
    ) -> Result<Self> {
        scoped(gpu, "preparing attention", || {
            Self::prepare_unscoped(gpu, query, key, value, opts)
        })
    }

    fn prepare_unscoped(
        gpu: &Gpu,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        opts: &SdpaOptions,
    ) -> Result<Self> {
        let problem = validate_sdpa(query, key, value, opts)?;
        gpu.check_dtype(opts.dtype)?;
        let d = problem.dims;
        let mut bytes = 0;
        let mut upload = |name: &str, t: &Tensor| -> Result<Pooled> {
            let size = bytes_of(t.numel(), opts.dtype);
            check_binding(gpu, name, size)?;
            bytes += size;
            buffer::upload_as(gpu, name, &t.data, opts.dtype)
        };
        let (q, k, v) = (
            upload("query", query)?,
            upload("key", key)?,
            upload("value", value)?,
        );
        let out_len = d.batch * d.heads_q * d.len_q * d.head_dim_v;
        check_binding(gpu, "attn_output", bytes_of_f32(out_len))?;
        bytes += bytes_of_f32(out_len);
        let needs = CoreNeeds {
            weights: None,
            storage: Storage::last(opts.dtype),
            // Contiguous heads: every row starts at a multiple of the head size.
            vec4_views: d.head_dim.is_multiple_of(4) && d.head_dim_v.is_multiple_of(4),
        };
        let plan = CorePlan::new(gpu, &d, opts.path, needs)?;
        bytes += plan.bytes();
        Ok(Self {
            gpu: gpu.clone(),
            dims: d,
            scale: problem.scale,
            causal: problem.causal,
            q,
            k,
            v,
            mask: problem
                .mask
                .map(|m| upload_mask(gpu, "attn_mask", &m))
                .transpose()?,
            out: buffer::storage(gpu, "attn_output", out_len),
            out_shape: problem.out_shape,
            plan,
            dtype: opts.dtype,
            bytes,
        })
    }

    /// The algorithm this call's attention core runs.
    pub fn path(&self) -> AttentionPath {
        self.plan.path()
    }

    /// Into how many runs of keys the fused kernel splits each query row, so that a call
    /// with few query rows still fills the device (1: not split; the three-pass path never
    /// splits). Set by [`Tuning::fused_split_groups`](crate::Tuning::fused_split_groups).
    pub fn key_splits(&self) -> u32 {
        self.plan.key_splits()
    }

    /// Whether the fused path runs its register-blocked kernel (`fused_direct.wgsl`, where
    /// [`Tuning::fused_direct`](crate::Tuning::fused_direct) asks for it and the call
    /// allows) rather than the staged one.
    pub fn register_blocked_fused(&self) -> bool {
        self.plan.register_blocked_fused()
    }

    /// Whether that kernel shares its loads through subgroups — 32 query rows per 8-lane
    /// subgroup, or keys and values among wider ones (where
    /// [`Tuning::fused_subgroups`](crate::Tuning::fused_subgroups) asks for it and the
    /// device and call allow).
    pub fn fused_subgroups(&self) -> bool {
        self.plan.fused_subgroups()
    }

    /// How query, key and value are stored on the GPU.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Bytes of GPU memory allocated: inputs, output and the score block.
    pub fn allocated_bytes(&self) -> u64 {
        self.bytes
    }

    /// The output buffer, `[B, Hq, L, dv]` row-major. A buffer handed out here is the
    /// caller's to keep: it does not return to the device's pool of reusable buffers when
    /// this call is dropped.
    pub fn output_buffer(&self) -> &wgpu::Buffer {
        self.out.lend()
    }

    /// Records and submits the kernels and waits for them: one submit.
    pub fn run(&self) -> Result<()> {
        run_recorded(&self.gpu, None, |batch| self.record(batch))
    }

    /// Like [`run`](Self::run), timed: the host's wall clock, and per-dispatch GPU
    /// timestamps where the device has them (each dispatch then gets its own compute pass).
    /// The wall time includes recording the commands.
    pub fn run_timed(&self) -> Result<RunTiming> {
        run_recorded_timed(&self.gpu, |batch| self.record(batch))
    }

    /// Runs only the dispatches of kernel `name` (one of
    /// [`KERNEL_NAMES`](crate::kernels::KERNEL_NAMES)), on whatever its inputs hold: the
    /// benchmark's per-pass wall clock. Run [`run`](Self::run) first for meaningful inputs.
    pub fn run_kernel(&self, name: &str) -> Result<()> {
        run_recorded(&self.gpu, Some(name), |batch| self.record(batch))
    }

    /// Copies the output of the last [`run`](Self::run) back to the host.
    pub fn read(&self) -> Result<Tensor> {
        scoped(&self.gpu, "reading results", || {
            self.read_into(Batch::new(&self.gpu))
        })
    }

    fn read_into<'k>(&'k self, mut batch: Batch<'k>) -> Result<Tensor> {
        let len = self.out_shape.iter().product::<usize>();
        let mut staging = buffer::staging(&self.gpu, "attn_output readback", len);
        batch.copy(&self.out, 0, &staging, 0, bytes_of_f32(len));
        batch.submit();
        let data = buffer::read_back(&self.gpu, &[(&*staging, len)])?;
        staging.mark_unmapped();
        Tensor::new(
            self.out_shape.clone(),
            data.into_iter().next().unwrap_or_default(),
        )
    }

    fn record<'k>(&'k self, batch: &mut Batch<'k>) -> Result<()> {
        let d = &self.dims;
        record_core(
            &self.gpu,
            batch,
            &Core {
                dims: *d,
                q: view(&self.q, d.heads_q, d.len_q, d.head_dim),
                k: view(&self.k, d.heads_kv, d.len_kv, d.head_dim),
                v: view(&self.v, d.heads_kv, d.len_kv, d.head_dim_v),
                out: view(&self.out, d.heads_q, d.len_q, d.head_dim_v),
                scale: self.scale,
                causal: self.causal,
                masks: [
                    self.mask.as_ref().map(|(buffer, strides)| MaskBinding {
                        buffer,
                        strides: *strides,
                    }),
                    None,
                ],
                weights: None,
                storage: Storage::last(self.dtype),
            },
            &self.plan,
        )
    }
}
