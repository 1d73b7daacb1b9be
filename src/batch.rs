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
        let device = self.gpu.device();
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
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("wgpu-mha kernels"),
                        timestamp_writes: None,
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
                        next = match steps.peek() {
                            Some(Step::Dispatch { .. }) => steps.next(),
                            _ => None,
                        };
                    }
                }
            }
        }
        self.gpu.queue().submit([encoder.finish()])
    }
}
