//! The crate's one error type. Every bad input is named: which tensor, what was expected,
//! what arrived.

use thiserror::Error;

/// Everything that can go wrong in wgpu-mha.
#[derive(Debug, Error)]
pub enum Error {
    /// No adapter matched the request (or none exists at all).
    #[error(
        "no GPU adapter found{detail}; on Linux without a GPU, install mesa-vulkan-drivers (lavapipe) — e.g. `apt-get install -y mesa-vulkan-drivers`"
    )]
    NoAdapter {
        /// What was asked for, if anything (", matching name \"foo\"").
        detail: String,
    },

    /// The adapter refused to give us a device.
    #[error("could not open a device on adapter {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },

    /// A tensor has the wrong shape.
    #[error("{tensor}: expected shape {expected}, got {got:?}")]
    Shape {
        tensor: &'static str,
        expected: String,
        got: Vec<usize>,
    },

    /// A tensor's data length disagrees with its own shape.
    #[error("{tensor}: shape {shape:?} holds {expected} elements but the data has {got}")]
    DataLength {
        tensor: &'static str,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },

    /// A tensor has the wrong element type (e.g. a mask that is neither bool nor f32).
    #[error("{tensor}: expected dtype {expected}, got {got}")]
    Dtype {
        tensor: String,
        expected: &'static str,
        got: String,
    },

    /// A finite value that the storage dtype cannot hold (beyond ±65504 for f16): refused
    /// rather than stored as infinity.
    #[error(
        "{tensor}: element {index} is {value}, beyond what {dtype} storage holds (±{max}); store it as f32"
    )]
    OutOfRange {
        tensor: String,
        index: usize,
        value: f32,
        dtype: &'static str,
        max: f32,
    },

    /// A size that must be positive is zero.
    #[error("{what} must be greater than zero")]
    ZeroSize { what: &'static str },

    /// embed_dim not divisible by num_heads, GQA head counts that do not divide, and the like.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A weight named by PyTorch's state-dict convention is missing.
    #[error("missing weight {name:?}{hint}")]
    MissingWeight { name: String, hint: &'static str },

    /// A tensor in a weights file that this module does not use.
    #[error(
        "unexpected weight {name:?} (nn.MultiheadAttention with this configuration has no such parameter)"
    )]
    UnexpectedWeight { name: String },

    /// The adapter lacks a feature the call needs (e.g. `SHADER_F16` for f16 storage).
    #[error("{what} needs the device feature {feature}, which adapter {adapter:?} does not grant")]
    Unsupported {
        what: &'static str,
        feature: &'static str,
        adapter: String,
    },

    /// A problem too large for the device that cannot be tiled to fit: `needed` and `limit`
    /// are in the unit of `limit_name` (bytes for buffers; workgroups, keys, rows or loop
    /// iterations for the others).
    #[error("{what} needs {needed} but the device allows {limit} ({limit_name})")]
    TooLarge {
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },

    /// A safetensors file could not be read or written.
    #[error("safetensors {path}: {message}")]
    Safetensors { path: String, message: String },

    /// Plain I/O.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// wgpu reported a validation or out-of-memory error, captured by an error scope.
    #[error("wgpu error during {during}: {message}")]
    Wgpu {
        during: &'static str,
        message: String,
    },

    /// The device was lost (driver reset, `Device::destroy`, …).
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
}

/// Short for `std::result::Result<T, wgpu_mha::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
