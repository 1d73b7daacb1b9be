//! `fused.wgsl`: the whole attention core in one kernel (FlashAttention-2: key blocks walked
//! with an online softmax; the score matrix is never stored).
//!
//! The workgroup shape depends on the head sizes (one invocation column per four value
//! columns, one staged query row of `d` floats), so pipelines are built per head-size class —
//! sizes rounded up to a power of two — once per device, on first use.

use bytemuck::{Pod, Zeroable};

use super::{HeadView, Kernel, Kernels, MaskBinding, source};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::problem::CoreDims;

/// Query rows per workgroup (`BR` in the shader).
pub const BLOCK_ROWS: u32 = 16;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    rows: u32,
    cols: u32,
    depth: u32,
    depth_v: u32,
    heads_q: u32,
    group: u32,
    flags: u32,
    _pad0: u32,
    q: [u32; 4],
    k: [u32; 4],
    v: [u32; 4],
    o: [u32; 4],
    scale: f32,
    causal_offset: i32,
    _pad1: [u32; 2],
    mask0: [u32; 4],
    mask1: [u32; 4],
}

/// The pipeline class of a problem: override constants of `fused.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    pub wg_x: u32,
    pub d_vec: u32,
    pub bc: u32,
}

impl Variant {
    /// The class for head sizes `d` (queries, keys) and `dv` (values): one invocation
    /// column per four value columns (at least four, so each of the 16 rows has an
    /// invocation for its statistics), one key per invocation per block up to 64.
    pub fn for_dims(d: usize, dv: usize) -> Self {
        let vecs = |n: usize| (n.div_ceil(4) as u32).next_power_of_two();
        let wg_x = vecs(dv).max(4);
        Self {
            wg_x,
            d_vec: vecs(d),
            bc: (4 * wg_x).min(64),
        }
    }

    pub fn invocations(&self) -> u32 {
        self.wg_x * 4
    }

    /// Bytes of workgroup memory: staged queries, the block of probabilities, row stats.
    pub fn workgroup_bytes(&self) -> u32 {
        BLOCK_ROWS * self.d_vec * 16
            + self.bc * 4 * 16
            + 4 * BLOCK_ROWS * 4
            + 2 * self.invocations() * 4
    }

    /// Whether the device can run this class; the error says which limit stops it.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<()> {
        if self.invocations() > limits.max_compute_invocations_per_workgroup {
            return Err(Error::TooLarge {
                what: format!(
                    "fused attention workgroup for this head size ({} invocations)",
                    self.invocations()
                ),
                needed: self.invocations() as u64,
                limit: limits.max_compute_invocations_per_workgroup as u64,
                limit_name: "max_compute_invocations_per_workgroup",
            });
        }
        if self.workgroup_bytes() > limits.max_compute_workgroup_storage_size {
            return Err(Error::TooLarge {
                what: "fused attention workgroup memory for this head size".into(),
                needed: self.workgroup_bytes() as u64,
                limit: limits.max_compute_workgroup_storage_size as u64,
                limit_name: "max_compute_workgroup_storage_size",
            });
        }
        Ok(())
    }
}

/// The fused kernel's source: head indexing, then the kernel.
pub(crate) fn shader_source() -> String {
    [source::HEADS, source::FUSED].concat()
}

/// Builds the pipeline of one class.
pub(crate) fn build(device: &wgpu::Device, variant: Variant) -> Kernel {
    Kernel::new(
        device,
        "fused",
        &shader_source(),
        size_of::<Params>(),
        &[true, true, true, true, true, false],
        &[
            ("WG_X", variant.wg_x as f64),
            ("D_VEC", variant.d_vec as f64),
            ("BC", variant.bc as f64),
        ],
    )
}

/// Inputs of one fused launch (the whole core: every batch, head and row).
pub(crate) struct Fused<'a> {
    pub dims: CoreDims,
    pub q: HeadView<'a>,
    pub k: HeadView<'a>,
    pub v: HeadView<'a>,
    pub out: HeadView<'a>,
    pub scale: f32,
    pub causal_offset: Option<i32>,
    pub masks: [Option<MaskBinding<'a>>; 2],
}

fn view(v: &HeadView) -> [u32; 4] {
    [v.offset, v.stride_b, v.stride_h, v.stride_l]
}

/// Records one launch of `kernel` (built for `f.dims`' class) over the whole problem.
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    kernels: &'k Kernels,
    kernel: &'k Kernel,
    f: &Fused,
) {
    let d = &f.dims;
    let mut flags = 0;
    for (i, m) in f.masks.iter().enumerate() {
        if m.is_some() {
            flags |= 1 << i;
        }
    }
    if f.causal_offset.is_some() {
        flags |= 4;
    }
    let strides = |m: &Option<MaskBinding>| m.map_or([0; 4], |m| m.strides);
    let params = Params {
        rows: d.len_q as u32,
        cols: d.len_kv as u32,
        depth: d.head_dim as u32,
        depth_v: d.head_dim_v as u32,
        heads_q: d.heads_q as u32,
        group: d.group() as u32,
        flags,
        _pad0: 0,
        q: view(&f.q),
        k: view(&f.k),
        v: view(&f.v),
        o: view(&f.out),
        scale: f.scale,
        causal_offset: f.causal_offset.unwrap_or(0),
        _pad1: [0; 2],
        mask0: strides(&f.masks[0]),
        mask1: strides(&f.masks[1]),
    };
    let mask = |i: usize| f.masks[i].map_or(&kernels.placeholder, |m| m.buffer);
    batch.dispatch(
        kernel,
        &params,
        &[
            f.q.buffer,
            f.k.buffer,
            f.v.buffer,
            mask(0),
            mask(1),
            f.out.buffer,
        ],
        [
            (d.len_q as u32).div_ceil(BLOCK_ROWS),
            1,
            (d.batch * d.heads_q) as u32,
        ],
    );
}
