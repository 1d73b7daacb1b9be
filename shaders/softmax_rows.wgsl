// Row-wise softmax of a block of scores, in place, as softmax.wgsl, with each invocation
// taking a whole row (a workgroup: WG rows), read and written four scores at a time (vec4;
// rows whose length is a multiple of 4). No workgroup memory, no barriers, no tree: on a CPU
// adapter an invocation is one SIMD lane, lanes load separately anyway, and a workgroup per
// row spent most of its time merging. On lavapipe bert-base's softmax took 4.2 ms against
// 6.9 for softmax_vec4.wgsl, and batched's (rows of 128) 1.6 against 3.8. On a GPU the lanes
// of a row would not share loads: `Tuning::softmax_whole_rows` chooses.
// Same rules for -inf, NaN and +inf scores and the same causal limits as softmax.wgsl
// (softmax_params.wgsl); float.wgsl has the float helpers.

@group(0) @binding(1) var<storage, read_write> scores: array<vec4<f32>>;

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Workgroups are laid over a 2-D grid when there are more than 65535 of them.
    let row = (wg.y * groups.x + wg.x) * WG + t;
    if row >= p.rows {
        return;
    }
    let base = row * (p.cols / 4u);
    let limits = row_limits(row);
    let visible = limits.x;
    let written = limits.y;

    var fold = Fold(neg_inf(), 0.0, false);
    for (var i = 0u; 4u * i < visible; i++) {
        fold = fold_chunk(fold, scores[base + i], 4u * i, visible);
    }
    let inv_sum = 1.0 / fold.sum;
    for (var i = 0u; 4u * i < written; i++) {
        scores[base + i] = chunk_probs(fold.max, inv_sum, fold.bad, scores[base + i], 4u * i, visible);
    }
}
