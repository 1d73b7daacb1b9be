// Shared by every attention kernel: special float values and tests on them, and the
// register-blocked products' step (`dots`).
//
// WGSL lets a compiler assume that floats are finite, so a comparison such as `x != x` may
// be folded away; these tests look at the bits instead, which no compiler may ignore.

// -inf and NaN, spelled so that no constant expression overflows.
fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// A mask entry that blocks its position outright (a blocked bool, a float -inf).
fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == 0xff800000u;
}

// A score that leaves its row without a meaningful distribution: NaN or +inf.
fn poisons_row(x: f32) -> bool {
    let bits = bitcast<u32>(x);
    return (bits & 0x7fffffffu) > 0x7f800000u || bits == 0x7f800000u;
}

// Whether all four components are finite.
fn all_finite(v: vec4<f32>) -> bool {
    let exponent = bitcast<vec4<u32>>(v) & vec4<u32>(0x7f800000u);
    return all(exponent != vec4<u32>(0x7f800000u));
}

// acc + a·b, or acc untouched when a is exactly 0 (so a non-finite b cannot reach it); the
// same fma as the fast path otherwise, so both round alike.
fn fma_unless_zero(a: f32, b: vec4<f32>, acc: vec4<f32>) -> vec4<f32> {
    return select(fma(vec4<f32>(a), b, acc), acc, a == 0.0);
}

// Column c (0..8) of a row of 8 results held as two vec4, `lo` then `hi`: how the matrix
// kernels hand rows to their epilogues, whose loops over c would otherwise index the
// accumulators at run time (and move them out of registers).
fn row_at(lo: vec4<f32>, hi: vec4<f32>, c: u32) -> f32 {
    return select(hi[c % 4u], lo[c % 4u], c < 4u);
}

// acc + (a·b0, a·b1, a·b2, a·b3), as chains of fma in component order.
fn dots(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(
        fma(a.w, b0.w, fma(a.z, b0.z, fma(a.y, b0.y, fma(a.x, b0.x, acc.x)))),
        fma(a.w, b1.w, fma(a.z, b1.z, fma(a.y, b1.y, fma(a.x, b1.x, acc.y)))),
        fma(a.w, b2.w, fma(a.z, b2.z, fma(a.y, b2.y, fma(a.x, b2.x, acc.z)))),
        fma(a.w, b3.w, fma(a.z, b3.z, fma(a.y, b3.y, fma(a.x, b3.x, acc.w)))),
    );
}
