// Shared by the softmax kernels — softmax.wgsl (a workgroup per row, one score per load),
// softmax_vec4.wgsl (a workgroup per row, four) and softmax_rows.wgsl (an invocation per row,
// four): the parameter block, how far a row is read and written, the folding of four scores
// into a running (max, sum), and the merge of two. The workgroup's merge of a row
// (`reduce_row`) comes from softmax_reduce_tree.wgsl, or softmax_reduce_subgroup.wgsl where
// the device has subgroup operations. float.wgsl (prepended) has the float helpers.

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

// Whether each component is NaN or +inf: a score that poisons its row.
fn poisons4(x: vec4<f32>) -> vec4<bool> {
    let bits = bitcast<vec4<u32>>(x);
    let magnitude = bits & vec4<u32>(0x7fffffffu);
    return (magnitude > vec4<u32>(0x7f800000u)) | (bits == vec4<u32>(0x7f800000u));
}

// A running (max, sum of exp(x - max)) and whether a poisoning score was seen.
struct Fold {
    max: f32,
    sum: f32,
    bad: bool,
}

// Folds the four scores at keys first..first + 4 of a row into its running fold with one
// rescale. Keys at or past `visible` count as -inf (the last chunk's: QKᵀ writes them as
// -inf too, but a row's limit is the softmax's to keep); -inf scores add nothing, and
// nothing changes while every score so far is -inf.
fn fold_chunk(f: Fold, chunk: vec4<f32>, first: u32, visible: u32) -> Fold {
    let keys = vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u);
    let x = select(vec4<f32>(neg_inf()), chunk, keys < vec4<u32>(visible));
    let m = f.max;
    let s = f.sum;
    let poisoned = f.bad || any(poisons4(x));
    let new_max = max(m, max(max(x.x, x.y), max(x.z, x.w)));
    if is_neg_inf(new_max) {
        return Fold(m, s, poisoned);
    }
    let e = exp(x - vec4<f32>(new_max));
    return Fold(new_max, s * exp(m - new_max) + (e.x + e.y) + (e.z + e.w), poisoned);
}

// Probabilities of the four scores x at keys first..first + 4 of a row with statistics
// (row_max, inv_sum, bad): NaN for a poisoned row, 0 past the visible keys and for a row
// with nothing visible.
fn chunk_probs(row_max: f32, inv_sum: f32, bad: bool, x: vec4<f32>, first: u32, visible: u32) -> vec4<f32> {
    if bad {
        return vec4<f32>(nan());
    }
    if is_neg_inf(row_max) || first >= visible {
        return vec4<f32>(0.0);
    }
    let keys = vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), exp(x - vec4<f32>(row_max)) * inv_sum, keys < vec4<u32>(visible));
}
