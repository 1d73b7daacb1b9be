//! The compute kernels: one module per WGSL pass, each with its parameter block and a
//! launcher that records one dispatch into the batch of work a forward submits.
//!
//! Pipelines and bind group layouts are built once per device; nothing
//! is compiled per call.

pub(crate) mod av;
pub mod fused;
pub(crate) mod head_mean;
pub(crate) mod linear;
pub(crate) mod qk;
pub(crate) mod softmax;

pub use crate::tuning::{GemmTiles, Tuning, av_tiles};

/// WGSL sources. Kernels are compositions: float helpers (`float.wgsl`), for the matrix
/// products the shared tiled core (`gemm_tile.wgsl`), the head indexing of attention
/// (`heads.wgsl`), and the kernel itself, which supplies the loads and the epilogue. WGSL has
/// no include; concatenation is it.
mod source {
    pub const FLOAT: &str = include_str!("../../shaders/float.wgsl");
    pub const GEMM_TILE: &str = include_str!("../../shaders/gemm_tile.wgsl");
    pub const HEADS: &str = include_str!("../../shaders/heads.wgsl");
    pub const LINEAR: &str = include_str!("../../shaders/linear.wgsl");
    pub const QK: &str = include_str!("../../shaders/qk.wgsl");
    pub const AV: &str = include_str!("../../shaders/av.wgsl");
    pub const SOFTMAX: &str = include_str!("../../shaders/softmax.wgsl");
    pub const HEAD_MEAN: &str = include_str!("../../shaders/head_mean.wgsl");
    pub const FUSED: &str = include_str!("../../shaders/fused.wgsl");
}

/// Every kernel's complete WGSL source, by name, as handed to the device (for validation
/// with naga in the tests, and for anyone reading what runs).
pub fn shader_sources() -> Vec<(&'static str, String)> {
    vec![
        (
            "linear",
            [source::FLOAT, source::GEMM_TILE, source::LINEAR].concat(),
        ),
        (
            "qk",
            [source::FLOAT, source::GEMM_TILE, source::HEADS, source::QK].concat(),
        ),
        (
            "av",
            [source::FLOAT, source::GEMM_TILE, source::HEADS, source::AV].concat(),
        ),
        ("softmax", [source::FLOAT, source::SOFTMAX].concat()),
        ("head_mean", source::HEAD_MEAN.to_string()),
        ("fused", fused::shader_source()),
    ]
}

/// Names of the kernels, in the order a forward runs them;
/// [`PreparedMha::run_kernel`](crate::PreparedMha::run_kernel) runs one alone.
pub const KERNEL_NAMES: [&str; 6] = ["linear", "qk", "softmax", "head_mean", "av", "fused"];

fn gemm_constants(tiles: &GemmTiles) -> [(&'static str, f64); 3] {
    [
        ("WG_X", tiles.wg_x as f64),
        ("WG_Y", tiles.wg_y as f64),
        ("BK", tiles.bk as f64),
    ]
}

/// Largest workgroup count in one grid dimension that every adapter allows.
pub const MAX_GROUPS: u32 = 65535;

/// One compute pipeline and its explicit bind group layout: binding 0 is the uniform
/// parameter block, bindings 1.. are storage buffers. Cheap to clone (shared handles).
#[derive(Clone)]
pub(crate) struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    param_size: u64,
}

impl Kernel {
    /// `storage_read_only[i]` says whether binding `i + 1` is read-only.
    fn new(
        device: &wgpu::Device,
        name: &'static str,
        source: &str,
        param_size: usize,
        storage_read_only: &[bool],
        constants: &[(&str, f64)],
    ) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: wgpu::BufferSize::new(param_size as u64),
            },
            count: None,
        }];
        entries.extend(storage_read_only.iter().enumerate().map(|(i, &read_only)| {
            wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }
        }));
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(name),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                ..Default::default()
            },
            cache: None,
        });
        Self {
            name,
            pipeline,
            layout,
            param_size: param_size as u64,
        }
    }

    /// A bind group with the parameter slot at `param_offset` and `buffers` at 1, 2, …
    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        params: &wgpu::Buffer,
        param_offset: u64,
        buffers: &[wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: params,
                offset: param_offset,
                size: wgpu::BufferSize::new(self.param_size),
            }),
        }];
        entries.extend(
            buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.as_entire_binding(),
                }),
        );
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.name),
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// Every pipeline of the crate, built once per device.
pub(crate) struct Kernels {
    pub tuning: Tuning,
    pub tiles: GemmTiles,
    pub linear: Kernel,
    pub qk: Kernel,
    pub softmax: Kernel,
    pub av: Kernel,
    pub head_mean: Kernel,
    /// Bound where an optional input (bias, mask) is absent.
    pub placeholder: wgpu::Buffer,
    /// Fused-attention pipelines, one per head-size class, built on first use.
    fused: std::sync::Mutex<std::collections::HashMap<fused::Variant, Kernel>>,
}

impl Kernels {
    pub fn new(device: &wgpu::Device, tuning: Tuning) -> crate::Result<Self> {
        tuning.check(&device.limits())?;
        let tiles = tuning.gemm;
        let sources: std::collections::HashMap<_, _> = shader_sources().into_iter().collect();
        let gemm = gemm_constants(&tiles);
        let softmax_wg = [("WG", tuning.softmax_wg as f64)];
        Ok(Self {
            tuning,
            tiles,
            linear: Kernel::new(
                device,
                "linear",
                &sources["linear"],
                size_of::<linear::Params>(),
                &[true, true, true, false],
                &gemm,
            ),
            qk: Kernel::new(
                device,
                "qk",
                &sources["qk"],
                size_of::<qk::Params>(),
                &[true, true, true, true, false],
                &gemm,
            ),
            softmax: Kernel::new(
                device,
                "softmax",
                &sources["softmax"],
                size_of::<softmax::Params>(),
                &[false],
                &softmax_wg,
            ),
            av: Kernel::new(
                device,
                "av",
                &sources["av"],
                size_of::<av::Params>(),
                &[true, true, false],
                &gemm_constants(&av_tiles(&tiles)),
            ),
            head_mean: Kernel::new(
                device,
                "head_mean",
                &sources["head_mean"],
                size_of::<head_mean::Params>(),
                &[true, false],
                &[],
            ),
            placeholder: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-mha placeholder"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            fused: Default::default(),
        })
    }

    /// The fused pipeline of `variant` (checked against `limits`), built once per device.
    pub fn fused(
        &self,
        device: &wgpu::Device,
        limits: &wgpu::Limits,
        variant: fused::Variant,
    ) -> crate::Result<Kernel> {
        variant.check(limits)?;
        let mut cache = self.fused.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cache
            .entry(variant)
            .or_insert_with(|| fused::build(device, variant))
            .clone())
    }
}

/// Spreads `count` workgroups over x and y so neither exceeds [`MAX_GROUPS`]; kernels
/// recover the linear index as `y · groups.x + x` and skip the overshoot.
pub(crate) fn spread(count: u32) -> [u32; 2] {
    if count <= MAX_GROUPS {
        [count.max(1), 1]
    } else {
        let y = count.div_ceil(MAX_GROUPS);
        [count.div_ceil(y), y]
    }
}

/// Where the heads of Q, K, V or O live in a buffer: element `i` of row `l` of head `h` of
/// batch `b` is at `offset + b·stride_b + h·stride_h + l·stride_l + i`. Splitting heads
/// and concatenating them are strides, never copies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadView<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u32,
    pub stride_b: u32,
    pub stride_h: u32,
    pub stride_l: u32,
}

/// An additive float mask on the `[B, H, L, S]` grid (strides in elements, 0 = broadcast).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaskBinding<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub strides: [u32; 4],
}

/// The mask part of a kernel's parameters: flags (bit 0: mask 0, bit 1: mask 1, bit 2:
/// causal) and each mask's strides (zeros when absent).
pub(crate) fn mask_params(
    masks: &[Option<MaskBinding>; 2],
    causal_offset: Option<i32>,
) -> (u32, [u32; 4], [u32; 4]) {
    let mut flags = 0;
    for (i, m) in masks.iter().enumerate() {
        if m.is_some() {
            flags |= 1 << i;
        }
    }
    if causal_offset.is_some() {
        flags |= 4;
    }
    let strides = |m: &Option<MaskBinding>| m.map_or([0; 4], |m| m.strides);
    (flags, strides(&masks[0]), strides(&masks[1]))
}

/// One block of the score matrix: `batch_count` whole batches from `batch0`, all heads, query
/// rows `row0 .. row0 + rows`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub batch0: u32,
    pub batch_count: u32,
    pub row0: u32,
    pub rows: u32,
}

/// `Err(Config)` unless `name` is one of [`KERNEL_NAMES`].
pub(crate) fn check_kernel_name(name: &str) -> crate::Result<()> {
    if KERNEL_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(crate::Error::Config(format!(
            "no kernel named {name:?}; the kernels are {KERNEL_NAMES:?}"
        )))
    }
}
