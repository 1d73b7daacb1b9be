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

pub use crate::options::Dtype;
pub use crate::tuning::{DirectTiles, GemmTiles, Tuning, av_tiles};

/// WGSL sources. Kernels are compositions: for kernels with operands a storage prelude
/// (`storage_*.wgsl`: the element types of operands and result), float helpers
/// (`float.wgsl`), for the matrix products the shared tiled core (`gemm_tile.wgsl`), the head
/// indexing of attention (`heads.wgsl`), the masking of scores (`masks.wgsl`, for QKᵀ and
/// the fused kernel), and the kernel itself, which supplies the loads and
/// the epilogue. WGSL has no include; concatenation is it.
mod source {
    pub const STORAGE_F32: &str = include_str!("../../shaders/storage_f32.wgsl");
    pub const STORAGE_F16: &str = include_str!("../../shaders/storage_f16.wgsl");
    pub const STORAGE_F16_OUT_F32: &str = include_str!("../../shaders/storage_f16_out_f32.wgsl");
    pub const FLOAT: &str = include_str!("../../shaders/float.wgsl");
    pub const GEMM_TILE: &str = include_str!("../../shaders/gemm_tile.wgsl");
    pub const DOT_BLOCK: &str = include_str!("../../shaders/dot_block.wgsl");
    pub const ROWS_OWN: &str = include_str!("../../shaders/rows_own.wgsl");
    pub const COLS_OWN: &str = include_str!("../../shaders/cols_own.wgsl");
    pub const DIRECT_ENTRY: &str = include_str!("../../shaders/direct_entry.wgsl");
    pub const LANES8: &str = include_str!("../../shaders/lanes8.wgsl");
    pub const DIRECT_SUBGROUP: &str = include_str!("../../shaders/direct_subgroup.wgsl");
    pub const HEADS: &str = include_str!("../../shaders/heads.wgsl");
    pub const MASKS: &str = include_str!("../../shaders/masks.wgsl");
    pub const LINEAR_PARAMS: &str = include_str!("../../shaders/linear_params.wgsl");
    pub const LINEAR: &str = include_str!("../../shaders/linear.wgsl");
    pub const LINEAR_DIRECT: &str = include_str!("../../shaders/linear_direct.wgsl");
    pub const LINEAR_SHARED: &str = include_str!("../../shaders/linear_shared.wgsl");
    pub const QK_PARAMS: &str = include_str!("../../shaders/qk_params.wgsl");
    pub const QK: &str = include_str!("../../shaders/qk.wgsl");
    pub const QK_DIRECT: &str = include_str!("../../shaders/qk_direct.wgsl");
    pub const AV_PARAMS: &str = include_str!("../../shaders/av_params.wgsl");
    pub const AV: &str = include_str!("../../shaders/av.wgsl");
    pub const AV_DIRECT: &str = include_str!("../../shaders/av_direct.wgsl");
    pub const AV_SHARED: &str = include_str!("../../shaders/av_shared.wgsl");
    pub const SOFTMAX_PARAMS: &str = include_str!("../../shaders/softmax_params.wgsl");
    pub const SOFTMAX_REDUCE_TREE: &str = include_str!("../../shaders/softmax_reduce_tree.wgsl");
    pub const SOFTMAX_REDUCE_SUBGROUP: &str =
        include_str!("../../shaders/softmax_reduce_subgroup.wgsl");
    pub const SOFTMAX: &str = include_str!("../../shaders/softmax.wgsl");
    pub const SOFTMAX_VEC4: &str = include_str!("../../shaders/softmax_vec4.wgsl");
    pub const SOFTMAX_ROWS: &str = include_str!("../../shaders/softmax_rows.wgsl");
    pub const HEAD_MEAN: &str = include_str!("../../shaders/head_mean.wgsl");
    pub const FUSED_PARAMS: &str = include_str!("../../shaders/fused_params.wgsl");
    pub const FUSED_IO: &str = include_str!("../../shaders/fused_io.wgsl");
    pub const FUSED: &str = include_str!("../../shaders/fused.wgsl");
    pub const FUSED_DIRECT: &str = include_str!("../../shaders/fused_direct.wgsl");
    pub const FUSED_OWN: &str = include_str!("../../shaders/fused_own.wgsl");
    pub const FUSED_SUBGROUP: &str = include_str!("../../shaders/fused_subgroup.wgsl");
    pub const FUSED_LANES: &str = include_str!("../../shaders/fused_lanes.wgsl");
    pub const FUSED_COMBINE: &str = include_str!("../../shaders/fused_combine.wgsl");
}

/// How a kernel with operands stores them (`Elem` in WGSL) and its result (`Out`).
/// Arithmetic is f32 in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// f32 operands and result.
    F32,
    /// f16 operands and result: the kernels inside an f16 forward.
    F16,
    /// f16 operands, f32 result: the kernel that ends an f16 forward.
    F16ToF32,
}

impl Storage {
    pub const ALL: [Storage; 3] = [Storage::F32, Storage::F16, Storage::F16ToF32];

    /// A kernel whose result stays inside a forward stored as `dtype`.
    pub fn inner(dtype: Dtype) -> Self {
        match dtype {
            Dtype::F32 => Storage::F32,
            Dtype::F16 => Storage::F16,
        }
    }

    /// A kernel whose result is a forward's f32 output.
    pub fn last(dtype: Dtype) -> Self {
        match dtype {
            Dtype::F32 => Storage::F32,
            Dtype::F16 => Storage::F16ToF32,
        }
    }

    /// The storage dtype of the operands.
    pub fn operands(self) -> Dtype {
        match self {
            Storage::F32 => Dtype::F32,
            Storage::F16 | Storage::F16ToF32 => Dtype::F16,
        }
    }

    fn prelude(self) -> &'static str {
        match self {
            Storage::F32 => source::STORAGE_F32,
            Storage::F16 => source::STORAGE_F16,
            Storage::F16ToF32 => source::STORAGE_F16_OUT_F32,
        }
    }
}

/// The kernels whose operands have a storage type.
pub const STORED_KERNELS: [&str; 14] = [
    "linear",
    "linear_direct",
    "linear_direct_subgroup",
    "qk",
    "qk_direct",
    "qk_direct_subgroup",
    "av",
    "av_direct",
    "av_direct_subgroup",
    "fused",
    "fused_direct",
    "fused_direct_subgroup",
    "fused_lanes",
    "fused_combine",
];

/// The complete WGSL source of shader `name` (one of [`SHADER_NAMES`]: the kernels of
/// [`KERNEL_NAMES`], and their variants, which run under those names — `fused_direct`,
/// `fused_direct_subgroup`, `fused_lanes` and `fused_combine` as `fused`; `linear_direct`, `qk_direct`, `av_direct` and their
/// `_subgroup` variants as `linear`, `qk` and `av`; `softmax_vec4`, `softmax_rows` and the `_subgroup` merges as `softmax`)
/// as handed to the device; `storage` applies to the kernels of [`STORED_KERNELS`] and is
/// ignored by the rest.
pub fn shader_source(name: &str, storage: Storage) -> Option<String> {
    let prelude = storage.prelude();
    let [rows, entry] = direct_entry(name);
    Some(match name {
        "linear" => [
            prelude,
            source::FLOAT,
            source::GEMM_TILE,
            source::LINEAR_PARAMS,
            source::LINEAR,
        ]
        .concat(),
        "linear_direct" => [
            prelude,
            source::FLOAT,
            source::DOT_BLOCK,
            source::COLS_OWN,
            source::LINEAR_PARAMS,
            source::LINEAR_DIRECT,
            rows,
            entry,
        ]
        .concat(),
        // Rows shared through subgroups, 8 × 4 blocks: a kernel of its own.
        "linear_direct_subgroup" => [
            prelude,
            source::FLOAT,
            source::LANES8,
            source::LINEAR_PARAMS,
            source::LINEAR_SHARED,
        ]
        .concat(),
        "qk" => [
            prelude,
            source::FLOAT,
            source::GEMM_TILE,
            source::HEADS,
            source::QK_PARAMS,
            source::MASKS,
            source::QK,
        ]
        .concat(),
        "qk_direct" | "qk_direct_subgroup" => [
            prelude,
            source::FLOAT,
            source::DOT_BLOCK,
            source::COLS_OWN,
            source::HEADS,
            source::QK_PARAMS,
            source::MASKS,
            source::QK_DIRECT,
            rows,
            entry,
        ]
        .concat(),
        "av" => [
            prelude,
            source::FLOAT,
            source::GEMM_TILE,
            source::HEADS,
            source::AV_PARAMS,
            source::AV,
        ]
        .concat(),
        "av_direct" => [
            prelude,
            source::FLOAT,
            source::HEADS,
            source::AV_PARAMS,
            source::AV_DIRECT,
            rows,
            entry,
        ]
        .concat(),
        // Rows shared through subgroups, 8 × 4 blocks: a kernel of its own.
        "av_direct_subgroup" => [
            prelude,
            source::FLOAT,
            source::HEADS,
            source::LANES8,
            source::AV_PARAMS,
            source::AV_SHARED,
        ]
        .concat(),
        // A workgroup per row: its merge through workgroup memory, or with subgroup
        // operations where the device has them.
        "softmax" | "softmax_subgroup" | "softmax_vec4" | "softmax_vec4_subgroup" => {
            let reduce = if name.ends_with("_subgroup") {
                source::SOFTMAX_REDUCE_SUBGROUP
            } else {
                source::SOFTMAX_REDUCE_TREE
            };
            let kernel = if name.starts_with("softmax_vec4") {
                source::SOFTMAX_VEC4
            } else {
                source::SOFTMAX
            };
            [source::FLOAT, source::SOFTMAX_PARAMS, reduce, kernel].concat()
        }
        "softmax_rows" => [source::FLOAT, source::SOFTMAX_PARAMS, source::SOFTMAX_ROWS].concat(),
        "head_mean" => source::HEAD_MEAN.to_string(),
        "fused" => [
            prelude,
            source::FLOAT,
            source::HEADS,
            source::MASKS,
            source::FUSED_PARAMS,
            source::FUSED_IO,
            source::FUSED,
        ]
        .concat(),
        "fused_direct" => [
            prelude,
            source::FLOAT,
            source::DOT_BLOCK,
            source::ROWS_OWN,
            source::COLS_OWN,
            source::HEADS,
            source::MASKS,
            source::FUSED_PARAMS,
            source::FUSED_IO,
            source::FUSED_DIRECT,
            source::FUSED_OWN,
        ]
        .concat(),
        "fused_direct_subgroup" => [
            prelude,
            source::FLOAT,
            source::DOT_BLOCK,
            source::ROWS_OWN,
            source::HEADS,
            source::MASKS,
            source::FUSED_PARAMS,
            source::FUSED_IO,
            source::FUSED_DIRECT,
            source::LANES8,
            source::FUSED_SUBGROUP,
        ]
        .concat(),
        "fused_lanes" => [
            prelude,
            source::FLOAT,
            source::HEADS,
            source::MASKS,
            source::FUSED_PARAMS,
            source::LANES8,
            source::FUSED_LANES,
        ]
        .concat(),
        "fused_combine" => [prelude, source::FLOAT, source::HEADS, source::FUSED_COMBINE].concat(),
        _ => return None,
    })
}

/// The entry point of register-blocked kernel `name`, with the reads of its rows: a lane
/// that reads its own, or (`_subgroup`) a subgroup that shares them.
fn direct_entry(name: &str) -> [&'static str; 2] {
    if name.ends_with("_subgroup") {
        [source::DIRECT_SUBGROUP, ""]
    } else {
        [source::ROWS_OWN, source::DIRECT_ENTRY]
    }
}

/// Every shader the crate builds pipelines from, by [`shader_source`] name.
pub const SHADER_NAMES: [&str; 20] = [
    "linear",
    "linear_direct",
    "linear_direct_subgroup",
    "qk",
    "qk_direct",
    "qk_direct_subgroup",
    "av",
    "av_direct",
    "av_direct_subgroup",
    "softmax",
    "softmax_subgroup",
    "softmax_vec4",
    "softmax_vec4_subgroup",
    "softmax_rows",
    "head_mean",
    "fused",
    "fused_direct",
    "fused_direct_subgroup",
    "fused_lanes",
    "fused_combine",
];

/// Every kernel's complete WGSL source with f32 storage, by name, as handed to the device
/// (for validation with naga in the tests, and for anyone reading what runs).
pub fn shader_sources() -> Vec<(&'static str, String)> {
    SHADER_NAMES
        .into_iter()
        .map(|name| {
            (
                name,
                shader_source(name, Storage::F32).expect("known kernel"),
            )
        })
        .collect()
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

/// Loop iterations one shader invocation may run in all, where the driver caps them: Mesa's
/// llvmpipe (lavapipe) ends every loop of an invocation once its loops have together run
/// 65535 iterations, and reports nothing (measured with Mesa 22.3: loops of 40000 and then
/// 40000 iterations ran 40000 and 25534 times). Kernels whose invocations could loop more
/// are not used there; a call that only such kernels could run is refused with `TooLarge`.
pub(crate) fn loop_cap(info: &wgpu::AdapterInfo) -> Option<u64> {
    let llvmpipe = |s: &str| s.to_lowercase().contains("llvmpipe");
    (llvmpipe(&info.name) || llvmpipe(&info.driver)).then_some(65535)
}

impl Kernels {
    /// Whether an invocation that loops `iterations` times in all runs them all here.
    pub fn within_loop_cap(&self, iterations: u64) -> bool {
        self.loop_cap.is_none_or(|cap| iterations <= cap)
    }

    /// The error for a call that needs invocations looping `iterations` times in all.
    pub fn loop_cap_error(&self, what: String, iterations: u64) -> crate::Error {
        crate::Error::TooLarge {
            what,
            needed: iterations,
            limit: self.loop_cap.unwrap_or(u64::MAX),
            limit_name: "loop iterations per shader invocation (Mesa llvmpipe)",
        }
    }
}

/// Whether `count` items in tiles of `tile` fit one grid dimension.
pub(crate) fn fits_grid(count: u32, tile: u32) -> bool {
    count.div_ceil(tile) <= MAX_GROUPS
}

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
        // Without the loop counters wgpu would add to every loop: each of these kernels' loops
        // ends by its bounds (counts from the parameters, which the launchers check), and
        // the counters cost compile time (on lavapipe 0.3–0.4 s of the fused kernel's 2.3–2.7).
        let checks = wgpu::ShaderRuntimeChecks {
            force_loop_bounding: false,
            ..wgpu::ShaderRuntimeChecks::checked()
        };
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        // SAFETY: the only check turned off is loop bounding, and every loop of the crate's
        // kernels is bounded (above); bounds checks and division checks stay on.
        let module = unsafe { device.create_shader_module_trusted(descriptor, checks) };
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

/// One kernel's pipelines by result type: into the storage dtype (a result that stays inside
/// the forward) and into f32 (the forward's output).
#[derive(Clone)]
pub(crate) struct PerResult {
    pub inner: Kernel,
    pub last: Kernel,
}

impl PerResult {
    /// The pipeline that writes `storage`'s result type.
    pub fn for_storage(&self, storage: Storage) -> &Kernel {
        match storage {
            Storage::F16ToF32 => &self.last,
            Storage::F32 | Storage::F16 => &self.inner,
        }
    }
}

/// The linear layer, QKᵀ and P·V pipelines of one kind (staged or register-blocked) and one
/// storage dtype.
pub(crate) struct MatmulSet {
    /// The in-projections' result stays in the storage dtype, the out-projection's is f32.
    pub linear: PerResult,
    pub qk: Kernel,
    /// P·V into the storage dtype (MHA's attention output) or into f32 (SDPA's output).
    pub av: PerResult,
}

/// WGSL override constants of one kernel.
type Constants<'a> = &'a [(&'static str, f64)];

impl MatmulSet {
    /// Builds `linear`, `qk` and `av` from the sources of those names plus `suffix`
    /// (`""`: staged, `"_direct"`: register-blocked, `"_direct_subgroup"`: register-blocked
    /// with rows shared through subgroups), each with its override constants.
    fn build(
        device: &wgpu::Device,
        dtype: Dtype,
        suffix: &str,
        [linear_constants, qk_constants, av_constants]: [Constants; 3],
    ) -> Self {
        let (inner, last) = (Storage::inner(dtype), Storage::last(dtype));
        let build = |name: &'static str, storage, params, bindings: &[bool], constants| {
            let source = shader_source(&format!("{name}{suffix}"), storage);
            Kernel::new(
                device,
                name,
                &source.expect("known kernel"),
                params,
                bindings,
                constants,
            )
        };
        // One pipeline per result type, shared when both are the same.
        let pair = |name, params, bindings: &[bool], constants| {
            let inner_kernel = build(name, inner, params, bindings, constants);
            PerResult {
                last: if last == inner {
                    inner_kernel.clone()
                } else {
                    build(name, last, params, bindings, constants)
                },
                inner: inner_kernel,
            }
        };
        Self {
            linear: pair(
                "linear",
                size_of::<linear::Params>(),
                &[true, true, true, false],
                linear_constants,
            ),
            qk: build(
                "qk",
                inner,
                size_of::<qk::Params>(),
                &[true, true, true, true, false],
                qk_constants,
            ),
            av: pair(
                "av",
                size_of::<av::Params>(),
                &[true, true, false],
                av_constants,
            ),
        }
    }
}

/// The register-blocked kernels (`Tuning::direct`) and their workgroup shape.
pub(crate) struct DirectMatmuls {
    pub tiles: DirectTiles,
    /// The invocations that share rows share their loads through subgroup operations.
    pub subgroups: bool,
    pub kernels: MatmulSet,
}

impl DirectMatmuls {
    /// Rows and columns of the result one workgroup of the linear or P·V kernel takes:
    /// `tiles`' 4 × 8 blocks, or with shared rows the 8 × 4 ones of `linear_shared.wgsl`
    /// and `av_shared.wgsl`.
    pub fn block_tile(&self) -> [u32; 2] {
        let t = &self.tiles;
        if self.subgroups {
            [8 * t.wg_y, 4 * t.wg_x]
        } else {
            [t.tile_rows(), t.tile_cols()]
        }
    }
}

/// Whether the register-blocked kernels with `tiles` share rows through subgroup operations
/// on `device`: where the tuning asks for it, the device has them, and its subgroups are
/// exactly the `wg_x` invocations that share rows (`direct_subgroup.wgsl`), at least 8 of
/// them (`linear_shared.wgsl` and `av_shared.wgsl` broadcast from lanes 0–7).
pub(crate) fn direct_subgroups(
    device: &wgpu::Device,
    tuning: &Tuning,
    tiles: &DirectTiles,
) -> bool {
    let info = device.adapter_info();
    tuning.direct_subgroups
        && device.features().contains(wgpu::Features::SUBGROUP)
        && tiles.wg_x >= 8
        && info.subgroup_min_size == tiles.wg_x
        && info.subgroup_max_size == tiles.wg_x
}

/// The matrix-product pipelines of one storage dtype: the staged ones, which serve every
/// layout, and the register-blocked ones where the tuning has them, used where the layout
/// allows vec4 loads.
pub(crate) struct Matmuls {
    pub staged: MatmulSet,
    pub direct: Option<DirectMatmuls>,
}

impl Matmuls {
    fn build(device: &wgpu::Device, tuning: &Tuning, dtype: Dtype) -> Self {
        let gemm = gemm_constants(&tuning.gemm);
        let av = gemm_constants(&tuning.av_tiles());
        Self {
            staged: MatmulSet::build(device, dtype, "", [&gemm, &gemm, &av]),
            direct: tuning.direct.map(|tiles| {
                let shape = [("WG_X", tiles.wg_x as f64), ("WG_Y", tiles.wg_y as f64)];
                let subgroups = direct_subgroups(device, tuning, &tiles);
                let suffix = if subgroups {
                    "_direct_subgroup"
                } else {
                    "_direct"
                };
                DirectMatmuls {
                    tiles,
                    subgroups,
                    kernels: MatmulSet::build(device, dtype, suffix, [&shape; 3]),
                }
            }),
        }
    }
}

/// Whether the softmax kernels with a workgroup per row merge with subgroup operations:
/// where the tuning asks for it and the device has them.
fn softmax_subgroups(device: &wgpu::Device, tuning: &Tuning) -> bool {
    tuning.softmax_subgroups && device.features().contains(wgpu::Features::SUBGROUP)
}

/// The widest subgroup of `device` where the fused path may share loads through
/// subgroups: where the tuning asks for it, the device has subgroup operations and its
/// subgroups are at least the 8 lanes that load them. 8 (all subgroups exactly 8 wide):
/// `fused_lanes.wgsl`; wider: `fused_subgroup.wgsl`, a workgroup a whole number of these
/// ([`fused::Variant::sharing`]).
fn fused_subgroup_width(device: &wgpu::Device, tuning: &Tuning) -> Option<u32> {
    let info = device.adapter_info();
    (tuning.fused_subgroups
        && device.features().contains(wgpu::Features::SUBGROUP)
        && info.subgroup_min_size >= 8)
        .then_some(info.subgroup_max_size)
}

/// Every pipeline of the crate, built once per device: the f32 ones when the device is
/// opened, the f16 ones and each fused class on first use.
pub(crate) struct Kernels {
    pub tuning: Tuning,
    /// Loop iterations one invocation may run in all on this device ([`loop_cap`]).
    pub loop_cap: Option<u64>,
    /// The softmax kernels with a workgroup per row merge with subgroup operations.
    pub softmax_subgroups: bool,
    /// The widest subgroup where the register-blocked fused kernel may share keys and values
    /// through subgroups ([`fused::Variant::sharing`]).
    pub fused_subgroup_width: Option<u32>,
    pub softmax: Kernel,
    /// Softmax of rows whose length is a multiple of 4, read and written as vec4.
    pub softmax_vec4: Kernel,
    /// The same, an invocation per row (`Tuning::softmax_whole_rows`).
    pub softmax_rows: Kernel,
    pub head_mean: Kernel,
    /// Bound where an optional input (bias, mask) is absent.
    pub placeholder: wgpu::Buffer,
    /// Bound where an optional read-write buffer is absent (a separate buffer: one buffer
    /// may not be bound read-only and read-write in the same dispatch).
    pub placeholder_rw: wgpu::Buffer,
    f32: Matmuls,
    f16: std::sync::OnceLock<Matmuls>,
    /// Fused-attention pipelines, one per head-size class and storage, built on first use.
    fused: std::sync::Mutex<std::collections::HashMap<(fused::Variant, Storage), Kernel>>,
    /// The merge of the fused kernel's key splits, per storage, built on first use.
    fused_combine: std::sync::Mutex<std::collections::HashMap<Storage, Kernel>>,
}

impl Kernels {
    pub fn new(device: &wgpu::Device, tuning: Tuning) -> crate::Result<Self> {
        tuning.check(&device.limits())?;
        let source = |name: &str| shader_source(name, Storage::F32).expect("known kernel");
        let subgroups = softmax_subgroups(device, &tuning);
        let reduce = |name: &'static str| {
            if subgroups {
                format!("{name}_subgroup")
            } else {
                name.to_string()
            }
        };
        let softmax_kernel = |name: &str| {
            Kernel::new(
                device,
                "softmax",
                &source(name),
                size_of::<softmax::Params>(),
                &[false],
                &[("WG", tuning.softmax_wg as f64)],
            )
        };
        Ok(Self {
            tuning,
            softmax: softmax_kernel(&reduce("softmax")),
            softmax_vec4: softmax_kernel(&reduce("softmax_vec4")),
            softmax_rows: softmax_kernel("softmax_rows"),
            head_mean: Kernel::new(
                device,
                "head_mean",
                &source("head_mean"),
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
            placeholder_rw: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-mha read-write placeholder"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            f32: Matmuls::build(device, &tuning, Dtype::F32),
            f16: Default::default(),
            fused: Default::default(),
            fused_combine: Default::default(),
            loop_cap: loop_cap(&device.adapter_info()),
            softmax_subgroups: subgroups,
            fused_subgroup_width: fused_subgroup_width(device, &tuning),
        })
    }

    /// Whether the register-blocked kernels share rows through subgroup operations.
    pub fn direct_subgroups(&self) -> bool {
        self.f32.direct.as_ref().is_some_and(|d| d.subgroups)
    }

    /// The matrix-product pipelines for `dtype` storage (the device must grant it: checked by
    /// the caller), built once per device.
    pub fn matmuls(&self, device: &wgpu::Device, dtype: Dtype) -> &Matmuls {
        match dtype {
            Dtype::F32 => &self.f32,
            Dtype::F16 => self
                .f16
                .get_or_init(|| Matmuls::build(device, &self.tuning, Dtype::F16)),
        }
    }

    /// The fused pipeline of `variant` with `storage` (checked against `limits`), built once
    /// per device.
    pub fn fused(
        &self,
        device: &wgpu::Device,
        limits: &wgpu::Limits,
        variant: fused::Variant,
        storage: Storage,
    ) -> crate::Result<Kernel> {
        variant.check(limits)?;
        let mut cache = self.fused.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cache
            .entry((variant, storage))
            .or_insert_with(|| fused::build(device, variant, storage))
            .clone())
    }

    /// The merge of the fused kernel's key splits writing `storage`'s result type, built once
    /// per device.
    pub fn fused_combine(&self, device: &wgpu::Device, storage: Storage) -> Kernel {
        let mut cache = self.fused_combine.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(storage)
            .or_insert_with(|| fused::build_combine(device, storage))
            .clone()
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

impl HeadView<'_> {
    /// Whether every row of every head starts at a multiple of 4 elements: what reading
    /// rows as vec4 needs (with a row length that is a multiple of 4).
    pub fn vec4_aligned(&self) -> bool {
        self.params().iter().all(|x| x.is_multiple_of(4))
    }

    /// `[offset, stride_b, stride_h, stride_l]`, as the kernels' parameter blocks hold it.
    pub fn params(&self) -> [u32; 4] {
        [self.offset, self.stride_b, self.stride_h, self.stride_l]
    }
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
