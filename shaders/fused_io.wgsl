// The fused kernels' output and state (fused_params.wgsl) as scalars: for fused.wgsl and
// fused_direct.wgsl, whose output rows may start anywhere.
@group(0) @binding(6) var<storage, read_write> o: array<Out>;
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;
