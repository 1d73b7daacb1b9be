// Entry point of a register-blocked kernel (linear_direct, qk_direct, av_direct) where each
// invocation reads its own rows (rows_own.wgsl): a WG_X × WG_Y workgroup. The kernel
// supplies `fn block(wg: vec3<u32>, lid: vec2<u32>)`; lid.x is the invocation's place among
// the WG_X invocations that share its rows, lid.y that group's place in the workgroup.

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    block(wg, lid.xy);
}
