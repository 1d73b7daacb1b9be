// Shared by linear.wgsl (staged tiles) and linear_direct.wgsl (register blocks read straight
// from storage): the parameter block of the linear layer and its bindings besides X and W,
// which each kernel declares with its own element type (Elem, or vec4<Elem>).

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
