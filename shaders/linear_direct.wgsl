// Linear layer, Y = X · Wᵀ + b (PyTorch's [out, in] weights), computed in registers: each
// invocation reads its 4 rows of X and 8 rows of W straight from storage as vec4 along the
// input features and keeps the 4 × 8 block of Y in registers (the scheme of
// qk_direct.wgsl: no workgroup memory, no barriers).
//
// Needs what vec4 loads need: input features, offsets and the row stride of X that are
// multiples of 4 (the crate falls back to linear.wgsl otherwise). Same parameters as
// linear.wgsl (linear_params.wgsl).

@group(0) @binding(1) var<storage, read> x: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<Elem>>;

override WG_X: u32 = 8u; // invocations along the output features
override WG_Y: u32 = 8u; // invocations along the rows

const TM: u32 = 4u; // rows per invocation
const TN: u32 = 8u; // output features per invocation

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = (wg.y * WG_Y + lid.y) * TM;
    let n0 = (wg.x * WG_X + lid.x) * TN;
    if m0 >= p.rows || n0 >= p.cols {
        return;
    }
    // Indices in vec4s. Rows and features past the end read the last one; not stored.
    let x_row = p.x_row_stride / 4u;
    let w_row = p.depth / 4u;
    let last_m = p.rows - 1u;
    let last_n = p.cols - 1u;
    let xi0 = p.x_offset / 4u + min(m0, last_m) * x_row;
    let xi1 = p.x_offset / 4u + min(m0 + 1u, last_m) * x_row;
    let xi2 = p.x_offset / 4u + min(m0 + 2u, last_m) * x_row;
    let xi3 = p.x_offset / 4u + min(m0 + 3u, last_m) * x_row;
    let wi0 = p.w_offset / 4u + min(n0, last_n) * w_row;
    let wi1 = p.w_offset / 4u + min(n0 + 1u, last_n) * w_row;
    let wi2 = p.w_offset / 4u + min(n0 + 2u, last_n) * w_row;
    let wi3 = p.w_offset / 4u + min(n0 + 3u, last_n) * w_row;
    let wi4 = p.w_offset / 4u + min(n0 + 4u, last_n) * w_row;
    let wi5 = p.w_offset / 4u + min(n0 + 5u, last_n) * w_row;
    let wi6 = p.w_offset / 4u + min(n0 + 6u, last_n) * w_row;
    let wi7 = p.w_offset / 4u + min(n0 + 7u, last_n) * w_row;

    // acc[2r + c / 4][c % 4]: row m0 + r, feature n0 + c. Constant indices keep it in
    // registers.
    var acc: array<vec4<f32>, 8>;
    for (var t = 0u; t < p.depth / 4u; t++) {
        let a0 = vec4<f32>(x[xi0 + t]);
        let a1 = vec4<f32>(x[xi1 + t]);
        let a2 = vec4<f32>(x[xi2 + t]);
        let a3 = vec4<f32>(x[xi3 + t]);
        let b0 = vec4<f32>(w[wi0 + t]);
        let b1 = vec4<f32>(w[wi1 + t]);
        let b2 = vec4<f32>(w[wi2 + t]);
        let b3 = vec4<f32>(w[wi3 + t]);
        let b4 = vec4<f32>(w[wi4 + t]);
        let b5 = vec4<f32>(w[wi5 + t]);
        let b6 = vec4<f32>(w[wi6 + t]);
        let b7 = vec4<f32>(w[wi7 + t]);
        acc[0] = dots(acc[0], a0, b0, b1, b2, b3);
        acc[1] = dots(acc[1], a0, b4, b5, b6, b7);
        acc[2] = dots(acc[2], a1, b0, b1, b2, b3);
        acc[3] = dots(acc[3], a1, b4, b5, b6, b7);
        acc[4] = dots(acc[4], a2, b0, b1, b2, b3);
        acc[5] = dots(acc[5], a2, b4, b5, b6, b7);
        acc[6] = dots(acc[6], a3, b0, b1, b2, b3);
        acc[7] = dots(acc[7], a3, b4, b5, b6, b7);
    }

    store_row(m0, n0, acc[0], acc[1]);
    store_row(m0 + 1u, n0, acc[2], acc[3]);
    store_row(m0 + 2u, n0, acc[4], acc[5]);
    store_row(m0 + 3u, n0, acc[6], acc[7]);
}

// Row m of Y, features n0..n0 + 8 (see `row_at`), plus the bias, where they exist.
fn store_row(m: u32, n0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if m >= p.rows {
        return;
    }
    for (var c = 0u; c < TN; c++) {
        let n = n0 + c;
        if n >= p.cols {
            break;
        }
        var v = row_at(lo, hi, c);
        if p.has_bias != 0u {
            v += f32(bias[p.bias_offset + n]);
        }
        y[p.y_offset + m * p.y_row_stride + n] = Out(v);
    }
}
