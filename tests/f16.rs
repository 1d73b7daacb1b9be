//! f16 storage (`Dtype::F16`): inputs, weights and intermediates stored as f16, arithmetic
//! in f32. Checked on both paths against the CPU reference run on the same f16-rounded
//! inputs and weights, with poisoned outputs:
//! - SDPA stores only its inputs as f16 and computes in f32, so it is held to the f32
//!   tolerance;
//! - MHA also stores its intermediates (projected q/k/v, the attention output) as f16, so it
//!   is held to the f16 tolerance of `wgpu_mha::check::tolerance`.

mod common;

use common::*;
use rand::rngs::StdRng;
use wgpu_mha::*;

const PATHS: [AttentionPath; 2] = [AttentionPath::ThreePass, AttentionPath::Fused];

/// Asserts the f16-storage tolerance: `rtol` and `atol · max(1, max|want|)` of
/// `check::tolerance(Dtype::F16)`.
fn assert_close_f16(what: &str, got: &Tensor, want: &Tensor) -> f32 {
    let (rtol, atol_scale) = check::tolerance(Dtype::F16);
    let max = want
        .data
        .iter()
        .fold(1f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    assert_close(what, got, want, rtol, atol_scale * max)
}

fn f16_gpu() -> Gpu {
    let gpu = gpu();
    assert!(
        gpu.supports_f16(),
        "adapter {:?} does not grant SHADER_F16; lavapipe (mesa-vulkan-drivers) does",
        gpu.adapter_info().name
    );
    gpu
}

#[test]
fn sdpa_f16_matches_reference_on_rounded_inputs() {
    let gpu = f16_gpu();
    let mut rng = rng();
    // (name, batch, hq, hkv, L, S, d, dv): odd element counts exercise the padded uploads.
    let shapes = [
        ("plain", 2, 4, 4, 16, 16, 32, 32),
        ("cross", 1, 3, 3, 7, 41, 16, 16),
        ("GQA 8/2", 2, 8, 2, 9, 12, 8, 8),
        ("odd sizes dv != d", 1, 3, 3, 11, 13, 13, 7),
        ("decode L1", 1, 4, 4, 1, 200, 64, 64),
        ("head size 128", 1, 2, 2, 20, 20, 128, 128),
        // 32 query rows per 8-lane subgroup where the device shares loads, three output
        // vec4s per lane.
        ("subgroup rows, dv 96", 1, 2, 1, 40, 50, 32, 96),
    ];
    for (name, b, hq, hkv, l, s, d, dv) in shapes {
        let q = random(&mut rng, &[b, hq, l, d], 1.0);
        let k = random(&mut rng, &[b, hkv, s, d], 1.0);
        let v = random(&mut rng, &[b, hkv, s, dv], 1.0);
        let mask = random_float_mask(&mut rng, &[b, 1, l, s]);
        let variants = [
            ("default", None, None),
            ("causal bottom-right", Some(Causal::BottomRight), None),
            ("float mask", None, Some(&mask)),
        ];
        for (what, causal, attn_mask) in variants {
            for path in PATHS {
                let label = format!("{name}, {what} [{path:?}]");
                let opts = SdpaOptions {
                    causal,
                    attn_mask,
                    enable_gqa: hq != hkv,
                    path,
                    dtype: Dtype::F16,
                    ..Default::default()
                };
                let prepared = PreparedSdpa::prepare(&gpu, &q, &k, &v, &opts).unwrap();
                assert_eq!(prepared.dtype(), Dtype::F16);
                assert_eq!(prepared.path(), path, "{label}");
                poison(&gpu, prepared.output_buffer());
                prepared.run().unwrap();
                let got = prepared.read().unwrap();
                let want = reference::sdpa(
                    &q.rounded_to(Dtype::F16),
                    &k.rounded_to(Dtype::F16),
                    &v.rounded_to(Dtype::F16),
                    &opts,
                )
                .unwrap();
                let (rtol, atol) = tolerance(&want);
                let err = assert_close(&label, &got, &want, rtol, atol);
                eprintln!("{label}: max abs error {err:.2e}");
            }
        }
    }
}

/// One f16 MHA forward on `path` with poisoned outputs, against the reference on the
/// rounded inputs and weights.
fn check_mha_f16(
    label: &str,
    (mha, weights): (&MultiHeadAttention, &MhaWeights),
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    opts: &MhaOptions,
) {
    let gpu = mha.gpu();
    let prepared = mha.prepare(q, k, v, opts).unwrap();
    assert_eq!(prepared.path(), opts.path, "{label}");
    poison(gpu, prepared.output_buffer());
    if let Some(w) = prepared.weights_buffer() {
        poison(gpu, w);
    }
    prepared.run().unwrap();
    let got = prepared.read().unwrap();
    let r = |t: &Tensor| t.rounded_to(Dtype::F16);
    let want = reference::mha_forward(
        mha.config(),
        &weights.rounded_to(Dtype::F16),
        &r(q),
        &r(k),
        &r(v),
        opts,
    )
    .unwrap();
    let err = assert_close_f16(label, &got.attn_output, &want.attn_output);
    match (&got.attn_weights, &want.attn_weights) {
        (Some(g), Some(w)) => {
            assert_close_f16(&format!("{label} weights"), g, w);
        }
        (None, None) => {}
        _ => panic!("{label}: weights present on one side only"),
    }
    eprintln!("{label}: max abs error {err:.2e}");
}

fn module(gpu: &Gpu, rng: &mut StdRng, config: MhaConfig) -> (MultiHeadAttention, MhaWeights) {
    let weights = MhaWeights::random(&config, rng);
    let mha = MultiHeadAttention::new(gpu, config, &weights).unwrap();
    (mha, weights)
}

#[test]
fn mha_f16_matches_reference_on_rounded_inputs() {
    let gpu = f16_gpu();
    let mut rng = rng();

    // Self-attention (one packed projection), odd sizes, every masking option.
    let config = MhaConfig::new(60, 5).with_dtype(Dtype::F16);
    let (mha, weights) = module(&gpu, &mut rng, config);
    let (b, l) = (2, 37);
    let x = random(&mut rng, &[l, b, 60], 1.0);
    let kpm = random_bool_mask(&mut rng, &[b, l], 0.2);
    let attn_mask = random_float_mask(&mut rng, &[l, l]);
    for path in PATHS {
        let opts = MhaOptions {
            path,
            ..Default::default()
        };
        check_mha_f16(
            &format!("self L37 E60 h5 [{path:?}]"),
            (&mha, &weights),
            (&x, &x, &x),
            &opts,
        );
        let masked = MhaOptions {
            key_padding_mask: Some(&kpm),
            attn_mask: Some(&attn_mask),
            causal: Some(Causal::TopLeft),
            ..opts
        };
        check_mha_f16(
            &format!("self, masks + causal [{path:?}]"),
            (&mha, &weights),
            (&x, &x, &x),
            &masked,
        );
    }
    // Attention weights (three-pass only), averaged and per head.
    for average in [true, false] {
        let opts = MhaOptions {
            need_weights: true,
            average_attn_weights: average,
            key_padding_mask: Some(&kpm),
            path: AttentionPath::ThreePass,
            ..Default::default()
        };
        check_mha_f16(
            &format!("weights, averaged {average}"),
            (&mha, &weights),
            (&x, &x, &x),
            &opts,
        );
    }

    // Cross-attention with kdim/vdim, batch-first, no bias.
    let config = MhaConfig::new(24, 3)
        .with_kv_dims(16, 20)
        .with_batch_first(true)
        .with_bias(false)
        .with_dtype(Dtype::F16);
    let (mha, weights) = module(&gpu, &mut rng, config);
    let q = random(&mut rng, &[2, 7, 24], 1.0);
    let k = random(&mut rng, &[2, 11, 16], 1.0);
    let v = random(&mut rng, &[2, 11, 20], 1.0);
    for path in PATHS {
        let opts = MhaOptions {
            path,
            causal: Some(Causal::BottomRight),
            ..Default::default()
        };
        check_mha_f16(
            &format!("cross kdim 16 vdim 20 [{path:?}]"),
            (&mha, &weights),
            (&q, &k, &v),
            &opts,
        );
    }
}

/// f16 storage holds half the bytes of f32 for the same call.
#[test]
fn f16_halves_the_memory_of_inputs() {
    let gpu = f16_gpu();
    let mut rng = rng();
    let q = random(&mut rng, &[1, 4, 64, 32], 1.0);
    let opts = |dtype| SdpaOptions {
        path: AttentionPath::Fused,
        dtype,
        ..Default::default()
    };
    let bytes = |dtype| {
        PreparedSdpa::prepare(&gpu, &q, &q, &q, &opts(dtype))
            .unwrap()
            .allocated_bytes()
    };
    let (full, half) = (bytes(Dtype::F32), bytes(Dtype::F16));
    // Three inputs halve; the f32 output stays.
    let elements = 4 * 64 * 32;
    assert_eq!(full - half, 3 * 2 * elements as u64, "{full} vs {half}");
}

/// A device opened without SHADER_F16 refuses f16 storage with a typed error, and still runs
/// f32.
#[test]
fn f16_without_the_feature_is_a_typed_error() {
    let adapter = gpu::enumerate_adapters(wgpu::Backends::PRIMARY)
        .into_iter()
        .next()
        .expect("an adapter (install mesa-vulkan-drivers)");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let gpu = Gpu::from_device(device, queue).unwrap();
    assert!(!gpu.supports_f16());
    let mut rng = rng();
    let q = random(&mut rng, &[1, 2, 8, 8], 1.0);
    let f16 = SdpaOptions {
        dtype: Dtype::F16,
        ..Default::default()
    };
    for path in PATHS {
        let err = scaled_dot_product_attention(&gpu, &q, &q, &q, &SdpaOptions { path, ..f16 });
        assert!(
            matches!(
                err,
                Err(Error::Unsupported {
                    feature: "SHADER_F16",
                    ..
                })
            ),
            "{err:?}"
        );
    }
    let config = MhaConfig::new(8, 2).with_dtype(Dtype::F16);
    let weights = MhaWeights::random(&config, &mut rng);
    let err = MultiHeadAttention::new(&gpu, config, &weights);
    assert!(matches!(err, Err(Error::Unsupported { .. })), "{err:?}");
    let out = scaled_dot_product_attention(&gpu, &q, &q, &q, &Default::default()).unwrap();
    let want = reference::sdpa(&q, &q, &q, &Default::default()).unwrap();
    let (rtol, atol) = tolerance(&want);
    assert_close("f32 on the same device", &out, &want, rtol, atol);
}

/// A finite input or weight beyond f16's range is refused with a typed error naming it and
/// the element, never stored as infinity; values that round to ±65504, and inputs that are
/// already non-finite, are stored.
#[test]
fn values_beyond_f16_are_refused_by_name() {
    let gpu = f16_gpu();
    let mut rng = rng();
    let f16 = SdpaOptions {
        dtype: Dtype::F16,
        ..Default::default()
    };
    let q = random(&mut rng, &[1, 2, 4, 8], 1.0);
    let mut big = q.clone();
    big.data[13] = -1.0e5;
    let err = scaled_dot_product_attention(&gpu, &q, &big, &q, &f16).unwrap_err();
    match &err {
        Error::OutOfRange {
            tensor,
            index,
            value,
            dtype,
            ..
        } => {
            assert_eq!(
                (tensor.as_str(), *index, *value, *dtype),
                ("key", 13, -1.0e5, "f16")
            );
        }
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    assert!(err.to_string().contains("65504"), "{err}");
    // The same call in f32 storage is fine.
    scaled_dot_product_attention(&gpu, &q, &big, &q, &Default::default()).unwrap();
    // 65519 rounds to 65504; a NaN stays NaN: both stored.
    let mut edge = q.clone();
    edge.data[0] = 65519.0;
    edge.data[1] = f32::NAN;
    scaled_dot_product_attention(&gpu, &q, &q, &edge, &f16).unwrap();

    let config = MhaConfig::new(8, 2).with_dtype(Dtype::F16);
    let mut weights = MhaWeights::random(&config, &mut rng);
    weights.out_proj_weight[5] = 7.0e4;
    let err = MultiHeadAttention::new(&gpu, config, &weights).unwrap_err();
    assert!(
        matches!(&err, Error::OutOfRange { tensor, index: 5, .. } if tensor == "out_proj.weight"),
        "{err:?}"
    );
}
