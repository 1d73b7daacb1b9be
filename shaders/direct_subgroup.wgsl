// Entry point and row reads of the register-blocked QKᵀ (qk_direct) whose invocations
// that share rows form one subgroup: the crate uses it only
// where the device's subgroups are exactly WG_X invocations wide (lavapipe: 8).
//
// The WG_X invocations of a group multiply the same 4 rows of A by different columns. With
// rows_own.wgsl each of them loads all 4 rows; here lane j loads row j % 4 and the subgroup
// broadcasts the 4 rows to every lane. On lavapipe a load costs a per-lane loop whether or
// not the lanes' addresses agree, and a broadcast is a register move: QKᵀ ran about 1.1×
// faster (bert-base). The linear layer and P·V, whose products are long, share 8 rows
// instead, in kernels of their own (linear_shared.wgsl, av_shared.wgsl); so did QKᵀ in a
// trial, no faster (its products are 64 deep, and its stores of scores weigh more).
//
// Every lane of a subgroup must reach each broadcast: the kernels return early only where
// the whole group does (the rows, or the first column of the group, are past the end).
// naga allows subgroup_id and subgroup_invocation_id only in a one-dimensional workgroup,
// so the WG_X × WG_Y shape is laid out from them. That layout needs every subgroup full
// (WG_X lanes): Vulkan promises it for SPIR-V 1.6 (lavapipe) or with full subgroups
// required, which wgpu does not ask for; the CPU-adapter defaults are what was measured. The kernel supplies
// `fn load_a4(i: u32) -> vec4<f32>` and `fn block(wg: vec3<u32>, lid: vec2<u32>)`.

var<private> lane: u32;

// Vec4 `t` of each of the 4 rows that start at vec4s `rows`, as rows_own.wgsl returns it.
fn rows4(rows: vec4<u32>, t: u32) -> array<vec4<f32>, 4> {
    let x = load_a4(rows[lane % 4u] + t);
    return array<vec4<f32>, 4>(
        subgroupBroadcast(x, 0u),
        subgroupBroadcast(x, 1u),
        subgroupBroadcast(x, 2u),
        subgroupBroadcast(x, 3u),
    );
}

@compute @workgroup_size(WG_X * WG_Y, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_id) group: u32,
    @builtin(subgroup_invocation_id) invocation: u32,
) {
    lane = invocation;
    block(wg, vec2<u32>(invocation, group));
}
