//! Moving data: storage buffers from host slices, and readback of results (`map_async`
//! completed through a futures-intrusive oneshot channel while the device is polled).
//!
//! Every buffer a call allocates comes from its device's [`Pool`] and goes back to it when
//! the call's last handle drops ([`Pooled`]), so repeated calls of one shape allocate
//! nothing after the first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::options::Dtype;

/// Usages of every buffer the kernels read or write: storage, plus copies in and out.
pub(crate) const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Bytes of `n` f32 elements.
pub(crate) fn bytes_of_f32(n: usize) -> u64 {
    (n as u64) * 4
}

/// Buffers of finished calls, kept for the next call that needs the same size and usage;
/// the oldest are dropped past a byte limit. One per device.
pub(crate) struct Pool {
    free: Mutex<VecDeque<wgpu::Buffer>>,
    /// Bytes kept at most.
    limit: u64,
    /// Buffers created so far (what reuse saves shows here).
    created: std::sync::atomic::AtomicU64,
}

/// Bytes of idle buffers a device keeps for reuse.
pub(crate) const POOL_LIMIT: u64 = 256 << 20;

impl Pool {
    pub fn new(limit: u64) -> Self {
        Self {
            free: Mutex::new(VecDeque::new()),
            limit,
            created: Default::default(),
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, VecDeque<wgpu::Buffer>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of exactly `size` bytes and `usage`: an idle one, else a new one.
    pub(crate) fn take(
        self: &Arc<Self>,
        device: &wgpu::Device,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Pooled {
        let reused = {
            let mut free = self.free();
            free.iter()
                .position(|b| b.size() == size && b.usage() == usage)
                .and_then(|i| free.remove(i))
        };
        let buffer = reused.unwrap_or_else(|| {
            self.created
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        });
        Pooled {
            buffer: Some(buffer),
            pool: self.clone(),
            // A mappable buffer is reusable only once its read has unmapped it.
            reusable: std::sync::atomic::AtomicBool::new(
                !usage.contains(wgpu::BufferUsages::MAP_READ),
            ),
        }
    }

    /// Keeps `buffer` for reuse, dropping the oldest idle buffers past the limit.
    fn give(&self, buffer: wgpu::Buffer) {
        if buffer.size() > self.limit {
            return;
        }
        let mut free = self.free();
        free.push_back(buffer);
        let mut bytes: u64 = free.iter().map(|b| b.size()).sum();
        while bytes > self.limit {
            let Some(oldest) = free.pop_front() else {
                break;
            };
            bytes -= oldest.size();
        }
    }

    /// Buffers created so far.
    pub fn created(&self) -> u64 {
        self.created.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of idle buffers held.
    pub fn idle_bytes(&self) -> u64 {
        self.free().iter().map(|b| b.size()).sum()
    }

    /// Drops every idle buffer.
    pub fn clear(&self) {
        self.free().clear();
    }
}

/// A buffer on loan from its device's [`Pool`], returned when dropped. Dereferences to the
/// `wgpu::Buffer`.
pub struct Pooled {
    buffer: Option<wgpu::Buffer>,
    pool: Arc<Pool>,
    /// Whether it may go back to the pool: not a staging buffer until read and unmapped,
    /// never one lent to the caller.
    reusable: std::sync::atomic::AtomicBool,
}

impl Pooled {
    /// Marks a staging buffer as read and unmapped, so it may be reused.
    pub(crate) fn mark_unmapped(&mut self) {
        *self.reusable.get_mut() = true;
    }

    /// The buffer, for a caller that may keep a handle to it past this loan (results kept
    /// on the GPU): it will not go back to the pool.
    pub(crate) fn lend(&self) -> &wgpu::Buffer {
        self.reusable
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self
    }
}

impl std::ops::Deref for Pooled {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take()
            && *self.reusable.get_mut()
        {
            self.pool.give(buffer);
        }
    }
}

/// Bytes of `n` elements stored as `dtype`.
pub(crate) fn bytes_of(n: usize, dtype: Dtype) -> u64 {
    (n * dtype.size()) as u64
}

/// Checks that a buffer of `bytes` fits one storage binding of the device.
pub(crate) fn check_binding(gpu: &Gpu, what: impl Into<String>, bytes: u64) -> Result<()> {
    let limit = gpu.limits().max_storage_buffer_binding_size;
    if bytes > limit {
        return Err(Error::TooLarge {
            what: what.into(),
            needed: bytes,
            limit,
            limit_name: "max_storage_buffer_binding_size",
        });
    }
    Ok(())
}

/// Checks that a buffer of `bytes` can exist on the device at all.
pub(crate) fn check_buffer(gpu: &Gpu, what: impl Into<String>, bytes: u64) -> Result<()> {
    let limit = gpu.limits().max_buffer_size;
    if bytes > limit {
        return Err(Error::TooLarge {
            what: what.into(),
            needed: bytes,
            limit,
            limit_name: "max_buffer_size",
        });
    }
    Ok(())
}

/// A storage buffer holding `data` (must fit one binding: checked by the caller).
///
/// Written through the queue rather than mapped at creation: on a lost device a mapped
/// creation panics inside wgpu, while a queued write becomes an error the scope captures.
pub(crate) fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> Pooled {
    upload_bytes(gpu, label, bytemuck::cast_slice(data), STORAGE)
}

/// A storage buffer holding `data` stored as `dtype` (f16: rounded to nearest; must fit one
/// binding: checked by the caller). `Err(OutOfRange)` names the first finite value the
/// dtype cannot hold: nothing is silently turned into infinity.
pub(crate) fn upload_as(gpu: &Gpu, label: &str, data: &[f32], dtype: Dtype) -> Result<Pooled> {
    match dtype {
        Dtype::F32 => Ok(upload(gpu, label, data)),
        Dtype::F16 => {
            let max = half::f16::MAX.to_f32();
            // Values that round to ±65504 are fine; past the rounding midpoint they overflow.
            if let Some((index, &value)) = data
                .iter()
                .enumerate()
                .find(|(_, x)| x.is_finite() && half::f16::from_f32(**x).is_infinite())
            {
                return Err(Error::OutOfRange {
                    tensor: label.to_string(),
                    index,
                    value,
                    dtype: dtype.name(),
                    max,
                });
            }
            let mut halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            // Buffer writes move whole 4-byte words.
            if halves.len() % 2 == 1 {
                halves.push(half::f16::ZERO);
            }
            Ok(upload_bytes(
                gpu,
                label,
                bytemuck::cast_slice(&halves),
                STORAGE,
            ))
        }
    }
}

/// A buffer of `usage` (plus COPY_DST) holding `bytes`, padded to at least 16 bytes.
pub(crate) fn upload_bytes(
    gpu: &Gpu,
    label: &str,
    bytes: &[u8],
    usage: wgpu::BufferUsages,
) -> Pooled {
    let size = (bytes.len() as u64).max(16).next_multiple_of(4);
    let buffer = gpu.take_buffer(label, size, usage | wgpu::BufferUsages::COPY_DST);
    if !bytes.is_empty() {
        gpu.queue().write_buffer(&buffer, 0, bytes);
    }
    buffer
}

/// An uninitialised storage buffer of `len` f32 elements.
pub(crate) fn storage(gpu: &Gpu, label: &str, len: usize) -> Pooled {
    storage_as(gpu, label, len, Dtype::F32)
}

/// An uninitialised storage buffer of `len` elements stored as `dtype`.
pub(crate) fn storage_as(gpu: &Gpu, label: &str, len: usize, dtype: Dtype) -> Pooled {
    let size = bytes_of(len, dtype).max(16).next_multiple_of(4);
    gpu.take_buffer(label, size, STORAGE)
}

/// A buffer the host can map to read `len` f32 elements back.
pub(crate) fn staging(gpu: &Gpu, label: &str, len: usize) -> Pooled {
    let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
    gpu.take_buffer(label, bytes_of_f32(len).max(16), usage)
}

/// Maps each staging buffer and reads its first `len` elements, after one wait for the device.
pub(crate) fn read_back<T: bytemuck::Pod>(
    gpu: &Gpu,
    buffers: &[(&wgpu::Buffer, usize)],
) -> Result<Vec<Vec<T>>> {
    let bytes = |len: usize| (len * size_of::<T>()) as u64;
    let receivers: Vec<_> = buffers
        .iter()
        .map(|(buffer, len)| {
            let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
            buffer.map_async(wgpu::MapMode::Read, ..bytes(*len).max(4), move |r| {
                sender.send(r).ok();
            });
            receiver
        })
        .collect();
    wait(gpu)?;
    buffers
        .iter()
        .zip(receivers)
        .map(|((buffer, len), receiver)| {
            // The staging buffers are the crate's own and never destroyed by it, so a mapping
            // or a mapped view that fails means the device went away under the call (a
            // destroy can land between the two) — often before its loss callback has run:
            // report the loss, not a readback failure.
            let lost = |e: String| {
                gpu.device().poll(wgpu::PollType::Poll).ok();
                gpu.check_alive()?;
                Err(Error::DeviceLost(format!(
                    "reading a result buffer failed ({e}): the device was lost or destroyed"
                )))
            };
            let mapped = pollster::block_on(receiver.receive())
                .ok_or_else(|| "the map callback was dropped".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = mapped {
                return lost(e);
            }
            let data = match buffer.get_mapped_range(..bytes(*len).max(4)) {
                Ok(view) => bytemuck::cast_slice::<u8, T>(&view)[..*len].to_vec(),
                Err(e) => return lost(e.to_string()),
            };
            buffer.unmap();
            Ok(data)
        })
        .collect()
}

/// Blocks until the device has finished all submitted work.
pub(crate) fn wait(gpu: &Gpu) -> Result<()> {
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| match gpu.check_alive() {
            Err(lost) => lost,
            Ok(()) => Error::Wgpu {
                during: "device poll",
                message: e.to_string(),
            },
        })?;
    gpu.check_alive()
}
