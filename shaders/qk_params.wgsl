// Shared by qk.wgsl (staged tiles) and qk_direct.wgsl (register blocks read straight from
// storage): the parameter block of the scores kernel, its bindings besides Q and K (which
// each kernel declares with its own element type, Elem or vec4<Elem>), and the epilogue.

struct Params {
    rows: u32,          // query rows in this block (M)
    cols: u32,          // keys (N = S)
    depth: u32,         // head size (K = d)
    heads_q: u32,
    group: u32,         // query heads per key/value head
    batch0: u32,        // first batch of the block
    row0: u32,          // first query row of the block
    flags: u32,         // bit 0: mask0, bit 1: mask1, bit 2: causal
    q_offset: u32,
    q_stride_b: u32,
    q_stride_h: u32,
    q_stride_l: u32,
    k_offset: u32,
    k_stride_b: u32,
    k_stride_h: u32,
    k_stride_s: u32,
    scale: f32,
    causal_offset: i32, // key s is visible from row l iff s <= l + causal_offset
    mask0_stride_b: u32,
    mask0_stride_h: u32,
    mask0_stride_l: u32,
    mask0_stride_s: u32,
    mask1_stride_b: u32,
    mask1_stride_h: u32,
    mask1_stride_l: u32,
    mask1_stride_s: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> mask0: array<f32>;
@group(0) @binding(4) var<storage, read> mask1: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;

// Scores of row m of batch z's block, keys n..n + 8 (see `row_at`), scaled and masked,
// where they exist. Without mask tensors, a group of 8 keys that all exist and all lie
// within the causal limit (or with none) is stored without the per-score mask test.
fn store_row(z: u32, m: u32, n: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if m >= p.rows {
        return;
    }
    let hd = head_of(z, p.batch0, p.heads_q, p.group);
    let l = p.row0 + m;
    let at = (z * p.rows + m) * p.cols + n;
    let causal = (p.flags & 4u) != 0u;
    let visible = !causal || i32(n + 7u) <= i32(l) + p.causal_offset;
    if (p.flags & 3u) == 0u && visible && n + 8u <= p.cols {
        let scaled_lo = lo * p.scale;
        let scaled_hi = hi * p.scale;
        scores[at] = scaled_lo.x;
        scores[at + 1u] = scaled_lo.y;
        scores[at + 2u] = scaled_lo.z;
        scores[at + 3u] = scaled_lo.w;
        scores[at + 4u] = scaled_hi.x;
        scores[at + 5u] = scaled_hi.y;
        scores[at + 6u] = scaled_hi.z;
        scores[at + 7u] = scaled_hi.w;
        return;
    }
    for (var c = 0u; c < 8u && n + c < p.cols; c++) {
        scores[at + c] = masked_score(row_at(lo, hi, c) * p.scale, hd, l, n + c);
    }
}
