//! `qk.wgsl`: one block of scores, `Q·Kᵀ·scale + masks`, causal by position.

use bytemuck::{Pod, Zeroable};

use super::{Block, HeadView, Kernels, MaskBinding, Matmuls, fits_grid, mask_params};
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
    flags: u32,
    q: [u32; 4],
    k: [u32; 4],
    scale: f32,
    causal_offset: i32,
    mask0: [u32; 4],
    mask1: [u32; 4],
    _pad: [u32; 2],
}

/// Inputs of the scores kernel.
pub(crate) struct Scores<'a> {
    pub dims: CoreDims,
    pub q: HeadView<'a>,
    pub k: HeadView<'a>,
    pub scale: f32,
    /// `Some(offset)`: key `s` visible from row `l` iff `s <= l + offset`.
    pub causal_offset: Option<i32>,
    pub masks: [Option<MaskBinding<'a>>; 2],
}

/// Records the scores of `block` into `scores` (`[batch_count·H, rows, S]`) with the `qk`
/// pipelines of `matmuls` (those of the storage of Q and K): the register-blocked one where
/// the tuning has it and Q and K can be read as vec4, else the staged one.
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    kernels: &'k Kernels,
    matmuls: &'k Matmuls,
    s: &Scores,
    block: Block,
    scores: &wgpu::Buffer,
) {
    let d = &s.dims;
    let (flags, mask0, mask1) = mask_params(&s.masks, s.causal_offset);
    let params = Params {
        rows: block.rows,
        cols: d.len_kv as u32,
        depth: d.head_dim as u32,
        heads_q: d.heads_q as u32,
        group: d.group() as u32,
        batch0: block.batch0,
        row0: block.row0,
        flags,
        q: s.q.params(),
        k: s.k.params(),
        scale: s.scale,
        causal_offset: s.causal_offset.unwrap_or(0),
        mask0,
        mask1,
        _pad: [0; 2],
    };
    let mask = |i: usize| s.masks[i].map_or(&kernels.placeholder, |m| m.buffer);
    // Register-blocked where Q and K can be read as vec4 and its smaller tiles fit the grid
    // (the staged tiles' fit is checked when the call is planned).
    let direct = matmuls.direct.as_ref().filter(|direct| {
        d.head_dim.is_multiple_of(4)
            && s.q.vec4_aligned()
            && s.k.vec4_aligned()
            && fits_grid(d.len_kv as u32, direct.tiles.tile_cols())
            && fits_grid(block.rows, direct.tiles.tile_rows())
    });
    let (kernel, [tile_rows, tile_cols]) = match direct {
        Some(direct) => (
            &direct.kernels.qk,
            [direct.tiles.tile_rows(), direct.tiles.tile_cols()],
        ),
        None => {
            let tiles = &kernels.tuning.gemm;
            (&matmuls.staged.qk, [tiles.tile_rows(), tiles.tile_cols()])
        }
    };
    let groups = [
        (d.len_kv as u32).div_ceil(tile_cols),
        block.rows.div_ceil(tile_rows),
        block.batch_count * d.heads_q as u32,
    ];
    batch.dispatch(
        kernel,
        &params,
        &[s.q.buffer, s.k.buffer, mask(0), mask(1), scores],
        groups,
    );
}
