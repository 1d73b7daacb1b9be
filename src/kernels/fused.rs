//! `fused.wgsl`, `fused_direct.wgsl` and `fused_lanes.wgsl`: the whole attention core in
//! one kernel (FlashAttention-2: key blocks walked with an online softmax; the score matrix
//! is never stored), staged through workgroup memory, register-blocked, or with 8-lane
//! subgroups of 32 query rows.
//!
//! The workgroup shape depends on the head sizes (staged: one invocation column per eight
//! value columns, one staged query row of `d` floats; register-blocked: the output rows each
//! invocation keeps), so pipelines are built per head-size class — sizes rounded up to a
//! power of two — once per device, on first use.
//!
//! Where a driver caps how long an invocation may loop (llvmpipe), long rows of keys are
//! walked in runs, one launch each, the rows' state carried between them (`Split`).
//!
//! A call with fewer query blocks × heads than the tuning's `fused_split_groups` (decoding:
//! one query block per head) splits its keys among workgroups instead (`Split`): the
//! kernel writes each split's partial rows, `fused_combine.wgsl` merges them, and a last
//! launch recomputes whole any query block in which a split met a non-finite value.

use bytemuck::{Pod, Zeroable};

use super::{Kernel, Kernels, Storage, mask_params, shader_source};
use crate::attention::Core;
use crate::batch::Batch;
use crate::buffer::Pooled;
use crate::error::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    rows: u32,
    cols: u32,
    depth: u32,
    depth_v: u32,
    heads_q: u32,
    group: u32,
    flags: u32,
    splits: u32,
    q: [u32; 4],
    k: [u32; 4],
    v: [u32; 4],
    o: [u32; 4],
    scale: f32,
    causal_offset: i32,
    split_len: u32,
    mode: u32,
    mask0: [u32; 4],
    mask1: [u32; 4],
    run: u32,
    /// First query block of this launch: grids of more than `MAX_GROUPS` blocks are cut
    /// into launches of at most that many.
    block0: u32,
    _pad: [u32; 2],
}

/// `fused.wgsl`'s modes.
const WHOLE: u32 = 0;
const SPLIT: u32 = 1;
const FLAGGED_WHOLE: u32 = 2;
const FIRST_RUN: u32 = 3;
const MIDDLE_RUN: u32 = 4;
const LAST_RUN: u32 = 5;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct CombineParams {
    rows: u32,
    depth_v: u32,
    splits: u32,
    block_rows: u32,
    blocks: u32,
    heads_q: u32,
    group: u32,
    _pad0: u32,
    o: [u32; 4],
}

/// Keys split into `splits` runs of `split_len` keys (a multiple of the key block): walked
/// by separate workgroups at once, their partial results in `partial` and merged by
/// `combine` (flash-decoding), or — `sequential` — walked one run after another by the same
/// workgroups, `partial` carrying the rows' state from each run to the next (where a driver
/// caps how long an invocation may loop).
pub(crate) struct Split {
    pub splits: u32,
    pub split_len: u32,
    pub sequential: bool,
    /// Unnormalised outputs, statistics and flags of every split (layout in
    /// `fused_params.wgsl`);
    /// for sequential runs, one split's worth.
    pub partial: Pooled,
    pub combine: Kernel,
}

/// Fewest key blocks a split takes: fewer would spend more on merging than they save.
const MIN_BLOCKS_PER_SPLIT: u32 = 2;

/// Most keys one workgroup walks where the driver caps an invocation's loops
/// (`kernels::loop_cap`): on lavapipe one query row against 8192 keys in one workgroup came
/// out wrong (its loops stopped short) and 4096 right; longer rows are walked in runs.
pub const KEYS_UNDER_LOOP_CAP: u32 = 2048;

impl Split {
    /// How many splits a call of `len_q` query rows, `len_kv` keys and `heads` (batch ×
    /// query heads) should take so that about `target_groups` workgroups run: 1 (no split)
    /// when the call already has that many, or its keys are too few to share.
    pub fn count(
        variant: &Variant,
        len_q: usize,
        len_kv: usize,
        heads: usize,
        target_groups: u32,
    ) -> u32 {
        let groups = (len_q as u32).div_ceil(variant.rows()) as u64 * heads as u64;
        if target_groups == 0
            || groups >= target_groups as u64
            || len_q > super::MAX_GROUPS as usize
        {
            return 1;
        }
        let key_blocks = (len_kv as u32).div_ceil(variant.bc);
        let wanted = (target_groups as u64).div_ceil(groups) as u32;
        let most = (key_blocks / MIN_BLOCKS_PER_SPLIT).clamp(1, super::MAX_GROUPS);
        wanted.clamp(1, most)
    }

    /// Elements of the partial buffer, in whole vec4s (`fused_lanes.wgsl` views it as vec4).
    pub fn partial_len(splits: u32, len_q: usize, dv: usize, heads: usize, blocks: u32) -> usize {
        (splits as usize * heads * (len_q * (dv + 3) + blocks as usize)).next_multiple_of(4)
    }
}

/// Invocations per workgroup the register-blocked fused kernel — or, for a call of `len_q`
/// query rows with loads shared through subgroups of `width` (`Variant::sharing`), the
/// kernel that shares them — runs with when the tuning asks for at most `invocations`, for
/// head sizes `d`, `dv` on a device with `limits` (`None`: it cannot run them, and the
/// staged kernel does).
pub fn direct_workgroup(
    invocations: u32,
    d: usize,
    dv: usize,
    len_q: usize,
    width: Option<u32>,
    limits: &wgpu::Limits,
) -> Option<u32> {
    // The halving of the dot products does not change the workgroup.
    Variant::direct(invocations, d, dv, limits)
        .map(|v| v.sharing(width, len_q, dv, false, limits).wg_y)
}

/// Loop iterations of `fused_direct.wgsl` per block of 8 keys and walk, where llvmpipe
/// counts each run of a loop as its iterations plus one (the check that ends it): the
/// block's own, the dot products (d/4), the masks (4 rows × 4) and the values (dv/4).
fn direct_block_iterations(d4: u64, dv4: u64) -> u64 {
    1 + (d4 + 1) + 4 * (4 + 1) + (dv4 + 1)
}

/// Loop iterations of `fused_direct.wgsl` outside its key blocks, in the worst case of two
/// walks, each loop run counted with its end: the walks' own, loading the 4 rows' state
/// (a loop over dv/4 in each) and the key loop's end in each, checking the rows after the
/// first, storing or writing them once.
fn direct_fixed_iterations(dv4: u64) -> u64 {
    let rows = 4 * (1 + dv4 + 1) + 1;
    3 + 2 * (rows + 1) + 2 * rows
}

/// Keys per block of `fused_lanes.wgsl`: 4 per lane.
pub const LANES_KEYS: u32 = 32;

/// Loop iterations of `fused_lanes.wgsl` per block of 32 keys in both walks together,
/// counting every loop as if none were unrolled and each run of a loop as its iterations
/// plus one (llvmpipe counts the check that ends it). Each walk: the block's own, the dot
/// products and the stores of their scores ([`lanes_dot_iterations`]), the masks (one loop
/// over 128 scores), the softmax (8 groups, each 2 loops of 4), and per output vec4 of a
/// lane (`columns`) the values: in the first walk 4 loops of 8 value loads and a loop over
/// 8 groups, in the careful one a loop over 8 groups of a loop over 32 keys.
fn lanes_block_iterations(d4: u64, columns: u64, halves: bool) -> u64 {
    let softmax = 8 * (1 + 2 * (4 + 1)) + 1;
    let walk = 1 + lanes_dot_iterations(d4, halves) + (128 + 1) + softmax;
    let values = columns * (1 + 4 * (8 + 1) + (8 + 1)) + 1;
    let careful_values = columns * (1 + 8 * (1 + 32 + 1) + 1) + 1;
    2 * walk + values + careful_values
}

/// Loop iterations of `fused_lanes.wgsl`'s dot products per block, each loop run counted
/// with its end: all 32 rows at once (d/4 steps, each 4 loops over 4 keys; then 32 vec4s
/// stored), or in two halves of 16 (each d/4 steps of 2 loops over 4 keys; then 4 loops
/// over 4 keys of loops over 4 groups).
fn lanes_dot_iterations(d4: u64, halves: bool) -> u64 {
    if halves {
        let half = 1 + d4 * (1 + 2 * (4 + 1)) + 1 + 4 * (1 + 4 + 1) + 1;
        2 * half + 1
    } else {
        d4 * (1 + 4 * (4 + 1)) + 1 + (32 + 1)
    }
}

/// Loop iterations of `fused_lanes.wgsl` outside its key blocks, in the worst case of two
/// walks, each loop run counted with its end: the walks' own; in each walk starting the 32
/// rows (a loop over `columns` in each row), the key loop's end and merging the lanes'
/// sums of 8 groups; checking the rows after the first; saving or writing them once.
fn lanes_fixed_iterations(columns: u64) -> u64 {
    let rows = 32 * (1 + columns + 1) + 1;
    3 + 2 * (rows + 1 + (8 + 1)) + 2 * rows
}

/// Query rows below which the register-blocked fused kernel reads its own keys and values:
/// 8 lanes of 4 rows. With fewer, sharing makes idle lanes walk the keys beside the busy
/// ones (a lavapipe decode step, 1 query row: 122 ms shared against 104 unshared).
pub const SHARED_ROWS: usize = 32;

/// The pipeline class of a problem: the override constants of `fused.wgsl`, or of
/// `fused_direct.wgsl` (`direct`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    /// Invocations along value columns (8 columns each); 1 when `direct`.
    pub wg_x: u32,
    /// Invocation rows; the workgroup takes `4·wg_y` query rows.
    pub wg_y: u32,
    /// vec4s of a staged query row; when `direct`, of an output row (held in workgroup
    /// memory).
    pub d_vec: u32,
    /// Keys per block.
    pub bc: u32,
    /// The register-blocked kernel: each invocation 4 query rows, keys 8 at a time.
    pub direct: bool,
    /// The register-blocked kernel with its keys and values shared among the lanes of a
    /// subgroup (`fused_subgroup.wgsl`), or — with `lanes` — the kernel whose 8-lane
    /// subgroups each take 32 query rows.
    pub subgroups: bool,
    /// `fused_lanes.wgsl`: each 8-lane subgroup takes 32 query rows, its lanes splitting
    /// the keys of a block for the scores and the output columns for the values (needs
    /// subgroups exactly 8 wide). `wg_y` counts invocations, a multiple of 8, and `bc` is 32.
    pub lanes: bool,
    /// With `lanes`: the dot products 16 query rows at a time (`Tuning::fused_lanes_halves`).
    pub halves: bool,
}

/// (query rows, keys) per workgroup, most reuse of each staged key first. More query rows
/// per workgroup share each staged key and value among more rows; they need more workgroup
/// memory and leave more of the last block idle on short queries.
pub const BLOCKS: [(u32, u32); 8] = [
    (32, 32),
    (64, 16),
    (32, 16),
    (16, 32),
    (16, 16),
    (16, 8),
    (4, 32),
    (4, 16),
];

impl Variant {
    /// Every class that could run head sizes `d`, `dv` (any device), best first.
    fn candidates(d: usize, dv: usize) -> impl Iterator<Item = Self> {
        let vecs = |n: usize| (n.div_ceil(4) as u32).next_power_of_two();
        // Eight value columns per invocation; at least four invocation columns, since each
        // row's statistics need an invocation.
        let wg_x = (dv.div_ceil(8) as u32).next_power_of_two().max(4);
        let d_vec = vecs(d);
        BLOCKS.into_iter().map(move |(rows, bc)| Self {
            wg_x,
            wg_y: rows / 4,
            d_vec,
            bc,
            direct: false,
            subgroups: false,
            lanes: false,
            halves: false,
        })
    }

    /// The register-blocked class for head sizes `d`, `dv` read as vec4, with at most
    /// `invocations` per workgroup: halved while their output rows do not fit the device's
    /// workgroup memory (`None` where the sizes are not multiples of 4, or not even 4
    /// invocations fit).
    pub fn direct(invocations: u32, d: usize, dv: usize, limits: &wgpu::Limits) -> Option<Self> {
        if !d.is_multiple_of(4) || !dv.is_multiple_of(4) {
            return None;
        }
        let mut variant = Self {
            wg_x: 1,
            wg_y: invocations,
            d_vec: ((dv / 4) as u32).next_power_of_two(),
            bc: 8,
            direct: true,
            subgroups: false,
            lanes: false,
            halves: false,
        };
        while variant.check(limits).is_err() && variant.wg_y > 4 {
            variant.wg_y /= 2;
        }
        variant.check(limits).is_ok().then_some(variant)
    }

    /// The register-blocked class for a call of `len_q` query rows and value head size `dv`
    /// with its loads shared through subgroups, where `width` is the device's widest
    /// subgroup (at least 8: `None` where it may not share) and the call has
    /// [`SHARED_ROWS`] rows:
    /// - subgroups of exactly 8: `fused_lanes.wgsl`, its workgroup a whole number of them,
    ///   halved while it does not fit `limits`, its dot products 16 rows at a time where
    ///   `halves`;
    /// - otherwise, or where not even 8 invocations of it fit: the keys and values shared
    ///   (`fused_subgroup.wgsl`) where the workgroup is a whole number of such subgroups,
    ///   so that every subgroup has lanes 0–7 to load the 8 keys (a workgroup of 12 on
    ///   8-wide subgroups would leave a subgroup of 4).
    pub fn sharing(
        self,
        width: Option<u32>,
        len_q: usize,
        dv: usize,
        halves: bool,
        limits: &wgpu::Limits,
    ) -> Self {
        let Some(width) = width.filter(|&w| w >= 8 && self.direct && len_q >= SHARED_ROWS) else {
            return self;
        };
        let keys_shared = Self {
            subgroups: self.wg_y.is_multiple_of(width),
            ..self
        };
        if width > 8 {
            return keys_shared;
        }
        let mut lanes = Self {
            wg_y: self.wg_y / 8 * 8,
            // The output row's vec4s, a whole number per lane.
            d_vec: (dv.div_ceil(4) as u32).next_multiple_of(8),
            bc: LANES_KEYS,
            subgroups: true,
            lanes: true,
            halves,
            ..self
        };
        while lanes.wg_y > 8 && lanes.check(limits).is_err() {
            lanes.wg_y = (lanes.wg_y / 2).max(8) / 8 * 8;
        }
        if lanes.wg_y >= 8 && lanes.check(limits).is_ok() {
            lanes
        } else {
            keys_shared
        }
    }

    /// `fused_lanes.wgsl`'s output vec4s per lane and row: the output row's vec4s among 8
    /// lanes.
    pub fn lanes_columns(&self) -> u32 {
        self.d_vec.div_ceil(8)
    }

    /// Most keys one invocation may walk in one dispatch where the driver stops an
    /// invocation's loops after `cap` iterations in all ([`super::loop_cap`]): a multiple
    /// of the key block.
    pub fn keys_under_loop_cap(&self, cap: u64, d: usize, dv: usize) -> u32 {
        if !self.direct {
            return KEYS_UNDER_LOOP_CAP;
        }
        let (d4, dv4) = ((d / 4) as u64, (dv / 4) as u64);
        // Per block: both walks' iterations (the second, careful walk in the worst case).
        let (fixed, per_block) = if self.lanes {
            let columns = self.lanes_columns() as u64;
            (
                lanes_fixed_iterations(columns),
                lanes_block_iterations(d4, columns, self.halves),
            )
        } else {
            (
                direct_fixed_iterations(dv4),
                2 * direct_block_iterations(d4, dv4),
            )
        };
        let blocks = cap.saturating_sub(fixed) / per_block;
        (blocks.clamp(1, (u32::MAX / self.bc) as u64) as u32) * self.bc
    }

    /// The class for a problem with `len_q` query rows and head sizes `d`, `dv` on a device
    /// with `limits`: the first candidate that fits, preferring no more query rows per
    /// workgroup than the problem has. `Err` names the limit when none fits.
    pub fn for_dims(
        len_q: usize,
        d: usize,
        dv: usize,
        limits: &wgpu::Limits,
        preferred: Option<(u32, u32)>,
    ) -> Result<Self> {
        let fitting: Vec<Self> = Self::candidates(d, dv)
            .filter(|v| v.check(limits).is_ok())
            .collect();
        // A decode step (one query row) wastes 3/4 of a 4-row block, not 15/16 of a 16-row one.
        let short = (len_q as u32).next_power_of_two().max(4);
        if let Some((rows, bc)) = preferred {
            let tuned = fitting
                .iter()
                .find(|v| v.rows() == rows && v.bc == bc && v.rows() <= short);
            if let Some(v) = tuned {
                return Ok(*v);
            }
        }
        fitting
            .iter()
            .find(|v| v.rows() <= short)
            .or(fitting.first())
            .copied()
            .ok_or_else(|| {
                let smallest = Self::candidates(d, dv).last().expect("non-empty");
                smallest.check(limits).expect_err("nothing fits")
            })
    }

    /// Query rows per workgroup.
    pub fn rows(&self) -> u32 {
        4 * self.wg_y
    }

    pub fn invocations(&self) -> u32 {
        self.wg_x * self.wg_y
    }

    /// vec4s of one staged key or value row.
    pub fn kv_vec(&self) -> u32 {
        self.d_vec.max(2 * self.wg_x)
    }

    /// Bytes of workgroup memory: staged queries, staged keys/values, the block of
    /// probabilities, six per-row statistics, three per-invocation partials, and three
    /// scalar flags (each variable counts rounded up to 16 bytes, as WebGPU counts them).
    pub fn workgroup_bytes(&self) -> u32 {
        if self.lanes {
            // Per invocation: 32 rows of its output columns, 32 vec4s of probabilities, 8 of
            // shrink factors and 16 of running maxima and sums.
            return (32 * self.lanes_columns() + 56) * self.invocations() * 16;
        }
        if self.direct {
            // Four output rows per invocation.
            return 4 * self.d_vec * self.invocations() * 16;
        }
        let rounded = |bytes: u32| bytes.next_multiple_of(16);
        self.rows() * self.d_vec * 16
            + self.bc * self.kv_vec() * 16
            + self.bc * self.wg_y * 16
            + 6 * rounded(self.rows() * 4)
            + 3 * rounded(self.invocations() * 4)
            + 3 * 16
    }

    /// Whether the device can run this class; the error says which limit stops it.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<()> {
        let too_large = |what: &str, needed: u32, limit: u32, limit_name| {
            Err(Error::TooLarge {
                what: format!("fused attention {what} for this head size"),
                needed: needed as u64,
                limit: limit as u64,
                limit_name,
            })
        };
        if !self.direct && !self.bc.is_multiple_of(self.wg_x / 4) {
            return too_large("row statistics", self.wg_x / 4, self.bc, "keys per block");
        }
        if self.invocations() > limits.max_compute_invocations_per_workgroup {
            return too_large(
                "workgroup",
                self.invocations(),
                limits.max_compute_invocations_per_workgroup,
                "max_compute_invocations_per_workgroup",
            );
        }
        if self.workgroup_bytes() > limits.max_compute_workgroup_storage_size {
            return too_large(
                "workgroup memory",
                self.workgroup_bytes(),
                limits.max_compute_workgroup_storage_size,
                "max_compute_workgroup_storage_size",
            );
        }
        Ok(())
    }
}

/// Builds the combine pipeline writing `storage`'s result type.
pub(crate) fn build_combine(device: &wgpu::Device, storage: Storage) -> Kernel {
    Kernel::new(
        device,
        "fused",
        &shader_source("fused_combine", storage).expect("known kernel"),
        size_of::<CombineParams>(),
        &[true, false],
        &[],
    )
}

/// Builds the pipeline of one class and storage.
pub(crate) fn build(device: &wgpu::Device, variant: Variant, storage: Storage) -> Kernel {
    let (name, constants) = if variant.direct {
        if variant.lanes {
            let shape = [
                ("WG", variant.wg_y),
                ("CPL", variant.lanes_columns()),
                ("HALVES", variant.halves as u32),
            ];
            ("fused_lanes", shape.to_vec())
        } else {
            let shape = [("WG", variant.wg_y), ("DV_VEC", variant.d_vec)];
            let name = if variant.subgroups {
                "fused_direct_subgroup"
            } else {
                "fused_direct"
            };
            (name, shape.to_vec())
        }
    } else {
        let shape = [
            ("WG_X", variant.wg_x),
            ("WG_Y", variant.wg_y),
            ("D_VEC", variant.d_vec),
            ("BC", variant.bc),
            ("KV_VEC", variant.kv_vec()),
        ];
        ("fused", shape.to_vec())
    };
    let constants: Vec<_> = constants.into_iter().map(|(k, v)| (k, v as f64)).collect();
    Kernel::new(
        device,
        "fused",
        &shader_source(name, storage).expect("known kernel"),
        size_of::<Params>(),
        &[true, true, true, true, true, false, false],
        &constants,
    )
}

/// Records the fused core `f` over every batch, head and row: one launch of `kernel` (built
/// for the core's class) per 65535 query blocks; with a sequential `split`, that per run of
/// keys; with a parallel `split` three launches — the splits, their merge, and the
/// recomputation of flagged query blocks. `causal_offset` is `f.causal` resolved for its
/// lengths.
pub(crate) fn record<'k>(
    batch: &mut Batch<'k>,
    kernels: &'k Kernels,
    (kernel, variant): (&'k Kernel, Variant),
    split: Option<&'k Split>,
    f: &Core,
    causal_offset: Option<i32>,
) {
    let d = &f.dims;
    let (flags, mask0, mask1) = mask_params(&f.masks, causal_offset);
    let params = Params {
        rows: d.len_q as u32,
        cols: d.len_kv as u32,
        depth: d.head_dim as u32,
        depth_v: d.head_dim_v as u32,
        heads_q: d.heads_q as u32,
        group: d.group() as u32,
        flags,
        splits: split.map_or(1, |s| s.splits),
        q: f.q.params(),
        k: f.k.params(),
        v: f.v.params(),
        o: f.out.params(),
        scale: f.scale,
        causal_offset: causal_offset.unwrap_or(0),
        split_len: split.map_or(0, |s| s.split_len),
        mode: WHOLE,
        mask0,
        mask1,
        run: 0,
        block0: 0,
        _pad: [0; 2],
    };
    let mask = |i: usize| f.masks[i].map_or(&kernels.placeholder, |m| m.buffer);
    let partial = split.map_or(&kernels.placeholder_rw, |s| &s.partial);
    let buffers = [
        f.q.buffer,
        f.k.buffer,
        f.v.buffer,
        mask(0),
        mask(1),
        f.out.buffer,
        partial,
    ];
    let blocks = (d.len_q as u32).div_ceil(variant.rows());
    let heads = (d.batch * d.heads_q) as u32;
    // Whole rows of keys per workgroup: one launch per MAX_GROUPS query blocks (a
    // grid's x may not exceed it).
    let launch_rows = |batch: &mut Batch<'k>, params: Params| {
        for block0 in (0..blocks).step_by(super::MAX_GROUPS as usize) {
            let count = (blocks - block0).min(super::MAX_GROUPS);
            let launch = Params { block0, ..params };
            batch.dispatch(kernel, &launch, &buffers, [count, 1, heads]);
        }
    };
    let Some(split) = split else {
        launch_rows(batch, params);
        return;
    };
    if split.sequential {
        // One launch per run; `partial` holds one split's worth of state.
        for run in 0..split.splits {
            let mode = match run {
                0 => FIRST_RUN,
                r if r + 1 == split.splits => LAST_RUN,
                _ => MIDDLE_RUN,
            };
            let run_params = Params {
                splits: 1,
                mode,
                run,
                ..params
            };
            launch_rows(batch, run_params);
        }
        return;
    }
    // Parallel splits only serve calls of fewer than MAX_GROUPS query rows (`Split::count`),
    // so their grids, and the merge's, fit as they are.
    let split_params = Params {
        mode: SPLIT,
        ..params
    };
    batch.dispatch(
        kernel,
        &split_params,
        &buffers,
        [blocks, split.splits, heads],
    );
    let combine = CombineParams {
        rows: d.len_q as u32,
        depth_v: d.head_dim_v as u32,
        splits: split.splits,
        block_rows: variant.rows(),
        blocks,
        heads_q: d.heads_q as u32,
        group: d.group() as u32,
        _pad0: 0,
        o: f.out.params(),
    };
    batch.dispatch(
        &split.combine,
        &combine,
        &[&split.partial, f.out.buffer],
        [d.len_q as u32, 1, heads],
    );
    let flagged = Params {
        mode: FLAGGED_WHOLE,
        ..params
    };
    batch.dispatch(kernel, &flagged, &buffers, [blocks, 1, heads]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of the register-blocked kernel stays under llvmpipe's cap in its worst case —
    /// every block masked, two walks — counted loop by loop as `fused_direct.wgsl` has
    /// them, and still walks more keys than the staged kernel's runs.
    #[test]
    fn register_blocked_runs_stay_under_the_loop_cap() {
        let cap = 65535;
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: 1 << 20,
            ..Default::default()
        };
        for (d, dv) in [
            (8, 8),
            (16, 16),
            (64, 64),
            (128, 128),
            (256, 256),
            (64, 256),
        ] {
            let variant = Variant::direct(16, d, dv, &limits).unwrap();
            let keys = variant.keys_under_loop_cap(cap, d, dv) as u64;
            assert!(keys.is_multiple_of(8), "d {d} dv {dv}: {keys} keys");
            let (d4, dv4) = (d as u64 / 4, dv as u64 / 4);
            // llvmpipe counts each run of a loop as its iterations plus the check that ends
            // it.
            let run = |n: u64| n + 1;
            // Loading, checking and storing the 4 rows' state: a loop over rows around one
            // over dv/4 vec4s.
            let state = run(4 * (1 + run(dv4)));
            // Per block of 8 keys: the key loop's own iteration, dot_block's loop, masked8's
            // loop of 4 for each of the 4 rows, and the values' loop.
            let per_block = 1 + run(d4) + 4 * run(4) + run(dv4);
            // Two walks (the walk loop's own 2), each loading the state and walking the
            // blocks (and ending the key loop); the first checks the state; one store or
            // write at the end.
            let worst = run(2) + 2 * (state + keys / 8 * per_block + 1) + state + state;
            assert!(
                worst <= cap,
                "d {d} dv {dv}: {keys} keys, {worst} iterations"
            );
        }
        let keys = Variant::direct(16, 64, 64, &limits)
            .unwrap()
            .keys_under_loop_cap(cap, 64, 64);
        assert!(keys > KEYS_UNDER_LOOP_CAP, "{keys}");
    }

    /// The 8-lane subgroup kernel's runs stay under llvmpipe's cap in the worst case, counted
    /// loop by loop as `fused_lanes.wgsl` has them, and are whole blocks of 32 keys; its
    /// workgroup halves to fit workgroup memory, and stays unshared where 8 do not fit or
    /// the subgroups are not 8 wide, or the call has fewer than 32 rows.
    #[test]
    fn subgroup_rows_kernel_runs_and_workgroups() {
        let cap = 65535;
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: 32 << 10,
            ..Default::default()
        };
        let lanes_halves = |wg, d, dv, halves| {
            Variant::direct(wg, d, dv, &limits).map(|v| v.sharing(Some(8), 64, dv, halves, &limits))
        };
        let lanes = |wg, d, dv| lanes_halves(wg, d, dv, false);
        let shapes = [(8, 8), (64, 64), (128, 128), (64, 40), (64, 80)];
        for ((d, dv), halves) in shapes.into_iter().flat_map(|s| [(s, false), (s, true)]) {
            let variant = lanes_halves(16, d, dv, halves).unwrap();
            assert_eq!(variant.halves, halves);
            assert!(
                variant.lanes && variant.wg_y.is_multiple_of(8),
                "{variant:?}"
            );
            let keys = variant.keys_under_loop_cap(cap, d, dv) as u64;
            assert!(
                keys.is_multiple_of(32) && keys >= 256,
                "d {d} dv {dv}: {keys}"
            );
            // ceil(dv / 32) output vec4s per lane: dv 80 takes 3, not a power of two.
            let columns = (dv as u64).div_ceil(32);
            assert_eq!(variant.lanes_columns() as u64, columns, "dv {dv}");
            // llvmpipe counts each run of a loop as its iterations plus the check that ends
            // it.
            let run = |n: u64| n + 1;
            // Starting the 32 rows (each a loop over its columns) in both walks, checking
            // them once, saving or writing them once.
            let rows = run(32 * (1 + run(columns)));
            // Per block: its own iteration; the dot products, each step with 4 (or, in each
            // of two halves, 2) runs of a loop over 4 keys, and storing 32 vec4s of scores
            // (in each half a loop over 4 keys of loops over 4 groups); the masks (128
            // scores); the softmax's loop over 8 groups, each with 2 loops of 4; and per
            // column, in the first walk, 4 loops of 8 value loads and a loop over 8 groups,
            // in the careful walk a loop over 8 groups of a loop over 32 keys.
            let steps = d as u64 / 4;
            let dots = if halves {
                let half = 1 + run(steps * (1 + 2 * run(4))) + run(4 * (1 + run(4)));
                run(2 * half)
            } else {
                run(steps * (1 + 4 * run(4))) + run(32)
            };
            let softmax = run(8 * (1 + 2 * run(4)));
            let values = run(columns * (1 + 4 * run(8) + run(8)));
            let careful_values = run(columns * (1 + run(8 * (1 + run(32)))));
            let walk = 1 + dots + run(128) + softmax;
            let per_block = 2 * walk + values + careful_values;
            // Each walk ends its key loop and merges the 8 groups' sums.
            let worst = run(2) + 2 * (rows + 1 + run(8)) + keys / 32 * per_block + rows + rows;
            assert!(
                worst <= cap,
                "d {d} dv {dv}: {keys} keys, {worst} iterations"
            );
        }
        // The keys per run the README states, at d 64: with the 16-row halves, and without.
        let keys_64 = |halves| {
            lanes_halves(16, 64, 64, halves)
                .unwrap()
                .keys_under_loop_cap(cap, 64, 64)
        };
        assert_eq!((keys_64(true), keys_64(false)), (1088, 1120));
        assert_eq!(lanes(16, 64, 64).unwrap().wg_y, 16); // (64 + 56) vec4s × 16 = 30 KiB
        assert_eq!(lanes(16, 64, 128).unwrap().wg_y, 8); // 184 vec4s × 8 = 23 KiB
        assert_eq!(lanes(12, 64, 64).unwrap().wg_y, 8);
        // dv 256: the register-blocked kernel fits 8 invocations (32 KiB), the lanes kernel
        // not even 8 ((256 + 56) vec4s × 8 = 39 KiB): the keys and values are shared instead.
        let wide = lanes(16, 64, 256).unwrap();
        assert!(wide.subgroups && !wide.lanes && wide.wg_y == 8, "{wide:?}");
        let direct = Variant::direct(16, 64, 64, &limits).unwrap();
        assert!(!direct.sharing(Some(4), 64, 64, true, &limits).subgroups);
        assert!(
            !direct
                .sharing(Some(8), SHARED_ROWS - 1, 64, true, &limits)
                .subgroups
        );
        let wide = direct.sharing(Some(16), 64, 64, true, &limits);
        assert!(wide.subgroups && !wide.lanes);
    }

    /// The register-blocked workgroup shrinks until its output rows fit workgroup memory:
    /// 4 rows of dv floats (rounded up to a power of two) per invocation.
    #[test]
    fn register_blocked_workgroups_shrink_to_fit() {
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: 32 << 10,
            ..Default::default()
        };
        let invocations = |wg, dv| Variant::direct(wg, 64, dv, &limits).map(|v| v.wg_y);
        assert_eq!(invocations(32, 64), Some(32)); // 32 KiB
        assert_eq!(invocations(64, 64), Some(32));
        assert_eq!(invocations(64, 128), Some(16));
        assert_eq!(invocations(16, 100), Some(16)); // dv 100 held as 128
        assert_eq!(invocations(64, 512), Some(4)); // 4 invocations × 4 rows × 128 vec4s
        assert_eq!(invocations(64, 1024), None);
        assert_eq!(Variant::direct(16, 62, 64, &limits), None);
    }
}
