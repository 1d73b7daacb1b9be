// Linear layer, PyTorch's nn.Linear: Y = X · Wᵀ + b, with W in PyTorch's [out, in] layout.
// Used for the in-projections (q, k, v — one launch when they share an input) and the
// out-projection. Offsets let one launch read a slice of a packed weight (in_proj_weight).
// The tiling lives in gemm_tile.wgsl; this file says where A, B and C are;
// linear_params.wgsl holds the parameter block.
// Operands are stored as `Elem`, the result as `Out` (storage_*.wgsl); arithmetic is f32.

@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> w: array<Elem>;

const B_N_CONTIGUOUS: bool = false; // W[n, k] runs along k
const SKIP_ZERO_A: bool = false;

// No slab flags: SKIP_ZERO_A is false.
fn slab_flag_clear(parity: u32) {}
fn slab_flag_set(parity: u32) {}
fn slab_flag_get(parity: u32) -> bool {
    return false;
}

fn load_a(z: u32, m: u32, k: u32) -> f32 {
    if m < p.rows && k < p.depth {
        return f32(x[p.x_offset + m * p.x_row_stride + k]);
    }
    return 0.0;
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
    if n < p.cols && k < p.depth {
        return f32(w[p.w_offset + n * p.depth + k]);
    }
    return 0.0;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let origin = tile_origin(wg);
    store_block(0u, origin, lid, gemm_tile(0u, origin.x, origin.y, p.depth, lid));
}
