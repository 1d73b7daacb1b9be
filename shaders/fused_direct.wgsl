// Fused attention, register-blocked: O = softmax(Q·Kᵀ·scale + masks)·V with the online
// softmax of fused.wgsl, but with nothing shared and no barriers. Each invocation owns 4
// query rows of one head and walks their keys 8 at a time:
//   - dot_block.wgsl computes the 4 × 8 block of scores from vec4 loads straight from
//     storage, as qk_direct.wgsl does;
//   - each row's running max and sum take the block in registers (`softmax_step`);
//   - the rows' whole output, 4 × dv, accumulates in the invocation's own part of workgroup
//     memory (no other invocation reads it, so no barrier): rescaled, then added to from
//     the block's 8 value rows, each vec4 of values serving all 4 rows. (A private array
//     indexed at run time made lavapipe compile for seconds, longer the larger it was;
//     blocks of 16 keys, halving the round trips to workgroup memory, ran slower.)
// On lavapipe a load costs the same per lane whether it brings one float or four, staging
// in workgroup memory only adds loads, and a barrier is dear: this is how the three-pass
// path's register-blocked kernels win there, and it lets the fused path keep up with them
// while its memory stays linear in length.
//
// Needs vec4 loads — head sizes, offsets and strides of Q, K and V that are multiples of 4 —
// and dv ≤ 4·DV_VEC; the crate runs fused.wgsl otherwise, and for split keys (modes 1
// and 2). Modes 0 and 3–5 (runs of keys, the rows' state carried in `partial`) are
// fused.wgsl's.
//
// Non-finite values: the products run blindly. A key of probability 0 must contribute
// nothing even when its value is not finite, and a non-finite value always leaves a
// non-finite output behind: so an invocation whose rows end non-finite walks its keys again
// with the careful product (fma_unless_zero), otherwise the same steps and roundings, hence
// the same result for its other rows (with fused_subgroup.wgsl the whole subgroup walks
// again, and its finite rows come out the same). Rows that see no key are written as zeros, rows with
// a NaN or +inf score as NaN, as fused.wgsl and the reference do.
//
// Every invocation of a workgroup walks the same keys, so each loads the same keys and
// values. fused_subgroup.wgsl, where the device has subgroup operations, has one lane load
// each of a block's 8 keys (and value rows) and the subgroup broadcast them; fused_own.wgsl
// is the path where each invocation loads its own. Either supplies the entry point, the
// reads of keys (cols8) and values (values8), and what makes the walk the same for every
// lane of a subgroup: its end (walk_end: the latest of theirs; keys past a row's own causal
// limit are masked there) and the decision to walk again (all_lanes).
//
// The storage prelude names `Elem` and `Out`; float.wgsl, dot_block.wgsl, rows_own.wgsl,
// heads.wgsl, masks.wgsl, fused_params.wgsl and fused_io.wgsl (prepended) supply the float
// helpers, the block of dot products and its reads of the queries, the heads, the masks,
// the parameters and the output and `partial` bindings.

@group(0) @binding(1) var<storage, read> q: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<Elem>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<Elem>>;

fn load_a4(i: u32) -> vec4<f32> {
    return vec4<f32>(q[i]);
}

fn load_b4(i: u32) -> vec4<f32> {
    return vec4<f32>(k[i]);
}

override WG: u32 = 16u;     // invocations per workgroup, 4 query rows each
override DV_VEC: u32 = 16u; // vec4s of one output row: ceil(dv / 4), rounded up

// Row r's output vec4 c of invocation t at acc[(r·DV_VEC + c)·WG + t]: neighbouring
// invocations' vec4s lie side by side.
var<workgroup> acc: array<vec4<f32>, 4 * DV_VEC * WG>;

// One row's scores (or probabilities) of a block of 8 keys.
struct Row8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Scores of row `l` for keys s0 .. s0 + 8 through the masks and the causal limit; keys past
// the end are -inf.
fn masked8(x: Row8, hd: Head, l: u32, s0: u32) -> Row8 {
    var out = x;
    for (var c = 0u; c < 4u; c++) {
        out.lo[c] = neg_inf();
        if s0 + c < p.cols {
            out.lo[c] = masked_score(x.lo[c], hd, l, s0 + c);
        }
        out.hi[c] = neg_inf();
        if s0 + 4u + c < p.cols {
            out.hi[c] = masked_score(x.hi[c], hd, l, s0 + 4u + c);
        }
    }
    return out;
}

fn any_poison(x: vec4<f32>) -> bool {
    return poisons_row(x.x) || poisons_row(x.y) || poisons_row(x.z) || poisons_row(x.w);
}

// A row's online-softmax step over one block of 8 keys: its new running max, sum and
// poisoned flag, the factor its accumulated output shrinks by, and the block's exp(s − max).
struct Step {
    probs: Row8,
    max: f32,
    sum: f32,
    shrink: f32,
    bad: bool,
}

fn row_max8(x: Row8) -> f32 {
    return max(max(max(x.lo.x, x.lo.y), max(x.lo.z, x.lo.w)),
               max(max(x.hi.x, x.hi.y), max(x.hi.z, x.hi.w)));
}

fn row_sum8(x: Row8) -> f32 {
    let ones = vec4<f32>(1.0);
    return dot(x.lo, ones) + dot(x.hi, ones);
}

fn softmax_step(s: Row8, max_old: f32, sum_old: f32, bad_old: bool) -> Step {
    let bad = bad_old || any_poison(s.lo) || any_poison(s.hi);
    let max_new = max(max_old, row_max8(s));
    if bad || is_neg_inf(max_new) {
        // Nothing to weigh: the row is NaN (written at the end) or sees nothing yet.
        let none = Row8(vec4<f32>(0.0), vec4<f32>(0.0));
        return Step(none, max_new, sum_old, 1.0, bad);
    }
    let shrink = exp(max_old - max_new);
    let probs = Row8(exp(s.lo - max_new), exp(s.hi - max_new));
    return Step(probs, max_new, sum_old * shrink + row_sum8(probs), shrink, false);
}

// The 4 rows' scores of keys s0 .. s0 + 8 (rows past the end repeat the last), scaled, and
// through the masks and the causal limit unless every row may see every key.
fn scores8(at: VecRows, m0: u32, s0: u32, open_end: u32, hd: Head) -> array<Row8, 4> {
    let dots = dot_block(
        at.q_base, at.q_row, m0, p.rows - 1u,
        at.k_base, at.k_row, s0, p.cols - 1u,
        p.depth / 4u,
    );
    var s = array<Row8, 4>(
        Row8(dots[0] * p.scale, dots[1] * p.scale),
        Row8(dots[2] * p.scale, dots[3] * p.scale),
        Row8(dots[4] * p.scale, dots[5] * p.scale),
        Row8(dots[6] * p.scale, dots[7] * p.scale),
    );
    if s0 + 8u > open_end {
        let last_row = p.rows - 1u;
        s[0] = masked8(s[0], hd, min(m0, last_row), s0);
        s[1] = masked8(s[1], hd, min(m0 + 1u, last_row), s0);
        s[2] = masked8(s[2], hd, min(m0 + 2u, last_row), s0);
        s[3] = masked8(s[3], hd, min(m0 + 3u, last_row), s0);
    }
    return s;
}

// Where the value rows of keys s0 .. s0 + 8 start (in vec4s); keys past the end read the
// last key, whose probability there is 0.
fn value_rows(at: VecRows, s0: u32) -> array<u32, 8> {
    let v_base = at.v_base;
    let v_row = at.v_row;
    let last = p.cols - 1u;
    return array<u32, 8>(
        v_base + min(s0, last) * v_row, v_base + min(s0 + 1u, last) * v_row,
        v_base + min(s0 + 2u, last) * v_row, v_base + min(s0 + 3u, last) * v_row,
        v_base + min(s0 + 4u, last) * v_row, v_base + min(s0 + 5u, last) * v_row,
        v_base + min(s0 + 6u, last) * v_row, v_base + min(s0 + 7u, last) * v_row,
    );
}

// start + Σ probs[c]·vs[c], key by key in order; `careful` leaves keys of probability 0
// out (fma_unless_zero rounds as fma does).
fn add_values(start: vec4<f32>, pr: Row8, vs: array<vec4<f32>, 8>, careful: bool) -> vec4<f32> {
    if careful {
        var a = fma_unless_zero(pr.lo.x, vs[0], start);
        a = fma_unless_zero(pr.lo.y, vs[1], a);
        a = fma_unless_zero(pr.lo.z, vs[2], a);
        a = fma_unless_zero(pr.lo.w, vs[3], a);
        a = fma_unless_zero(pr.hi.x, vs[4], a);
        a = fma_unless_zero(pr.hi.y, vs[5], a);
        a = fma_unless_zero(pr.hi.z, vs[6], a);
        return fma_unless_zero(pr.hi.w, vs[7], a);
    }
    var a = fma(vec4<f32>(pr.lo.x), vs[0], start);
    a = fma(vec4<f32>(pr.lo.y), vs[1], a);
    a = fma(vec4<f32>(pr.lo.z), vs[2], a);
    a = fma(vec4<f32>(pr.lo.w), vs[3], a);
    a = fma(vec4<f32>(pr.hi.x), vs[4], a);
    a = fma(vec4<f32>(pr.hi.y), vs[5], a);
    a = fma(vec4<f32>(pr.hi.z), vs[6], a);
    return fma(vec4<f32>(pr.hi.w), vs[7], a);
}

// Invocation t of workgroup wg (fused_own.wgsl or fused_subgroup.wgsl call it).
fn fused_block(wg: vec3<u32>, groups: vec3<u32>, t: u32) {
    let m0 = ((p.block0 + wg.x) * WG + t) * 4u;
    // An invocation past the last row walks with its subgroup, on the last row, and
    // writes nothing.
    if all_lanes(m0 >= p.rows) {
        return;
    }
    let z = wg.z;
    let hd = head_of(z, 0u, p.heads_q, p.group);
    // Rows past the end repeat the last row (and are not written).
    let last_row = min(m0 + 3u, p.rows - 1u);
    // In vec4s: this head's rows of Q, K and V.
    let head_rows = vec_rows(hd);
    let dv4 = p.depth_v / 4u;

    // Keys past the causal limit of the last row are not visited (with fused_subgroup.wgsl,
    // not past the latest such limit among the subgroup's lanes: the rest are masked);
    // keys before `open_end` are visible to all four rows, unmasked.
    var kv_end = p.cols;
    var open_end = p.cols;
    if (p.flags & 4u) != 0u {
        kv_end = u32(clamp(i32(last_row) + p.causal_offset + 1, 0, i32(p.cols)));
        open_end = u32(clamp(i32(min(m0, last_row)) + p.causal_offset + 1, 0, i32(p.cols)));
    }
    if (p.flags & 3u) != 0u {
        open_end = 0u;
    }
    // The subgroup walks to the latest end among its lanes.
    kv_end = walk_end(kv_end);
    // Modes 3–5: this dispatch's run of keys (empty past the causal limit).
    var kv_begin = 0u;
    if p.mode >= 3u {
        kv_begin = min(p.run * p.split_len, kv_end);
        kv_end = min(kv_begin + p.split_len, kv_end);
    }
    let resumes = p.mode == 4u || p.mode == 5u;

    // The rows' running max, sum and poisoned flag in component r.
    var row_max: vec4<f32>;
    var row_sum: vec4<f32>;
    var row_bad: vec4<bool>;
    for (var walk = 0u; walk < 2u; walk++) {
        let careful = walk == 1u;
        // Nothing seen yet, or the state the previous run of keys saved.
        row_max = vec4<f32>(neg_inf());
        row_sum = vec4<f32>(0.0);
        row_bad = vec4<bool>(false);
        for (var r = 0u; r < 4u; r++) {
            let l = min(m0 + r, last_row);
            let at = partial_out(0u, z, l, groups.z);
            for (var c = 0u; c < dv4; c++) {
                var x = vec4<f32>(0.0);
                if resumes {
                    let i = at + 4u * c;
                    x = vec4<f32>(partial[i], partial[i + 1u], partial[i + 2u], partial[i + 3u]);
                }
                acc[(r * DV_VEC + c) * WG + t] = x;
            }
            if resumes {
                let st = partial_stats(0u, z, l, groups.z);
                row_max[r] = partial[st];
                row_sum[r] = partial[st + 1u];
                row_bad[r] = partial[st + 2u] != 0.0;
            }
        }

        for (var s0 = kv_begin; s0 < kv_end; s0 += 8u) {
            let s = scores8(head_rows, m0, s0, open_end, hd);
            let st0 = softmax_step(s[0], row_max.x, row_sum.x, row_bad.x);
            let st1 = softmax_step(s[1], row_max.y, row_sum.y, row_bad.y);
            let st2 = softmax_step(s[2], row_max.z, row_sum.z, row_bad.z);
            let st3 = softmax_step(s[3], row_max.w, row_sum.w, row_bad.w);
            row_max = vec4<f32>(st0.max, st1.max, st2.max, st3.max);
            row_sum = vec4<f32>(st0.sum, st1.sum, st2.sum, st3.sum);
            row_bad = vec4<bool>(st0.bad, st1.bad, st2.bad, st3.bad);

            let rows = value_rows(head_rows, s0);
            for (var c = 0u; c < dv4; c++) {
                let vs = values8(rows, c);
                let a0 = c * WG + t;
                let a1 = (DV_VEC + c) * WG + t;
                let a2 = (2u * DV_VEC + c) * WG + t;
                let a3 = (3u * DV_VEC + c) * WG + t;
                acc[a0] = add_values(acc[a0] * st0.shrink, st0.probs, vs, careful);
                acc[a1] = add_values(acc[a1] * st1.shrink, st1.probs, vs, careful);
                acc[a2] = add_values(acc[a2] * st2.shrink, st2.probs, vs, careful);
                acc[a3] = add_values(acc[a3] * st3.shrink, st3.probs, vs, careful);
            }
        }

        // A row that is not NaN anyway and ended non-finite met a non-finite value: walk
        // again, carefully.
        if careful {
            break;
        }
        var finite = true;
        for (var r = 0u; r < 4u; r++) {
            if row_bad[r] {
                continue;
            }
            for (var c = 0u; c < dv4; c++) {
                finite = finite && all_finite(acc[(r * DV_VEC + c) * WG + t]);
            }
        }
        if all_lanes(finite) {
            break;
        }
    }

    // Modes 3 and 4: the state the next run goes on from.
    if p.mode == 3u || p.mode == 4u {
        for (var r = 0u; r < 4u; r++) {
            let l = m0 + r;
            if l >= p.rows {
                break;
            }
            let at = partial_out(0u, z, l, groups.z);
            for (var c = 0u; c < dv4; c++) {
                let x = acc[(r * DV_VEC + c) * WG + t];
                let i = at + 4u * c;
                partial[i] = x.x;
                partial[i + 1u] = x.y;
                partial[i + 2u] = x.z;
                partial[i + 3u] = x.w;
            }
            let st = partial_stats(0u, z, l, groups.z);
            partial[st] = row_max[r];
            partial[st + 1u] = row_sum[r];
            partial[st + 2u] = select(0.0, 1.0, row_bad[r]);
        }
        return;
    }

    // Normalise; a row that saw nothing (sum 0) is written as zeros.
    let o_base = p.o_offset + hd.batch * p.o_stride_b + hd.head_q * p.o_stride_h;
    for (var r = 0u; r < 4u; r++) {
        let l = m0 + r;
        if l >= p.rows {
            break;
        }
        let sum = row_sum[r];
        var inv = 1.0 / sum;
        if sum == 0.0 {
            inv = 0.0;
        }
        if row_bad[r] {
            inv = nan();
        }
        let at = o_base + l * p.o_stride_l;
        for (var c = 0u; c < dv4; c++) {
            let x = acc[(r * DV_VEC + c) * WG + t] * inv;
            o[at + 4u * c] = Out(x.x);
            o[at + 4u * c + 1u] = Out(x.y);
            o[at + 4u * c + 2u] = Out(x.z);
            o[at + 4u * c + 3u] = Out(x.w);
        }
    }
}
