// Shared by av.wgsl (staged tiles), av_direct.wgsl (register blocks read straight from
// storage) and av_shared.wgsl (the same, rows shared through subgroups): the parameter block
// of the P·V kernel, its output binding, the epilogue and the product step (`weigh`);
// each kernel declares the probabilities and V with its own element type (scalars, or
// vec4).

struct Params {
    rows: u32,        // query rows in this block (M)
    cols: u32,        // value head size (N = dv)
    depth: u32,       // keys (K = S)
    heads_q: u32,
    group: u32,
    batch0: u32,
    row0: u32,
    causal: u32,        // 1: keys past causal_offset + the tile's last row have probability 0
    v_offset: u32,
    v_stride_b: u32,
    v_stride_h: u32,
    v_stride_s: u32,
    o_offset: u32,
    o_stride_b: u32,
    o_stride_h: u32,
    o_stride_l: u32,
    causal_offset: i32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> o: array<Out>;

// Keys a block of rows m0 .. m0 + rows reads: all of them, or under a causal mask those up
// to the limit of its last row (past it the block's probabilities are exact zeros:
// softmax.wgsl writes zeros up to the limit of each group of rows the P·V kernel reads,
// `Choice::limit_rows`).
fn keys_read(m0: u32, rows: u32) -> u32 {
    if p.causal == 0u {
        return p.depth;
    }
    let last_row = p.row0 + min(m0 + rows, p.rows) - 1u;
    return u32(clamp(i32(last_row) + p.causal_offset + 1, 0, i32(p.depth)));
}

// acc + a.x·b0 + a.y·b1 + a.z·b2 + a.w·b3 (four keys' worth of one row), in key order.
fn weigh(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(a.w), b3, fma(vec4<f32>(a.z), b2, fma(vec4<f32>(a.y), b1, fma(vec4<f32>(a.x), b0, acc))));
}

// Row m of batch z's block of O, columns n..n + 4 (av_shared.wgsl's blocks), where they
// exist, into the concatenated-heads layout.
fn store_row4(z: u32, m: u32, n: u32, x: vec4<f32>) {
    if m >= p.rows {
        return;
    }
    let hd = head_of(z, p.batch0, p.heads_q, p.group);
    let row = p.o_offset + hd.batch * p.o_stride_b + hd.head_q * p.o_stride_h
        + (p.row0 + m) * p.o_stride_l;
    for (var c = 0u; c < 4u && n + c < p.cols; c++) {
        o[row + n + c] = Out(x[c]);
    }
}

// Row m of batch z's block of O, columns n..n + 8 (see `row_at`), where they exist, into
// the concatenated-heads layout.
fn store_row(z: u32, m: u32, n: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if m >= p.rows {
        return;
    }
    let hd = head_of(z, p.batch0, p.heads_q, p.group);
    let row = p.o_offset + hd.batch * p.o_stride_b + hd.head_q * p.o_stride_h
        + (p.row0 + m) * p.o_stride_l;
    for (var c = 0u; c < 8u && n + c < p.cols; c++) {
        o[row + n + c] = Out(row_at(lo, hi, c));
    }
}
