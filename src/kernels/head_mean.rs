//! `head_mean.wgsl`: attention probabilities averaged over heads.

use bytemuck::{Pod, Zeroable};

use super::{Kernels, spread};
use crate::batch::Batch;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    elements: u32,
    heads: u32,
    batches: u32,
    _pad0: u32,
}

/// Records `mean[b] = mean_h probs[b·heads + h]` for `batches` batches of `elements` each.
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    kernels: &'k Kernels,
    elements: u32,
    heads: u32,
    batches: u32,
    probs: &wgpu::Buffer,
    mean: &wgpu::Buffer,
) {
    // 64 invocations per workgroup, 4 elements per invocation.
    let [x, y] = spread(elements.div_ceil(256));
    batch.dispatch(
        &kernels.head_mean,
        &Params {
            elements,
            heads,
            batches,
            _pad0: 0,
        },
        &[probs, mean],
        [x, y, batches],
    );
}
