//! `av.wgsl`: one block of output rows, `P·V`, written into the concatenated heads layout.

use bytemuck::{Pod, Zeroable};

use super::{
    Block, DirectTiles, GemmTiles, HeadView, Kernel, Kernels, Matmuls, Storage, fits_grid,
};
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

/// Loop iterations of one register-blocked P·V invocation over `keys` keys, at worst: the
/// fast loop, 4 keys a step, then the key-at-a-time recompute of a non-finite block, and
/// the stores' loops (32 iterations) with what llvmpipe counts for entering and leaving
/// loops: measured on lavapipe, 38 (av_direct.wgsl) to 45 (av_shared.wgsl) beyond the
/// 5 per step.
fn direct_iterations(keys: u32) -> u64 {
    5 * keys.div_ceil(4) as u64 + 48
}

/// Loop iterations of one staged P·V invocation over `keys` keys: per slab of `bk` keys its
/// share of staging both operands and the product's `bk` steps.
fn staged_iterations(tiles: &GemmTiles, keys: u32) -> u64 {
    let invocations = tiles.invocations();
    let stage = |rows: u32| (rows * tiles.bk).div_ceil(invocations) as u64;
    let per_slab = stage(tiles.tile_rows()) + stage(tiles.tile_cols()) + tiles.bk as u64 + 1;
    keys.div_ceil(tiles.bk) as u64 * per_slab + 80
}

/// Whether a P·V kernel can serve `dims` within the device's loop cap, where the layout
/// is the crate's own (rows starting at multiples of 4 where the head size is one): what
/// planning a call checks.
pub(crate) fn fits_loop_cap(kernels: &Kernels, dims: &CoreDims) -> bool {
    let keys = dims.len_kv as u32;
    let direct = kernels.tuning.direct.is_some()
        && dims.len_kv.is_multiple_of(4)
        && dims.head_dim_v.is_multiple_of(4);
    (direct && kernels.within_loop_cap(direct_iterations(keys)))
        || kernels.within_loop_cap(staged_iterations(&kernels.tuning.av_tiles(), keys))
}

/// Chooses the P·V pipeline of `matmuls` (those of the storage of V) writing `storage`'s
/// result type: the register-blocked one where the tuning has it, the probabilities and V
/// can be read as vec4, its smaller tiles fit the grid for blocks of up to `block_rows`
/// query rows and its invocations' loops fit the device's cap; else the staged one (whose
/// grid fit is checked when the call is planned), within the cap too, or `TooLarge`.
pub(crate) fn choose<'k>(
    kernels: &'k Kernels,
    matmuls: &'k Matmuls,
    storage: Storage,
    values: &Values,
    block_rows: u32,
) -> crate::Result<Choice<'k>> {
    let dims = &values.dims;
    let keys = dims.len_kv as u32;
    let aligned = dims.len_kv.is_multiple_of(4)
        && dims.head_dim_v.is_multiple_of(4)
        && values.v.vec4_aligned();
    let fits = |[rows, cols]: [u32; 2]| {
        fits_grid(block_rows, rows)
            && fits_grid(dims.head_dim_v as u32, cols)
            && kernels.within_loop_cap(direct_iterations(keys))
    };
    if let Some(direct) = matmuls
        .direct
        .as_ref()
        .filter(|direct| aligned && fits(direct.block_tile()))
    {
        let [tile_rows, tile_cols] = direct.block_tile();
        return Ok(Choice {
            kernel: direct.kernels.av.for_storage(storage),
            tile_rows,
            tile_cols,
            // An invocation's rows: 4, or 8 where a subgroup shares them (av_shared.wgsl).
            limit_rows: if direct.subgroups {
                2 * DirectTiles::ROWS
            } else {
                DirectTiles::ROWS
            },
        });
    }
    let tiles = kernels.tuning.av_tiles();
    let iterations = staged_iterations(&tiles, keys);
    if !kernels.within_loop_cap(iterations) {
        return Err(kernels.loop_cap_error(format!("P·V over {keys} keys"), iterations));
    }
    Ok(Choice {
        kernel: matmuls.staged.av.for_storage(storage),
        tile_rows: tiles.tile_rows(),
        tile_cols: tiles.tile_cols(),
        limit_rows: tiles.tile_rows(),
    })
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
