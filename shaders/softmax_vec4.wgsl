// Row-wise softmax of a block of scores, in place, as softmax.wgsl, for rows whose length
// is a multiple of 4: each invocation reads and writes its share of the row four scores at a
// time (vec4), folding each chunk into its running (max, sum) with one rescale. On lavapipe a
// load costs the same per lane for one float or four: bert-base's softmax took 6.6 ms
// against 10.7 for softmax.wgsl. Same rules for -inf, NaN and +inf scores, and the same
// causal limits (softmax_params.wgsl, which also holds the merge); float.wgsl has the float
// helpers.

@group(0) @binding(1) var<storage, read_write> scores: array<vec4<f32>>;

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Rows are laid over a 2-D grid when there are more than 65535 of them.
    let row = wg.y * groups.x + wg.x;
    let in_range = row < p.rows;
    let base = row * (p.cols / 4u);
    let limits = row_limits(row);
    let visible = limits.x;
    let written = limits.y;

    var fold = Fold(neg_inf(), 0.0, false);
    if in_range {
        for (var i = t; 4u * i < visible; i += WG) {
            fold = fold_chunk(fold, scores[base + i], 4u * i, visible);
        }
    }
    let stats = reduce_row(t, fold.max, fold.sum, fold.bad);
    if in_range {
        for (var i = t; 4u * i < written; i += WG) {
            scores[base + i] = chunk_probs(stats.max, stats.inv_sum, stats.bad, scores[base + i], 4u * i, visible);
        }
    }
}
