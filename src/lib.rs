//! wgpu-mha: multi-head attention on WGSL compute shaders through wgpu.

pub mod error;
pub mod io;
pub mod options;
pub mod problem;
pub mod tensor;
pub mod weights;

pub use error::{Error, Result};
pub use options::{Causal, MhaConfig, MhaOptions, MhaOutput, SdpaOptions};
pub use tensor::{Mask, MaskData, Tensor};
pub use weights::MhaWeights;
