//! The GPU context: an adapter and device (opened here, or the caller's own), the adapter's
//! limits, and every compute pipeline, built once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernels::Kernels;
use crate::tuning::{self, Tuning};

/// How to pick an adapter when the crate opens the device itself.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter's name (`WGPU_ADAPTER_NAME` when `None`).
    pub adapter_name: Option<String>,
    /// Backends to consider (`WGPU_BACKEND` when `None`, else all).
    pub backends: Option<wgpu::Backends>,
    /// Bytes the score matrix of one block of query rows may take (see
    /// [`Gpu::set_memory_budget`]); `None` for the default.
    pub memory_budget: Option<u64>,
    /// Kernel configuration; `None`: the adapter's cached tuning (`wgpu-mha tune`), else
    /// the defaults for the adapter ([`Tuning::for_adapter`]).
    pub tuning: Option<Tuning>,
}

impl GpuOptions {
    /// Options from the environment: `WGPU_ADAPTER_NAME`, `WGPU_BACKEND`.
    pub fn from_env() -> Self {
        Self {
            adapter_name: std::env::var("WGPU_ADAPTER_NAME")
                .ok()
                .filter(|s| !s.is_empty()),
            backends: wgpu::Backends::from_env(),
            memory_budget: None,
            tuning: None,
        }
    }
}

/// One adapter as `wgpu-mha info` lists it.
#[derive(Clone, Debug)]
pub struct AdapterChoice {
    pub info: wgpu::AdapterInfo,
    /// Why this adapter was (or would be) chosen.
    pub reason: String,
}

/// The default budget for one block of scores: 256 MiB, or less where one binding holds less.
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 << 20;

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    reason: String,
    tuning_source: &'static str,
    kernels: Kernels,
    memory_budget: AtomicU64,
    lost: Arc<Mutex<Option<String>>>,
    /// Idle buffers of finished calls, reused by calls of the same shape.
    pool: Arc<crate::buffer::Pool>,
}

/// A device, its queue and the crate's pipelines. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish()
    }
}

/// Preference order when no name is given: real GPUs first, the CPU adapter last.
fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Every adapter wgpu finds on `backends`.
pub fn enumerate_adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let instance = wgpu::Instance::new(
        wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        }
        .with_env(),
    );
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// Picks the adapter `options` asks for and says why; `None` when nothing matches.
pub fn choose_adapter(
    adapters: Vec<wgpu::Adapter>,
    options: &GpuOptions,
) -> Option<(wgpu::Adapter, String)> {
    let mut candidates: Vec<_> = adapters
        .into_iter()
        // Compute needs a full backend; GL adapters lack storage buffers in compute on many
        // drivers and are only taken when asked for by name.
        .filter(|a| options.adapter_name.is_some() || a.get_info().backend != wgpu::Backend::Gl)
        .collect();
    if let Some(name) = &options.adapter_name {
        let wanted = name.to_lowercase();
        candidates.retain(|a| a.get_info().name.to_lowercase().contains(&wanted));
        candidates.sort_by_key(|a| type_rank(a.get_info().device_type));
        return candidates
            .into_iter()
            .next()
            .map(|a| (a, format!("its name matches {name:?}")));
    }
    candidates.sort_by_key(|a| type_rank(a.get_info().device_type));
    let first = candidates.into_iter().next()?;
    let reason = format!(
        "the most capable device type found ({:?}; preference: discrete GPU, integrated GPU, virtual GPU, CPU)",
        first.get_info().device_type
    );
    Some((first, reason))
}

impl Gpu {
    /// Opens the default adapter (`WGPU_ADAPTER_NAME` / `WGPU_BACKEND` are honoured).
    pub fn new() -> Result<Self> {
        Self::with_options(&GpuOptions::from_env())
    }

    /// Opens an adapter chosen by `options`, with the adapter's own limits.
    pub fn with_options(options: &GpuOptions) -> Result<Self> {
        // One opening at a time in a process: creating instances and devices from several
        // threads at once is where some drivers race (reported for NVIDIA's on Linux), and
        // an opening is rare and short next to what the device then runs.
        static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = OPENING.lock().unwrap_or_else(|e| e.into_inner());
        // The primary backends (Vulkan, Metal, DX12) run compute; GL is only used when asked for.
        let backends = options.backends.unwrap_or(wgpu::Backends::PRIMARY);
        let (adapter, reason) =
            choose_adapter(enumerate_adapters(backends), options).ok_or_else(|| {
                Error::NoAdapter {
                    detail: match &options.adapter_name {
                        Some(n) => format!(" whose name contains {n:?}"),
                        None => String::new(),
                    },
                }
            })?;
        let info = adapter.get_info();
        // The adapter's own limits: wgpu's defaults are smaller than most adapters (on
        // lavapipe they refuse 512 MiB buffers and 1024-invocation workgroups).
        let limits = adapter.limits();
        // Timestamp queries time each kernel in the benchmark, SHADER_F16 allows f16
        // storage, and SUBGROUP the softmax's subgroup merge, where the adapter has them.
        let features = adapter.features()
            & (wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgpu-mha"),
            required_features: features,
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;
        Self::assemble(
            device,
            queue,
            info,
            reason,
            options.memory_budget,
            options.tuning,
        )
    }

    /// Wraps a device the caller already has. Its limits must allow the crate's kernels
    /// (256 invocations per workgroup, 8 KiB of workgroup memory: wgpu's defaults do).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let info = device.adapter_info();
        Self::assemble(
            device,
            queue,
            info,
            "supplied by the caller".into(),
            None,
            None,
        )
    }

    fn assemble(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        reason: String,
        memory_budget: Option<u64>,
        tuning: Option<Tuning>,
    ) -> Result<Self> {
        let (tuning, tuning_source) = match tuning {
            Some(t) => (t, "given by the caller"),
            None => match tuning::load_cached(&info) {
                Some(t) if t.check(&device.limits()).is_ok() => (t, "cached by `wgpu-mha tune`"),
                _ => (
                    Tuning::for_adapter(&info, device.features()),
                    "defaults for the adapter",
                ),
            },
        };
        // Errors are captured by scopes around every operation; anything that escapes them is
        // reported rather than left to wgpu's default handler, which panics.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!("wgpu-mha: uncaptured wgpu error: {e}");
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost_flag.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        let kernels = {
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let kernels = Kernels::new(&device, tuning)?;
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Wgpu {
                    during: "pipeline creation",
                    message: e.to_string(),
                });
            }
            kernels
        };
        let gpu = Self {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                reason,
                tuning_source,
                kernels,
                memory_budget: AtomicU64::new(DEFAULT_MEMORY_BUDGET),
                lost,
                pool: Arc::new(crate::buffer::Pool::new(crate::buffer::POOL_LIMIT)),
            }),
        };
        if let Some(budget) = memory_budget {
            gpu.set_memory_budget(budget);
        }
        Ok(gpu)
    }

    /// The same device with the kernels built for `tuning` instead: what `wgpu-mha tune`
    /// uses to measure many configurations without opening a device for each (drivers
    /// limit how many may be open). Shares the device, queue, loss state and memory budget
    /// at the time of the call.
    pub fn with_tuning(&self, tuning: Tuning) -> Result<Gpu> {
        let device = &self.inner.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernels = Kernels::new(device, tuning);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Wgpu {
                during: "pipeline creation",
                message: e.to_string(),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                device: device.clone(),
                queue: self.inner.queue.clone(),
                info: self.inner.info.clone(),
                reason: self.inner.reason.clone(),
                tuning_source: "given by the caller",
                kernels: kernels?,
                memory_budget: AtomicU64::new(self.memory_budget()),
                lost: self.inner.lost.clone(),
                pool: self.inner.pool.clone(),
            }),
        })
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// A buffer of `size` bytes and `usage` for one call: an idle one of a finished call,
    /// else a new one. It returns to the device's pool when dropped.
    pub(crate) fn take_buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> crate::buffer::Pooled {
        self.inner.pool.take(self.device(), label, size, usage)
    }

    /// Buffers the crate has created on this device so far. Calls of a shape seen before
    /// reuse the buffers of the last such call, so this stops growing in a loop of
    /// same-shape calls.
    pub fn buffers_created(&self) -> u64 {
        self.inner.pool.created()
    }

    /// Bytes of idle buffers kept for reuse (at most 256 MiB; the oldest go first).
    pub fn idle_buffer_bytes(&self) -> u64 {
        self.inner.pool.idle_bytes()
    }

    /// Releases every idle buffer kept for reuse.
    pub fn release_idle_buffers(&self) {
        self.inner.pool.clear()
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter's name, backend, driver and device type.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// Why this adapter was chosen.
    pub fn choice_reason(&self) -> &str {
        &self.inner.reason
    }

    /// The kernel configuration in use.
    pub fn tuning(&self) -> Tuning {
        self.inner.kernels.tuning
    }

    /// Whether the register-blocked QKᵀ, P·V and linear kernels share rows through subgroup
    /// operations here: the tuning asks for them (`Tuning::direct_subgroups`), the device
    /// has subgroup operations, and its subgroups are exactly `direct.wg_x` wide.
    pub fn direct_subgroups(&self) -> bool {
        self.inner.kernels.direct_subgroups()
    }

    /// Whether the fused path may share loads through subgroup operations here: the tuning
    /// asks for it (`Tuning::fused_subgroups`) and the device's subgroups are at least 8
    /// wide (a call then shares where its workgroup and query rows allow).
    pub fn fused_subgroups(&self) -> bool {
        self.fused_subgroup_width().is_some()
    }

    /// The device's widest subgroup where the fused path may share loads through them
    /// (8: `fused_lanes.wgsl`, 32 query rows per subgroup; wider: keys and values shared).
    pub fn fused_subgroup_width(&self) -> Option<u32> {
        self.inner.kernels.fused_subgroup_width
    }

    /// Where [`Gpu::tuning`] came from: the caller, the tuning cache, or the defaults.
    pub fn tuning_source(&self) -> &'static str {
        self.inner.tuning_source
    }

    /// Whether the device can store tensors as f16 ([`Dtype::F16`](crate::Dtype::F16)): it
    /// has the feature `SHADER_F16`.
    pub fn supports_f16(&self) -> bool {
        self.device()
            .features()
            .contains(wgpu::Features::SHADER_F16)
    }

    /// `Err(Unsupported)` unless the device can store `dtype`.
    pub(crate) fn check_dtype(&self, dtype: crate::options::Dtype) -> Result<()> {
        if dtype == crate::options::Dtype::F16 && !self.supports_f16() {
            return Err(Error::Unsupported {
                what: "f16 storage",
                feature: "SHADER_F16",
                adapter: self.adapter_info().name.clone(),
            });
        }
        Ok(())
    }

    /// The device's limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.inner.device.limits()
    }

    pub(crate) fn kernels(&self) -> &Kernels {
        &self.inner.kernels
    }

    /// Bytes one block of the score matrix may take. Attention over long sequences walks
    /// blocks of query rows so that no block exceeds this (nor one storage binding).
    pub fn memory_budget(&self) -> u64 {
        self.inner.memory_budget.load(Ordering::Relaxed)
    }

    /// Sets the budget of [`Gpu::memory_budget`] (clamped to at least 4 KiB).
    pub fn set_memory_budget(&self, bytes: u64) {
        self.inner
            .memory_budget
            .store(bytes.max(4096), Ordering::Relaxed);
    }

    /// `Err(DeviceLost)` once the device has been lost.
    pub fn check_alive(&self) -> Result<()> {
        match self.inner.lost.lock().ok().and_then(|g| g.clone()) {
            Some(msg) => Err(Error::DeviceLost(msg)),
            None => Ok(()),
        }
    }
}
