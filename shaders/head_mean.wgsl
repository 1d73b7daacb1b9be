// Attention weights averaged over heads (PyTorch's average_attn_weights=True):
// W[b, r, s] = mean over h of P[b·H + h, r, s], for one block of probabilities.
// Each invocation averages four consecutive elements of a row.

struct Params {
    elements: u32, // elements of one head's block: rows · cols
    heads: u32,
    batches: u32,  // batches in the block
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let first = 4u * (id.y * groups.x * 64u + id.x);
    let b = id.z;
    let inv_heads = 1.0 / f32(p.heads);
    for (var e = first; e < min(first + 4u, p.elements); e++) {
        var acc = 0.0;
        for (var h = 0u; h < p.heads; h++) {
            acc += probs[(b * p.heads + h) * p.elements + e];
        }
        mean[b * p.elements + e] = acc * inv_heads;
    }
}
