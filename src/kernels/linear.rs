//! `linear.wgsl`: Y = X·Wᵀ + b with PyTorch's `[out, in]` weights.

use bytemuck::{Pod, Zeroable};

use super::{Kernels, Matmuls, Storage, fits_grid};
use crate::batch::Batch;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    rows: u32,
    cols: u32,
    depth: u32,
    has_bias: u32,
    x_offset: u32,
    x_row_stride: u32,
    w_offset: u32,
    bias_offset: u32,
    y_offset: u32,
    y_row_stride: u32,
    _pad: [u32; 2],
}

/// A matrix operand: a buffer and the element offset of its first element.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u32,
}

/// One linear layer over `rows` contiguous rows of `depth` features into `cols` features.
pub(crate) struct Linear<'a> {
    pub rows: u32,
    pub cols: u32,
    pub depth: u32,
    pub x: At<'a>,
    pub w: At<'a>,
    pub bias: Option<At<'a>>,
    /// Output rows may be wider than `cols` (several projections packed side by side).
    pub y: At<'a>,
    pub y_row_stride: u32,
}

/// Refuses a linear layer over more `rows` than one dispatch of the staged tiles covers (the
/// register-blocked kernel, with smaller tiles, runs only where its own grid fits).
pub(crate) fn check_rows(kernels: &Kernels, rows: usize) -> crate::Result<()> {
    let tile = kernels.tuning.gemm.tile_rows();
    let limit = super::MAX_GROUPS as u64 * tile as u64;
    if rows as u64 > limit {
        return Err(crate::Error::TooLarge {
            what: format!("{rows} rows in one linear layer"),
            needed: rows as u64,
            limit,
            limit_name: "max_compute_workgroups_per_dimension × rows per workgroup",
        });
    }
    Ok(())
}

/// Records one launch of a `linear` pipeline of `matmuls` (those of the operands' storage)
/// writing `storage`'s result type: the register-blocked one where the tuning has it and X
/// and W can be read as vec4, else the staged one.
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    kernels: &'k Kernels,
    matmuls: &'k Matmuls,
    storage: Storage,
    l: &Linear,
) {
    let params = Params {
        rows: l.rows,
        cols: l.cols,
        depth: l.depth,
        has_bias: l.bias.is_some() as u32,
        x_offset: l.x.offset,
        x_row_stride: l.depth,
        w_offset: l.w.offset,
        bias_offset: l.bias.map_or(0, |b| b.offset),
        y_offset: l.y.offset,
        y_row_stride: l.y_row_stride,
        _pad: [0; 2],
    };
    let bias = l.bias.map_or(&kernels.placeholder, |b| b.buffer);
    let aligned = [l.depth, l.x.offset, l.w.offset]
        .iter()
        .all(|x| x.is_multiple_of(4));
    // Register-blocked where X and W can be read as vec4 and its smaller tiles fit the grid
    // (the staged tiles' fit is checked when the call is prepared).
    let fits = |[rows, cols]: [u32; 2]| fits_grid(l.rows, rows) && fits_grid(l.cols, cols);
    let direct = matmuls
        .direct
        .as_ref()
        .filter(|direct| aligned && fits(direct.block_tile()));
    let (kernel, [tile_rows, tile_cols]) = match direct {
        Some(direct) => (
            direct.kernels.linear.for_storage(storage),
            direct.block_tile(),
        ),
        None => {
            let tiles = &kernels.tuning.gemm;
            (
                matmuls.staged.linear.for_storage(storage),
                [tiles.tile_rows(), tiles.tile_cols()],
            )
        }
    };
    let groups = [l.cols.div_ceil(tile_cols), l.rows.div_ceil(tile_rows), 1];
    batch.dispatch(
        kernel,
        &params,
        &[l.x.buffer, l.w.buffer, bias, l.y.buffer],
        groups,
    );
}
