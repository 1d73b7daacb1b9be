// Fused attention with a subgroup of 8 lanes working as one: O = softmax(Q·Kᵀ·scale +
// masks)·V by the online softmax of FlashAttention-2, for devices whose subgroups are
// exactly 8 wide (lavapipe). Each subgroup owns 32 query rows and walks their keys 32 at a
// time, with no barriers (each invocation touches only its own part of workgroup memory):
//   - scores: lane j takes keys s0 + j, + 8, + 16 and + 24 against all 32 rows. It loads
//     query rows j, 8 + j, 16 + j and 24 + j and the subgroup broadcasts them
//     (lanes8.wgsl), so a step of 4 along the depth costs each lane 4 query loads and 4
//     key loads for 128 dot products (by default the rows are taken 16 at a time, the
//     keys loaded twice: HALVES), and the scores go no further than workgroup memory;
//   - softmax: each row's block max comes from subgroupMax, so the running max is the same
//     in every lane; each lane sums only its own keys' probabilities (rescaled as the max
//     moves) and the subgroup adds the sums up once, at the end;
//   - values: lane j owns the output columns 4·(j + 8i) .. + 4 of all 32 rows. It loads
//     its columns of the block's 32 value rows once, and the probabilities of each key
//     come by broadcast from the lane that scored it: 32 keys are added to 4 outputs per
//     round trip to workgroup memory.
// fused_direct.wgsl, by contrast, loads every query row anew per block and takes its
// outputs to workgroup memory and back for every 8 keys: on lavapipe, where a load costs a
// per-lane loop and a broadcast a register move, this kernel ran bert-base's core 2×
// faster (blocks of 16 keys: 1.6×).
//
// Needs vec4 loads and stores (head sizes, offsets and strides of Q, K, V and the output that
// are multiples of 4)
// and subgroups of exactly 8 lanes, the workgroup a whole number of them. Modes 0 and 3–5
// of fused_params.wgsl (whole rows of keys, or runs of keys with the rows' state carried in
// `partial`); fused.wgsl serves split keys.
//
// Every lane must reach each subgroup operation: the subgroup's rows share one walk (to the
// causal limit of its last row; keys past a row's own limit are masked), walk again together
// and return early only together.
//
// Non-finite values, as fused_direct.wgsl: the products run blindly, and a subgroup whose
// rows end non-finite (other than rows that are NaN anyway) walks its keys again with the
// careful product (fma_unless_zero), so a key of probability 0 contributes nothing even
// when its value is not finite. A row with a NaN or +inf score is written as NaN: the lane
// that meets it leaves that key out of its steps (as -inf) and flags the row, and the flags
// are merged over the lanes. Rows that see no key are written as zeros.
//
// The storage prelude names `Elem` and `Out`; float.wgsl, heads.wgsl, masks.wgsl,
// fused_params.wgsl and lanes8.wgsl (prepended) supply the float helpers, the heads, the
// masks, the parameters and the broadcasts.

@group(0) @binding(1) var<storage, read> q: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<Elem>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<Elem>>;
// The output and the rows' state between runs of keys (fused_params.wgsl), as vec4: one
// access where 4 scalar ones cost llvmpipe 4 per-lane loops to compile. Output rows start
// at multiples of 4 (CoreNeeds::vec4_views), and so do the state's rows (dv a multiple of
// 4); its statistics, 3 per row, are read and written one component at a time.
@group(0) @binding(6) var<storage, read_write> o: array<vec4<Out>>;
@group(0) @binding(7) var<storage, read_write> partial: array<vec4<f32>>;

override WG: u32 = 16u;  // invocations per workgroup: a whole number of 8-lane subgroups
override CPL: u32 = 2u;  // output vec4s per lane and row: ceil(dv / 32)
// The dot products 16 query rows at a time (dot_keys16), each lane loading its keys twice
// per block, instead of all 32 at once (dot_keys32): half the code of the hottest loop and
// of the score stores, so the kernel compiles in less time (on lavapipe 0.6 s against
// 0.75–0.8) and runs slower (there about 10%).
override HALVES: bool = true;

const ROWS: u32 = 32u;   // query rows per subgroup
const KEYS: u32 = 32u;   // keys per block: 4 per lane

// The 32 rows are taken in 8 groups of 4 (group g: rows 4g .. 4g + 4, one per component).
// Only the block's dot products keep their state in registers: a private array indexed by
// constants (on lavapipe one index computed at run time moves a whole array out of
// registers, and the per-lane code of each such access costs more compile time than a
// workgroup access). Everything the loops over row groups visit lives in workgroup memory,
// each invocation in its own slots, so those loops stay loops: compile time grows with the
// memory accesses in the code (on lavapipe each is a loop over the lanes, about 5 ms of
// compiling per vec4 load and 9 per store), and a version with the 8 groups' softmax
// spelled out compiled for 2.3 s against 0.82–0.86 s (one with the outputs in registers:
// 14 s).
var<private> lane: u32;
var<private> slot: u32; // the invocation's index in its workgroup
// The rows (bit r: row m0 + r) that met a NaN or +inf score, in this lane until merged.
var<private> bad_rows: u32;

// This invocation's outputs: row r's vec4 (lane + 8i) at acc[acc_at(r, i)].
var<workgroup> acc: array<vec4<f32>, ROWS * CPL * WG>;
// The block's scores, then probabilities: the lane's key κ (s0 + lane + 8κ) against group
// g's rows at probs[(8κ + g) * WG + slot].
var<workgroup> probs: array<vec4<f32>, 32 * WG>;
// Per group: the block's factor of shrinking.
var<workgroup> shrinks: array<vec4<f32>, 8 * WG>;
// Per group: the running max (the same in every lane), and this lane's part of the running
// sum (the subgroup's sum once merged).
var<workgroup> stats: array<vec4<f32>, 16 * WG>;

fn acc_at(r: u32, i: u32) -> u32 {
    return (r + ROWS * i) * WG + slot;
}

fn probs_at(j: u32) -> u32 {
    return j * WG + slot;
}

fn max_at(g: u32) -> u32 {
    return g * WG + slot;
}

fn sum_at(g: u32) -> u32 {
    return (8u + g) * WG + slot;
}

fn is_bad(r: u32) -> bool {
    return ((bad_rows >> r) & 1u) != 0u;
}

// Element s of `partial` (a row's statistic).
fn stat(s: u32) -> f32 {
    return partial[s / 4u][s % 4u];
}

// What a subgroup's walk needs beside the lane's state.
struct Walk {
    hd: Head,
    z: u32,
    zs: u32,        // batch × heads: the launch's z extent
    m0: u32,        // the subgroup's first query row
    last_row: u32,  // its last row that exists
    groups: u32,    // its groups of 4 rows that hold a row that exists
    dv4: u32,
    // Scores of a block: its 4 keys in this lane (s0 + lane + 8κ), and whether they need
    // the masks.
    keys: vec4<u32>,
    masked: bool,
}

fn poisons4(x: vec4<f32>) -> vec4<bool> {
    return vec4<bool>(poisons_row(x.x), poisons_row(x.y), poisons_row(x.z), poisons_row(x.w));
}

fn neg_inf4(x: vec4<f32>) -> vec4<bool> {
    return bitcast<vec4<u32>>(x) == vec4<u32>(0xff800000u);
}

// The row of group g, component c, that exists (rows past the end repeat the last).
fn row_of(w: Walk, g: u32, c: u32) -> u32 {
    return min(w.m0 + 4u * g + c, w.last_row);
}

// Adds to s[2h], s[2h + 1] (+ 8κ for key κ) the dot products of 8 query rows (x, lane j's
// row j of the 8) with the lane's 4 keys' vec4s (kv).
fn dot_rows8(s: ptr<function, array<vec4<f32>, 32>>, h: u32, x: array<vec4<f32>, 8>, kv: array<vec4<f32>, 4>) {
    for (var kappa = 0u; kappa < 4u; kappa++) {
        let lo = 2u * h + 8u * kappa;
        (*s)[lo] = dots((*s)[lo], kv[kappa], x[0], x[1], x[2], x[3]);
        (*s)[lo + 1u] = dots((*s)[lo + 1u], kv[kappa], x[4], x[5], x[6], x[7]);
    }
}

// The same for 16 rows: s[2h], s[2h + 1] (+ 4κ for key κ). (WGSL has no array of a size
// the caller picks.)
fn dot_rows8_16(s: ptr<function, array<vec4<f32>, 16>>, h: u32, x: array<vec4<f32>, 8>, kv: array<vec4<f32>, 4>) {
    for (var kappa = 0u; kappa < 4u; kappa++) {
        let lo = 2u * h + 4u * kappa;
        (*s)[lo] = dots((*s)[lo], kv[kappa], x[0], x[1], x[2], x[3]);
        (*s)[lo + 1u] = dots((*s)[lo + 1u], kv[kappa], x[4], x[5], x[6], x[7]);
    }
}

// The lane's 4 keys' vec4 t (their rows start at vec4s `keys`).
fn key_vecs(keys: vec4<u32>, t: u32) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(
        vec4<f32>(k[keys.x + t]), vec4<f32>(k[keys.y + t]),
        vec4<f32>(k[keys.z + t]), vec4<f32>(k[keys.w + t]),
    );
}

// The 32 rows' scores of the lane's 4 keys, whose rows start at vec4s `keys`, scaled, into
// probs: lane j loads vec4 t of rows j, 8 + j, 16 + j, 24 + j (`rows`) and the subgroup
// shares them.
fn dot_keys32(rows: vec4<u32>, keys: vec4<u32>, steps: u32) {
    var s: array<vec4<f32>, 32>;
    for (var t = 0u; t < steps; t++) {
        let kv = key_vecs(keys, t);
        dot_rows8(&s, 0u, from_lanes8(vec4<f32>(q[rows.x + t])), kv);
        dot_rows8(&s, 1u, from_lanes8(vec4<f32>(q[rows.y + t])), kv);
        dot_rows8(&s, 2u, from_lanes8(vec4<f32>(q[rows.z + t])), kv);
        dot_rows8(&s, 3u, from_lanes8(vec4<f32>(q[rows.w + t])), kv);
    }
    for (var j = 0u; j < 32u; j++) {
        probs[probs_at(j)] = s[j] * p.scale;
    }
}

// The same 16 rows (groups 4h .. 4h + 4) at a time, for the halves that hold a row.
fn dot_keys16(w: Walk, rows: vec4<u32>, keys: vec4<u32>, steps: u32) {
    for (var half = 0u; half < (w.groups + 3u) / 4u; half++) {
        let ra = rows[2u * half];
        let rb = rows[2u * half + 1u];
        var s: array<vec4<f32>, 16>;
        for (var t = 0u; t < steps; t++) {
            let kv = key_vecs(keys, t);
            dot_rows8_16(&s, 0u, from_lanes8(vec4<f32>(q[ra + t])), kv);
            dot_rows8_16(&s, 1u, from_lanes8(vec4<f32>(q[rb + t])), kv);
        }
        // s[m + 4κ]: group 4h + m, key κ.
        for (var kappa = 0u; kappa < 4u; kappa++) {
            for (var m = 0u; m < 4u; m++) {
                probs[probs_at(8u * kappa + 4u * half + m)] = s[m + 4u * kappa] * p.scale;
            }
        }
    }
}

// The block's scores through the masks and the causal limit where `w.masked`
// (keys past the end -inf).
fn mask_block(w: Walk) {
    if w.masked {
        // One loop over the 32 vec4s' 128 scores: too long for the compiler to unroll, which
        // would spell out a copy of the masks' reads per score (on lavapipe 0.2 s of
        // compiling for 64).
        for (var e = 0u; e < 128u; e++) {
            let j = e / 4u;
            let c = e % 4u;
            let key = w.keys[j / 8u];
            var x = neg_inf();
            if key < p.cols {
                x = masked_score(probs[probs_at(j)][c], w.hd, row_of(w, j % 8u, c), key);
            }
            probs[probs_at(j)][c] = x;
        }
    }
}

// The online-softmax step of the block, group by group: the running max, sum and flags
// moved on, the probabilities (in place of the scores) and the factors of shrinking in
// workgroup memory for add_values (or add_values_careful).
fn softmax_block(groups: u32) {
    for (var g = 0u; g < groups; g++) {
        var x = array<vec4<f32>, 4>(
            probs[probs_at(g)], probs[probs_at(8u + g)],
            probs[probs_at(16u + g)], probs[probs_at(24u + g)],
        );
        // A NaN or +inf score makes its row NaN: flag it, and leave the key out.
        var bad = vec4<bool>(false);
        for (var kappa = 0u; kappa < 4u; kappa++) {
            let b = poisons4(x[kappa]);
            bad = bad | b;
            x[kappa] = select(x[kappa], vec4<f32>(neg_inf()), b);
        }
        let bits = select(vec4<u32>(0u), vec4<u32>(1u, 2u, 4u, 8u), bad);
        bad_rows |= (bits.x | bits.y | bits.z | bits.w) << (4u * g);
        let max_old = stats[max_at(g)];
        let max_new = max(max_old, subgroupMax(max(max(x[0], x[1]), max(x[2], x[3]))));
        // Where a row has seen nothing yet, exp(−inf − 0) = 0.
        let pivot = select(max_new, vec4<f32>(0.0), neg_inf4(max_new));
        let shrink = exp(max_old - pivot);
        var sum = stats[sum_at(g)] * shrink;
        for (var kappa = 0u; kappa < 4u; kappa++) {
            let pr = exp(x[kappa] - pivot);
            sum += pr;
            probs[probs_at(g + 8u * kappa)] = pr;
        }
        stats[max_at(g)] = max_new;
        stats[sum_at(g)] = sum;
        shrinks[g * WG + slot] = shrink;
    }
}

// The 4 rows' outputs x plus one key's probabilities pr (one per row) times its value.
fn add_key(x: array<vec4<f32>, 4>, pr: vec4<f32>, val: vec4<f32>) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(
        fma(vec4<f32>(pr.x), val, x[0]), fma(vec4<f32>(pr.y), val, x[1]),
        fma(vec4<f32>(pr.z), val, x[2]), fma(vec4<f32>(pr.w), val, x[3]),
    );
}

// x plus 8 keys' probabilities pr[L] (key L of the 8) times their values vals[base + L].
fn add8(x0: array<vec4<f32>, 4>, pr: array<vec4<f32>, 8>, vals: array<vec4<f32>, 32>, base: u32) -> array<vec4<f32>, 4> {
    var x = add_key(x0, pr[0], vals[base]);
    x = add_key(x, pr[1], vals[base + 1u]);
    x = add_key(x, pr[2], vals[base + 2u]);
    x = add_key(x, pr[3], vals[base + 3u]);
    x = add_key(x, pr[4], vals[base + 4u]);
    x = add_key(x, pr[5], vals[base + 5u]);
    x = add_key(x, pr[6], vals[base + 6u]);
    return add_key(x, pr[7], vals[base + 7u]);
}

// This lane's column `col` (in vec4s from the head's start) of the value rows of keys
// s0 + 8κ .. + 8 into vals[8κ ..].
fn load_vals8(vals: ptr<function, array<vec4<f32>, 32>>, kappa: u32, s0: u32, col: u32, v_row: u32) {
    let last = p.cols - 1u;
    for (var key = 0u; key < 8u; key++) {
        (*vals)[8u * kappa + key] = vec4<f32>(v[col + min(s0 + 8u * kappa + key, last) * v_row]);
    }
}

// A group's 4 rows' outputs (one vec4 of each, from acc[a] = acc[acc_at(4g, i)]) times
// the group's factors of shrinking; and back to acc.
fn shrunk_group(a: u32, shrink: vec4<f32>) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(
        acc[a] * shrink.x, acc[a + WG] * shrink.y,
        acc[a + 2u * WG] * shrink.z, acc[a + 3u * WG] * shrink.w,
    );
}

fn store_group(a: u32, x: array<vec4<f32>, 4>) {
    acc[a] = x[0];
    acc[a + WG] = x[1];
    acc[a + 2u * WG] = x[2];
    acc[a + 3u * WG] = x[3];
}

// The block's 32 keys s0 .. s0 + 32 (key s0 + 8κ + L scored by lane L) added to every
// output of the lane, in order, shrunk first as the running max moved. A group's 4 rows
// take each value vec4 together, so every probability is a constant component (a loop over
// the rows, indexing them at run time, ran 6% slower on lavapipe).
fn add_values(s0: u32, v_base: u32, v_row: u32, w: Walk) {
    for (var i = 0u; i < CPL; i++) {
        // This lane's column (lane + 8i) of the 32 value rows.
        let col = v_base + min(lane + 8u * i, w.dv4 - 1u);
        var vals: array<vec4<f32>, 32>;
        load_vals8(&vals, 0u, s0, col, v_row);
        load_vals8(&vals, 1u, s0, col, v_row);
        load_vals8(&vals, 2u, s0, col, v_row);
        load_vals8(&vals, 3u, s0, col, v_row);
        for (var g = 0u; g < w.groups; g++) {
            let pa = from_lanes8(probs[probs_at(g)]);
            let pb = from_lanes8(probs[probs_at(8u + g)]);
            let pc = from_lanes8(probs[probs_at(16u + g)]);
            let pd = from_lanes8(probs[probs_at(24u + g)]);
            let a = acc_at(4u * g, i);
            var x = shrunk_group(a, shrinks[g * WG + slot]);
            x = add8(x, pa, vals, 0u);
            x = add8(x, pb, vals, 8u);
            x = add8(x, pc, vals, 16u);
            x = add8(x, pd, vals, 24u);
            store_group(a, x);
        }
    }
}

// x (group g's 4 rows' outputs, in column `col`) plus key s0 + key's probabilities times
// its value, where a probability of 0 adds nothing, even times a value that is not finite.
fn add_key_careful(x: array<vec4<f32>, 4>, g: u32, s0: u32, key: u32, col: u32, v_row: u32) -> array<vec4<f32>, 4> {
    // Lane key % 8 scored the key, as its κ = key / 8.
    let pr = subgroupShuffle(probs[probs_at(g + 8u * (key / 8u))], key % 8u);
    let val = vec4<f32>(v[col + min(s0 + key, p.cols - 1u) * v_row]);
    return array<vec4<f32>, 4>(
        fma_unless_zero(pr.x, val, x[0]), fma_unless_zero(pr.y, val, x[1]),
        fma_unless_zero(pr.z, val, x[2]), fma_unless_zero(pr.w, val, x[3]),
    );
}

// add_values for the careful walk: the same sums in the same order, with add_key_careful.
// Written small rather than fast, a key per step (it runs only for subgroups whose rows met
// a non-finite value): on lavapipe the careful products beside the fast ones in add_values
// made every walk 8–9% slower, and 4 keys per step cost 50–100 ms more compiling.
fn add_values_careful(s0: u32, v_base: u32, v_row: u32, w: Walk) {
    for (var i = 0u; i < CPL; i++) {
        let col = v_base + min(lane + 8u * i, w.dv4 - 1u);
        for (var g = 0u; g < w.groups; g++) {
            let a = acc_at(4u * g, i);
            var x = shrunk_group(a, shrinks[g * WG + slot]);
            for (var key = 0u; key < KEYS; key++) {
                x = add_key_careful(x, g, s0, key, col, v_row);
            }
            store_group(a, x);
        }
    }
}

// The lanes' flags and sums merged over the subgroup.
fn merge_rows(groups: u32) {
    bad_rows = subgroupOr(bad_rows);
    for (var g = 0u; g < groups; g++) {
        stats[sum_at(g)] = subgroupAdd(stats[sum_at(g)]);
    }
}

// The rows before the first block: nothing seen, or the state the previous run of keys
// saved (its sum in lane 0, since the lanes' parts are added up at the end).
fn start_rows(w: Walk, resumes: bool) {
    bad_rows = 0u;
    for (var r = 0u; r < ROWS; r++) {
        let l = min(w.m0 + r, w.last_row);
        var x = vec3<f32>(neg_inf(), 0.0, 0.0);
        if resumes {
            let st = partial_stats(0u, w.z, l, w.zs);
            x = vec3<f32>(stat(st), select(0.0, stat(st + 1u), lane == 0u), stat(st + 2u));
        }
        stats[max_at(r / 4u)][r % 4u] = x.x;
        stats[sum_at(r / 4u)][r % 4u] = x.y;
        if x.z != 0.0 {
            bad_rows |= 1u << r;
        }
        let at = partial_out(0u, w.z, l, w.zs) / 4u;
        for (var i = 0u; i < CPL; i++) {
            var y = vec4<f32>(0.0);
            if resumes {
                y = partial[at + min(lane + 8u * i, w.dv4 - 1u)];
            }
            acc[acc_at(r, i)] = y;
        }
    }
}

// Whether the rows, other than those that are NaN anyway, are finite in this lane's
// columns (after merge_rows).
fn rows_finite() -> bool {
    var finite = true;
    for (var r = 0u; r < ROWS; r++) {
        if !is_bad(r) {
            for (var i = 0u; i < CPL; i++) {
                finite = finite && all_finite(acc[acc_at(r, i)]);
            }
        }
    }
    return finite;
}

// The rows' state, for the next run of keys to go on from (after merge_rows).
fn save_rows(w: Walk) {
    for (var r = 0u; r < ROWS; r++) {
        let l = w.m0 + r;
        if l >= p.rows {
            break;
        }
        let at = partial_out(0u, w.z, l, w.zs) / 4u;
        for (var i = 0u; i < CPL; i++) {
            let col = lane + 8u * i;
            if col < w.dv4 {
                partial[at + col] = acc[acc_at(r, i)];
            }
        }
        if lane == 0u {
            let st = partial_stats(0u, w.z, l, w.zs);
            partial[st / 4u][st % 4u] = stats[max_at(r / 4u)][r % 4u];
            partial[(st + 1u) / 4u][(st + 1u) % 4u] = stats[sum_at(r / 4u)][r % 4u];
            partial[(st + 2u) / 4u][(st + 2u) % 4u] = select(0.0, 1.0, is_bad(r));
        }
    }
}

// The rows normalised into `o` (after merge_rows): a row that saw
// nothing (sum 0) as zeros, a flagged row as NaN.
fn write_rows(w: Walk) {
    let hd = w.hd;
    let o_base = p.o_offset + hd.batch * p.o_stride_b + hd.head_q * p.o_stride_h;
    for (var r = 0u; r < ROWS; r++) {
        let l = w.m0 + r;
        if l >= p.rows {
            break;
        }
        let sum = stats[sum_at(r / 4u)][r % 4u];
        var inv = 1.0 / sum;
        if sum == 0.0 {
            inv = 0.0;
        }
        if is_bad(r) {
            inv = nan();
        }
        let at = (o_base + l * p.o_stride_l) / 4u;
        for (var i = 0u; i < CPL; i++) {
            let col = lane + 8u * i;
            if col < w.dv4 {
                o[at + col] = vec4<Out>(acc[acc_at(r, i)] * inv);
            }
        }
    }
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(subgroup_invocation_id) invocation: u32,
) {
    lane = invocation;
    slot = t;
    let m0 = ((p.block0 + wg.x) * (WG / 8u) + subgroup) * ROWS;
    if m0 >= p.rows {
        return; // the whole subgroup
    }
    var w: Walk;
    w.z = wg.z;
    w.zs = groups.z;
    w.hd = head_of(wg.z, 0u, p.heads_q, p.group);
    w.m0 = m0;
    w.last_row = min(m0 + ROWS - 1u, p.rows - 1u);
    w.groups = (w.last_row - m0) / 4u + 1u;
    w.dv4 = p.depth_v / 4u;
    let hd = w.hd;
    // In vec4s: this head's rows of Q, K and V.
    let head_rows = vec_rows(hd);
    // The query rows this lane loads for the subgroup.
    let rows = vec4<u32>(
        head_rows.q_base + min(m0 + lane, w.last_row) * head_rows.q_row,
        head_rows.q_base + min(m0 + 8u + lane, w.last_row) * head_rows.q_row,
        head_rows.q_base + min(m0 + 16u + lane, w.last_row) * head_rows.q_row,
        head_rows.q_base + min(m0 + 24u + lane, w.last_row) * head_rows.q_row,
    );

    // Keys past the causal limit of the last row are not visited; keys before `open_end`
    // are visible to all 32 rows, unmasked.
    var kv_end = p.cols;
    var open_end = p.cols;
    if (p.flags & 4u) != 0u {
        kv_end = u32(clamp(i32(w.last_row) + p.causal_offset + 1, 0, i32(p.cols)));
        open_end = u32(clamp(i32(m0) + p.causal_offset + 1, 0, i32(p.cols)));
    }
    if (p.flags & 3u) != 0u {
        open_end = 0u;
    }
    // Modes 3–5: this dispatch's run of keys (empty past the causal limit).
    var kv_begin = 0u;
    if p.mode >= 3u {
        kv_begin = min(p.run * p.split_len, kv_end);
        kv_end = min(kv_begin + p.split_len, kv_end);
    }
    let resumes = p.mode == 4u || p.mode == 5u;

    for (var walk = 0u; walk < 2u; walk++) {
        let careful = walk == 1u;
        start_rows(w, resumes);
        for (var s0 = kv_begin; s0 < kv_end; s0 += KEYS) {
            w.keys = vec4<u32>(s0 + lane) + vec4<u32>(0u, 8u, 16u, 24u);
            w.masked = s0 + KEYS > open_end;
            let key_rows = vec4<u32>(head_rows.k_base)
                + min(w.keys, vec4<u32>(p.cols - 1u)) * head_rows.k_row;
            if HALVES {
                dot_keys16(w, rows, key_rows, p.depth / 4u);
            } else {
                dot_keys32(rows, key_rows, p.depth / 4u);
            }
            mask_block(w);
            softmax_block(w.groups);
            if careful {
                add_values_careful(s0, head_rows.v_base, head_rows.v_row, w);
            } else {
                add_values(s0, head_rows.v_base, head_rows.v_row, w);
            }
        }
        // A row that is not NaN anyway and ended non-finite met a non-finite value: walk
        // again, carefully.
        merge_rows(w.groups);
        if careful || subgroupAll(rows_finite()) {
            break;
        }
    }

    // Modes 3 and 4: the state the next run goes on from.
    if p.mode == 3u || p.mode == 4u {
        save_rows(w);
    } else {
        write_rows(w);
    }
}
