//! `av.wgsl`: one block of output rows, `P·V`, written into the concatenated heads layout.

use bytemuck::{Pod, Zeroable};

use super::{Block, DirectTiles, HeadView, Kernel, Kernels, Matmuls, Storage, fits_grid};
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

/// The P·V pipeline chosen for a call, and its tile.
pub(crate) struct Choice<'k> {
    kernel: &'k Kernel,
    tile_rows: u32,
    tile_cols: u32,
    /// Rows whose common key limit (under a causal mask) the kernel reads up to: each
    /// invocation's rows in the register-blocked kernel, each tile's in the staged one.
    limit_rows: u32,
}

impl Choice<'_> {
    /// How far softmax must write zeros past a causal row's limit: rows are read in groups
    /// of this many, up to the group's last row's limit.
    pub fn limit_rows(&self) -> u32 {
        self.limit_rows
    }
}

/// Chooses the P·V pipeline of `matmuls` (those of the storage of V) writing `storage`'s
/// result type: the register-blocked one where the tuning has it and the probabilities and V
/// can be read as vec4 and its smaller tiles fit the grid for blocks of up to `block_rows`
/// query rows, else the staged one (whose fit is checked when the call is planned).
pub(crate) fn choose<'k>(
    kernels: &'k Kernels,
    matmuls: &'k Matmuls,
    storage: Storage,
    values: &Values,
    block_rows: u32,
) -> Choice<'k> {
    let dims = &values.dims;
    let aligned = dims.len_kv.is_multiple_of(4)
        && dims.head_dim_v.is_multiple_of(4)
        && values.v.vec4_aligned();
    let fits = |tiles: &DirectTiles| {
        fits_grid(block_rows, tiles.tile_rows())
            && fits_grid(dims.head_dim_v as u32, tiles.tile_cols())
    };
    match matmuls
        .direct
        .as_ref()
        .filter(|direct| aligned && fits(&direct.tiles))
    {
        Some(direct) => Choice {
            kernel: direct.kernels.av.for_storage(storage),
            tile_rows: direct.tiles.tile_rows(),
            tile_cols: direct.tiles.tile_cols(),
            limit_rows: DirectTiles::ROWS,
        },
        None => {
            let tiles = kernels.tuning.av_tiles();
            Choice {
                kernel: matmuls.staged.av.for_storage(storage),
                tile_rows: tiles.tile_rows(),
                tile_cols: tiles.tile_cols(),
                limit_rows: tiles.tile_rows(),
            }
        }
    }
}

/// Records `out[block] = probs · V` for `block` with `choice`.
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    choice: &Choice<'k>,
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
        (dims.head_dim_v as u32).div_ceil(choice.tile_cols),
        block.rows.div_ceil(choice.tile_rows),
        block.batch_count * dims.heads_q as u32,
    ];
    batch.dispatch(
        choice.kernel,
        &params,
        &[probs, v.buffer, out.buffer],
        groups,
    );
}
