// Row-wise softmax of a block of scores, in place, as softmax.wgsl, for rows whose length
// is a multiple of 4: each invocation reads and writes its share of the row four scores at a
// time (vec4), folding each chunk into its running (max, sum) with one rescale. On lavapipe a
// load costs the same per lane for one float or four: bert-base's softmax took 6.6 ms
// against 10.7 for softmax.wgsl. Same rules for -inf, NaN and +inf scores, and the same
// causal limits (softmax_params.wgsl, which also holds the merge); float.wgsl has the float
// helpers.

@group(0) @binding(1) var<storage, read_write> scores: array<vec4<f32>>;

// Whether each component is NaN or +inf: a score that poisons its row.
fn poisons4(x: vec4<f32>) -> vec4<bool> {
    let bits = bitcast<vec4<u32>>(x);
    let magnitude = bits & vec4<u32>(0x7fffffffu);
    return (magnitude > vec4<u32>(0x7f800000u)) | (bits == vec4<u32>(0x7f800000u));
}

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
    let lane = vec4<u32>(0u, 1u, 2u, 3u);
    let ninf = vec4<f32>(neg_inf());

    var m = neg_inf();
    var s = 0.0;
    var bad = false;
    if in_range {
        for (var i = t; 4u * i < visible; i += WG) {
            // Keys past the visible ones (in the last chunk) count as -inf: nothing. (QKᵀ
            // writes them as -inf too, but a row's limit is this kernel's to keep.)
            let x = select(ninf, scores[base + i], 4u * i + lane < vec4<u32>(visible));
            bad = bad || any(poisons4(x));
            let chunk_max = max(max(x.x, x.y), max(x.z, x.w));
            let new_max = max(m, chunk_max);
            // One rescale per chunk, and nothing while every score so far is -inf.
            if !is_neg_inf(new_max) {
                let e = exp(x - vec4<f32>(new_max));
                s = s * exp(m - new_max) + (e.x + e.y) + (e.z + e.w);
                m = new_max;
            }
        }
    }
    let stats = reduce_row(t, m, s, bad);
    let row_max = stats.max;
    let inv_sum = stats.inv_sum;
    let row_bad = stats.bad;
    if in_range {
        for (var i = t; 4u * i < written; i += WG) {
            var prob = vec4<f32>(0.0);
            if row_bad {
                prob = vec4<f32>(nan());
            } else if !is_neg_inf(row_max) && 4u * i < visible {
                let x = scores[base + i];
                let p4 = exp(x - vec4<f32>(row_max)) * inv_sum;
                prob = select(vec4<f32>(0.0), p4, 4u * i + lane < vec4<u32>(visible));
            }
            scores[base + i] = prob;
        }
    }
}
