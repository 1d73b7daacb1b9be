// The rows of A a register-blocked invocation multiplies, read by the invocation itself:
// the path of every device, and of kernels whose invocations do not share rows
// (fused_direct.wgsl). direct_subgroup.wgsl is the path that shares them.
// The kernel supplies `fn load_a4(i: u32) -> vec4<f32>`, vec4 i of A.

// Vec4 `t` of each of the 4 rows that start at vec4s `rows`.
fn rows4(rows: vec4<u32>, t: u32) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(
        load_a4(rows.x + t),
        load_a4(rows.y + t),
        load_a4(rows.z + t),
        load_a4(rows.w + t),
    );
}
