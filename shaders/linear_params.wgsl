// Shared by linear.wgsl (staged tiles), linear_direct.wgsl (register blocks read straight
// from storage) and linear_shared.wgsl (the same, rows shared through subgroups): the
// parameter block of the linear layer, its bindings besides X and W
// (which each kernel declares with its own element type, Elem or vec4<Elem>), and the
// epilogue.

struct Params {
    rows: u32,        // M: rows of X and Y
    cols: u32,        // N: output features (rows of W)
    depth: u32,       // K: input features
    has_bias: u32,
    x_offset: u32,
    x_row_stride: u32,
    w_offset: u32,
    bias_offset: u32,
    y_offset: u32,
    y_row_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<Elem>;
@group(0) @binding(4) var<storage, read_write> y: array<Out>;

// Row m of Y, features n..n + 4, plus the bias, where they exist (linear_shared.wgsl's
// blocks are 4 features wide).
fn store_row4(m: u32, n: u32, v: vec4<f32>) {
    if m >= p.rows {
        return;
    }
    for (var c = 0u; c < 4u && n + c < p.cols; c++) {
        var x = v[c];
        if p.has_bias != 0u {
            x += f32(bias[p.bias_offset + n + c]);
        }
        y[p.y_offset + m * p.y_row_stride + n + c] = Out(x);
    }
}

// Row m of Y, features n..n + 8 (see `row_at`), plus the bias, where they exist. (z: the
// matrix kernels' batch index, always 0 here.)
fn store_row(z: u32, m: u32, n: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if m >= p.rows {
        return;
    }
    for (var c = 0u; c < 8u && n + c < p.cols; c++) {
        var v = row_at(lo, hi, c);
        if p.has_bias != 0u {
            v += f32(bias[p.bias_offset + n + c]);
        }
        y[p.y_offset + m * p.y_row_stride + n + c] = Out(v);
    }
}
