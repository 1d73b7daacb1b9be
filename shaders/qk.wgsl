// Scores of one block of query rows: S = Q · Kᵀ · scale + masks, for every head of the
// block's batches. Q and K are read in place from the projected [B, L, E]-style buffers
// (a head is a column offset, a batch and a row are strides), so no head is ever copied.
// Masks are additive float tensors placed on the [B, H, L, S] grid by strides (0 =
// broadcast); causal masking compares positions and needs no tensor. Q and K are stored as
// `Elem` (storage_*.wgsl); scores and arithmetic are f32.
// The tiling lives in gemm_tile.wgsl; heads.wgsl maps z to (batch, head); masks.wgsl
// applies the masks and the causal limit; qk_params.wgsl holds the parameter block.

@group(0) @binding(1) var<storage, read> q: array<Elem>;
@group(0) @binding(2) var<storage, read> k: array<Elem>;

const B_N_CONTIGUOUS: bool = false; // K[s, i] runs along i, the depth
const SKIP_ZERO_A: bool = false;

// No slab flags: SKIP_ZERO_A is false.
fn slab_flag_clear(parity: u32) {}
fn slab_flag_set(parity: u32) {}
fn slab_flag_get(parity: u32) -> bool {
    return false;
}

fn load_a(z: u32, m: u32, i: u32) -> f32 {
    if m < p.rows && i < p.depth {
        let hd = head_of(z, p.batch0, p.heads_q, p.group);
        return f32(q[p.q_offset + hd.batch * p.q_stride_b + hd.head_q * p.q_stride_h
            + (p.row0 + m) * p.q_stride_l + i]);
    }
    return 0.0;
}

fn load_b(z: u32, i: u32, n: u32) -> f32 {
    if n < p.cols && i < p.depth {
        let hd = head_of(z, p.batch0, p.heads_q, p.group);
        return f32(k[p.k_offset + hd.batch * p.k_stride_b + hd.head_kv * p.k_stride_h
            + n * p.k_stride_s + i]);
    }
    return 0.0;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let origin = tile_origin(wg);
    let z = wg.z;
    // A tile wholly past the causal limit of its last row is neither computed nor written:
    // softmax.wgsl reads no score past a row's limit.
    let last_row = p.row0 + tile_last_row(origin, p.rows);
    let past_causal = (p.flags & 4u) != 0u && i32(origin.y) > i32(last_row) + p.causal_offset;
    if past_causal {
        return;
    }
    store_block(z, origin, lid, gemm_tile(z, origin.x, origin.y, p.depth, lid));
}
