//! The subcommands of the `wgpu-mha` binary.

pub mod bench;
pub mod font;
pub mod info;
pub mod run;
pub mod sweep;
pub mod table;
pub mod tune;

use clap::{Args, ValueEnum};
use wgpu_mha::{Causal, Dtype, Gpu, GpuOptions, Result};

/// How a command ended when it did not fail outright.
pub enum Outcome {
    Pass,
    /// A GPU result was outside the tolerance of the CPU reference.
    CheckFailed,
}

/// Adapter selection, shared by every subcommand.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Use the adapter whose name contains NAME (case-insensitive).
    #[arg(long, global = true, env = "WGPU_ADAPTER_NAME", value_name = "NAME")]
    pub adapter: Option<String>,
    /// Restrict to one backend.
    #[arg(long, global = true, value_enum)]
    pub backend: Option<BackendArg>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendArg {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl DeviceArgs {
    pub fn options(&self) -> GpuOptions {
        let mut options = GpuOptions::from_env();
        if self.adapter.is_some() {
            options.adapter_name = self.adapter.clone();
        }
        if let Some(b) = self.backend {
            options.backends = Some(match b {
                BackendArg::Vulkan => wgpu::Backends::VULKAN,
                BackendArg::Metal => wgpu::Backends::METAL,
                BackendArg::Dx12 => wgpu::Backends::DX12,
                BackendArg::Gl => wgpu::Backends::GL,
            });
        }
        options
    }

    pub fn open(&self) -> Result<Gpu> {
        Gpu::with_options(&self.options())
    }
}

/// `--causal top-left|bottom-right`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum CausalArg {
    TopLeft,
    BottomRight,
}

impl From<CausalArg> for Causal {
    fn from(c: CausalArg) -> Self {
        match c {
            CausalArg::TopLeft => Causal::TopLeft,
            CausalArg::BottomRight => Causal::BottomRight,
        }
    }
}

/// `--dtype f32|f16`: how tensors are stored on the GPU.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum DtypeArg {
    /// f32 storage (the default).
    #[default]
    F32,
    /// f16 storage of inputs, weights and intermediates, f32 arithmetic (needs SHADER_F16).
    F16,
}

impl From<DtypeArg> for Dtype {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
        }
    }
}

/// One line describing an adapter.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, driver: {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    )
}
