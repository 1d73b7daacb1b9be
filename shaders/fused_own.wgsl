// Entry point and reads of fused_direct.wgsl where each invocation reads its own keys and
// values: the path of every device (fused_subgroup.wgsl shares them within a subgroup).
// The kernel's walk is the invocation's own.

// Vec4 c of the 8 value rows that start at vec4s `rows`.
fn values8(rows: array<u32, 8>, c: u32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        vec4<f32>(v[rows[0] + c]), vec4<f32>(v[rows[1] + c]),
        vec4<f32>(v[rows[2] + c]), vec4<f32>(v[rows[3] + c]),
        vec4<f32>(v[rows[4] + c]), vec4<f32>(v[rows[5] + c]),
        vec4<f32>(v[rows[6] + c]), vec4<f32>(v[rows[7] + c]),
    );
}

// Where the walk over keys ends: the invocation's own end.
fn walk_end(end: u32) -> u32 {
    return end;
}

// Whether `b` holds for every invocation that walks with this one: itself.
fn all_lanes(b: bool) -> bool {
    return b;
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    fused_block(wg, groups, t);
}
