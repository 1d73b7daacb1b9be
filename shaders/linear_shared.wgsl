// Linear layer, Y = X · Wᵀ + b, register-blocked as linear_direct.wgsl but with the rows of
// X shared through subgroup operations: the crate uses it where the device's subgroups are
// exactly WG_X invocations wide (lavapipe: 8). Each subgroup takes 8 rows of X; lane j loads
// row j and `subgroupBroadcast` hands all 8 to every lane, which multiplies them by its own
// 4 rows of W. So an invocation keeps an 8 × 4 block of Y in registers (linear_direct.wgsl:
// 4 × 8) and loads 5 vec4s per step of 4 input features where it loaded 12: on lavapipe,
// where every load is a per-lane loop, bert-base's projections ran 1.6× faster than 4 × 8
// blocks with the 4 rows shared, 2× faster than with none shared.
//
// Needs what linear_direct.wgsl needs (vec4 loads). The workgroup is WG_Y subgroups, one
// after another along the rows: it covers 8·WG_Y rows and 4·WG_X features. Same parameters
// as linear.wgsl (linear_params.wgsl, whose store_row4 writes the block); float.wgsl has
// `dots`, lanes8.wgsl the broadcasts.

@group(0) @binding(1) var<storage, read> x: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<Elem>>;

override WG_X: u32 = 8u; // lanes of a subgroup, along the output features
override WG_Y: u32 = 8u; // subgroups, along the rows

const TM: u32 = 8u; // rows per invocation, one per lane of its subgroup
const TN: u32 = 4u; // output features per invocation

@compute @workgroup_size(WG_X * WG_Y, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_id) group: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = (wg.y * WG_Y + group) * TM;
    let n0 = (wg.x * WG_X + lane) * TN;
    // A subgroup returns together (every lane must reach each broadcast); a lane whose
    // features are past the end computes on the last one and stores nothing.
    if m0 >= p.rows || wg.x * WG_X * TN >= p.cols {
        return;
    }
    let steps = p.depth / 4u;
    let last_m = p.rows - 1u;
    let last_n = p.cols - 1u;
    let own_row = p.x_offset / 4u + min(m0 + lane, last_m) * (p.x_row_stride / 4u);
    let w_base = p.w_offset / 4u;
    let w0 = w_base + min(n0, last_n) * steps;
    let w1 = w_base + min(n0 + 1u, last_n) * steps;
    let w2 = w_base + min(n0 + 2u, last_n) * steps;
    let w3 = w_base + min(n0 + 3u, last_n) * steps;
    // acc[r][c]: row m0 + r, feature n0 + c. Constant indices keep it in registers.
    var acc: array<vec4<f32>, 8>;
    for (var t = 0u; t < steps; t++) {
        let a = from_lanes8(vec4<f32>(x[own_row + t]));
        let b0 = vec4<f32>(w[w0 + t]);
        let b1 = vec4<f32>(w[w1 + t]);
        let b2 = vec4<f32>(w[w2 + t]);
        let b3 = vec4<f32>(w[w3 + t]);
        acc[0] = dots(acc[0], a[0], b0, b1, b2, b3);
        acc[1] = dots(acc[1], a[1], b0, b1, b2, b3);
        acc[2] = dots(acc[2], a[2], b0, b1, b2, b3);
        acc[3] = dots(acc[3], a[3], b0, b1, b2, b3);
        acc[4] = dots(acc[4], a[4], b0, b1, b2, b3);
        acc[5] = dots(acc[5], a[5], b0, b1, b2, b3);
        acc[6] = dots(acc[6], a[6], b0, b1, b2, b3);
        acc[7] = dots(acc[7], a[7], b0, b1, b2, b3);
    }
    store_row4(m0, n0, acc[0]);
    store_row4(m0 + 1u, n0, acc[1]);
    store_row4(m0 + 2u, n0, acc[2]);
    store_row4(m0 + 3u, n0, acc[3]);
    store_row4(m0 + 4u, n0, acc[4]);
    store_row4(m0 + 5u, n0, acc[5]);
    store_row4(m0 + 6u, n0, acc[6]);
    store_row4(m0 + 7u, n0, acc[7]);
}
