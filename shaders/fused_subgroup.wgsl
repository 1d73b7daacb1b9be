// Entry point and reads of fused_direct.wgsl where the lanes of a subgroup share the keys
// and values they all walk: lane j loads key j of each block of 8 (and its value row) and
// the subgroup broadcasts them, so a block costs one load per lane where it cost eight
// (lavapipe runs every load as a per-lane loop, even where the lanes' addresses agree).
//
// The crate uses it where the device has subgroup operations, its subgroups are at least
// 8 wide and the workgroup is a whole number of its widest subgroups, so every subgroup has
// lanes 0–7 to load (a workgroup of 12 on subgroups of 8 would leave one of 4).
// Every lane must reach each broadcast: the lanes walk the same keys, to the latest end
// among them (walk_end; the kernel masks the keys past a row's own causal limit), walk
// again together when any needs it (all_lanes), and return early only together.
// lanes8.wgsl has the broadcasts.

var<private> lane: u32;

// Vec4 `t` of each of the 8 key rows that start at vec4s `cols` (dot_block.wgsl's B).
fn cols8(cols: array<u32, 8>, t: u32) -> array<vec4<f32>, 8> {
    return from_lanes8(load_b4(cols[lane % 8u] + t));
}

// Vec4 c of the 8 value rows that start at vec4s `rows`.
fn values8(rows: array<u32, 8>, c: u32) -> array<vec4<f32>, 8> {
    return from_lanes8(vec4<f32>(v[rows[lane % 8u] + c]));
}

// Where the subgroup's walk over keys ends: the latest end among its lanes.
fn walk_end(end: u32) -> u32 {
    return subgroupMax(end);
}

// Whether `b` holds for every lane of the subgroup.
fn all_lanes(b: bool) -> bool {
    return subgroupAll(b);
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_invocation_id) invocation: u32,
) {
    lane = invocation;
    fused_block(wg, groups, t);
}
