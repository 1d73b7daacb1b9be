// Linear layer, Y = X · Wᵀ + b (PyTorch's [out, in] weights), computed in registers: each
// invocation reads its 4 rows of X and 8 rows of W straight from storage as vec4 along the
// input features and keeps the 4 × 8 block of Y in registers (the scheme of
// qk_direct.wgsl: no workgroup memory, no barriers).
//
// Needs what vec4 loads need: input features, offsets and the row stride of X that are
// multiples of 4 (the crate falls back to linear.wgsl otherwise). Same parameters as
// linear.wgsl (linear_params.wgsl); dot_block.wgsl computes the block; direct_entry.wgsl
// is the entry point and rows_own.wgsl supplies the rows of X (rows4). Where subgroups
// share them the crate runs linear_shared.wgsl instead.

@group(0) @binding(1) var<storage, read> x: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<Elem>>;

fn load_a4(i: u32) -> vec4<f32> {
    return vec4<f32>(x[i]);
}

fn load_b4(i: u32) -> vec4<f32> {
    return vec4<f32>(w[i]);
}

override WG_X: u32 = 8u; // invocations along the output features
override WG_Y: u32 = 8u; // invocations along the rows

const TM: u32 = 4u; // rows per invocation
const TN: u32 = 8u; // output features per invocation

// One invocation's 4 × 8 block of Y (direct_entry.wgsl calls it).
fn block(wg: vec3<u32>, lid: vec2<u32>) {
    let m0 = (wg.y * WG_Y + lid.y) * TM;
    let n0 = (wg.x * WG_X + lid.x) * TN;
    // Where the workgroup's first column is past the end, so are all of its columns; an
    // invocation whose own columns are past the end stores nothing.
    if m0 >= p.rows || wg.x * WG_X * TN >= p.cols {
        return;
    }
    let acc = dot_block(
        p.x_offset / 4u, p.x_row_stride / 4u, m0, p.rows - 1u,
        p.w_offset / 4u, p.depth / 4u, n0, p.cols - 1u,
        p.depth / 4u,
    );
    // Constant indices only (see row_at).
    store_row(0u, m0, n0, acc[0], acc[1]);
    store_row(0u, m0 + 1u, n0, acc[2], acc[3]);
    store_row(0u, m0 + 2u, n0, acc[4], acc[5]);
    store_row(0u, m0 + 3u, n0, acc[6], acc[7]);
}
