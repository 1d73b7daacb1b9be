//! One forward's GPU work, recorded step by step and submitted once.
//!
//! Kernels add dispatches (pipeline, uniform parameters, buffers, grid) and the orchestrator
//! adds buffer copies; [`Batch::submit`] packs every dispatch's parameters into one uniform
//! buffer (a slot each), records all steps into one command encoder — consecutive dispatches
//! share one compute pass — and submits once.

use crate::buffer;
use crate::gpu::Gpu;
use crate::kernels::Kernel;

enum Step<'k> {
    Dispatch {
        kernel: &'k Kernel,
        slot: u64,
        buffers: Vec<wgpu::Buffer>,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    },
}

/// Steps of one submission.
pub(crate) struct Batch<'k> {
    gpu: &'k Gpu,
    params: Vec<u8>,
    slot_align: u64,
    steps: Vec<Step<'k>>,
    /// When set, only dispatches of this kernel are recorded (and no copies): how the
    /// benchmark times one pass alone.
    only: Option<&'k str>,
}

impl<'k> Batch<'k> {
    pub fn new(gpu: &'k Gpu) -> Self {
        Self {
            gpu,
            params: Vec::new(),
            slot_align: gpu.limits().min_uniform_buffer_offset_alignment as u64,
            steps: Vec::new(),
            only: None,
        }
    }

    /// A batch that keeps only the dispatches of kernel `name`.
    pub fn only(gpu: &'k Gpu, name: &'k str) -> Self {
        Self {
            only: Some(name),
            ..Self::new(gpu)
        }
    }

    /// Adds one dispatch of `kernel` with uniform `params` and `buffers` at bindings 1, 2, …
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: &'k Kernel,
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        if self.only.is_some_and(|name| name != kernel.name) {
            return;
        }
        let slot = self.params.len() as u64;
        self.params.extend_from_slice(bytemuck::bytes_of(params));
        let padded = self.params.len().next_multiple_of(self.slot_align as usize);
        self.params.resize(padded, 0);
        self.steps.push(Step::Dispatch {
            kernel,
            slot,
            buffers: buffers.iter().map(|b| (*b).clone()).collect(),
            groups,
        });
    }

    /// Adds a buffer-to-buffer copy (ordered after the dispatches before it).
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        if self.only.is_some() {
            return;
        }
        self.steps.push(Step::Copy {
            src: src.clone(),
            src_offset,
            dst: dst.clone(),
            dst_offset,
            size,
        });
    }

    /// Records everything into one encoder and submits it.
    pub fn submit(self) -> wgpu::SubmissionIndex {
        self.submit_inner(false).0
    }

    /// Like [`submit`](Self::submit), but each dispatch gets a compute pass of its own with
    /// GPU timestamps at its start and end (when the device has timestamp queries): read
    /// them with [`Timestamps::read`] after the work completes.
    pub fn submit_timed(self) -> (wgpu::SubmissionIndex, Option<Timestamps>) {
        self.submit_inner(true)
    }

    fn submit_inner(self, timed: bool) -> (wgpu::SubmissionIndex, Option<Timestamps>) {
        let device = self.gpu.device();
        let dispatches: Vec<&'static str> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Dispatch { kernel, .. } => Some(kernel.name),
                Step::Copy { .. } => None,
            })
            .collect();
        let timestamps = (timed
            && device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
            && !dispatches.is_empty()
            && 2 * dispatches.len() <= wgpu::QUERY_SET_MAX_QUERIES as usize)
            .then(|| Timestamps::new(self.gpu, dispatches));
        let params = buffer::upload_bytes(
            self.gpu,
            "wgpu-mha params",
            &self.params,
            wgpu::BufferUsages::UNIFORM,
        );
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-mha forward"),
        });
        let mut steps = self.steps.into_iter().peekable();
        let mut dispatch_index = 0u32;
        while let Some(step) = steps.next() {
            match step {
                Step::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => encoder.copy_buffer_to_buffer(&src, src_offset, &dst, dst_offset, size),
                first @ Step::Dispatch { .. } => {
                    let timestamp_writes =
                        timestamps
                            .as_ref()
                            .map(|t| wgpu::ComputePassTimestampWrites {
                                query_set: &t.queries,
                                beginning_of_pass_write_index: Some(2 * dispatch_index),
                                end_of_pass_write_index: Some(2 * dispatch_index + 1),
                            });
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("wgpu-mha kernels"),
                        timestamp_writes,
                    });
                    let mut next = Some(first);
                    while let Some(Step::Dispatch {
                        kernel,
                        slot,
                        buffers,
                        groups,
                    }) = next
                    {
                        let bind_group = kernel.bind_group(device, &params, slot, &buffers);
                        pass.set_pipeline(&kernel.pipeline);
                        pass.set_bind_group(0, &bind_group, &[]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        dispatch_index += 1;
                        // Timed: one pass per dispatch, so every kernel has its own stamps.
                        next = match steps.peek() {
                            Some(Step::Dispatch { .. }) if timestamps.is_none() => steps.next(),
                            _ => None,
                        };
                    }
                }
            }
        }
        if let Some(t) = &timestamps {
            encoder.resolve_query_set(&t.queries, 0..t.queries_len(), &t.resolved, 0);
            encoder.copy_buffer_to_buffer(&t.resolved, 0, &t.staging, 0, t.resolved.size());
        }
        (self.gpu.queue().submit([encoder.finish()]), timestamps)
    }
}

/// How long one run took.
#[derive(Clone, Debug)]
pub struct RunTiming {
    /// Record + submit + wait, host wall clock.
    pub wall: std::time::Duration,
    /// GPU time of each dispatch, in submission order, from timestamp queries — `None` when
    /// the device has none. Each dispatch then runs in a compute pass of its own. Some
    /// drivers report these wrongly (lavapipe 22.3 reads 0 or half the real time for some
    /// kernels): compare their sum with `wall` before trusting them.
    pub kernels: Option<Vec<(&'static str, std::time::Duration)>>,
}

impl RunTiming {
    /// Sum of the per-dispatch GPU times, if any.
    pub fn gpu_total(&self) -> Option<std::time::Duration> {
        self.kernels
            .as_ref()
            .map(|k| k.iter().map(|(_, d)| *d).sum())
    }
}

/// Submits `batch` with timestamps, waits, and returns the timing.
pub(crate) fn run_timed(gpu: &Gpu, batch: Batch) -> crate::Result<RunTiming> {
    let start = std::time::Instant::now();
    let (_, stamps) = batch.submit_timed();
    buffer::wait(gpu)?;
    let wall = start.elapsed();
    let kernels = stamps.map(|t| t.read(gpu)).transpose()?.map(|k| {
        k.into_iter()
            .map(|(name, ns)| (name, std::time::Duration::from_nanos(ns as u64)))
            .collect()
    });
    Ok(RunTiming { wall, kernels })
}

/// GPU timestamps around each dispatch of a timed submission.
pub(crate) struct Timestamps {
    names: Vec<&'static str>,
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    staging: wgpu::Buffer,
    period_ns: f64,
}

impl Timestamps {
    fn new(gpu: &Gpu, names: Vec<&'static str>) -> Self {
        let count = 2 * names.len() as u32;
        let bytes = 8 * count as u64;
        let device = gpu.device();
        Self {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("wgpu-mha timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolved: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-mha timestamps resolved"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            staging: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-mha timestamps readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            period_ns: gpu.queue().get_timestamp_period() as f64,
            names,
        }
    }

    fn queries_len(&self) -> u32 {
        2 * self.names.len() as u32
    }

    /// Each dispatch's kernel name and GPU time in nanoseconds, in submission order
    /// (after the submission has completed).
    pub fn read(&self, gpu: &Gpu) -> crate::Result<Vec<(&'static str, f64)>> {
        let stamps: Vec<u64> =
            buffer::read_back(gpu, &[(&self.staging, self.queries_len() as usize)])?
                .pop()
                .unwrap_or_default();
        let stamp = |i: usize| stamps[i];
        Ok(self
            .names
            .iter()
            .enumerate()
            .map(|(i, &name)| {
                let ticks = stamp(2 * i + 1).saturating_sub(stamp(2 * i));
                (name, ticks as f64 * self.period_ns)
            })
            .collect())
    }
}
