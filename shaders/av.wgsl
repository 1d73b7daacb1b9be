// Output of one block of query rows: O = P · V for every head of the block's batches, where
// P is the block's softmax probabilities. O is written straight into the concatenated
// [B, L, E]-style buffer (head h is a column offset), so concatenating heads costs nothing.
// The tiling lives in gemm_tile.wgsl; heads.wgsl maps z to (batch, head); av_params.wgsl
// holds the parameter block.
// Operands are stored as `Elem`, the result as `Out` (storage_*.wgsl); arithmetic is f32.

@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<Elem>;

const B_N_CONTIGUOUS: bool = true; // V[s, j] runs along j, the output column
const SKIP_ZERO_A: bool = true; // a masked key (probability 0) never touches a row

// Whether the staged slab of V (by parity) holds a non-finite value.
var<workgroup> v_nonfinite: array<atomic<u32>, 2>;

fn slab_flag_clear(parity: u32) {
    atomicStore(&v_nonfinite[parity], 0u);
}

fn slab_flag_set(parity: u32) {
    atomicOr(&v_nonfinite[parity], 1u);
}

fn slab_flag_get(parity: u32) -> bool {
    return atomicLoad(&v_nonfinite[parity]) != 0u;
}

// Keys this workgroup's tile reads: all, or under a causal mask those before its last row's
// limit (softmax.wgsl writes no further). Set by main.
var<private> keys_end: u32;

fn load_a(z: u32, m: u32, s: u32) -> f32 {
    if m < p.rows && s < keys_end {
        return probs[(z * p.rows + m) * p.depth + s];
    }
    return 0.0;
}

fn load_b(z: u32, s: u32, j: u32) -> f32 {
    if j < p.cols && s < p.depth {
        let hd = head_of(z, p.batch0, p.heads_q, p.group);
        return f32(v[p.v_offset + hd.batch * p.v_stride_b + hd.head_kv * p.v_stride_h
            + s * p.v_stride_s + j]);
    }
    return 0.0;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let origin = tile_origin(wg);
    let z = wg.z;
    // Under a causal mask the tile's rows see no key past the last row's limit: their
    // probabilities are exact zeros, so the product stops there.
    var keys = p.depth;
    if p.causal != 0u {
        let last_row = p.row0 + tile_last_row(origin, p.rows);
        keys = u32(clamp(i32(last_row) + p.causal_offset + 1, 0, i32(p.depth)));
    }
    keys_end = keys;
    store_block(z, origin, lid, gemm_tile(z, origin.x, origin.y, keys, lid));
}
