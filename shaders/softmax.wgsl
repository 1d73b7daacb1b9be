// Row-wise softmax of a block of scores, in place: P[r, s] = exp(S[r, s] - max_r) / sum_r.
// One workgroup per row. Each invocation folds its strided share of the row into a running
// (max, sum) pair — the online softmax, one read of the row instead of two — then the
// workgroup merges the pairs in a tree and every invocation writes its share.
// A row whose every score is -inf (fully masked) has no maximum: it becomes all zeros,
// never NaN. A row with a NaN or +inf score has no meaningful distribution: it becomes all
// NaN, and no other row is touched. Under a causal mask a row reads only the keys it may see
// (qk.wgsl leaves tiles wholly past the limit unwritten) and writes zeros past them — only
// as far as P·V reads (the limit of the row's P·V tile) unless the weights are wanted.
// float.wgsl (prepended) has the float helpers.

override WG: u32 = 128u;

struct Params {
    rows: u32,
    cols: u32,
    block_rows: u32,    // query rows per (batch, head) in the block: row r is query row0 + r % block_rows
    row0: u32,
    causal: u32,        // 1: row l sees keys s <= l + causal_offset only
    causal_offset: i32,
    read_rows: u32,     // causal, no weights: P·V reads rows in groups of this many (0: all written)
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> scores: array<f32>;

var<workgroup> part_max: array<f32, WG>;
var<workgroup> part_sum: array<f32, WG>;
var<workgroup> part_bad: array<u32, WG>;

// Merges two (max, sum) pairs; -inf maxima contribute nothing (and make no NaN).
fn merge(m1: f32, s1: f32, m2: f32, s2: f32) -> vec2<f32> {
    let m = max(m1, m2);
    if is_neg_inf(m) {
        return vec2<f32>(m, 0.0);
    }
    return vec2<f32>(m, s1 * exp(m1 - m) + s2 * exp(m2 - m));
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Rows are laid over a 2-D grid when there are more than 65535 of them.
    let row = wg.y * groups.x + wg.x;
    let in_range = row < p.rows;
    let base = row * p.cols;
    var visible = p.cols;
    if p.causal != 0u {
        let l = p.row0 + row % p.block_rows;
        visible = u32(clamp(i32(l) + p.causal_offset + 1, 0, i32(p.cols)));
    }
    // Past `written` nothing reads the row: P·V stops each tile at its last row's limit.
    var written = p.cols;
    if p.causal != 0u && p.read_rows != 0u {
        let m = row % p.block_rows;
        let tile_last = min((m / p.read_rows + 1u) * p.read_rows, p.block_rows) - 1u;
        written = u32(clamp(i32(p.row0 + tile_last) + p.causal_offset + 1, 0, i32(p.cols)));
        // Up to a multiple of 4 keys: the register-blocked P·V reads them as vec4.
        written = min((written + 3u) & ~3u, p.cols);
    }

    var m = neg_inf();
    var s = 0.0;
    var bad = 0u;
    if in_range {
        for (var i = t; i < visible; i += WG) {
            let x = scores[base + i];
            if poisons_row(x) {
                bad = 1u;
            } else if x > m {
                s = s * exp(m - x) + 1.0;
                m = x;
            } else if x != neg_inf() {
                s += exp(x - m);
            }
        }
    }
    part_max[t] = m;
    part_sum[t] = s;
    part_bad[t] = bad;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if t < half {
            let merged = merge(part_max[t], part_sum[t], part_max[t + half], part_sum[t + half]);
            part_max[t] = merged.x;
            part_sum[t] = merged.y;
            part_bad[t] = part_bad[t] | part_bad[t + half];
        }
        workgroupBarrier();
    }
    let row_max = part_max[0];
    let inv_sum = 1.0 / part_sum[0];
    let row_bad = part_bad[0] != 0u;
    if in_range {
        for (var i = t; i < written; i += WG) {
            var prob = 0.0;
            if row_bad {
                prob = nan();
            } else if i < visible && !is_neg_inf(row_max) {
                prob = exp(scores[base + i] - row_max) * inv_sum;
            }
            scores[base + i] = prob;
        }
    }
}
