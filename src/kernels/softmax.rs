//! `softmax.wgsl`: row-wise softmax of a block of scores, in place.

use bytemuck::{Pod, Zeroable};

use super::{Block, Kernels, spread};
use crate::batch::Batch;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    rows: u32,
    cols: u32,
    block_rows: u32,
    row0: u32,
    causal: u32,
    causal_offset: i32,
    read_rows: u32,
    _pad: u32,
}

/// Records the softmax of the scores of `block` (its batches × `heads` × rows, `cols` keys
/// each); under `causal_offset` each row reads only the keys it may see and zeros the rest —
/// all of it when `read_rows` is `None` (weights are copied out), else as far as P·V reads
/// rows in groups of `read_rows` ([`av::Choice::limit_rows`](super::av::Choice)).
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    kernels: &'k Kernels,
    (block, heads): (Block, u32),
    (cols, causal_offset, read_rows): (u32, Option<i32>, Option<u32>),
    scores: &wgpu::Buffer,
) {
    let rows = block.batch_count * heads * block.rows;
    // Rows of a multiple of 4 keys start at multiples of 4: read as vec4, by a workgroup
    // per row or by an invocation per row.
    let (kernel, workgroups) = if !cols.is_multiple_of(4) {
        (&kernels.softmax, rows)
    } else if kernels.tuning.softmax_whole_rows {
        let per_workgroup = kernels.tuning.softmax_wg;
        (&kernels.softmax_rows, rows.div_ceil(per_workgroup))
    } else {
        (&kernels.softmax_vec4, rows)
    };
    let [x, y] = spread(workgroups);
    batch.dispatch(
        kernel,
        &Params {
            rows,
            cols,
            block_rows: block.rows,
            row0: block.row0,
            causal: causal_offset.is_some() as u32,
            causal_offset: causal_offset.unwrap_or(0),
            read_rows: read_rows.unwrap_or(0),
            _pad: 0,
        },
        &[scores],
        [x, y, 1],
    );
}
