// Row-wise softmax of a block of scores, in place: P[r, s] = exp(S[r, s] - max_r) / sum_r.
// One workgroup per row. Each invocation folds its strided share of the row into a running
// (max, sum) pair — the online softmax, one read of the row instead of two — then the
// workgroup merges the pairs (`reduce_row`) and every invocation writes its share.
// A row whose every score is -inf (fully masked) has no maximum: it becomes all zeros,
// never NaN. A row with a NaN or +inf score has no meaningful distribution: it becomes all
// NaN, and no other row is touched. Under a causal mask a row reads only the keys it may see
// (qk.wgsl leaves tiles wholly past the limit unwritten) and writes zeros past them — only
// as far as P·V reads (the limit of the row's P·V tile) unless the weights are wanted.
// softmax_params.wgsl holds the parameters and the merge of two pairs;
// softmax_reduce_tree.wgsl or softmax_reduce_subgroup.wgsl the workgroup's merge;
// float.wgsl the float helpers.

@group(0) @binding(1) var<storage, read_write> scores: array<f32>;

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Rows are laid over a 2-D grid when there are more than 65535 of them.
    let row = wg.y * groups.x + wg.x;
    let in_range = row < p.rows;
    let base = row * p.cols;
    let limits = row_limits(row);
    let visible = limits.x;
    let written = limits.y;

    var m = neg_inf();
    var s = 0.0;
    var bad = 0u;
    if in_range {
        for (var i = t; i < visible; i += WG) {
            let x = scores[base + i];
            if poisons_row(x) {
                bad = 1u;
            } else if x > m {
                s = s * exp(m - x) + 1.0;
                m = x;
            } else if x != neg_inf() {
                s += exp(x - m);
            }
        }
    }
    let stats = reduce_row(t, m, s, bad != 0u);
    let row_max = stats.max;
    let inv_sum = stats.inv_sum;
    let row_bad = stats.bad;
    if in_range {
        for (var i = t; i < written; i += WG) {
            var prob = 0.0;
            if row_bad {
                prob = nan();
            } else if i < visible && !is_neg_inf(row_max) {
                prob = exp(scores[base + i] - row_max) * inv_sum;
            }
            scores[base + i] = prob;
        }
    }
}
