// Storage types of a kernel's operands (`Elem`) and result (`Out`): f16 both, for the
// intermediates of an f16 forward (projected q/k/v, the attention output before the
// out-projection). Arithmetic stays f32: kernels widen on load and narrow on store.
// Needs the device feature SHADER_F16; the directive must come before any declaration.
enable f16;

alias Elem = f16;
alias Out = f16;
