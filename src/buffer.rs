//! Moving data: storage buffers from host slices, and readback of results (`map_async`
//! completed through a futures-intrusive oneshot channel while the device is polled).

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
pub(crate) fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> wgpu::Buffer {
    upload_bytes(gpu, label, bytemuck::cast_slice(data), STORAGE)
}

/// A storage buffer holding `data` stored as `dtype` (f16: rounded to nearest; must fit one
/// binding: checked by the caller).
pub(crate) fn upload_as(gpu: &Gpu, label: &str, data: &[f32], dtype: Dtype) -> wgpu::Buffer {
    match dtype {
        Dtype::F32 => upload(gpu, label, data),
        Dtype::F16 => {
            let mut halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            // Buffer writes move whole 4-byte words.
            if halves.len() % 2 == 1 {
                halves.push(half::f16::ZERO);
            }
            upload_bytes(gpu, label, bytemuck::cast_slice(&halves), STORAGE)
        }
    }
}

/// A buffer of `usage` (plus COPY_DST) holding `bytes`, padded to at least 16 bytes.
pub(crate) fn upload_bytes(
    gpu: &Gpu,
    label: &str,
    bytes: &[u8],
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (bytes.len() as u64).max(16).next_multiple_of(4),
        usage: usage | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    if !bytes.is_empty() {
        gpu.queue().write_buffer(&buffer, 0, bytes);
    }
    buffer
}

/// An uninitialised storage buffer of `len` f32 elements.
pub(crate) fn storage(gpu: &Gpu, label: &str, len: usize) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes_of_f32(len).max(16),
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

/// An uninitialised storage buffer of `len` elements stored as `dtype`.
pub(crate) fn storage_as(gpu: &Gpu, label: &str, len: usize, dtype: Dtype) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes_of(len, dtype).max(16).next_multiple_of(4),
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

/// A buffer the host can map to read `len` f32 elements back.
pub(crate) fn staging(gpu: &Gpu, label: &str, len: usize) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes_of_f32(len).max(16),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
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
            // that fails means the device went away under the call — often before its loss
            // callback has run: report the loss, not a readback failure.
            let mapped = pollster::block_on(receiver.receive())
                .ok_or_else(|| "the map callback was dropped".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = mapped {
                gpu.device().poll(wgpu::PollType::Poll).ok();
                gpu.check_alive()?;
                return Err(Error::DeviceLost(format!(
                    "mapping a result buffer failed ({e}): the device was lost or destroyed"
                )));
            }
            let data = {
                let view = buffer
                    .get_mapped_range(..bytes(*len).max(4))
                    .map_err(|e| Error::Readback(e.to_string()))?;
                bytemuck::cast_slice::<u8, T>(&view)[..*len].to_vec()
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
