// Shared by the kernels whose subgroups share operands (linear_shared.wgsl, av_shared.wgsl,
// fused_subgroup.wgsl): lane j loads one vec4 (row, or key, j) and every lane gets all 8.
// Every lane of the subgroup must call it together, and lanes 0–7 must be there.

// The vec4 `x` of each of lanes 0–7, in lane order.
fn from_lanes8(x: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        subgroupBroadcast(x, 0u), subgroupBroadcast(x, 1u),
        subgroupBroadcast(x, 2u), subgroupBroadcast(x, 3u),
        subgroupBroadcast(x, 4u), subgroupBroadcast(x, 5u),
        subgroupBroadcast(x, 6u), subgroupBroadcast(x, 7u),
    );
}
