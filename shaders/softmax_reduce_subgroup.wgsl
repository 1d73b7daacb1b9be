// The workgroup's merge of one row's per-invocation (max, sum, poisoned) for softmax.wgsl
// and softmax_vec4.wgsl with subgroup operations, where the device has them
// (softmax_reduce_tree.wgsl is the path without): one barrier instead of log2(WG).
//   1. Each subgroup merges its invocations' statistics (subgroupMax, then subgroupAdd of
//      the sums rescaled to that max).
//   2. The subgroup's first invocation stores the result in workgroup memory at its own
//      index; every other index holds nothing (-inf, 0).
//   3. After the one barrier, every subgroup reads all WG entries — lane j of n takes
//      entries j, j + n, … — and merges them as in 1, so every invocation ends with the
//      row's statistics. Nothing assumes how the device groups invocations into subgroups,
//      and subgroups of one size compute the same merge in the same order.
// softmax_params.wgsl (prepended) has `merge`, `Fold` and `RowStats`.

var<workgroup> part_max: array<f32, WG>;
var<workgroup> part_sum: array<f32, WG>;
var<workgroup> part_bad: array<u32, WG>;

// The subgroup's merged (max, sum, poisoned); called in uniform control flow.
fn merge_subgroup(m: f32, s: f32, bad: bool) -> Fold {
    let m_all = subgroupMax(m);
    var rescaled = 0.0;
    if !is_neg_inf(m_all) {
        // An invocation that saw only -inf has s = 0 and exp(-inf) = 0: it adds nothing.
        rescaled = s * exp(m - m_all);
    }
    let s_all = subgroupAdd(rescaled);
    let bad_all = subgroupOr(u32(bad)) != 0u;
    return Fold(m_all, s_all, bad_all);
}

fn reduce_row(t: u32, m: f32, s: f32, bad: bool) -> RowStats {
    let mine = merge_subgroup(m, s, bad);
    let first = subgroupMin(t) == t;
    part_max[t] = select(neg_inf(), mine.max, first);
    part_sum[t] = select(0.0, mine.sum, first);
    part_bad[t] = select(0u, u32(mine.bad), first);
    workgroupBarrier();

    let lanes = subgroupAdd(1u);
    let lane = subgroupExclusiveAdd(1u);
    var row_max = neg_inf();
    var row_sum = 0.0;
    var row_bad = 0u;
    for (var i = lane; i < WG; i += lanes) {
        let merged = merge(row_max, row_sum, part_max[i], part_sum[i]);
        row_max = merged.x;
        row_sum = merged.y;
        row_bad = row_bad | part_bad[i];
    }
    let all = merge_subgroup(row_max, row_sum, row_bad != 0u);
    return RowStats(all.max, 1.0 / all.sum, all.bad);
}
