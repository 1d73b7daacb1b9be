// Shared by the fused kernels (fused.wgsl, staged in workgroup memory, and
// fused_direct.wgsl and fused_lanes.wgsl, register-blocked): their parameters, the masks'
// bindings, and the layout of the split and run state in `partial`.

struct Params {
    rows: u32,          // L
    cols: u32,          // S
    depth: u32,         // d
    depth_v: u32,       // dv
    heads_q: u32,
    group: u32,
    flags: u32,         // bit 0: mask0, bit 1: mask1, bit 2: causal
    splits: u32,        // key splits (1: none)
    q_offset: u32,
    q_stride_b: u32,
    q_stride_h: u32,
    q_stride_l: u32,
    k_offset: u32,
    k_stride_b: u32,
    k_stride_h: u32,
    k_stride_s: u32,
    v_offset: u32,
    v_stride_b: u32,
    v_stride_h: u32,
    v_stride_s: u32,
    o_offset: u32,
    o_stride_b: u32,
    o_stride_h: u32,
    o_stride_l: u32,
    scale: f32,
    causal_offset: i32,
    split_len: u32,     // keys per split, a multiple of BC
    mode: u32,          // 0: whole, 1: one split into `partial`, 2: flagged blocks whole,
                        // 3, 4, 5: the first, a middle, the last run of keys (state in `partial`)
    mask0_stride_b: u32,
    mask0_stride_h: u32,
    mask0_stride_l: u32,
    mask0_stride_s: u32,
    mask1_stride_b: u32,
    mask1_stride_h: u32,
    mask1_stride_l: u32,
    mask1_stride_s: u32,
    run: u32,           // modes 3–5: which run of `split_len` keys
    block0: u32,        // the launch's first query block (a grid's x holds at most 65535)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read> mask0: array<f32>;
@group(0) @binding(5) var<storage, read> mask1: array<f32>;
// Bindings 6 and 7, the output `o` and the state `partial` (modes 1–5, layout in
// partial_* below: the splits' results, or the rows' state between runs of keys; a
// placeholder in mode 0), each kernel views as it reads them: fused_io.wgsl as scalars,
// fused_lanes.wgsl as vec4.

// Where head `hd`'s rows of Q, K and V start, and their strides, in vec4s: for the kernels
// that read them as vec4 (fused_direct.wgsl, fused_lanes.wgsl).
struct VecRows {
    q_base: u32,
    q_row: u32,
    k_base: u32,
    k_row: u32,
    v_base: u32,
    v_row: u32,
}

fn vec_rows(hd: Head) -> VecRows {
    return VecRows(
        (p.q_offset + hd.batch * p.q_stride_b + hd.head_q * p.q_stride_h) / 4u,
        p.q_stride_l / 4u,
        (p.k_offset + hd.batch * p.k_stride_b + hd.head_kv * p.k_stride_h) / 4u,
        p.k_stride_s / 4u,
        (p.v_offset + hd.batch * p.v_stride_b + hd.head_kv * p.v_stride_h) / 4u,
        p.v_stride_s / 4u,
    );
}

// Modes 1 and 2 run as one launch (block0 0): they serve calls of few query blocks only.
// Layout of `partial` for S splits, Z = batch·heads, L query rows, RB query blocks:
// unnormalised outputs [S, Z, L, dv], then statistics [S, Z, L, 3] (max, sum, poisoned),
// then flags [S, Z, RB] (1.0: the split met a non-finite value).
fn partial_out(split: u32, z: u32, l: u32, zs: u32) -> u32 {
    return ((split * zs + z) * p.rows + l) * p.depth_v;
}

fn partial_stats(split: u32, z: u32, l: u32, zs: u32) -> u32 {
    return p.splits * zs * p.rows * p.depth_v + ((split * zs + z) * p.rows + l) * 3u;
}

fn partial_flag(split: u32, z: u32, block: u32, zs: u32, blocks: u32) -> u32 {
    return p.splits * zs * p.rows * (p.depth_v + 3u) + (split * zs + z) * blocks + block;
}
