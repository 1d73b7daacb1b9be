// Storage types of a kernel's operands (`Elem`: inputs, weights, projected q/k/v) and of its
// result (`Out`). Prepended first to every kernel with operands: f32 throughout.
alias Elem = f32;
alias Out = f32;
