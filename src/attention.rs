//! The orchestrator of the attention core: splits the score matrix into blocks that fit the
//! device and the memory budget, and records QKᵀ → softmax → AV (and the attention weights,
//! when asked) for each block.
//!
//! A block is `batch_count` whole batches (all heads) × a run of query rows. Its scores live
//! in one `[batch_count·H, rows, S]` buffer, reused by every block: the kernels of one
//! submission run in order, so block n+1 overwrites block n only after AV has read it.

use crate::batch::Batch;
use crate::buffer::{self, Pooled, bytes_of_f32};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{
    Block, HeadView, Kernel, MAX_GROUPS, MaskBinding, Storage, av, fused, head_mean, qk, softmax,
};
use crate::options::{AttentionPath, Causal};
use crate::problem::CoreDims;

/// One attention core, bound to GPU buffers.
pub(crate) struct Core<'a> {
    pub dims: CoreDims,
    pub q: HeadView<'a>,
    pub k: HeadView<'a>,
    pub v: HeadView<'a>,
    pub out: HeadView<'a>,
    pub scale: f32,
    pub causal: Option<Causal>,
    pub masks: [Option<MaskBinding<'a>>; 2],
    /// Where the attention weights go: `[B, H, L, S]` per head, or `[B, L, S]` averaged
    /// when the workspace was made for averaged weights.
    pub weights: Option<&'a wgpu::Buffer>,
    /// How Q, K, V and the output are stored (the plan was made for the same).
    pub storage: Storage,
}

/// How the score matrix is walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockPlan {
    /// Whole batches per block.
    pub batches: usize,
    /// Query rows per block.
    pub rows: usize,
}

impl BlockPlan {
    /// Elements of one block's scores.
    pub fn scores_len(&self, dims: &CoreDims) -> usize {
        self.batches * dims.heads_q * self.rows * dims.len_kv
    }

    /// The blocks, batches outermost.
    pub fn blocks(&self, dims: &CoreDims) -> Vec<Block> {
        let mut blocks = Vec::new();
        for batch0 in (0..dims.batch).step_by(self.batches) {
            for row0 in (0..dims.len_q).step_by(self.rows) {
                blocks.push(Block {
                    batch0: batch0 as u32,
                    batch_count: self.batches.min(dims.batch - batch0) as u32,
                    row0: row0 as u32,
                    rows: self.rows.min(dims.len_q - row0) as u32,
                });
            }
        }
        blocks
    }
}

/// What a staged kernel's workgroup covers of the score matrix: query rows (the smaller of
/// QKᵀ's and P·V's tiles) and keys (QKᵀ's). Blocks are planned so that the staged kernels'
/// grids fit [`MAX_GROUPS`]; the register-blocked kernels, with smaller tiles, run only
/// where theirs fit too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GridTiles {
    pub rows: u32,
    pub keys: u32,
}

impl GridTiles {
    pub fn of(tuning: &crate::Tuning) -> Self {
        Self {
            rows: tuning.gemm.tile_rows().min(tuning.av_tiles().tile_rows()),
            keys: tuning.gemm.tile_cols(),
        }
    }
}

/// Largest blocks whose scores fit both `budget` bytes and one storage binding, and whose
/// rows fit the grid of `tiles`: as many whole batches as fit, else as many query rows of
/// one batch as fit.
pub(crate) fn plan_blocks(
    dims: &CoreDims,
    budget: u64,
    max_binding: u64,
    tiles: GridTiles,
) -> Result<BlockPlan> {
    // All heads of a block are one dispatch's z dimension.
    if dims.heads_q > MAX_GROUPS as usize {
        return Err(Error::TooLarge {
            what: format!("{} heads in one dispatch", dims.heads_q),
            needed: dims.heads_q as u64,
            limit: MAX_GROUPS as u64,
            limit_name: "max_compute_workgroups_per_dimension",
        });
    }
    let max_keys = MAX_GROUPS as u64 * tiles.keys as u64;
    if dims.len_kv as u64 > max_keys {
        return Err(Error::TooLarge {
            what: format!("{} keys in one dispatch", dims.len_kv),
            needed: dims.len_kv as u64,
            limit: max_keys,
            limit_name: "max_compute_workgroups_per_dimension × keys per workgroup",
        });
    }
    let max_rows = (MAX_GROUPS as usize).saturating_mul(tiles.rows as usize);
    let limit = budget.min(max_binding);
    let row_bytes = bytes_of_f32(dims.heads_q * dims.len_kv);
    if row_bytes > limit {
        return Err(Error::TooLarge {
            what: format!(
                "one query row of scores ({} heads × {} keys)",
                dims.heads_q, dims.len_kv
            ),
            needed: row_bytes,
            limit,
            limit_name: if budget < max_binding {
                "memory budget"
            } else {
                "max_storage_buffer_binding_size"
            },
        });
    }
    let batch_bytes = row_bytes * dims.len_q as u64;
    if batch_bytes <= limit && dims.len_q <= max_rows {
        let by_memory = (limit / batch_bytes) as usize;
        let by_grid = MAX_GROUPS as usize / dims.heads_q;
        Ok(BlockPlan {
            batches: by_memory.min(by_grid).min(dims.batch).max(1),
            rows: dims.len_q,
        })
    } else {
        Ok(BlockPlan {
            batches: 1,
            rows: ((limit / row_bytes) as usize).min(dims.len_q).min(max_rows),
        })
    }
}

/// The scratch buffers of the attention core: one block of scores (reused by every block)
/// and, for head-averaged weights, one block of averages. Allocated once per prepared
/// forward and reused by every run.
pub(crate) struct Workspace {
    plan: BlockPlan,
    scores: Pooled,
    mean: Option<Pooled>,
}

impl Workspace {
    pub fn new(gpu: &Gpu, dims: &CoreDims, averaged_weights: bool) -> Result<Self> {
        // Where the driver caps an invocation's loops, a row too long for every softmax or
        // P·V kernel is refused here, so that Auto can take the fused path (whose keys are
        // split to fit) instead.
        let kernels = gpu.kernels();
        let keys = dims.len_kv as u32;
        if softmax::choose(kernels, keys).is_none() || !av::fits_loop_cap(kernels, dims) {
            return Err(kernels.loop_cap_error(
                format!("three passes over rows of {keys} keys"),
                keys as u64,
            ));
        }
        let plan = plan_blocks(
            dims,
            gpu.memory_budget(),
            gpu.limits().max_storage_buffer_binding_size,
            GridTiles::of(&gpu.kernels().tuning),
        )?;
        Ok(Self {
            plan,
            scores: buffer::storage(gpu, "wgpu-mha scores", plan.scores_len(dims)),
            mean: averaged_weights.then(|| {
                buffer::storage(
                    gpu,
                    "wgpu-mha mean weights",
                    plan.batches * plan.rows * dims.len_kv,
                )
            }),
        })
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> u64 {
        self.scores.size() + self.mean.as_ref().map_or(0, |m| m.size())
    }
}

/// How one prepared call computes its attention core, with what that needs: the three-pass
/// path's scratch buffers, or the fused path's pipeline (and, when its keys are split, the
/// split's buffer and merge).
pub(crate) enum CorePlan {
    ThreePass(Workspace),
    Fused {
        kernel: Kernel,
        variant: fused::Variant,
        split: Option<fused::Split>,
    },
}

/// What a core plan is made for: the attention weights (`Some(averaged)` when the caller
/// wants them, which only the three-pass path produces), and how its operands and result
/// are stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoreNeeds {
    pub weights: Option<bool>,
    pub storage: Storage,
    /// Every row of Q, K, V and the output starts at a multiple of 4 elements and the head
    /// sizes are multiples of 4: the register-blocked fused kernels can read (and
    /// `fused_lanes.wgsl` write) them as vec4.
    pub vec4_views: bool,
}

/// The core of [`crate::tuning::sdpa_probe`] on `gpu`'s device type: where `tune` measured
/// which core `Auto` prefers, its rows vec4-aligned.
fn preference_probe(gpu: &Gpu) -> CoreDims {
    let [batch, heads, len_q, len_kv, head_dim] =
        crate::tuning::sdpa_probe(gpu.adapter_info().device_type);
    CoreDims {
        batch,
        heads_q: heads,
        heads_kv: heads,
        len_q,
        len_kv,
        head_dim,
        head_dim_v: head_dim,
    }
}

/// The fused kernel class a core of `dims` runs on `gpu` (`vec4_views`: its rows can be
/// read as vec4): the register-blocked kernel where the tuning asks for it and the call
/// allows — vec4 rows, output rows that fit its workgroup memory, and keys not split among
/// workgroups (it has no split mode) — its loads shared through subgroups where they can
/// be; else the staged kernel's class that fits.
fn fused_variant(gpu: &Gpu, dims: &CoreDims, vec4_views: bool) -> Result<fused::Variant> {
    let limits = gpu.limits();
    let kernels = gpu.kernels();
    let tuning = &kernels.tuning;
    let heads = dims.batch * dims.heads_q;
    let direct = tuning
        .fused_direct
        .filter(|_| vec4_views)
        .and_then(|wg| fused::Variant::direct(wg, dims.head_dim, dims.head_dim_v, &limits))
        .filter(|variant| {
            let target = tuning.fused_split_groups;
            fused::Split::count(variant, dims.len_q, dims.len_kv, heads, target) == 1
        })
        .map(|variant| {
            let width = kernels.fused_subgroup_width;
            let halves = tuning.fused_lanes_halves;
            variant.sharing(width, dims.len_q, dims.head_dim_v, halves, &limits)
        });
    match direct {
        Some(variant) => Ok(variant),
        None => fused::Variant::for_dims(
            dims.len_q,
            dims.head_dim,
            dims.head_dim_v,
            &limits,
            tuning.fused_block,
        ),
    }
}

impl CorePlan {
    /// Resolves `path` for a core of `dims` with `needs`.
    pub fn new(gpu: &Gpu, dims: &CoreDims, path: AttentionPath, needs: CoreNeeds) -> Result<Self> {
        let CoreNeeds {
            weights,
            storage,
            vec4_views,
        } = needs;
        gpu.check_dtype(storage.operands())?;
        // The fused path on the kernel class `variant` (`fused_variant`'s, worked out once
        // per call: `Auto` also compares its kind with the probe's).
        let fused = |variant: Result<fused::Variant>| -> Result<Self> {
            let variant = variant?;
            let limits = gpu.limits();
            let kernels = gpu.kernels();
            let heads = dims.batch * dims.heads_q;
            let target = kernels.tuning.fused_split_groups;
            let split_count = |variant: &fused::Variant| {
                fused::Split::count(variant, dims.len_q, dims.len_kv, heads, target)
            };
            let kernel = kernels.fused(gpu.device(), &limits, variant, storage)?;
            let mut splits = split_count(&variant);
            let blocks = (dims.len_q as u32).div_ceil(variant.rows());
            let partial_len = |splits| {
                fused::Split::partial_len(splits, dims.len_q, dims.head_dim_v, heads, blocks)
            };
            // Splits multiply the partial buffer: never past one binding.
            while splits > 1
                && bytes_of_f32(partial_len(splits)) > limits.max_storage_buffer_binding_size
            {
                splits /= 2;
            }
            // Where the driver caps an invocation's loops, a workgroup walks only so many
            // keys: unless parallel splits already keep within that, the keys are walked in
            // runs one after another, the rows' state carried from run to run in one
            // split's worth of partial results (memory still linear).
            let runs = kernels.loop_cap.map_or(1, |cap| {
                let keys = variant.keys_under_loop_cap(cap, dims.head_dim, dims.head_dim_v);
                (dims.len_kv as u32).div_ceil(keys)
            });
            let sequential = runs > 1 && splits < runs;
            let pieces = if sequential { runs } else { splits };
            let split = (pieces > 1).then(|| {
                let key_blocks = (dims.len_kv as u32).div_ceil(variant.bc);
                let split_len = key_blocks.div_ceil(pieces) * variant.bc;
                let pieces = (dims.len_kv as u32).div_ceil(split_len);
                let partial = partial_len(if sequential { 1 } else { pieces });
                fused::Split {
                    splits: pieces,
                    split_len,
                    sequential,
                    partial: buffer::storage(gpu, "wgpu-mha fused splits", partial),
                    combine: kernels.fused_combine(gpu.device(), storage),
                }
            });
            Ok(CorePlan::Fused {
                kernel,
                variant,
                split,
            })
        };
        let three_pass =
            || Workspace::new(gpu, dims, weights == Some(true)).map(CorePlan::ThreePass);
        match (path, weights) {
            (AttentionPath::Fused, Some(_)) => Err(Error::Config(
                "the fused path cannot return attention weights: use the three-pass path (or Auto)"
                    .into(),
            )),
            (AttentionPath::Fused, None) => fused(fused_variant(gpu, dims, vec4_views)),
            (AttentionPath::ThreePass, _) | (AttentionPath::Auto, Some(_)) => three_pass(),
            (AttentionPath::Auto, None) => {
                let variant = fused_variant(gpu, dims, vec4_views);
                let fused_fits = dims.heads_q * dims.batch <= MAX_GROUPS as usize;
                // Even where three passes are tuned faster, the fused kernel wins where it
                // skips work they do: a few query rows against many keys, as in decoding,
                // when three passes fill the staged kernels' 64-row tiles (5× on lavapipe at
                // L=1, S=4096). The register-blocked kernels fill blocks of 4 rows (8 in
                // P·V where subgroups share them): with them three passes won that decode
                // on lavapipe, 31 ms against 173 (34–35 ms against 104 with the 8-row P·V).
                // Causal calls follow the preference: both paths skip the tiles past the
                // diagonal (lavapipe, L=2048: three passes 278 ms, fused 773 ms).
                let tuning = &gpu.kernels().tuning;
                let blocked = tuning.direct.is_some()
                    && [dims.head_dim, dims.head_dim_v, dims.len_kv]
                        .iter()
                        .all(|n| n.is_multiple_of(4));
                let fused_skips_work = dims.len_q <= 4 && !blocked;
                // A preference for the fused kernel is measured on calls of many query rows:
                // below one subgroup's 32 rows the fused kernel shares nothing, and where it
                // does not split keys among workgroups either (CPU adapters) while the
                // register-blocked kernels serve three passes, those won (the decode above).
                let few_rows =
                    dims.len_q < fused::SHARED_ROWS && blocked && tuning.fused_split_groups == 0;
                // And it holds where the call runs the kind of fused kernel it was measured
                // with (`tune`'s probe; for the defaults, the kernel of 8-lane subgroups):
                // elsewhere the fused kernel can be the slower (on lavapipe the shared-keys
                // kernel, which a head size past 192 takes, ran bert-base 48 ms against 39).
                let measured_kind = || {
                    let kind = |v: &fused::Variant| (v.direct, v.subgroups, v.lanes);
                    let probe = fused_variant(gpu, &preference_probe(gpu), true);
                    probe.is_ok()
                        && variant.as_ref().ok().map(kind) == probe.as_ref().ok().map(kind)
                };
                let preferred = tuning.prefer_fused && !few_rows && measured_kind();
                if fused_fits && (preferred || fused_skips_work) {
                    fused(variant).or_else(|_| three_pass())
                } else if fused_fits {
                    // Tuned to prefer three passes on this adapter, unless its score blocks
                    // do not fit: then the fused path, which stores none.
                    three_pass().or_else(|_| fused(variant))
                } else {
                    three_pass()
                }
            }
        }
    }

    /// Which path this plan runs.
    pub fn path(&self) -> AttentionPath {
        match self {
            CorePlan::ThreePass(_) => AttentionPath::ThreePass,
            CorePlan::Fused { .. } => AttentionPath::Fused,
        }
    }

    /// Whether the fused path runs its register-blocked kernel (`fused_direct.wgsl`).
    pub fn register_blocked_fused(&self) -> bool {
        matches!(self, CorePlan::Fused { variant, .. } if variant.direct)
    }

    /// Whether the fused path shares loads through subgroups (`fused_lanes.wgsl`, or
    /// `fused_subgroup.wgsl`).
    pub fn fused_subgroups(&self) -> bool {
        matches!(self, CorePlan::Fused { variant, .. } if variant.subgroups)
    }

    /// Into how many runs of keys the fused kernel splits each row (1: not split, and for the
    /// three-pass path).
    pub fn key_splits(&self) -> u32 {
        match self {
            CorePlan::Fused {
                split: Some(split), ..
            } => split.splits,
            _ => 1,
        }
    }

    /// Scratch bytes allocated.
    pub fn bytes(&self) -> u64 {
        match self {
            CorePlan::ThreePass(ws) => ws.bytes(),
            CorePlan::Fused { split, .. } => split.as_ref().map_or(0, |s| s.partial.size()),
        }
    }
}

/// Records the whole attention core of `core` into `batch`, the way `plan` says.
pub(crate) fn record_core<'k>(
    gpu: &'k Gpu,
    batch: &mut Batch<'k>,
    core: &Core,
    plan: &'k CorePlan,
) -> Result<()> {
    let dims = &core.dims;
    let kernels = gpu.kernels();
    let causal_offset = core
        .causal
        .map(|c| c.offset(dims.len_q, dims.len_kv) as i32);
    let ws = match plan {
        CorePlan::Fused {
            kernel,
            variant,
            split,
        } => {
            if core.weights.is_some() {
                return Err(Error::Config(
                    "the fused path cannot return attention weights".into(),
                ));
            }
            check_grid("batch × heads", dims.batch * dims.heads_q)?;
            fused::record(
                batch,
                kernels,
                (kernel, *variant),
                split.as_ref(),
                core,
                causal_offset,
            );
            return Ok(());
        }
        CorePlan::ThreePass(ws) => ws,
    };
    let (plan, scores) = (ws.plan, &ws.scores);
    let matmuls = kernels.matmuls(gpu.device(), core.storage.operands());
    let scores_args = qk::Scores {
        dims: *dims,
        q: core.q,
        k: core.k,
        scale: core.scale,
        causal_offset,
        masks: core.masks,
    };
    let values = av::Values {
        dims: *dims,
        v: core.v,
        out: core.out,
        causal_offset,
    };
    let av_choice = av::choose(kernels, matmuls, core.storage, &values, plan.rows as u32)?;
    // With weights, softmax writes every probability: they are copied out.
    let read_rows = core.weights.is_none().then(|| av_choice.limit_rows());
    let (h, l, s) = (dims.heads_q as u64, dims.len_q as u64, dims.len_kv as u64);
    for block in plan.blocks(dims) {
        qk::record(batch, kernels, matmuls, &scores_args, block, scores);
        softmax::record(
            batch,
            kernels,
            (block, dims.heads_q as u32),
            (s as u32, causal_offset, read_rows),
            scores,
        )?;
        if let Some(target) = core.weights {
            let (b0, bc, r0, rows) = (
                block.batch0 as u64,
                block.batch_count as u64,
                block.row0 as u64,
                block.rows as u64,
            );
            // Per head the block's probabilities are already laid out as [b, h, rows, S];
            // averaged they go through the head-mean kernel first. Either way whole-length
            // blocks are one copy, partial ones one copy per (batch, head) or per batch.
            let (src, heads_out) = match &ws.mean {
                Some(mean) => {
                    head_mean::record(
                        batch,
                        kernels,
                        (rows * s) as u32,
                        h as u32,
                        bc as u32,
                        scores,
                        mean,
                    );
                    (mean, 1)
                }
                None => (scores, h),
            };
            if rows == l {
                let size = 4 * bc * heads_out * l * s;
                batch.copy(src, 0, target, 4 * b0 * heads_out * l * s, size);
            } else {
                for i in 0..bc * heads_out {
                    batch.copy(
                        src,
                        4 * i * rows * s,
                        target,
                        4 * ((b0 * heads_out + i) * l + r0) * s,
                        4 * rows * s,
                    );
                }
            }
        }
        av::record(batch, &av_choice, &values, block, scores);
    }
    Ok(())
}

/// Records a prepared call into a fresh batch (keeping only kernel `only`, if given),
/// submits it and waits: what `run` and `run_kernel` of the prepared calls do.
pub(crate) fn run_recorded<'k>(
    gpu: &'k Gpu,
    only: Option<&'k str>,
    record: impl FnOnce(&mut Batch<'k>) -> Result<()>,
) -> Result<()> {
    if let Some(name) = only {
        crate::kernels::check_kernel_name(name)?;
    }
    scoped(gpu, "running attention", || {
        let mut batch = match only {
            Some(name) => Batch::only(gpu, name),
            None => Batch::new(gpu),
        };
        record(&mut batch)?;
        batch.submit();
        buffer::wait(gpu)
    })
}

/// Like [`run_recorded`], timed: wall clock from the start of recording, and per-dispatch
/// GPU timestamps where the device has them.
pub(crate) fn run_recorded_timed<'k>(
    gpu: &'k Gpu,
    record: impl FnOnce(&mut Batch<'k>) -> Result<()>,
) -> Result<crate::batch::RunTiming> {
    scoped(gpu, "timed run", || {
        let start = std::time::Instant::now();
        let mut batch = Batch::new(gpu);
        record(&mut batch)?;
        let mut timing = crate::batch::run_timed(gpu, batch)?;
        timing.wall = start.elapsed();
        Ok(timing)
    })
}

/// `Err(TooLarge)` when `count` workgroups exceed one grid dimension.
fn check_grid(what: &str, count: usize) -> Result<()> {
    if count > MAX_GROUPS as usize {
        return Err(Error::TooLarge {
            what: format!("{count} {what} in one dispatch"),
            needed: count as u64,
            limit: MAX_GROUPS as u64,
            limit_name: "max_compute_workgroups_per_dimension",
        });
    }
    Ok(())
}

/// Runs `f` inside validation and out-of-memory error scopes, so wgpu errors come back as
/// [`Error::Wgpu`] instead of reaching wgpu's default handler (which panics).
pub(crate) fn scoped<T>(
    gpu: &Gpu,
    during: &'static str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    gpu.check_alive()?;
    let oom = gpu
        .device()
        .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = gpu.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let result = f();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    gpu.check_alive()?;
    if let Some(e) = validation.or(oom) {
        // A buffer whose creation failed keeps its size and usage: never hand it out again.
        gpu.release_idle_buffers();
        // wgpu invalidates a lost device's objects before its loss callback runs: give the
        // callback its chance, so a lost device reads as DeviceLost, not a validation error.
        gpu.device().poll(wgpu::PollType::Poll).ok();
        gpu.check_alive()?;
        return Err(Error::Wgpu {
            during,
            message: e.to_string(),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(batch: usize, heads: usize, len: usize) -> CoreDims {
        CoreDims {
            batch,
            heads_q: heads,
            heads_kv: heads,
            len_q: len,
            len_kv: len,
            head_dim: 8,
            head_dim_v: 8,
        }
    }

    /// Staged tiles of 64 query rows and 128 keys per workgroup.
    const TILES: GridTiles = GridTiles {
        rows: 64,
        keys: 128,
    };

    #[test]
    fn small_problems_are_one_block() {
        let d = dims(2, 4, 16);
        let plan = plan_blocks(&d, 1 << 20, 128 << 20, TILES).unwrap();
        assert_eq!(
            plan,
            BlockPlan {
                batches: 2,
                rows: 16
            }
        );
        assert_eq!(plan.blocks(&d).len(), 1);
    }

    #[test]
    fn long_sequences_are_split_by_rows_within_the_binding() {
        // 8 heads × 4096²: 512 MiB of scores against a 128 MiB binding.
        let d = dims(1, 8, 4096);
        let plan = plan_blocks(&d, 256 << 20, 128 << 20, TILES).unwrap();
        assert_eq!(
            plan,
            BlockPlan {
                batches: 1,
                rows: 1024
            }
        );
        let blocks = plan.blocks(&d);
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[3].row0, 3072);
        assert!(bytes_of_f32(plan.scores_len(&d)) <= 128 << 20);
    }

    #[test]
    fn batches_are_grouped_and_ragged_ends_handled() {
        let d = dims(5, 2, 10);
        let row = bytes_of_f32(2 * 10);
        let plan = plan_blocks(&d, 2 * 10 * row, 1 << 30, TILES).unwrap();
        assert_eq!(
            plan,
            BlockPlan {
                batches: 2,
                rows: 10
            }
        );
        let blocks = plan.blocks(&d);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[2].batch_count, 1);
        let plan = plan_blocks(&d, 3 * row, 1 << 30, TILES).unwrap();
        let blocks = plan.blocks(&d);
        assert_eq!(blocks.len(), 5 * 4);
        assert_eq!(blocks[3].rows, 1);
    }

    #[test]
    fn a_row_that_cannot_fit_is_an_error() {
        let d = dims(1, 8, 1 << 20);
        assert!(matches!(
            plan_blocks(&d, 1 << 20, 128 << 20, TILES),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn blocks_fit_the_grid() {
        // One query row against more keys than 65535 workgroups of 128 cover: refused (the
        // fused path serves it); a million query rows of few keys: blocks of at most
        // 65535 × 64 rows.
        let long_keys = CoreDims {
            len_q: 1,
            len_kv: 65535 * 128 + 4,
            ..dims(1, 1, 1)
        };
        assert!(matches!(
            plan_blocks(&long_keys, 1 << 40, 1 << 40, TILES),
            Err(Error::TooLarge { .. })
        ));
        let many_rows = CoreDims {
            len_q: 5_000_000,
            len_kv: 4,
            ..dims(1, 1, 1)
        };
        let plan = plan_blocks(&many_rows, 1 << 40, 1 << 40, TILES).unwrap();
        assert_eq!(plan.rows, 65535 * 64);
        assert_eq!(plan.blocks(&many_rows).len(), 2);
    }
}
