//! Buffers are reused across calls of the same shape: after the first call, a loop of
//! same-shape calls creates no buffer. Reused buffers still hold the last call's data, so
//! each call here gets fresh inputs and is checked against the reference: an element a
//! kernel failed to write would show the previous call's value.

mod common;

use common::*;
use wgpu_mha::*;

fn fresh_gpu() -> Gpu {
    // Its own device, so other tests' calls do not touch its pool.
    Gpu::new().expect("adapter (install mesa-vulkan-drivers)")
}

#[test]
fn same_shape_mha_forwards_create_no_buffers() {
    let gpu = fresh_gpu();
    let mut rng = rng();
    let config = MhaConfig::new(32, 4).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
    let mut created = Vec::new();
    for call in 0..4 {
        let x = random(&mut rng, &[2, 9, 32], 1.0);
        let mask = random_bool_mask(&mut rng, &[2, 9], 0.2);
        // Alternate the paths: each keeps its own buffers (the three-pass path adds scores).
        let opts = MhaOptions {
            key_padding_mask: Some(&mask),
            need_weights: call % 2 == 0,
            path: if call % 2 == 0 {
                AttentionPath::ThreePass
            } else {
                AttentionPath::Fused
            },
            ..Default::default()
        };
        let got = mha.forward(&x, &x, &x, &opts).unwrap();
        let want = reference::mha_forward(&config, &weights, &x, &x, &x, &opts).unwrap();
        let (rtol, atol) = tolerance(&want.attn_output);
        assert_close(
            &format!("call {call}"),
            &got.attn_output,
            &want.attn_output,
            rtol,
            atol,
        );
        if let (Some(g), Some(w)) = (&got.attn_weights, &want.attn_weights) {
            assert_close(&format!("call {call} weights"), g, w, 1e-4, 1e-5);
        }
        created.push(gpu.buffers_created());
    }
    // Calls 0 and 1 create the buffers of their paths; calls 2 and 3 reuse them.
    assert!(created[1] > created[0], "{created:?}");
    assert_eq!(created[2], created[1], "{created:?}");
    assert_eq!(created[3], created[1], "{created:?}");
    assert!(gpu.idle_buffer_bytes() > 0);
}

#[test]
fn same_shape_sdpa_calls_create_no_buffers_and_other_shapes_do() {
    let gpu = fresh_gpu();
    let mut rng = rng();
    let mut call = |shape: [usize; 4], dtype| {
        let q = random(&mut rng, &shape, 1.0);
        let k = random(&mut rng, &shape, 1.0);
        let opts = SdpaOptions {
            dtype,
            ..Default::default()
        };
        let got = scaled_dot_product_attention(&gpu, &q, &k, &k, &opts).unwrap();
        let r = |t: &Tensor| t.rounded_to(dtype);
        let want = reference::sdpa(&r(&q), &r(&k), &r(&k), &opts).unwrap();
        let (rtol, atol) = tolerance(&want);
        assert_close(&format!("{shape:?} {dtype:?}"), &got, &want, rtol, atol);
        gpu.buffers_created()
    };
    let first = call([1, 2, 17, 8], Dtype::F32);
    assert_eq!(call([1, 2, 17, 8], Dtype::F32), first);
    assert_eq!(call([1, 2, 17, 8], Dtype::F32), first);
    let other = call([2, 3, 5, 16], Dtype::F32);
    assert!(other > first);
    if gpu.supports_f16() {
        let half = call([1, 2, 17, 8], Dtype::F16);
        assert!(half > other, "f16 inputs are half the size: new buffers");
        assert_eq!(call([1, 2, 17, 8], Dtype::F16), half);
    }
    gpu.release_idle_buffers();
    assert_eq!(gpu.idle_buffer_bytes(), 0);
}

/// Calls on several threads each take their own buffers from the pool: the results stay
/// right and the pool ends up with no more buffers than the threads needed at once.
#[test]
fn concurrent_calls_share_the_pool_safely() {
    let gpu = fresh_gpu();
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let gpu = gpu.clone();
            s.spawn(move || {
                let mut rng = rng();
                for i in 0..20 {
                    let q = random(&mut rng, &[1, 2, 11, 8], 1.0 + (t * 20 + i) as f32 * 0.01);
                    let got = scaled_dot_product_attention(&gpu, &q, &q, &q, &Default::default())
                        .unwrap();
                    let want = reference::sdpa(&q, &q, &q, &Default::default()).unwrap();
                    let (rtol, atol) = tolerance(&want);
                    assert_close(&format!("thread {t} call {i}"), &got, &want, rtol, atol);
                }
            });
        }
    });
    // One call holds q, k, v, the output, the staging buffer and the uniform block (and
    // the three-pass path its scores): far fewer than the 80 calls made.
    let created = gpu.buffers_created();
    assert!(
        created <= (threads as u64) * 8 * 2,
        "{created} buffers for 80 calls"
    );
}

/// Reads `len` f32 values of `buffer` back through a staging copy.
fn read_buffer(gpu: &Gpu, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    let size = (len * 4) as u64;
    let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
    gpu.queue().submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let data = bytemuck::cast_slice(&staging.get_mapped_range(..).unwrap()).to_vec();
    staging.unmap();
    data
}

/// An output buffer handed to the caller stays the caller's: dropping the prepared call
/// does not let the next same-shape call write into it.
#[test]
fn a_lent_output_buffer_is_never_reused() {
    let gpu = fresh_gpu();
    let mut rng = rng();
    let q = random(&mut rng, &[1, 2, 13, 8], 1.0);
    let prepared = PreparedSdpa::prepare(&gpu, &q, &q, &q, &Default::default()).unwrap();
    prepared.run().unwrap();
    let kept = prepared.output_buffer().clone();
    let want = prepared.read().unwrap();
    drop(prepared);
    let before = gpu.buffers_created();
    for _ in 0..3 {
        let other = random(&mut rng, &[1, 2, 13, 8], 1.0);
        scaled_dot_product_attention(&gpu, &other, &other, &other, &Default::default()).unwrap();
    }
    assert_eq!(read_buffer(&gpu, &kept, want.numel()), want.data);
    // The first of those calls made a new output buffer in place of the lent one.
    assert!(gpu.buffers_created() > before);
}
