// Shared by qk.wgsl (staged tiles) and qk_direct.wgsl (register blocks read straight from
// storage): the parameter block of the scores kernel and its bindings besides Q and K, which
// each kernel declares with its own element type (Elem, or vec4<Elem>).

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
