// The rows of B a register-blocked invocation multiplies (dot_block.wgsl), read by the
// invocation itself: the path of every device. fused_subgroup.wgsl is the path that shares
// them among the lanes of a subgroup. The kernel supplies `fn load_b4(i: u32) -> vec4<f32>`,
// vec4 i of B.

// Vec4 `t` of each of the 8 rows that start at vec4s `cols`.
fn cols8(cols: array<u32, 8>, t: u32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        load_b4(cols[0] + t), load_b4(cols[1] + t), load_b4(cols[2] + t), load_b4(cols[3] + t),
        load_b4(cols[4] + t), load_b4(cols[5] + t), load_b4(cols[6] + t), load_b4(cols[7] + t),
    );
}
