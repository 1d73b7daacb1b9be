//! `av.wgsl`: one block of output rows, `P·V`, written into the concatenated heads layout.

use bytemuck::{Pod, Zeroable};

use super::{Block, HeadView, Kernel, Kernels};
use crate::batch::Batch;
use crate::problem::CoreDims;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    rows: u32,
    cols: u32,
    depth: u32,
    heads_q: u32,
    group: u32,
    batch0: u32,
    row0: u32,
    causal: u32,
    v: [u32; 4],
    o: [u32; 4],
    causal_offset: i32,
    _pad: [u32; 3],
}

/// Inputs of the P·V kernel besides the probabilities.
pub(crate) struct Values<'a> {
    pub dims: CoreDims,
    pub v: HeadView<'a>,
    pub out: HeadView<'a>,
    /// `Some(offset)`: key `s` visible from row `l` iff `s <= l + offset`; the kernel stops
    /// each tile's product at its last row's limit.
    pub causal_offset: Option<i32>,
}

/// Records `out[block] = probs · V` for `block` with `kernel` (an `av` pipeline of the
/// storage of V and O).
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    kernels: &'k Kernels,
    kernel: &'k Kernel,
    values: &Values,
    block: Block,
    probs: &wgpu::Buffer,
) {
    let (dims, v, out) = (&values.dims, &values.v, &values.out);
    let params = Params {
        rows: block.rows,
        cols: dims.head_dim_v as u32,
        depth: dims.len_kv as u32,
        heads_q: dims.heads_q as u32,
        group: dims.group() as u32,
        batch0: block.batch0,
        row0: block.row0,
        causal: values.causal_offset.is_some() as u32,
        v: v.params(),
        o: out.params(),
        causal_offset: values.causal_offset.unwrap_or(0),
        _pad: [0; 3],
    };
    let groups = [
        (dims.head_dim_v as u32).div_ceil(kernels.tuning.av_tiles().tile_cols()),
        block.rows.div_ceil(kernels.tuning.av_tiles().tile_rows()),
        block.batch_count * dims.heads_q as u32,
    ];
    batch.dispatch(kernel, &params, &[probs, v.buffer, out.buffer], groups);
}
