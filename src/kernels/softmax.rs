//! `softmax.wgsl`: row-wise softmax of a block of scores, in place.

use bytemuck::{Pod, Zeroable};

use super::{Kernels, spread};
use crate::batch::Batch;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

/// Records the softmax of `rows` rows of `cols` scores each.
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    kernels: &'k Kernels,
    rows: u32,
    cols: u32,
    scores: &wgpu::Buffer,
) {
    let [x, y] = spread(rows);
    batch.dispatch(
        &kernels.softmax,
        &Params {
            rows,
            cols,
            _pad: [0; 2],
        },
        &[scores],
        [x, y, 1],
    );
}
