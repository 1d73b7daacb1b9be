// Shared core of the three matrix-product kernels (linear.wgsl, qk.wgsl, av.wgsl), prepended
// to each of them when the crate builds its pipelines.
//
// One workgroup computes a BM × BN tile of C = A · B (BM = 4·WG_Y, BN = 4·WG_X). The depth
// K is walked BK at a time: the workgroup stages a BM × BK slab of A and a BK × BN slab of B
// in workgroup memory (each global element is read once per workgroup, not once per output),
// then every invocation accumulates its own 4 × 4 block of C in registers from vec4 reads of
// the staged slabs — two vec4 loads feed sixteen multiply-adds.
//
// The kernel that includes this file supplies, for its own bindings and strides:
//   fn load_a(z: u32, m: u32, k: u32) -> f32     element (m, k) of batch z's A, 0 outside
//   fn load_b(z: u32, k: u32, n: u32) -> f32     element (k, n) of batch z's B, 0 outside
//   const B_N_CONTIGUOUS: bool                   B's memory runs along n (else along k),
//                                                so adjacent invocations load adjacent floats
//   const SKIP_ZERO_A: bool                      an A element of exactly 0 contributes
//                                                nothing, even against a non-finite B
//                                                (P·V: masked keys never touch a row)

override WG_X: u32 = 16u; // invocations along n
override WG_Y: u32 = 16u; // invocations along m
override BK: u32 = 16u;   // depth of one staged slab

// Staged slabs, k-major: tile_a[kk * WG_Y + i] holds A rows 4i..4i+3 at depth kk.
var<workgroup> tile_a: array<vec4<f32>, BK * WG_Y>;
var<workgroup> tile_b: array<vec4<f32>, BK * WG_X>;

// The 4 × 4 accumulator block of invocation `lid` in the tile at (row0, col0) of batch z,
// over depth `depth`. Row r of the block is C[row0 + 4·lid.y + r, col0 + 4·lid.x .. +4].
fn gemm_tile(z: u32, row0: u32, col0: u32, depth: u32, lid: vec3<u32>) -> array<vec4<f32>, 4> {
    let invocation = lid.y * WG_X + lid.x;
    let invocations = WG_X * WG_Y;
    let bm = 4u * WG_Y;
    let bn = 4u * WG_X;
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));

    for (var k0 = 0u; k0 < depth; k0 += BK) {
        // Stage A: A is k-contiguous, so consecutive invocations take consecutive k.
        for (var i = invocation; i < bm * BK; i += invocations) {
            let kk = i % BK;
            let mm = i / BK;
            tile_a[kk * WG_Y + mm / 4u][mm % 4u] = load_a(z, row0 + mm, k0 + kk);
        }
        // Stage B along whichever index its memory runs.
        for (var i = invocation; i < bn * BK; i += invocations) {
            var kk: u32;
            var nn: u32;
            if B_N_CONTIGUOUS {
                nn = i % bn;
                kk = i / bn;
            } else {
                kk = i % BK;
                nn = i / BK;
            }
            tile_b[kk * WG_X + nn / 4u][nn % 4u] = load_b(z, k0 + kk, col0 + nn);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < BK; kk++) {
            let a = tile_a[kk * WG_Y + lid.y];
            let b = tile_b[kk * WG_X + lid.x];
            if SKIP_ZERO_A && !all_finite(b) {
                let zero = vec4<f32>(0.0);
                acc[0] += select(a.x * b, zero, a.x == 0.0);
                acc[1] += select(a.y * b, zero, a.y == 0.0);
                acc[2] += select(a.z * b, zero, a.z == 0.0);
                acc[3] += select(a.w * b, zero, a.w == 0.0);
            } else {
                acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
                acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
                acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
                acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// Top-left corner of this workgroup's tile: (row0, col0).
fn tile_origin(wg: vec3<u32>) -> vec2<u32> {
    return vec2<u32>(wg.y * 4u * WG_Y, wg.x * 4u * WG_X);
}
