// Storage types of a kernel's operands (`Elem`) and result (`Out`): f16 operands and an f32
// result, for the kernels that end an f16 forward (the out-projection, SDPA's core).
// Needs the device feature SHADER_F16; the directive must come before any declaration.
enable f16;

alias Elem = f16;
alias Out = f32;
