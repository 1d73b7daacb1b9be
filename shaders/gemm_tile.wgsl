// Shared core of the three matrix-product kernels (linear.wgsl, qk.wgsl, av.wgsl), prepended
// to each of them when the crate builds its pipelines.
//
// One workgroup computes a BM × BN tile of C = A · B (BM = 8·WG_Y, BN = 8·WG_X). The depth
// K is walked BK at a time: the workgroup stages a BM × BK slab of A and a BK × BN slab of B
// in workgroup memory (each global element is read once per workgroup, not once per output),
// then every invocation accumulates its own 8 × 8 block of C in registers from vec4 reads of
// the staged slabs — four vec4 loads feed sixty-four multiply-adds.
//
// The kernel that includes this file supplies, for its own bindings and strides:
//   fn store_row(z: u32, m: u32, n: u32, lo: vec4<f32>, hi: vec4<f32>)
//                                                its epilogue: row m of batch z's C,
//                                                columns n..n + 8 (`row_at`), as far as
//                                                they exist
//   fn load_a(z: u32, m: u32, k: u32) -> f32     element (m, k) of batch z's A, 0 outside
//   fn load_b(z: u32, k: u32, n: u32) -> f32     element (k, n) of batch z's B, 0 outside
//   const B_N_CONTIGUOUS: bool                   B's memory runs along n (else along k),
//                                                so adjacent invocations load adjacent floats
//   const SKIP_ZERO_A: bool                      an A element of exactly 0 contributes
//                                                nothing, even against a non-finite B
//                                                (P·V: masked keys never touch a row)
//   fn slab_flag_clear(parity: u32)              with SKIP_ZERO_A, two flags in workgroup
//   fn slab_flag_set(parity: u32)                memory saying whether the staged B slab
//   fn slab_flag_get(parity: u32) -> bool        holds a non-finite element (no-ops
//                                                without: no workgroup memory spent)

override WG_X: u32 = 16u; // invocations along n
override WG_Y: u32 = 16u; // invocations along m
override BK: u32 = 16u;   // depth of one staged slab

// Rows and columns of C per invocation.
const TM: u32 = 8u;
const TN: u32 = 8u;

// Staged slabs, k-major: tile_a[kk * 2·WG_Y + i] holds A rows 4i..4i+3 at depth kk.
var<workgroup> tile_a: array<vec4<f32>, BK * WG_Y * 2u>;
var<workgroup> tile_b: array<vec4<f32>, BK * WG_X * 2u>;

// The 8 × 8 accumulator block of invocation `lid` in the tile at (row0, col0) of batch z,
// over depth `depth`: element (r, c) is acc[2r + c / 4][c % 4], C[row0 + 8·lid.y + r,
// col0 + 8·lid.x + c].
fn gemm_tile(z: u32, row0: u32, col0: u32, depth: u32, lid: vec3<u32>) -> array<vec4<f32>, 16> {
    let invocation = lid.y * WG_X + lid.x;
    let invocations = WG_X * WG_Y;
    let bm = TM * WG_Y;
    let bn = TN * WG_X;
    var acc: array<vec4<f32>, 16>;
    // SKIP_ZERO_A: one slab flag per parity (each cleared while the other slab is in use),
    // so the products take the careful route only for slabs that need it instead of testing
    // B at every step.
    if SKIP_ZERO_A {
        if invocation == 0u {
            slab_flag_clear(0u);
            slab_flag_clear(1u);
        }
        workgroupBarrier();
    }

    for (var k0 = 0u; k0 < depth; k0 += BK) {
        let parity = (k0 / BK) % 2u;
        // Stage A: A is k-contiguous, so consecutive invocations take consecutive k.
        for (var i = invocation; i < bm * BK; i += invocations) {
            let kk = i % BK;
            let mm = i / BK;
            tile_a[kk * 2u * WG_Y + mm / 4u][mm % 4u] = load_a(z, row0 + mm, k0 + kk);
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
            let b = load_b(z, k0 + kk, col0 + nn);
            if SKIP_ZERO_A && !all_finite(vec4<f32>(b)) {
                slab_flag_set(parity);
            }
            tile_b[kk * 2u * WG_X + nn / 4u][nn % 4u] = b;
        }
        workgroupBarrier();
        var careful = false;
        if SKIP_ZERO_A {
            careful = slab_flag_get(parity);
            // The next slab's flag: nobody sets it before the barrier that ends this one.
            if invocation == 0u {
                slab_flag_clear(1u - parity);
            }
        }

        // One test per slab, outside the loop: a test per step (or a loop over r indexing
        // acc) cost 20% of P·V on lavapipe. Constant indices keep acc in registers.
        if careful {
            for (var kk = 0u; kk < BK; kk++) {
                let a0 = tile_a[kk * 2u * WG_Y + 2u * lid.y];
                let a1 = tile_a[kk * 2u * WG_Y + 2u * lid.y + 1u];
                let b0 = tile_b[kk * 2u * WG_X + 2u * lid.x];
                let b1 = tile_b[kk * 2u * WG_X + 2u * lid.x + 1u];
                acc[0] = fma_unless_zero(a0.x, b0, acc[0]);
                acc[1] = fma_unless_zero(a0.x, b1, acc[1]);
                acc[2] = fma_unless_zero(a0.y, b0, acc[2]);
                acc[3] = fma_unless_zero(a0.y, b1, acc[3]);
                acc[4] = fma_unless_zero(a0.z, b0, acc[4]);
                acc[5] = fma_unless_zero(a0.z, b1, acc[5]);
                acc[6] = fma_unless_zero(a0.w, b0, acc[6]);
                acc[7] = fma_unless_zero(a0.w, b1, acc[7]);
                acc[8] = fma_unless_zero(a1.x, b0, acc[8]);
                acc[9] = fma_unless_zero(a1.x, b1, acc[9]);
                acc[10] = fma_unless_zero(a1.y, b0, acc[10]);
                acc[11] = fma_unless_zero(a1.y, b1, acc[11]);
                acc[12] = fma_unless_zero(a1.z, b0, acc[12]);
                acc[13] = fma_unless_zero(a1.z, b1, acc[13]);
                acc[14] = fma_unless_zero(a1.w, b0, acc[14]);
                acc[15] = fma_unless_zero(a1.w, b1, acc[15]);
            }
        } else {
            for (var kk = 0u; kk < BK; kk++) {
                let a0 = tile_a[kk * 2u * WG_Y + 2u * lid.y];
                let a1 = tile_a[kk * 2u * WG_Y + 2u * lid.y + 1u];
                let b0 = tile_b[kk * 2u * WG_X + 2u * lid.x];
                let b1 = tile_b[kk * 2u * WG_X + 2u * lid.x + 1u];
                acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
                acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
                acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
                acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
                acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
                acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
                acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
                acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
                acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
                acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
                acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
                acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
                acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
                acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
                acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
                acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// Top-left corner of this workgroup's tile: (row0, col0).
fn tile_origin(wg: vec3<u32>) -> vec2<u32> {
    return vec2<u32>(wg.y * TM * WG_Y, wg.x * TN * WG_X);
}

// The last of a tile's rows that exist, of `rows` (under a causal mask it sees the most keys).
fn tile_last_row(origin: vec2<u32>, rows: u32) -> u32 {
    return min(origin.x + TM * WG_Y, rows) - 1u;
}

// Hands an invocation's 8 × 8 block to the kernel's epilogue, `store_row(z, m, n, lo, hi)`
// (row m of C, columns n..n + 8 as two vec4: see `row_at`), one row at a time with constant
// indices: an index computed at run time would move acc out of registers for the whole
// kernel.
fn store_block(z: u32, origin: vec2<u32>, lid: vec3<u32>, acc: array<vec4<f32>, 16>) {
    let m = origin.x + TM * lid.y;
    let n = origin.y + TN * lid.x;
    store_row(z, m, n, acc[0], acc[1]);
    store_row(z, m + 1u, n, acc[2], acc[3]);
    store_row(z, m + 2u, n, acc[4], acc[5]);
    store_row(z, m + 3u, n, acc[6], acc[7]);
    store_row(z, m + 4u, n, acc[8], acc[9]);
    store_row(z, m + 5u, n, acc[10], acc[11]);
    store_row(z, m + 6u, n, acc[12], acc[13]);
    store_row(z, m + 7u, n, acc[14], acc[15]);
}
