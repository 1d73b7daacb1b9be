// Merges the key splits of the fused kernel (fused.wgsl, mode 1) into the output: for each
// query row, the splits' unnormalised outputs o_s, running maxima m_s and sums l_s give
//   O = Σ_s o_s·exp(m_s − M) / Σ_s l_s·exp(m_s − M),   M = max_s m_s.
// A row no split saw a key for (every m_s = −inf) is written as zeros; a row some split
// found poisoned (a NaN or +inf score) as NaN — the rules of the whole kernel. Query blocks
// a split flagged (it met a non-finite value) are left to fused.wgsl's mode 2.
// One workgroup per (row, batch·head); its invocations stride over the value columns.
// A storage prelude names `Out`; float.wgsl and heads.wgsl (prepended) supply the float
// helpers and map z to (batch, head).

struct Params {
    rows: u32,          // L
    depth_v: u32,       // dv
    splits: u32,        // S
    block_rows: u32,    // query rows per block of the fused kernel
    blocks: u32,        // query blocks: ceil(L / block_rows)
    heads_q: u32,
    group: u32,
    _pad0: u32,
    o_offset: u32,
    o_stride_b: u32,
    o_stride_h: u32,
    o_stride_l: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<Out>;

const WG: u32 = 64u;

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let l = wg.x;
    let z = wg.z;
    let zs = groups.z;
    // partial: outputs [S, Z, L, dv], statistics [S, Z, L, 3], flags [S, Z, blocks].
    let stats_base = p.splits * zs * p.rows * p.depth_v;
    let flags_base = stats_base + p.splits * zs * p.rows * 3u;
    for (var s = 0u; s < p.splits; s++) {
        if partial[flags_base + (s * zs + z) * p.blocks + l / p.block_rows] != 0.0 {
            return;
        }
    }

    var m = neg_inf();
    var poisoned = false;
    for (var s = 0u; s < p.splits; s++) {
        let st = stats_base + ((s * zs + z) * p.rows + l) * 3u;
        poisoned = poisoned || partial[st + 2u] != 0.0;
        let m_s = partial[st];
        if !is_neg_inf(m_s) {
            m = max(m, m_s);
        }
    }
    var sum = 0.0;
    if !poisoned && !is_neg_inf(m) {
        for (var s = 0u; s < p.splits; s++) {
            let st = stats_base + ((s * zs + z) * p.rows + l) * 3u;
            let m_s = partial[st];
            if !is_neg_inf(m_s) {
                sum += partial[st + 1u] * exp(m_s - m);
            }
        }
    }

    let hd = head_of(z, 0u, p.heads_q, p.group);
    let o_row = p.o_offset + hd.batch * p.o_stride_b + hd.head_q * p.o_stride_h + l * p.o_stride_l;
    for (var j = t; j < p.depth_v; j += WG) {
        var value = 0.0;
        if poisoned {
            value = nan();
        } else if sum > 0.0 {
            var acc = 0.0;
            for (var s = 0u; s < p.splits; s++) {
                let st = stats_base + ((s * zs + z) * p.rows + l) * 3u;
                let m_s = partial[st];
                if !is_neg_inf(m_s) {
                    acc += partial[((s * zs + z) * p.rows + l) * p.depth_v + j] * exp(m_s - m);
                }
            }
            value = acc / sum;
        }
        o[o_row + j] = Out(value);
    }
}
