// Fused attention (the FlashAttention-2 algorithm): O = softmax(Q·Kᵀ·scale + masks)·V for a
// block of BR = 4·WG_Y query rows of one head, walking the keys BC at a time with an online
// softmax.
// The score matrix never exists in memory — only one BR × BC block of it, in workgroup
// memory — so memory grows linearly with sequence length.
//
// Per block of keys, three phases separated by barriers:
//   A. scores: the workgroup stages the block's keys in workgroup memory (coalesced, once),
//      then each invocation computes 4 × 4 micro-tiles of S = Q·Kᵀ from vec4 reads of the
//      staged queries and keys, adds masks and causal, and writes them transposed into
//      p_tile so phase C reads four rows at once.
//   B. softmax statistics: each row is split over WG_X / 4 invocations, which find the
//      row's new running max m (partial maxima, then their max), turn their scores into
//      exp(s − m), and publish the factor exp(m_old − m_new) by which the row's accumulated
//      output must shrink; the partial sums fold into the running sum l in phase C.
//   C. output: the block's values are staged where the keys were (during phase B); each
//      invocation owns a 4 × 8 block of O (rows × value columns) in registers, rescales it
//      and adds P·V for the block — three vec4 reads feed thirty-two multiply-adds.
// Key blocks wholly past the causal limit of every row of the query block are never
// visited. Rows that see no key at all end with l = 0 and are written as zeros; rows with a
// NaN or +inf score are written as NaN; a key of probability 0 contributes nothing even
// when its value is not finite — the same rules as the three-pass path and the reference.
//
// Split keys (flash-decoding), for calls with too few query blocks × heads to fill the
// device: `mode` 1 gives workgroup (x, y, z) only the keys y·split_len .. (y+1)·split_len
// and writes its unnormalised output rows and their (max, sum, poisoned) statistics to
// `partial`; fused_combine.wgsl merges the splits. A split that met a non-finite value
// flags its query block, since whether that value's key counts (probability ≥ f32's
// smallest normal) depends on the row's global maximum: mode 2 then recomputes just the
// flagged blocks whole, and the combine leaves them alone. Mode 0 is the whole kernel.
//
// Runs of keys, where a driver caps how long an invocation may loop (llvmpipe): modes 3, 4
// and 5 walk the keys run·split_len .. (run+1)·split_len one dispatch after another, each
// carrying the rows' whole state (unnormalised output, max, sum, poisoned) in `partial`
// (split 0's layout) to the next, the last normalising as mode 0 does. Stopping between key
// blocks and going on from the saved state is mode 0's computation, so the result is mode
// 0's, with memory still linear in length.
//
// A storage prelude (storage_*.wgsl) names the element types of Q/K/V (`Elem`) and of O
// (`Out`); float.wgsl, heads.wgsl and masks.wgsl (prepended) supply the float helpers, map
// z to (batch, head) and mask a score as qk.wgsl does; fused_params.wgsl the parameters,
// the masks' bindings and the layout of `partial`; fused_io.wgsl the output and `partial`.
// Arithmetic is f32 whatever the storage.

override WG_X: u32 = 8u;    // invocations along value columns (8 each): ceil(dv / 8) rounded up, ≥ 4
override D_VEC: u32 = 16u;  // vec4s of one staged query row: ceil(d / 4), rounded up
override WG_Y: u32 = 4u;    // invocation rows: the workgroup takes BR = 4·WG_Y query rows
override BC: u32 = 32u;     // keys per block: a multiple of 4 and of WG_X / 4
override KV_VEC: u32 = 16u; // vec4s of one staged key or value row: max(D_VEC, 2·WG_X)

@group(0) @binding(1) var<storage, read> q: array<Elem>;
@group(0) @binding(2) var<storage, read> k: array<Elem>;
@group(0) @binding(3) var<storage, read> v: array<Elem>;

var<workgroup> q_tile: array<vec4<f32>, 4 * WG_Y * D_VEC>; // [row][i / 4], pre-scaled
var<workgroup> p_tile: array<vec4<f32>, BC * WG_Y>;  // [key][row / 4]
var<workgroup> kv_tile: array<vec4<f32>, BC * KV_VEC>; // [key][i / 4]: keys, then values
var<workgroup> row_max: array<f32, 4 * WG_Y>;
var<workgroup> row_sum: array<f32, 4 * WG_Y>;
var<workgroup> row_shrink: array<f32, 4 * WG_Y>;
var<workgroup> next_max: array<f32, 4 * WG_Y>;
var<workgroup> row_bad: array<u32, 4 * WG_Y>;  // the row has met a NaN or +inf score
var<workgroup> next_bad: array<u32, 4 * WG_Y>;
// Per (row, part) partial max and sum: phase B splits each row over WG_X / 4 invocations.
var<workgroup> part_max: array<f32, WG_X * WG_Y>;
var<workgroup> part_sum: array<f32, WG_X * WG_Y>;
var<workgroup> part_bad: array<u32, WG_X * WG_Y>;
// Set when the staged block of values holds a non-finite element (phase C then takes the
// careful route that keeps probability-0 keys out).
var<workgroup> values_nonfinite: atomic<u32>;
// Set when any staged block of values held one (mode 1 flags its query block).
var<workgroup> any_nonfinite: atomic<u32>;
// Mode 2: whether some split flagged this query block.
var<workgroup> recompute: u32;

// Four consecutive elements from `at` of K or V, of which the first `n` exist.
fn key4(at: u32, n: u32) -> vec4<f32> {
    if n >= 4u {
        return vec4<f32>(f32(k[at]), f32(k[at + 1u]), f32(k[at + 2u]), f32(k[at + 3u]));
    }
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < n; c++) {
        x[c] = f32(k[at + c]);
    }
    return x;
}

fn value4(at: u32, n: u32) -> vec4<f32> {
    if n >= 4u {
        return vec4<f32>(f32(v[at]), f32(v[at + 1u]), f32(v[at + 2u]), f32(v[at + 3u]));
    }
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < n; c++) {
        x[c] = f32(v[at + c]);
    }
    return x;
}

// Stages rows s0 .. s0+BC of K (`values` false) or V into kv_tile, a vec4 per invocation
// step, zeros past the end of the sequence and of the head.
fn stage_kv(t: u32, base: u32, s0: u32, values: bool) {
    let invocations = WG_X * WG_Y;
    var width = p.depth;
    var stride = p.k_stride_s;
    if values {
        width = p.depth_v;
        stride = p.v_stride_s;
    }
    for (var idx = t; idx < BC * KV_VEC; idx += invocations) {
        let c = idx / KV_VEC;
        let i = (idx % KV_VEC) * 4u;
        var x = vec4<f32>(0.0);
        if s0 + c < p.cols && i < width {
            let at = base + (s0 + c) * stride + i;
            if values {
                x = value4(at, width - i);
                if !all_finite(x) {
                    atomicOr(&values_nonfinite, 1u);
                    atomicOr(&any_nonfinite, 1u);
                }
            } else {
                x = key4(at, width - i);
            }
        }
        kv_tile[idx] = x;
    }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Mode 2 recomputes only the query blocks some split flagged.
    if p.mode == 2u {
        if t == 0u {
            var flagged = 0u;
            for (var split = 0u; split < p.splits; split++) {
                if partial[partial_flag(split, wg.z, wg.x, groups.z, groups.x)] != 0.0 {
                    flagged = 1u;
                }
            }
            recompute = flagged;
        }
        if workgroupUniformLoad(&recompute) == 0u {
            return;
        }
    }
    let invocations = WG_X * WG_Y;
    let br = 4u * WG_Y;
    let hd = head_of(wg.z, 0u, p.heads_q, p.group);
    let l0 = (p.block0 + wg.x) * br;
    // Modes 4 and 5 go on from the state a previous run of keys saved in `partial`.
    let resumes = p.mode == 4u || p.mode == 5u;
    let q_base = p.q_offset + hd.batch * p.q_stride_b + hd.head_q * p.q_stride_h;
    let k_base = p.k_offset + hd.batch * p.k_stride_b + hd.head_kv * p.k_stride_h;
    let v_base = p.v_offset + hd.batch * p.v_stride_b + hd.head_kv * p.v_stride_h;

    // Stage the block's queries, scaled once here instead of every score later.
    for (var idx = t; idx < br * D_VEC; idx += invocations) {
        let r = idx / D_VEC;
        let i = (idx % D_VEC) * 4u;
        var x = vec4<f32>(0.0);
        if l0 + r < p.rows {
            let at = q_base + (l0 + r) * p.q_stride_l + i;
            for (var c = 0u; c < 4u; c++) {
                if i + c < p.depth {
                    x[c] = f32(q[at + c]);
                }
            }
        }
        q_tile[idx] = x * p.scale;
    }
    for (var r = t; r < br; r += invocations) {
        row_max[r] = neg_inf();
        row_sum[r] = 0.0;
        row_bad[r] = 0u;
        if resumes && l0 + r < p.rows {
            let st = partial_stats(0u, wg.z, l0 + r, groups.z);
            row_max[r] = partial[st];
            row_sum[r] = partial[st + 1u];
            row_bad[r] = u32(partial[st + 2u]);
        }
    }
    if t == 0u {
        atomicStore(&any_nonfinite, 0u);
    }
    workgroupBarrier();

    // Keys past the causal limit of the block's last row are never visited.
    var kv_end = p.cols;
    let causal = (p.flags & 4u) != 0u;
    if causal {
        let last_visible = i32(min(l0 + br, p.rows)) - 1 + p.causal_offset;
        kv_end = u32(clamp(last_visible + 1, 0, i32(p.cols)));
    }
    // Mode 1: this workgroup's split of the keys; modes 3–5: this dispatch's run (empty past
    // the causal limit).
    var kv_begin = 0u;
    if p.mode == 1u {
        kv_begin = min(wg.y * p.split_len, kv_end);
        kv_end = min(kv_begin + p.split_len, kv_end);
    }
    if p.mode >= 3u {
        kv_begin = min(p.run * p.split_len, kv_end);
        kv_end = min(kv_begin + p.split_len, kv_end);
    }

    // Phase B: invocation t takes `keys_per_part` keys of row t / parts.
    let parts = WG_X / 4u;
    let keys_per_part = BC / parts;
    let stat_row = t / parts;
    let stat_rg = stat_row / 4u;
    let stat_r = stat_row % 4u;
    let first_key = (t % parts) * keys_per_part;

    // Output rows lid.y·4 + r, columns lid.x·8 + 4h .. +4 live in acc[2r + h].
    var acc: array<vec4<f32>, 8>;
    if resumes {
        for (var r = 0u; r < 4u; r++) {
            let l = l0 + lid.y * 4u + r;
            if l >= p.rows {
                break;
            }
            let at = partial_out(0u, wg.z, l, groups.z);
            for (var c = 0u; c < 8u; c++) {
                let j = lid.x * 8u + c;
                if j < p.depth_v {
                    acc[2u * r + c / 4u][c % 4u] = partial[at + j];
                }
            }
        }
    }
    for (var s0 = kv_begin; s0 < kv_end; s0 += BC) {
        // A. Scores of 4 × 4 micro-tiles, from the staged keys (zeros past the end, masked
        // to -inf below).
        stage_kv(t, k_base, s0, false);
        if t == 0u {
            atomicStore(&values_nonfinite, 0u);
        }
        workgroupBarrier();
        for (var tile = t; tile < WG_Y * (BC / 4u); tile += invocations) {
            let rg = tile / (BC / 4u);
            let kg = tile % (BC / 4u);
            var sc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
            for (var i4 = 0u; i4 < D_VEC; i4++) {
                let q0 = q_tile[(rg * 4u + 0u) * D_VEC + i4];
                let q1 = q_tile[(rg * 4u + 1u) * D_VEC + i4];
                let q2 = q_tile[(rg * 4u + 2u) * D_VEC + i4];
                let q3 = q_tile[(rg * 4u + 3u) * D_VEC + i4];
                for (var c = 0u; c < 4u; c++) {
                    let kv = kv_tile[(kg * 4u + c) * KV_VEC + i4];
                    sc[0][c] += dot(q0, kv);
                    sc[1][c] += dot(q1, kv);
                    sc[2][c] += dot(q2, kv);
                    sc[3][c] += dot(q3, kv);
                }
            }
            for (var c = 0u; c < 4u; c++) {
                let s = s0 + kg * 4u + c;
                var col = vec4<f32>(neg_inf());
                if s < p.cols {
                    for (var r = 0u; r < 4u; r++) {
                        let l = min(l0 + rg * 4u + r, p.rows - 1u);
                        col[r] = masked_score(sc[r][c], hd, l, s);
                    }
                }
                p_tile[(kg * 4u + c) * WG_Y + rg] = col;
            }
        }
        workgroupBarrier();

        // B1. Partial maxima, and whether a NaN or +inf score was met.
        var m_part = neg_inf();
        var bad = 0u;
        for (var c = first_key; c < first_key + keys_per_part; c++) {
            let x = p_tile[c * WG_Y + stat_rg][stat_r];
            if poisons_row(x) {
                bad = 1u;
            } else {
                m_part = max(m_part, x);
            }
        }
        part_max[t] = m_part;
        part_bad[t] = bad;
        workgroupBarrier();

        // B2. The row's new maximum; probabilities exp(s − m) and partial sums.
        let m_old = row_max[stat_row];
        var m_new = m_old;
        var row_poisoned = row_bad[stat_row];
        for (var i = 0u; i < parts; i++) {
            m_new = max(m_new, part_max[stat_row * parts + i]);
            row_poisoned = row_poisoned | part_bad[stat_row * parts + i];
        }
        var sum = 0.0;
        var shrink = 1.0;
        if row_poisoned != 0u || is_neg_inf(m_new) {
            // Nothing to weigh: the row is NaN (written at the end) or sees nothing yet.
            for (var c = first_key; c < first_key + keys_per_part; c++) {
                p_tile[c * WG_Y + stat_rg][stat_r] = 0.0;
            }
        } else {
            shrink = exp(m_old - m_new);
            for (var c = first_key; c < first_key + keys_per_part; c++) {
                let e = exp(p_tile[c * WG_Y + stat_rg][stat_r] - m_new);
                p_tile[c * WG_Y + stat_rg][stat_r] = e;
                sum += e;
            }
        }
        part_sum[t] = sum;
        if t % parts == 0u {
            next_max[stat_row] = m_new;
            next_bad[stat_row] = row_poisoned;
            row_shrink[stat_row] = shrink;
        }
        // The keys are done with: stage the values in their place.
        stage_kv(t, v_base, s0, true);
        workgroupBarrier();

        // C. Rescale this invocation's 4 × 8 block of O and add P·V; fold the row sums.
        for (var r = 0u; r < 4u; r++) {
            let shrink_r = row_shrink[lid.y * 4u + r];
            acc[2u * r] *= shrink_r;
            acc[2u * r + 1u] *= shrink_r;
        }
        let keys = min(BC, kv_end - s0);
        if atomicLoad(&values_nonfinite) == 0u {
            for (var c = 0u; c < keys; c++) {
                let pr = p_tile[c * WG_Y + lid.y];
                let v0 = kv_tile[c * KV_VEC + 2u * lid.x];
                let v1 = kv_tile[c * KV_VEC + 2u * lid.x + 1u];
                acc[0] = fma(vec4<f32>(pr.x), v0, acc[0]);
                acc[1] = fma(vec4<f32>(pr.x), v1, acc[1]);
                acc[2] = fma(vec4<f32>(pr.y), v0, acc[2]);
                acc[3] = fma(vec4<f32>(pr.y), v1, acc[3]);
                acc[4] = fma(vec4<f32>(pr.z), v0, acc[4]);
                acc[5] = fma(vec4<f32>(pr.z), v1, acc[5]);
                acc[6] = fma(vec4<f32>(pr.w), v0, acc[6]);
                acc[7] = fma(vec4<f32>(pr.w), v1, acc[7]);
            }
        } else {
            // A key of probability 0 contributes nothing, even a non-finite value.
            for (var c = 0u; c < keys; c++) {
                let pr = p_tile[c * WG_Y + lid.y];
                let v0 = kv_tile[c * KV_VEC + 2u * lid.x];
                let v1 = kv_tile[c * KV_VEC + 2u * lid.x + 1u];
                for (var r = 0u; r < 4u; r++) {
                    acc[2u * r] = fma_unless_zero(pr[r], v0, acc[2u * r]);
                    acc[2u * r + 1u] = fma_unless_zero(pr[r], v1, acc[2u * r + 1u]);
                }
            }
        }
        if t < br {
            var total = row_sum[t] * row_shrink[t];
            for (var i = 0u; i < parts; i++) {
                total += part_sum[t * parts + i];
            }
            row_sum[t] = total;
            row_max[t] = next_max[t];
            row_bad[t] = next_bad[t];
        }
        workgroupBarrier();
    }

    // Mode 1: the split's unnormalised rows and statistics, and its flag; modes 3 and 4: the
    // state the next run goes on from.
    if p.mode == 1u || p.mode == 3u || p.mode == 4u {
        let slot = select(0u, wg.y, p.mode == 1u);
        for (var r = 0u; r < 4u; r++) {
            let row = lid.y * 4u + r;
            let l = l0 + row;
            if l >= p.rows {
                break;
            }
            let at = partial_out(slot, wg.z, l, groups.z);
            for (var c = 0u; c < 8u; c++) {
                let j = lid.x * 8u + c;
                if j < p.depth_v {
                    partial[at + j] = acc[2u * r + c / 4u][c % 4u];
                }
            }
            if lid.x == 0u {
                let st = partial_stats(slot, wg.z, l, groups.z);
                partial[st] = row_max[row];
                partial[st + 1u] = row_sum[row];
                partial[st + 2u] = f32(row_bad[row]);
            }
        }
        if t == 0u && p.mode == 1u {
            let flag = partial_flag(wg.y, wg.z, wg.x, groups.z, groups.x);
            partial[flag] = f32(atomicLoad(&any_nonfinite));
        }
        return;
    }

    // Normalise; a row that saw nothing (sum 0) is written as zeros.
    let o_base = p.o_offset + hd.batch * p.o_stride_b + hd.head_q * p.o_stride_h;
    for (var r = 0u; r < 4u; r++) {
        let l = l0 + lid.y * 4u + r;
        if l >= p.rows {
            break;
        }
        let sum = row_sum[lid.y * 4u + r];
        var inv = 1.0 / sum;
        if sum == 0.0 {
            inv = 0.0;
        }
        if row_bad[lid.y * 4u + r] != 0u {
            inv = nan();
        }
        for (var c = 0u; c < 8u; c++) {
            let j = lid.x * 8u + c;
            if j < p.depth_v {
                o[o_base + l * p.o_stride_l + j] = Out(acc[2u * r + c / 4u][c % 4u] * inv);
            }
        }
    }
}
