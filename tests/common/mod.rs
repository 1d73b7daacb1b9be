//! Shared helpers of the integration tests: the adapter, random inputs, the tolerance check.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::{Rng, SeedableRng, rngs::StdRng};
use wgpu_mha::{Gpu, Mask, Tensor, Tuning};

/// The test adapter (lavapipe in CI). No adapter is a failure, never a skip.
pub fn gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(gpu) => gpu,
        Err(e) => panic!(
            "GPU tests need a wgpu adapter and found none: {e}\n\
             On Debian/Ubuntu without a GPU: apt-get update && apt-get install -y mesa-vulkan-drivers"
        ),
    })
    .clone()
}

/// The device of [`gpu`] with the staged kernels: matrix products and fused attention
/// through workgroup memory (`Tuning::direct` and `Tuning::fused_direct` off) and a
/// workgroup per softmax row, so that tests can hold them against the register-blocked
/// kernels and whole-row softmax a CPU adapter defaults to.
pub fn staged_gpu() -> Gpu {
    let gpu = gpu();
    let tuning = Tuning {
        direct: None,
        fused_direct: None,
        softmax_whole_rows: false,
        ..gpu.tuning()
    };
    gpu.with_tuning(tuning).expect("the staged kernels build")
}

/// Whether `got` matches the reference's `want` where either may be non-finite: NaN exactly
/// where the reference has NaN, infinities equal, finite values within
/// `|got − want| ≤ atol + rtol·|want|`.
pub fn matches_nonfinite(got: f32, want: f32, rtol: f32, atol: f32) -> bool {
    if want.is_nan() {
        got.is_nan()
    } else if want.is_infinite() {
        got == want
    } else {
        !got.is_nan() && (got - want).abs() <= atol + rtol * want.abs()
    }
}

/// A safetensors file by hand: header length, the JSON header (padded with spaces to a
/// multiple of 8, as writers do), then the data section.
pub fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.as_bytes().to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend_from_slice(data);
    out
}

/// Fills a GPU buffer with NaN, so an element a kernel fails to write shows.
pub fn poison(gpu: &Gpu, buffer: &wgpu::Buffer) {
    let nan = vec![f32::NAN; (buffer.size() / 4) as usize];
    gpu.queue()
        .write_buffer(buffer, 0, bytemuck::cast_slice(&nan));
}

/// A fresh generator; the seed is printed so a failure can be replayed with TEST_SEED.
pub fn rng() -> StdRng {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [-scale, scale), never all zeros.
pub fn random(rng: &mut impl Rng, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| rng.random_range(-scale..scale)).collect(),
    )
    .unwrap()
}

/// A bool mask with probability `p_true` of `true`.
pub fn random_bool_mask(rng: &mut impl Rng, shape: &[usize], p_true: f64) -> Mask {
    let n = shape.iter().product();
    Mask::bool(
        shape.to_vec(),
        (0..n).map(|_| rng.random_bool(p_true)).collect(),
    )
    .unwrap()
}

/// A float mask: mostly small values, some -inf.
pub fn random_float_mask(rng: &mut impl Rng, shape: &[usize]) -> Mask {
    let n = shape.iter().product();
    Mask::float(
        shape.to_vec(),
        (0..n)
            .map(|_| {
                if rng.random_bool(0.2) {
                    f32::NEG_INFINITY
                } else {
                    rng.random_range(-2.0..2.0)
                }
            })
            .collect(),
    )
    .unwrap()
}

/// Asserts `max |got − want| ≤ atol + rtol·|want|` element-wise, with matching shapes and
/// no NaN on either side; returns the max abs error.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, rtol: f32, atol: f32) -> f32 {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let mut max_err = 0f32;
    for (i, (&g, &w)) in got.data.iter().zip(&want.data).enumerate() {
        assert!(!w.is_nan(), "{what}: reference has NaN at {i}");
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}: element {i} (of shape {:?}): got {g}, want {w}, |diff| {err} > atol {atol} + rtol {rtol}·|want|",
            want.shape
        );
        max_err = max_err.max(err);
    }
    max_err
}

/// The tolerance the f32 GPU path is held to against the f64 reference: rtol 1e-4 and an
/// atol scaled to the magnitude of the result.
pub fn tolerance(want: &Tensor) -> (f32, f32) {
    let max = want
        .data
        .iter()
        .fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    (1e-4, 1e-5 * max.max(1.0))
}
