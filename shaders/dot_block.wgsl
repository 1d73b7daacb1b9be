// Shared by the register-blocked products whose operands both run along the depth:
// qk_direct.wgsl (Q·Kᵀ), linear_direct.wgsl (X·Wᵀ) and fused_direct.wgsl (its scores). The
// kernel that includes this file supplies the reads of both operands:
//   fn rows4(rows: vec4<u32>, t: u32) -> array<vec4<f32>, 4>
//       vec4 t of 4 rows of A (queries, or inputs): rows_own.wgsl, or direct_subgroup.wgsl
//       where the lanes of a subgroup share their rows
//   fn cols8(cols: array<u32, 8>, t: u32) -> array<vec4<f32>, 8>
//       vec4 t of 8 rows of B (keys, or weight rows): cols_own.wgsl, or
//       fused_subgroup.wgsl where the lanes of a subgroup share their keys
// float.wgsl has `dots`.

// The 4 × 8 block of dot products of A's rows m0..m0 + 4 with B's rows n0..n0 + 8 over
// `steps` vec4s: element (r, c) is acc[2r + c / 4][c % 4]. Row m of A starts at vec4
// a_base + m·a_row, row n of B at b_base + n·b_row; rows past last_m or last_n read the last
// one (their results are not stored). Constant indices keep the block in registers.
fn dot_block(
    a_base: u32, a_row: u32, m0: u32, last_m: u32,
    b_base: u32, b_row: u32, n0: u32, last_n: u32,
    steps: u32,
) -> array<vec4<f32>, 8> {
    let ai = vec4<u32>(
        a_base + min(m0, last_m) * a_row,
        a_base + min(m0 + 1u, last_m) * a_row,
        a_base + min(m0 + 2u, last_m) * a_row,
        a_base + min(m0 + 3u, last_m) * a_row,
    );
    let bi = array<u32, 8>(
        b_base + min(n0, last_n) * b_row,
        b_base + min(n0 + 1u, last_n) * b_row,
        b_base + min(n0 + 2u, last_n) * b_row,
        b_base + min(n0 + 3u, last_n) * b_row,
        b_base + min(n0 + 4u, last_n) * b_row,
        b_base + min(n0 + 5u, last_n) * b_row,
        b_base + min(n0 + 6u, last_n) * b_row,
        b_base + min(n0 + 7u, last_n) * b_row,
    );
    var acc: array<vec4<f32>, 8>;
    for (var t = 0u; t < steps; t++) {
        let a = rows4(ai, t);
        let b = cols8(bi, t);
        acc[0] = dots(acc[0], a[0], b[0], b[1], b[2], b[3]);
        acc[1] = dots(acc[1], a[0], b[4], b[5], b[6], b[7]);
        acc[2] = dots(acc[2], a[1], b[0], b[1], b[2], b[3]);
        acc[3] = dots(acc[3], a[1], b[4], b[5], b[6], b[7]);
        acc[4] = dots(acc[4], a[2], b[0], b[1], b[2], b[3]);
        acc[5] = dots(acc[5], a[2], b[4], b[5], b[6], b[7]);
        acc[6] = dots(acc[6], a[3], b[0], b[1], b[2], b[3]);
        acc[7] = dots(acc[7], a[3], b[4], b[5], b[6], b[7]);
    }
    return acc;
}
