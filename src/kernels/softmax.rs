//! `softmax.wgsl`: row-wise softmax of a block of scores, in place.

use bytemuck::{Pod, Zeroable};

use super::{Block, Kernel, Kernels, spread};
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

/// The softmax kernel for rows of `cols` keys and the rows each workgroup takes, or `None`
/// where every kernel's invocations would loop past the device's cap ([`super::loop_cap`]).
/// Rows of a multiple of 4 keys start at multiples of 4: read as vec4, by an invocation per
/// row where the tuning says so, else by a workgroup per row.
pub(crate) fn choose(kernels: &Kernels, cols: u32) -> Option<(&Kernel, u32)> {
    let wg = kernels.tuning.softmax_wg;
    // Two passes over a row's share, plus the merge (the tree's log2(WG) steps, or the
    // subgroup merge's WG / lanes, at most WG) and a few more.
    let merge = if kernels.softmax_subgroups {
        wg as u64
    } else {
        wg.ilog2() as u64
    };
    let shared = |per_load: u32| 2 * cols.div_ceil(per_load * wg) as u64 + merge + 4;
    let whole_row = 2 * cols.div_ceil(4) as u64 + 4;
    if !cols.is_multiple_of(4) {
        kernels
            .within_loop_cap(shared(1))
            .then_some((&kernels.softmax, 1))
    } else if kernels.tuning.softmax_whole_rows && kernels.within_loop_cap(whole_row) {
        Some((&kernels.softmax_rows, wg))
    } else {
        kernels
            .within_loop_cap(shared(4))
            .then_some((&kernels.softmax_vec4, 1))
    }
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
) -> crate::Result<()> {
    let rows = block.batch_count * heads * block.rows;
    // Planning the call checked that one fits (Workspace::new).
    let (kernel, rows_per_group) = choose(kernels, cols).ok_or_else(|| {
        kernels.loop_cap_error(format!("softmax of rows of {cols} keys"), cols as u64)
    })?;
    let workgroups = rows.div_ceil(rows_per_group);
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
    Ok(())
}
