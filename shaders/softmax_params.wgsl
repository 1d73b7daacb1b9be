// Shared by softmax.wgsl (one score per load) and softmax_vec4.wgsl (four, for rows whose
// length is a multiple of 4): the parameter block, the workgroup's partial results and their
// merge, and how far a row is read and written. float.wgsl (prepended) has the float helpers.

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

// How far row `row` of the block is read (`visible`: the keys it may see) and written
// (`written`: past it nothing reads the row, since P·V stops at its group's limit).
fn row_limits(row: u32) -> vec2<u32> {
    var visible = p.cols;
    if p.causal != 0u {
        let l = p.row0 + row % p.block_rows;
        visible = u32(clamp(i32(l) + p.causal_offset + 1, 0, i32(p.cols)));
    }
    var written = p.cols;
    if p.causal != 0u && p.read_rows != 0u {
        let m = row % p.block_rows;
        let tile_last = min((m / p.read_rows + 1u) * p.read_rows, p.block_rows) - 1u;
        written = u32(clamp(i32(p.row0 + tile_last) + p.causal_offset + 1, 0, i32(p.cols)));
        // Up to a multiple of 4 keys: the register-blocked P·V reads them as vec4.
        written = min((written + 3u) & ~3u, p.cols);
    }
    return vec2<u32>(visible, written);
}

// A row's softmax statistics: its max, the inverse of its sum of exp(x - max), and whether
// a score poisons it.
struct RowStats {
    max: f32,
    inv_sum: f32,
    bad: bool,
}

// Merges the workgroup's per-invocation (max, sum, poisoned) of one row in a tree; every
// invocation gets the row's statistics.
fn reduce_row(t: u32, m: f32, s: f32, bad: bool) -> RowStats {
    part_max[t] = m;
    part_sum[t] = s;
    part_bad[t] = u32(bad);
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
    return RowStats(part_max[0], 1.0 / part_sum[0], part_bad[0] != 0u);
}
