//! # wgpu-mha
//!
//! Multi-head attention computed by WGSL compute shaders through [wgpu], on any Vulkan,
//! Metal or DX12 adapter, with PyTorch's semantics, and a CPU reference ([`reference`](mod@reference)) that
//! every GPU result can be checked against.
//!
//! - [`MultiHeadAttention`]: `nn.MultiheadAttention` (eval mode) — weights by PyTorch's
//!   state-dict names, seq-first or batch-first, cross-attention, kdim/vdim, masks, causal,
//!   attention weights.
//! - [`scaled_dot_product_attention`]: `F.scaled_dot_product_attention` — broadcast masks,
//!   causal (both alignments), custom scale, grouped-query attention.
//!
//! ```no_run
//! use wgpu_mha::{Gpu, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Tensor};
//!
//! # fn main() -> wgpu_mha::Result<()> {
//! let gpu = Gpu::new()?; // or Gpu::from_device(device, queue) with your own
//! let config = MhaConfig::new(64, 4).with_batch_first(true);
//! let weights = MhaWeights::random(&config, &mut rand::rng());
//! let mha = MultiHeadAttention::new(&gpu, config, &weights)?;
//! let x = Tensor::full([2, 10, 64], 0.5);
//! let out = mha.forward(&x, &x, &x, &MhaOptions::default())?;
//! assert_eq!(out.attn_output.shape, [2, 10, 64]);
//! # Ok(()) }
//! ```
//!
//! Conventions (as PyTorch): bool masks of `MultiHeadAttention` mean `true` = may NOT
//! attend, bool masks of `scaled_dot_product_attention` mean `true` = may attend; float
//! masks are added to the scores. A query row that may attend to nothing gives zeros (its
//! MHA output is then the out-projection bias), never NaN.

mod attention;
mod batch;
mod buffer;
pub mod check;
pub mod error;
pub mod gpu;
pub mod io;
pub mod kernels;
mod mha;
pub mod options;
pub mod problem;
pub mod reference;
mod sdpa;
pub mod tensor;
pub mod tuning;
pub mod weights;

pub use batch::RunTiming;
pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions};
pub use mha::{MultiHeadAttention, PreparedMha};
pub use options::{AttentionPath, Causal, Dtype, MhaConfig, MhaOptions, MhaOutput, SdpaOptions};
pub use sdpa::{PreparedSdpa, scaled_dot_product_attention};
pub use tensor::{Mask, MaskData, Tensor};
pub use tuning::Tuning;
pub use weights::MhaWeights;

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
