// Output of one block of query rows, O = P · V, register-blocked as av_direct.wgsl but with
// the rows of probabilities shared through subgroup operations: the crate uses it where the
// device's subgroups are exactly WG_X invocations wide (lavapipe: 8). Each subgroup takes 8
// query rows; lane j loads row j's probabilities and `subgroupBroadcast` hands all 8 rows
// to every lane, which weighs them against its own 4 columns of V. So an invocation keeps
// an 8 × 4 block of O in registers (av_direct.wgsl: 4 × 8) and loads 5 vec4s per step of
// 4 keys where av_direct.wgsl loads 9 (12 with no rows shared).
//
// Non-finite values as in av_direct.wgsl: a block whose result is not all finite is
// computed again, key by key, skipping keys of probability 0 (each lane alone: that loop
// reads its own rows, no broadcasts).
//
// Needs what av_direct.wgsl needs (vec4 loads). The workgroup is WG_Y subgroups, one after
// another along the rows: it covers 8·WG_Y rows and 4·WG_X columns. Same parameters as
// av.wgsl (av_params.wgsl, whose store_row4 writes the block and `weigh` is the step);
// heads.wgsl maps z to (batch, head); lanes8.wgsl has the broadcasts.

@group(0) @binding(1) var<storage, read> probs: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<Elem>>;

override WG_X: u32 = 8u; // lanes of a subgroup, along the output columns
override WG_Y: u32 = 8u; // subgroups, along the query rows

const TM: u32 = 8u; // query rows per invocation, one per lane of its subgroup
const TN: u32 = 4u; // output columns per invocation (one vec4)

@compute @workgroup_size(WG_X * WG_Y, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_id) group: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let z = wg.z;
    let m0 = (wg.y * WG_Y + group) * TM;
    let j0 = (wg.x * WG_X + lane) * TN;
    // A subgroup returns together (every lane must reach each broadcast); a lane whose
    // columns are past the end computes on the last one and stores nothing.
    if m0 >= p.rows || wg.x * WG_X * TN >= p.cols {
        return;
    }
    // The same keys for every lane of the subgroup: those its 8 rows see.
    let steps = (keys_read(m0, TM) + 3u) / 4u;
    let hd = head_of(z, p.batch0, p.heads_q, p.group);
    // Indices in vec4s. Rows and columns past the end read the last one; they are not stored.
    let row = p.depth / 4u;
    let first = z * p.rows;
    let last_m = p.rows - 1u;
    let own_row = (first + min(m0 + lane, last_m)) * row;
    let v_row = p.v_stride_s / 4u;
    let v_base = (p.v_offset + hd.batch * p.v_stride_b + hd.head_kv * p.v_stride_h) / 4u;
    let vc = v_base + min(j0 / 4u, p.cols / 4u - 1u);

    // acc[r]: row m0 + r, columns j0 .. j0 + 4. Constant indices keep it in registers.
    var acc: array<vec4<f32>, 8>;
    for (var t = 0u; t < steps; t++) {
        let a = from_lanes8(probs[own_row + t]);
        let s = 4u * t * v_row;
        let b0 = vec4<f32>(v[vc + s]);
        let b1 = vec4<f32>(v[vc + s + v_row]);
        let b2 = vec4<f32>(v[vc + s + 2u * v_row]);
        let b3 = vec4<f32>(v[vc + s + 3u * v_row]);
        acc[0] = weigh(acc[0], a[0], b0, b1, b2, b3);
        acc[1] = weigh(acc[1], a[1], b0, b1, b2, b3);
        acc[2] = weigh(acc[2], a[2], b0, b1, b2, b3);
        acc[3] = weigh(acc[3], a[3], b0, b1, b2, b3);
        acc[4] = weigh(acc[4], a[4], b0, b1, b2, b3);
        acc[5] = weigh(acc[5], a[5], b0, b1, b2, b3);
        acc[6] = weigh(acc[6], a[6], b0, b1, b2, b3);
        acc[7] = weigh(acc[7], a[7], b0, b1, b2, b3);
    }

    let finite = all_finite(acc[0]) && all_finite(acc[1]) && all_finite(acc[2])
        && all_finite(acc[3]) && all_finite(acc[4]) && all_finite(acc[5])
        && all_finite(acc[6]) && all_finite(acc[7]);
    if !finite {
        // Each of the 8 rows, read by this lane itself.
        let rows = array<u32, 8>(
            (first + min(m0, last_m)) * row, (first + min(m0 + 1u, last_m)) * row,
            (first + min(m0 + 2u, last_m)) * row, (first + min(m0 + 3u, last_m)) * row,
            (first + min(m0 + 4u, last_m)) * row, (first + min(m0 + 5u, last_m)) * row,
            (first + min(m0 + 6u, last_m)) * row, (first + min(m0 + 7u, last_m)) * row,
        );
        acc[0] = vec4<f32>(0.0);
        acc[1] = vec4<f32>(0.0);
        acc[2] = vec4<f32>(0.0);
        acc[3] = vec4<f32>(0.0);
        acc[4] = vec4<f32>(0.0);
        acc[5] = vec4<f32>(0.0);
        acc[6] = vec4<f32>(0.0);
        acc[7] = vec4<f32>(0.0);
        // One key at a time: the rare path, kept small.
        for (var s = 0u; s < 4u * steps; s++) {
            let t = s / 4u;
            let i = s % 4u;
            let b = vec4<f32>(v[vc + s * v_row]);
            acc[0] = fma_unless_zero(probs[rows[0] + t][i], b, acc[0]);
            acc[1] = fma_unless_zero(probs[rows[1] + t][i], b, acc[1]);
            acc[2] = fma_unless_zero(probs[rows[2] + t][i], b, acc[2]);
            acc[3] = fma_unless_zero(probs[rows[3] + t][i], b, acc[3]);
            acc[4] = fma_unless_zero(probs[rows[4] + t][i], b, acc[4]);
            acc[5] = fma_unless_zero(probs[rows[5] + t][i], b, acc[5]);
            acc[6] = fma_unless_zero(probs[rows[6] + t][i], b, acc[6]);
            acc[7] = fma_unless_zero(probs[rows[7] + t][i], b, acc[7]);
        }
    }

    store_row4(z, m0, j0, acc[0]);
    store_row4(z, m0 + 1u, j0, acc[1]);
    store_row4(z, m0 + 2u, j0, acc[2]);
    store_row4(z, m0 + 3u, j0, acc[3]);
    store_row4(z, m0 + 4u, j0, acc[4]);
    store_row4(z, m0 + 5u, j0, acc[5]);
    store_row4(z, m0 + 6u, j0, acc[6]);
    store_row4(z, m0 + 7u, j0, acc[7]);
}
