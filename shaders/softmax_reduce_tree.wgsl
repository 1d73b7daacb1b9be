// The workgroup's merge of one row's per-invocation (max, sum, poisoned) for softmax.wgsl
// and softmax_vec4.wgsl: a tree through workgroup memory, log2(WG) barriers. The path for
// devices without subgroup operations (softmax_reduce_subgroup.wgsl is the other).
// softmax_params.wgsl (prepended) has `merge` and `RowStats`.

var<workgroup> part_max: array<f32, WG>;
var<workgroup> part_sum: array<f32, WG>;
var<workgroup> part_bad: array<u32, WG>;

// Merges the workgroup's per-invocation (max, sum, poisoned) of one row in a tree; every
// invocation gets the row's statistics.
fn reduce_row(t: u32, m: f32, s: f32, bad: bool) -> RowStats {
    part_max[t] = m;
    part_sum[t] = s;
    part_bad[t] = u32(bad);
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if t < half {
            let merged = merge(part_max[t], part_sum[t], part_max[t + half], part_sum[t + half]);
            part_max[t] = merged.x;
            part_sum[t] = merged.y;
            part_bad[t] = part_bad[t] | part_bad[t + half];
        }
        workgroupBarrier();
    }
    return RowStats(part_max[0], 1.0 / part_sum[0], part_bad[0] != 0u);
}
