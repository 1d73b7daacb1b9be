// Scores of one block of query rows, S = Q · Kᵀ · scale + masks, computed in registers: each
// invocation reads its 4 query rows and 8 keys straight from storage as vec4 along the head
// dimension and keeps the 4 × 8 block of dot products in registers. No workgroup memory, no
// barriers. On lavapipe a storage or workgroup load costs the same per lane whether it
// brings one float or four, and staging through workgroup memory only adds loads: this
// kernel ran bert-base's QKᵀ in about half the time of the staged one (qk.wgsl).
//
// Needs what vec4 loads need: a head size, offsets and strides of Q and K that are
// multiples of 4 (the crate falls back to qk.wgsl otherwise). Same parameters, masks and
// causal limit as qk.wgsl (qk_params.wgsl, masks.wgsl); heads.wgsl maps z to (batch, head);
// dot_block.wgsl computes the block; direct_entry.wgsl or direct_subgroup.wgsl is the entry
// point and supplies the rows of Q (rows4).

@group(0) @binding(1) var<storage, read> q: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<Elem>>;

fn load_a4(i: u32) -> vec4<f32> {
    return vec4<f32>(q[i]);
}

fn load_b4(i: u32) -> vec4<f32> {
    return vec4<f32>(k[i]);
}

override WG_X: u32 = 8u; // invocations along the keys
override WG_Y: u32 = 8u; // invocations along the query rows

const TM: u32 = 4u; // query rows per invocation
const TN: u32 = 8u; // keys per invocation

// One invocation's 4 × 8 block of scores (direct_entry.wgsl or direct_subgroup.wgsl call it).
fn block(wg: vec3<u32>, lid: vec2<u32>) {
    let z = wg.z;
    let m0 = (wg.y * WG_Y + lid.y) * TM;
    let n0 = (wg.x * WG_X + lid.x) * TN;
    // The group of invocations that share these rows returns together (see
    // direct_subgroup.wgsl): where its rows or its first key are past the end, or where
    // its first key lies past the causal limit of the block's last row, so every key of
    // the group does. Keys wholly past that limit are not written: softmax.wgsl reads no
    // score past a row's limit.
    let group_n0 = wg.x * WG_X * TN;
    if m0 >= p.rows || group_n0 >= p.cols {
        return;
    }
    let last_row = p.row0 + min(m0 + TM, p.rows) - 1u;
    let causal = (p.flags & 4u) != 0u;
    if causal && i32(group_n0) > i32(last_row) + p.causal_offset {
        return;
    }
    let hd = head_of(z, p.batch0, p.heads_q, p.group);
    // In vec4s: this head's rows of Q (from the block's first row) and of K.
    let q_row = p.q_stride_l / 4u;
    let q_base = (p.q_offset + hd.batch * p.q_stride_b + hd.head_q * p.q_stride_h) / 4u
        + p.row0 * q_row;
    let k_base = (p.k_offset + hd.batch * p.k_stride_b + hd.head_kv * p.k_stride_h) / 4u;
    let acc = dot_block(
        q_base, q_row, m0, p.rows - 1u,
        k_base, p.k_stride_s / 4u, n0, p.cols - 1u,
        p.depth / 4u,
    );

    // This invocation's own keys may all lie past the limit, or past the end (store_row
    // stores none of those).
    if causal && i32(n0) > i32(last_row) + p.causal_offset {
        return;
    }
    // Constant indices only: an index computed at run time would move acc out of registers
    // for the whole kernel.
    store_row(z, m0, n0, acc[0], acc[1]);
    store_row(z, m0 + 1u, n0, acc[2], acc[3]);
    store_row(z, m0 + 2u, n0, acc[4], acc[5]);
    store_row(z, m0 + 3u, n0, acc[6], acc[7]);
}
