// Output of one block of query rows, O = P · V, computed in registers: each invocation reads
// its 4 rows of probabilities and the matching rows of V straight from storage as vec4 and
// keeps a 4 × 8 block of O in registers. No workgroup memory, no barriers; on lavapipe this
// ran bert-base's P·V in about 60% of the staged kernel's time (av.wgsl).
//
// A masked key (probability exactly 0) must never touch a row, even when its value is
// non-finite. The fast loop multiplies blindly; a non-finite value it meets leaves a
// non-finite accumulator behind (0·inf is NaN, and inf or NaN never turns finite again), so
// a block whose result is not all finite is computed again with such keys skipped. Both
// loops use the same fma in the same order, so rows that met no non-finite value come out
// alike either way.
//
// Needs what vec4 loads need: keys, a value head size, and offsets and strides of V that
// are multiples of 4 (the crate falls back to av.wgsl otherwise). Same parameters as
// av.wgsl (av_params.wgsl); heads.wgsl maps z to (batch, head); direct_entry.wgsl is the
// entry point and rows_own.wgsl supplies the rows of probabilities (rows4). Where subgroups
// share them the crate runs av_shared.wgsl instead.

@group(0) @binding(1) var<storage, read> probs: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<Elem>>;

fn load_a4(i: u32) -> vec4<f32> {
    return probs[i];
}

override WG_X: u32 = 8u; // invocations along the output columns
override WG_Y: u32 = 8u; // invocations along the query rows

const TM: u32 = 4u; // query rows per invocation
const TN: u32 = 8u; // output columns per invocation (two vec4)

// One invocation's 4 × 8 block of O (direct_entry.wgsl calls it).
fn block(wg: vec3<u32>, lid: vec2<u32>) {
    let z = wg.z;
    let m0 = (wg.y * WG_Y + lid.y) * TM;
    let j0 = (wg.x * WG_X + lid.x) * TN;
    // Where the workgroup's first column is past the end, so are all of its columns; an
    // invocation whose own columns are past the end stores nothing.
    if m0 >= p.rows || wg.x * WG_X * TN >= p.cols {
        return;
    }
    let steps = (keys_read(m0, TM) + 3u) / 4u;
    let hd = head_of(z, p.batch0, p.heads_q, p.group);
    // Indices in vec4s. Rows and columns past the end read the last one; they are not stored.
    let row = p.depth / 4u;
    let last_m = p.rows - 1u;
    let pi = vec4<u32>(
        (z * p.rows + min(m0, last_m)) * row,
        (z * p.rows + min(m0 + 1u, last_m)) * row,
        (z * p.rows + min(m0 + 2u, last_m)) * row,
        (z * p.rows + min(m0 + 3u, last_m)) * row,
    );
    let v_row = p.v_stride_s / 4u;
    let v_base = (p.v_offset + hd.batch * p.v_stride_b + hd.head_kv * p.v_stride_h) / 4u;
    let last_c = p.cols / 4u - 1u;
    let vc0 = v_base + min(j0 / 4u, last_c);
    let vc1 = v_base + min(j0 / 4u + 1u, last_c);

    // acc[2r + c / 4][c % 4]: row m0 + r, column j0 + c. Constant indices keep it in
    // registers.
    var acc: array<vec4<f32>, 8>;
    for (var t = 0u; t < steps; t++) {
        let a = rows4(pi, t);
        let s = 4u * t * v_row;
        let b00 = vec4<f32>(v[vc0 + s]);
        let b01 = vec4<f32>(v[vc1 + s]);
        let b10 = vec4<f32>(v[vc0 + s + v_row]);
        let b11 = vec4<f32>(v[vc1 + s + v_row]);
        let b20 = vec4<f32>(v[vc0 + s + 2u * v_row]);
        let b21 = vec4<f32>(v[vc1 + s + 2u * v_row]);
        let b30 = vec4<f32>(v[vc0 + s + 3u * v_row]);
        let b31 = vec4<f32>(v[vc1 + s + 3u * v_row]);
        acc[0] = weigh(acc[0], a[0], b00, b10, b20, b30);
        acc[1] = weigh(acc[1], a[0], b01, b11, b21, b31);
        acc[2] = weigh(acc[2], a[1], b00, b10, b20, b30);
        acc[3] = weigh(acc[3], a[1], b01, b11, b21, b31);
        acc[4] = weigh(acc[4], a[2], b00, b10, b20, b30);
        acc[5] = weigh(acc[5], a[2], b01, b11, b21, b31);
        acc[6] = weigh(acc[6], a[3], b00, b10, b20, b30);
        acc[7] = weigh(acc[7], a[3], b01, b11, b21, b31);
    }

    // Constant indices only: an index computed at run time would move acc out of registers
    // for the whole kernel.
    let finite = all_finite(acc[0]) && all_finite(acc[1]) && all_finite(acc[2])
        && all_finite(acc[3]) && all_finite(acc[4]) && all_finite(acc[5])
        && all_finite(acc[6]) && all_finite(acc[7]);
    if !finite {
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
            let b0 = vec4<f32>(v[vc0 + s * v_row]);
            let b1 = vec4<f32>(v[vc1 + s * v_row]);
            let a0 = probs[pi.x + t][i];
            let a1 = probs[pi.y + t][i];
            let a2 = probs[pi.z + t][i];
            let a3 = probs[pi.w + t][i];
            acc[0] = fma_unless_zero(a0, b0, acc[0]);
            acc[1] = fma_unless_zero(a0, b1, acc[1]);
            acc[2] = fma_unless_zero(a1, b0, acc[2]);
            acc[3] = fma_unless_zero(a1, b1, acc[3]);
            acc[4] = fma_unless_zero(a2, b0, acc[4]);
            acc[5] = fma_unless_zero(a2, b1, acc[5]);
            acc[6] = fma_unless_zero(a3, b0, acc[6]);
            acc[7] = fma_unless_zero(a3, b1, acc[7]);
        }
    }

    store_row(z, m0, j0, acc[0], acc[1]);
    store_row(z, m0 + 1u, j0, acc[2], acc[3]);
    store_row(z, m0 + 2u, j0, acc[4], acc[5]);
    store_row(z, m0 + 3u, j0, acc[6], acc[7]);
}
