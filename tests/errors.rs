mod common;

// Every bad input comes back as its typed `Error` — never a panic — and the message names the
// tensor or parameter at fault. The GPU path and the CPU reference must refuse the same inputs
// with the same error.

use std::sync::OnceLock;

use common::*;
use wgpu_mha::io::{self, FileTensor, TensorMap};
use wgpu_mha::weights::{InProjWeight, names};
use wgpu_mha::*;

/// Unwraps the error of `$result`, asserts its variant with `matches!` and that its message
/// contains every needle; evaluates to the error.
macro_rules! assert_err {
    ($result:expr, $pat:pat, $($needle:expr),+ $(,)?) => {{
        let err = match $result {
            Ok(_) => panic!("expected {}, got Ok", stringify!($pat)),
            Err(e) => e,
        };
        assert!(
            matches!(err, $pat),
            "expected {}, got {err:?}",
            stringify!($pat)
        );
        let msg = err.to_string();
        $(
            assert!(
                msg.contains($needle),
                "the message {msg:?} does not mention {:?}",
                $needle
            );
        )+
        err
    }};
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs an MHA forward on the GPU (construction + forward) and through the reference; both
/// must fail with the same variant and message. Returns the GPU error (as `Err`).
fn mha_err(
    config: MhaConfig,
    weights: &MhaWeights,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    opts: &MhaOptions,
) -> Result<()> {
    let gpu = MultiHeadAttention::new(&gpu(), config, weights)
        .and_then(|mha| mha.forward(query, key, value, opts));
    let cpu = reference::mha_forward(&config, weights, query, key, value, opts);
    both_fail_alike(gpu, cpu)
}

/// Runs SDPA on the GPU and through the reference; both must fail alike. Returns the GPU
/// error (as `Err`).
fn sdpa_err(query: &Tensor, key: &Tensor, value: &Tensor, opts: &SdpaOptions) -> Result<()> {
    let gpu = scaled_dot_product_attention(&gpu(), query, key, value, opts);
    let cpu = reference::sdpa(query, key, value, opts);
    both_fail_alike(gpu, cpu)
}

/// Asserts that the GPU and the reference both failed, with the same variant and message;
/// returns the GPU error (as `Err`).
#[track_caller]
fn both_fail_alike<G: std::fmt::Debug, C: std::fmt::Debug>(
    gpu: Result<G>,
    cpu: Result<C>,
) -> Result<()> {
    let (g, c) = match (gpu, cpu) {
        (Err(g), Err(c)) => (g, c),
        (g, c) => panic!(
            "expected both to fail; GPU: {:?}, reference: {:?}",
            g.err(),
            c.err()
        ),
    };
    assert_eq!(
        std::mem::discriminant(&g),
        std::mem::discriminant(&c),
        "GPU {g:?} vs reference {c:?}"
    );
    assert_eq!(g.to_string(), c.to_string(), "GPU vs reference message");
    Err(g)
}

const E: usize = 8;
const H: usize = 2;
const L: usize = 3;
const S: usize = 5;
const B: usize = 2;

fn config() -> MhaConfig {
    MhaConfig::new(E, H)
}

fn weights(config: &MhaConfig) -> MhaWeights {
    MhaWeights::random(config, &mut rng())
}

fn t(shape: &[usize]) -> Tensor {
    Tensor::full(shape.to_vec(), 0.25)
}

/// Good seq-first inputs: query `[L, B, E]`, key and value `[S, B, E]`.
fn qkv() -> (Tensor, Tensor, Tensor) {
    (t(&[L, B, E]), t(&[S, B, E]), t(&[S, B, E]))
}

/// A safetensors state dict of `config` as `TensorMap`.
fn state_dict(config: &MhaConfig) -> TensorMap {
    weights(config).to_tensors(config)
}

// ---------------------------------------------------------------------------------------------
// MHA: inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn mha_good_inputs_work() {
    // The baseline the error tests perturb.
    let c = config();
    let w = weights(&c);
    let (q, k, v) = qkv();
    let mha = MultiHeadAttention::new(&gpu(), c, &w).unwrap();
    let got = mha.forward(&q, &k, &v, &MhaOptions::default()).unwrap();
    let want = reference::mha_forward(&c, &w, &q, &k, &v, &MhaOptions::default()).unwrap();
    let (rtol, atol) = tolerance(&want.attn_output);
    assert_close("baseline", &got.attn_output, &want.attn_output, rtol, atol);
}

#[test]
fn mha_query_of_wrong_rank() {
    let c = config();
    let w = weights(&c);
    let (_, k, v) = qkv();
    let d = MhaOptions::default();
    for shape in [vec![E], vec![1, L, B, E]] {
        let q = t(&shape);
        let err = assert_err!(
            mha_err(c, &w, &q, &k, &v, &d),
            Error::Shape {
                tensor: "query",
                ..
            },
            "query",
        );
        assert!(err.to_string().contains(&format!("{shape:?}")), "{err}");
    }
}

#[test]
fn mha_query_width_differs_from_embed_dim() {
    let c = config();
    let w = weights(&c);
    let (_, k, v) = qkv();
    let q = t(&[L, B, E + 1]);
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &MhaOptions::default()),
        Error::Shape {
            tensor: "query",
            ..
        },
        "query",
        "E=8",
    );
}

#[test]
fn mha_key_width_differs_from_kdim() {
    let d = MhaOptions::default();
    // Packed (kdim = embed_dim).
    let c = config();
    let w = weights(&c);
    let (q, _, v) = qkv();
    let k = t(&[S, B, E + 2]);
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &d),
        Error::Shape { tensor: "key", .. },
        "key",
    );
    // Separate projections: kdim = 3, vdim = 5.
    let c = config().with_kv_dims(3, 5);
    let w = weights(&c);
    let (k, v) = (t(&[S, B, 4]), t(&[S, B, 5]));
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &d),
        Error::Shape { tensor: "key", .. },
        "key",
        "3",
    );
}

#[test]
fn mha_value_width_differs_from_vdim() {
    let c = config().with_kv_dims(3, 5);
    let w = weights(&c);
    let q = t(&[L, B, E]);
    let (k, v) = (t(&[S, B, 3]), t(&[S, B, 3]));
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &MhaOptions::default()),
        Error::Shape {
            tensor: "value",
            ..
        },
        "value",
        "5",
    );
}

#[test]
fn mha_key_or_value_batch_differs_from_query() {
    let d = MhaOptions::default();
    let c = config();
    let w = weights(&c);
    let (q, k, v) = qkv();
    let bad = t(&[S, B + 1, E]);
    assert_err!(
        mha_err(c, &w, &q, &bad, &v, &d),
        Error::Shape { tensor: "key", .. },
        "key",
        "B=2",
    );
    assert_err!(
        mha_err(c, &w, &q, &k, &bad, &d),
        Error::Shape {
            tensor: "value",
            ..
        },
        "value",
        "B=2",
    );
    // batch_first: [B, S, E].
    let c = config().with_batch_first(true);
    let q = t(&[B, L, E]);
    let k = t(&[B + 1, S, E]);
    let v = t(&[B + 1, S, E]);
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &d),
        Error::Shape { tensor: "key", .. },
        "key",
    );
}

#[test]
fn mha_key_rank_differs_from_query() {
    let c = config();
    let w = weights(&c);
    let q = t(&[L, E]); // unbatched
    let (_, k, v) = qkv(); // batched
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &MhaOptions::default()),
        Error::Shape { tensor: "key", .. },
        "key",
    );
}

#[test]
fn mha_value_length_differs_from_key() {
    let c = config();
    let w = weights(&c);
    let (q, k, _) = qkv();
    let v = t(&[S + 1, B, E]);
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &MhaOptions::default()),
        Error::Shape {
            tensor: "value",
            ..
        },
        "value",
        "S=5",
    );
}

#[test]
fn mha_tensor_data_length_disagrees_with_shape() {
    let c = config();
    let w = weights(&c);
    let d = MhaOptions::default();
    let (q, k, v) = qkv();
    let short = |shape: &[usize]| Tensor {
        shape: shape.to_vec(),
        data: vec![0.0; shape.iter().product::<usize>() - 1],
    };
    for (name, (q, k, v)) in [
        ("query", (short(&q.shape), k.clone(), v.clone())),
        ("key", (q.clone(), short(&k.shape), v.clone())),
        ("value", (q.clone(), k.clone(), short(&v.shape))),
    ] {
        let err = mha_err(c, &w, &q, &k, &v, &d).unwrap_err();
        let Error::DataLength {
            tensor,
            expected,
            got,
            ..
        } = &err
        else {
            panic!("{name}: expected DataLength, got {err:?}");
        };
        assert_eq!(*tensor, name);
        assert_eq!(*got + 1, *expected);
        assert!(err.to_string().contains(name), "{err}");
    }
    // Too long is as wrong as too short.
    let long = Tensor {
        shape: q.shape.clone(),
        data: vec![0.0; q.numel() + 3],
    };
    assert_err!(
        mha_err(c, &w, &long, &k, &v, &d),
        Error::DataLength {
            tensor: "query",
            ..
        },
        "query",
    );
}

#[test]
fn tensor_and_mask_constructors_check_lengths() {
    assert_err!(
        Tensor::new([2, 3], vec![0.0; 5]),
        Error::DataLength {
            expected: 6,
            got: 5,
            ..
        },
        "tensor",
    );
    assert_err!(
        Mask::bool([2, 3], vec![false; 7]),
        Error::DataLength { .. },
        "mask",
    );
    assert_err!(
        Mask::float([4], vec![0.0; 3]),
        Error::DataLength { .. },
        "mask",
    );
    // A shape whose element count overflows usize is an error, not an overflow panic.
    assert_err!(
        Tensor::new([usize::MAX, 3], vec![]),
        Error::Shape { .. },
        "tensor",
    );
}

#[test]
fn shape_product_overflow_is_a_shape_error() {
    let c = config();
    let w = weights(&c);
    let (_, k, v) = qkv();
    let q = Tensor {
        shape: vec![usize::MAX, 2, E],
        data: vec![],
    };
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &MhaOptions::default()),
        Error::Shape {
            tensor: "query",
            ..
        },
        "query",
    );
}

#[test]
fn mha_zero_batch_or_length() {
    let c = config();
    let w = weights(&c);
    let d = MhaOptions::default();
    let cases = [
        ([L, 0, E], [S, 0, E], "batch size"),
        ([0, B, E], [S, B, E], "query length"),
        ([L, B, E], [0, B, E], "key length"),
    ];
    for (qs, kvs, what) in cases {
        let (q, kv) = (t(&qs), t(&kvs));
        let err = mha_err(c, &w, &q, &kv, &kv, &d).unwrap_err();
        assert!(
            matches!(err, Error::ZeroSize { what: x } if x == what),
            "{what}: got {err:?}"
        );
        assert!(err.to_string().contains(what), "{err}");
    }
    // Unbatched, zero length.
    let err = mha_err(c, &w, &t(&[0, E]), &t(&[S, E]), &t(&[S, E]), &d).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ZeroSize {
                what: "query length"
            }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// MHA: configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn mha_embed_dim_not_divisible_by_num_heads() {
    let c = MhaConfig::new(10, 3);
    let w = weights(&c);
    let (q, kv) = (t(&[L, B, 10]), t(&[S, B, 10]));
    assert_err!(
        mha_err(c, &w, &q, &kv, &kv, &MhaOptions::default()),
        Error::Config(_),
        "embed_dim (10)",
        "num_heads (3)",
    );
    assert_err!(
        MhaWeights::from_tensors(&c, &w.to_tensors(&c), false),
        Error::Config(_),
        "num_heads",
    );
}

#[test]
fn mha_zero_sizes_in_config() {
    let (q, k, v) = qkv();
    let d = MhaOptions::default();
    for (c, what) in [
        (MhaConfig::new(E, 0), "num_heads"),
        (MhaConfig::new(0, 1), "embed_dim"),
        (config().with_kv_dims(0, E), "kdim"),
        (config().with_kv_dims(E, 0), "vdim"),
    ] {
        let w = weights(&c);
        let err = mha_err(c, &w, &q, &k, &v, &d).unwrap_err();
        assert!(
            matches!(err, Error::ZeroSize { what: x } if x == what),
            "{what}: got {err:?}"
        );
        assert!(err.to_string().contains(what), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// MHA: masks
// ---------------------------------------------------------------------------------------------

#[test]
fn mha_attn_mask_of_wrong_shape() {
    let c = config();
    let w = weights(&c);
    let (q, k, v) = qkv();
    for shape in [
        vec![L, S + 1],
        vec![S, L],
        vec![B, L, S], // [B, L, S] is not accepted: it must be [B·h, L, S]
        vec![B * H, L, S, 1],
        vec![S],
    ] {
        let m = Mask::bool(shape.clone(), vec![false; shape.iter().product()]).unwrap();
        let opts = MhaOptions {
            attn_mask: Some(&m),
            ..Default::default()
        };
        let err = mha_err(c, &w, &q, &k, &v, &opts).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Shape {
                    tensor: "attn_mask",
                    ..
                }
            ),
            "{shape:?}: {err:?}"
        );
        assert!(err.to_string().contains("attn_mask"), "{err}");
    }
}

#[test]
fn mha_key_padding_mask_of_wrong_shape() {
    let c = config();
    let w = weights(&c);
    let (q, k, v) = qkv();
    for shape in [vec![B, S + 1], vec![S, B], vec![S], vec![1, B, S]] {
        let m = Mask::float(shape.clone(), vec![0.0; shape.iter().product()]).unwrap();
        let opts = MhaOptions {
            key_padding_mask: Some(&m),
            ..Default::default()
        };
        let err = mha_err(c, &w, &q, &k, &v, &opts).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Shape {
                    tensor: "key_padding_mask",
                    ..
                }
            ),
            "{shape:?}: {err:?}"
        );
        assert!(err.to_string().contains("key_padding_mask"), "{err}");
    }
    // Unbatched input wants [S], not [1, S].
    let m = Mask::bool([1, S], vec![false; S]).unwrap();
    let opts = MhaOptions {
        key_padding_mask: Some(&m),
        ..Default::default()
    };
    assert_err!(
        mha_err(c, &w, &t(&[L, E]), &t(&[S, E]), &t(&[S, E]), &opts),
        Error::Shape {
            tensor: "key_padding_mask",
            ..
        },
        "key_padding_mask",
    );
}

#[test]
fn mha_mask_data_length_disagrees_with_shape() {
    let c = config();
    let w = weights(&c);
    let (q, k, v) = qkv();
    let attn = Mask {
        shape: vec![L, S],
        data: MaskData::Bool(vec![false; L * S - 1]),
    };
    let opts = MhaOptions {
        attn_mask: Some(&attn),
        ..Default::default()
    };
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &opts),
        Error::DataLength {
            tensor: "attn_mask",
            ..
        },
        "attn_mask",
    );
    let kpm = Mask {
        shape: vec![B, S],
        data: MaskData::Float(vec![0.0; B * S + 1]),
    };
    let opts = MhaOptions {
        key_padding_mask: Some(&kpm),
        ..Default::default()
    };
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &opts),
        Error::DataLength {
            tensor: "key_padding_mask",
            ..
        },
        "key_padding_mask",
    );
}

// ---------------------------------------------------------------------------------------------
// MHA: weights
// ---------------------------------------------------------------------------------------------

#[test]
fn state_dict_round_trip_is_accepted() {
    // The baseline the weight tests perturb.
    for c in [
        config(),
        config().with_bias(false),
        config().with_kv_dims(3, 5),
    ] {
        let w = weights(&c);
        let back = MhaWeights::from_tensors(&c, &w.to_tensors(&c), false).unwrap();
        assert_eq!(back, w);
    }
}

#[test]
fn missing_in_proj_weight() {
    let c = config();
    let mut sd = state_dict(&c);
    sd.remove(names::IN_PROJ_WEIGHT);
    assert_err!(
        MhaWeights::from_tensors(&c, &sd, false),
        Error::MissingWeight { .. },
        "in_proj_weight",
    );
    // allow_extra does not make a missing weight optional.
    assert_err!(
        MhaWeights::from_tensors(&c, &sd, true),
        Error::MissingWeight { .. },
        "in_proj_weight",
    );
}

#[test]
fn missing_separate_and_out_proj_weights() {
    let c = config().with_kv_dims(3, 5);
    for name in [
        names::Q_PROJ_WEIGHT,
        names::K_PROJ_WEIGHT,
        names::V_PROJ_WEIGHT,
        names::OUT_PROJ_WEIGHT,
    ] {
        let mut sd = state_dict(&c);
        sd.remove(name);
        let err = MhaWeights::from_tensors(&c, &sd, false).unwrap_err();
        assert!(
            matches!(&err, Error::MissingWeight { name: n, .. } if n == name),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn missing_bias_when_configured_with_bias() {
    let c = config();
    for name in [names::IN_PROJ_BIAS, names::OUT_PROJ_BIAS] {
        let mut sd = state_dict(&c);
        sd.remove(name);
        let err = MhaWeights::from_tensors(&c, &sd, false).unwrap_err();
        assert!(
            matches!(&err, Error::MissingWeight { name: n, .. } if n == name),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains("bias"), "{msg}");
    }
    // Built by hand: the struct path (new, reference) refuses it too.
    let mut w = weights(&c);
    w.in_proj_bias = None;
    let (q, k, v) = qkv();
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &MhaOptions::default()),
        Error::MissingWeight { .. },
        "in_proj_bias",
    );
}

#[test]
fn bias_given_without_bias_config_is_unexpected() {
    let c = config().with_bias(false);
    let mut sd = state_dict(&c);
    sd.extend(
        state_dict(&config())
            .into_iter()
            .filter(|(n, _)| n.contains("bias")),
    );
    assert_err!(
        MhaWeights::from_tensors(&c, &sd, false),
        Error::UnexpectedWeight { .. },
        "bias",
    );
    let mut w = weights(&c);
    w.out_proj_bias = Some(vec![0.0; E]);
    let (q, k, v) = qkv();
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &MhaOptions::default()),
        Error::UnexpectedWeight { .. },
        "out_proj.bias",
    );
}

#[test]
fn extra_weight_name_without_allow_extra() {
    let c = config();
    let mut sd = state_dict(&c);
    sd.insert(
        "encoder.layers.0.norm.weight".into(),
        FileTensor::F32(t(&[E])),
    );
    assert_err!(
        MhaWeights::from_tensors(&c, &sd, false),
        Error::UnexpectedWeight { .. },
        "encoder.layers.0.norm.weight",
    );
    // Accepted with allow_extra.
    MhaWeights::from_tensors(&c, &sd, true).unwrap();

    // A known name this configuration does not use (separate weights next to packed ones).
    let mut sd = state_dict(&c);
    sd.insert(names::Q_PROJ_WEIGHT.into(), FileTensor::F32(t(&[E, E])));
    assert_err!(
        MhaWeights::from_tensors(&c, &sd, false),
        Error::UnexpectedWeight { .. },
        "q_proj_weight",
    );
}

#[test]
fn weight_of_wrong_shape() {
    let c = config();
    for (name, shape) in [
        (names::IN_PROJ_WEIGHT, vec![3 * E, E + 1]),
        (names::IN_PROJ_WEIGHT, vec![E, 3 * E]), // transposed
        (names::OUT_PROJ_WEIGHT, vec![E * E]),
        (names::IN_PROJ_BIAS, vec![E]),
        (names::OUT_PROJ_BIAS, vec![1, E]),
    ] {
        let mut sd = state_dict(&c);
        sd.insert(name.into(), FileTensor::F32(t(&shape)));
        let err = MhaWeights::from_tensors(&c, &sd, false).unwrap_err();
        assert!(
            matches!(&err, Error::Shape { tensor, .. } if *tensor == name),
            "{name} {shape:?}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    // Separate k_proj_weight for kdim = 3 given as [E, 4].
    let c = config().with_kv_dims(3, 5);
    let mut sd = state_dict(&c);
    sd.insert(names::K_PROJ_WEIGHT.into(), FileTensor::F32(t(&[E, 4])));
    assert_err!(
        MhaWeights::from_tensors(&c, &sd, false),
        Error::Shape {
            tensor: "k_proj_weight",
            ..
        },
        "k_proj_weight",
    );
}

#[test]
fn weight_struct_of_wrong_length() {
    let c = config();
    let (q, k, v) = qkv();
    let d = MhaOptions::default();
    let mut w = weights(&c);
    w.out_proj_weight.pop();
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &d),
        Error::Shape {
            tensor: "out_proj.weight",
            ..
        },
        "out_proj.weight",
    );
    let mut w = weights(&c);
    w.in_proj_bias.as_mut().unwrap().push(0.0);
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &d),
        Error::Shape {
            tensor: "in_proj_bias",
            ..
        },
        "in_proj_bias",
    );
    let mut w = weights(&c);
    let InProjWeight::Packed(p) = &mut w.in_proj else {
        unreachable!()
    };
    p.truncate(E * E);
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &d),
        Error::Shape {
            tensor: "in_proj_weight",
            ..
        },
        "in_proj_weight",
    );
    // Weights of another configuration (E = 16) for this one.
    let w = weights(&MhaConfig::new(16, H));
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &d),
        Error::Shape { .. },
        "in_proj_weight",
    );
}

#[test]
fn packed_weights_for_kdim_different_from_embed_dim() {
    let c = config().with_kv_dims(3, E);
    // Hand-built struct: Config naming in_proj_weight and kdim.
    let w = weights(&config());
    assert!(matches!(w.in_proj, InProjWeight::Packed(_)));
    let (q, v) = (t(&[L, B, E]), t(&[S, B, E]));
    let k = t(&[S, B, 3]);
    assert_err!(
        mha_err(c, &w, &q, &k, &v, &MhaOptions::default()),
        Error::Config(_),
        "in_proj_weight",
        "kdim (3)",
    );
    assert_err!(w.validate(&c), Error::Config(_), "in_proj_weight");
    // From a state dict: the separate weights this configuration needs are missing, and the
    // message says why.
    let sd = state_dict(&config());
    assert_err!(
        MhaWeights::from_tensors(&c, &sd, false),
        Error::MissingWeight { .. },
        "q_proj_weight",
        "kdim",
    );
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

#[test]
fn bool_tensor_where_f32_is_expected() {
    let c = config();
    let mut sd = state_dict(&c);
    sd.insert(
        names::IN_PROJ_WEIGHT.into(),
        FileTensor::Bool {
            shape: vec![3 * E, E],
            data: vec![true; 3 * E * E],
        },
    );
    let bytes = io::serialize_safetensors(&sd).unwrap();
    let parsed = io::parse_safetensors(&bytes).unwrap();
    let ft = parsed[names::IN_PROJ_WEIGHT].clone();
    assert!(matches!(ft, FileTensor::Bool { .. }));
    assert_err!(
        ft.into_f32(names::IN_PROJ_WEIGHT),
        Error::Dtype {
            expected: "F32",
            ..
        },
        "in_proj_weight",
        "BOOL",
    );
    assert_err!(
        MhaWeights::from_tensors(&c, &parsed, false),
        Error::Dtype { .. },
        "in_proj_weight",
        "BOOL",
    );
}

#[test]
fn unsupported_dtype_in_a_file() {
    let bytes = raw_safetensors(
        r#"{"half_weight":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    assert_err!(
        io::parse_safetensors(&bytes),
        Error::Dtype { .. },
        "half_weight",
        "F16",
    );
}

#[test]
fn truncated_or_garbage_safetensors() {
    let good = io::serialize_safetensors(&state_dict(&config())).unwrap();
    io::parse_safetensors(&good).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("shorter than the length prefix", vec![1, 2, 3]),
        ("garbage", b"this is not a safetensors file at all".to_vec()),
        ("truncated data", good[..good.len() - 7].to_vec()),
        ("truncated header", good[..8 + header_len / 2].to_vec()),
        ("huge header length", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("header not JSON", raw_safetensors("{not json", &[])),
        (
            "offsets past the end",
            raw_safetensors(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &[0; 8],
            ),
        ),
        (
            "offsets disagree with the shape",
            raw_safetensors(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
    ];
    for (what, bytes) in cases {
        let err = io::parse_safetensors(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{what}: parsed"));
        assert!(matches!(err, Error::Safetensors { .. }), "{what}: {err:?}");
        assert!(err.to_string().contains("safetensors"), "{what}: {err}");
    }
}

#[test]
fn weights_file_errors_name_the_path() {
    let dir = std::env::temp_dir().join(format!("wgpu-mha-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = config();

    let missing = dir.join("does-not-exist.safetensors");
    assert_err!(
        MhaWeights::load(&c, &missing),
        Error::Io { .. },
        "does-not-exist.safetensors",
    );

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\0\0\0\0\0\0\0{{{{{{{{").unwrap();
    assert_err!(
        MhaWeights::load(&c, &garbage),
        Error::Safetensors { .. },
        "garbage.safetensors",
    );
    assert_err!(
        MultiHeadAttention::load(&gpu(), c, &garbage),
        Error::Safetensors { .. },
        "garbage.safetensors",
    );

    // A valid file of the wrong configuration: a shape error naming the weight.
    let other = dir.join("other.safetensors");
    io::write_safetensors(&other, &state_dict(&MhaConfig::new(16, H))).unwrap();
    assert_err!(
        MhaWeights::load(&c, &other),
        Error::Shape { .. },
        "in_proj_weight",
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------------
// SDPA
// ---------------------------------------------------------------------------------------------

const D: usize = 4;

#[test]
fn sdpa_good_inputs_work() {
    let (q, k, v) = (t(&[B, H, L, D]), t(&[B, H, S, D]), t(&[B, H, S, 6]));
    let out = scaled_dot_product_attention(&gpu(), &q, &k, &v, &SdpaOptions::default()).unwrap();
    assert_eq!(out.shape, [B, H, L, 6]);
    reference::sdpa(&q, &k, &v, &SdpaOptions::default()).unwrap();
}

#[test]
fn sdpa_query_of_rank_2_or_5() {
    let d = SdpaOptions::default();
    for (qs, ks) in [
        (vec![L, D], vec![S, D]),
        (vec![1, B, H, L, D], vec![1, B, H, S, D]),
        (vec![D], vec![D]),
    ] {
        let err = sdpa_err(&t(&qs), &t(&ks), &t(&ks), &d).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Shape {
                    tensor: "query",
                    ..
                }
            ),
            "{qs:?}: {err:?}"
        );
        assert!(err.to_string().contains("query"), "{err}");
    }
}

#[test]
fn sdpa_key_or_value_rank_differs_from_query() {
    let d = SdpaOptions::default();
    let q = t(&[B, H, L, D]);
    assert_err!(
        sdpa_err(&q, &t(&[H, S, D]), &t(&[B, H, S, D]), &d),
        Error::Shape { tensor: "key", .. },
        "key",
    );
    assert_err!(
        sdpa_err(&q, &t(&[B, H, S, D]), &t(&[H, S, D]), &d),
        Error::Shape {
            tensor: "value",
            ..
        },
        "value",
    );
}

#[test]
fn sdpa_key_head_dim_differs_from_query() {
    let (q, k, v) = (t(&[B, H, L, D]), t(&[B, H, S, D + 1]), t(&[B, H, S, D]));
    assert_err!(
        sdpa_err(&q, &k, &v, &SdpaOptions::default()),
        Error::Shape { tensor: "key", .. },
        "key",
        "d=4",
    );
}

#[test]
fn sdpa_value_length_differs_from_key() {
    let (q, k, v) = (t(&[B, H, L, D]), t(&[B, H, S, D]), t(&[B, H, S + 1, D]));
    assert_err!(
        sdpa_err(&q, &k, &v, &SdpaOptions::default()),
        Error::Shape {
            tensor: "value",
            ..
        },
        "value",
        "S=5",
    );
    // Value heads differ from key heads.
    let v = t(&[B, H + 1, S, D]);
    assert_err!(
        sdpa_err(&q, &k, &v, &SdpaOptions::default()),
        Error::Shape {
            tensor: "value",
            ..
        },
        "value",
    );
}

#[test]
fn sdpa_batch_mismatch() {
    let d = SdpaOptions::default();
    let q = t(&[B, H, L, D]);
    assert_err!(
        sdpa_err(&q, &t(&[B + 1, H, S, D]), &t(&[B, H, S, D]), &d),
        Error::Shape { tensor: "key", .. },
        "key",
        "B=2",
    );
    assert_err!(
        sdpa_err(&q, &t(&[B, H, S, D]), &t(&[1, H, S, D]), &d),
        Error::Shape {
            tensor: "value",
            ..
        },
        "value",
        "B=2",
    );
}

#[test]
fn sdpa_head_counts_differ_without_gqa() {
    let (q, k, v) = (t(&[B, 4, L, D]), t(&[B, 2, S, D]), t(&[B, 2, S, D]));
    assert_err!(
        sdpa_err(&q, &k, &v, &SdpaOptions::default()),
        Error::Config(_),
        "enable_gqa",
        "4 heads",
    );
    // With enable_gqa it is fine.
    let gqa = SdpaOptions {
        enable_gqa: true,
        ..Default::default()
    };
    scaled_dot_product_attention(&gpu(), &q, &k, &v, &gqa).unwrap();
}

#[test]
fn sdpa_gqa_heads_not_a_multiple() {
    let gqa = SdpaOptions {
        enable_gqa: true,
        ..Default::default()
    };
    // 6 query heads over 4 kv heads; also fewer query heads than kv heads.
    for (hq, hkv) in [(6, 4), (2, 4)] {
        let (q, k, v) = (t(&[B, hq, L, D]), t(&[B, hkv, S, D]), t(&[B, hkv, S, D]));
        let err = sdpa_err(&q, &k, &v, &gqa).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{hq}/{hkv}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("({hq})")) && msg.contains(&format!("({hkv})")),
            "{msg}"
        );
    }
}

#[test]
fn sdpa_mask_not_broadcastable() {
    let (q, k, v) = (t(&[B, H, L, D]), t(&[B, H, S, D]), t(&[B, H, S, D]));
    for shape in [
        vec![L, S + 1],
        vec![S, L],
        vec![3, 1, L, S],
        vec![1, 1, 1, L, S],
        vec![H + 1, 1, S],
    ] {
        let m = Mask::bool(shape.clone(), vec![true; shape.iter().product()]).unwrap();
        let opts = SdpaOptions {
            attn_mask: Some(&m),
            ..Default::default()
        };
        let err = sdpa_err(&q, &k, &v, &opts).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Shape {
                    tensor: "attn_mask",
                    ..
                }
            ),
            "{shape:?}: {err:?}"
        );
        assert!(err.to_string().contains("attn_mask"), "{err}");
    }
    // Data length disagreeing with the mask's own shape.
    let m = Mask {
        shape: vec![L, S],
        data: MaskData::Float(vec![0.0; L * S - 2]),
    };
    let opts = SdpaOptions {
        attn_mask: Some(&m),
        ..Default::default()
    };
    assert_err!(
        sdpa_err(&q, &k, &v, &opts),
        Error::DataLength {
            tensor: "attn_mask",
            ..
        },
        "attn_mask",
    );
}

#[test]
fn sdpa_non_finite_scale() {
    let (q, k, v) = (t(&[B, H, L, D]), t(&[B, H, S, D]), t(&[B, H, S, D]));
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let opts = SdpaOptions {
            scale: Some(scale),
            ..Default::default()
        };
        let err = sdpa_err(&q, &k, &v, &opts).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{scale}: {err:?}");
        assert!(err.to_string().contains("scale"), "{err}");
    }
}

/// Query, key and value shapes, and the size named as zero.
type ZeroCase = (
    &'static [usize],
    &'static [usize],
    &'static [usize],
    &'static str,
);

#[test]
fn sdpa_zero_sized_dims() {
    let d = SdpaOptions::default();
    let cases: [ZeroCase; 7] = [
        (&[0, H, L, D], &[0, H, S, D], &[0, H, S, D], "batch size"),
        (&[B, 0, L, D], &[B, 0, S, D], &[B, 0, S, D], "query heads"),
        (
            &[B, H, L, D],
            &[B, 0, S, D],
            &[B, 0, S, D],
            "key/value heads",
        ),
        (&[B, H, 0, D], &[B, H, S, D], &[B, H, S, D], "query length"),
        (&[B, H, L, D], &[B, H, 0, D], &[B, H, 0, D], "key length"),
        (&[B, H, L, 0], &[B, H, S, 0], &[B, H, S, D], "head size"),
        (
            &[B, H, L, D],
            &[B, H, S, D],
            &[B, H, S, 0],
            "value head size",
        ),
    ];
    for (qs, ks, vs, what) in cases {
        let err = sdpa_err(&t(qs), &t(ks), &t(vs), &d).unwrap_err();
        assert!(
            matches!(err, Error::ZeroSize { what: x } if x == what),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[test]
fn sdpa_tensor_data_length_disagrees_with_shape() {
    let d = SdpaOptions::default();
    let (q, k, v) = (t(&[B, H, L, D]), t(&[B, H, S, D]), t(&[B, H, S, D]));
    let mut bad = k.clone();
    bad.data.pop();
    assert_err!(
        sdpa_err(&q, &bad, &v, &d),
        Error::DataLength { tensor: "key", .. },
        "key",
    );
    let mut bad = v.clone();
    bad.data.push(1.0);
    assert_err!(
        sdpa_err(&q, &k, &bad, &d),
        Error::DataLength {
            tensor: "value",
            ..
        },
        "value",
    );
    let bad = Tensor {
        shape: q.shape.clone(),
        data: vec![],
    };
    assert_err!(
        sdpa_err(&bad, &k, &v, &d),
        Error::DataLength {
            tensor: "query",
            ..
        },
        "query",
    );
}

// ---------------------------------------------------------------------------------------------
// Device limits
// ---------------------------------------------------------------------------------------------

/// A fresh device with a 4 KiB memory budget (the shared `gpu()` keeps its own).
fn small_budget_gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::new().expect("a wgpu adapter");
        gpu.set_memory_budget(4096);
        assert_eq!(gpu.memory_budget(), 4096);
        gpu
    })
    .clone()
}

/// The three-pass path: the only one whose score blocks the memory budget limits.
fn three_pass() -> SdpaOptions<'static> {
    SdpaOptions {
        path: AttentionPath::ThreePass,
        ..Default::default()
    }
}

#[test]
fn memory_budget_too_small_for_one_query_row() {
    let gpu = small_budget_gpu();
    // One row of scores: 1 head × 2048 keys × 4 bytes = 8 KiB > 4 KiB.
    let (q, k, v) = (t(&[1, 1, 2, D]), t(&[1, 1, 2048, D]), t(&[1, 1, 2048, D]));
    let err = assert_err!(
        scaled_dot_product_attention(&gpu, &q, &k, &v, &three_pass()),
        Error::TooLarge {
            needed: 8192,
            limit: 4096,
            limit_name: "memory budget",
            ..
        },
        "memory budget",
        "scores",
        "2048 keys",
    );
    eprintln!("{err}");

    // The same through MHA.
    let c = MhaConfig::new(D, 1);
    let mha = MultiHeadAttention::new(&gpu, c, &weights(&c)).unwrap();
    assert_err!(
        mha.forward(
            &t(&[2, 1, D]),
            &t(&[2048, 1, D]),
            &t(&[2048, 1, D]),
            &MhaOptions {
                path: AttentionPath::ThreePass,
                ..Default::default()
            }
        ),
        Error::TooLarge {
            limit_name: "memory budget",
            ..
        },
        "memory budget",
        "2048 keys",
    );

    // The fused path (what Auto picks) stores no scores: the same problem runs.
    let out = scaled_dot_product_attention(&gpu, &q, &k, &v, &SdpaOptions::default()).unwrap();
    assert_eq!(out.shape, [1, 1, 2, D]);

    // The refusal leaves the device usable: a problem that fits still runs.
    let (k, v) = (t(&[1, 1, 512, D]), t(&[1, 1, 512, D]));
    let out = scaled_dot_product_attention(&gpu, &q, &k, &v, &three_pass()).unwrap();
    assert_eq!(out.shape, [1, 1, 2, D]);
}

#[test]
fn memory_budget_from_gpu_options_is_honoured() {
    // set_memory_budget clamps to 4 KiB; GpuOptions goes through the same setter.
    let gpu = Gpu::with_options(&GpuOptions {
        memory_budget: Some(1),
        ..GpuOptions::from_env()
    })
    .unwrap();
    assert_eq!(gpu.memory_budget(), 4096);
    let (q, k, v) = (t(&[1, 1, 1, D]), t(&[1, 1, 1025, D]), t(&[1, 1, 1025, D]));
    assert_err!(
        scaled_dot_product_attention(&gpu, &q, &k, &v, &three_pass()),
        Error::TooLarge { .. },
        "memory budget",
    );
}

/// Bytes one storage binding may hold on the small-limits device below.
const SMALL_BINDING: u64 = 1 << 20;

/// A device of the test adapter whose storage bindings are capped at 1 MiB, so that inputs
/// over the binding limit are cheap to build.
fn small_binding_gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| capped_binding_gpu(SMALL_BINDING))
        .clone()
}

/// A device of the test adapter whose storage bindings are capped at `bytes`.
fn capped_binding_gpu(bytes: u64) -> Gpu {
    {
        let options = GpuOptions::from_env();
        let backends = options.backends.unwrap_or(wgpu::Backends::PRIMARY);
        let (adapter, _) =
            wgpu_mha::gpu::choose_adapter(wgpu_mha::gpu::enumerate_adapters(backends), &options)
                .expect("a wgpu adapter");
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: bytes,
            ..adapter.limits()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgpu-mha errors test (capped bindings)"),
            required_limits: limits,
            ..Default::default()
        }))
        .expect("a device with smaller limits");
        let gpu = Gpu::from_device(device, queue).unwrap();
        assert_eq!(gpu.limits().max_storage_buffer_binding_size, bytes);
        gpu
    }
}

/// Asserts a TooLarge over the binding limit naming `what`.
fn assert_binding_too_large<T>(result: Result<T>, what: &str) {
    let err = match result {
        Ok(_) => panic!("{what}: expected TooLarge, got Ok"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            Error::TooLarge {
                limit: SMALL_BINDING,
                limit_name: "max_storage_buffer_binding_size",
                ..
            }
        ),
        "{what}: {err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(what), "{what}: {msg}");
    assert!(msg.contains("max_storage_buffer_binding_size"), "{msg}");
}

#[test]
fn sdpa_inputs_over_the_binding_limit() {
    let gpu = small_binding_gpu();
    let d = SdpaOptions::default();
    let over = (SMALL_BINDING / 4) as usize + 1; // elements
    let dh = 64;
    let s = over.div_ceil(dh); // key [1, 1, s, 64] is just over 1 MiB
    let (q, k, v) = (t(&[1, 1, 1, dh]), t(&[1, 1, s, dh]), t(&[1, 1, s, 1]));
    assert_binding_too_large(scaled_dot_product_attention(&gpu, &q, &k, &v, &d), "key");
    let (k, v) = (t(&[1, 1, s, 1]), t(&[1, 1, s, dh]));
    let q1 = t(&[1, 1, 1, 1]);
    assert_binding_too_large(scaled_dot_product_attention(&gpu, &q1, &k, &v, &d), "value");
    let (q, k, v) = (t(&[1, 1, s, dh]), t(&[1, 1, 1, dh]), t(&[1, 1, 1, 1]));
    assert_binding_too_large(scaled_dot_product_attention(&gpu, &q, &k, &v, &d), "query");
    // Small inputs, large output: [1, 1, 1024, 1] queries × 512-wide values = 2 MiB.
    let (q, k, v) = (t(&[1, 1, 1024, 1]), t(&[1, 1, 1, 1]), t(&[1, 1, 1, 512]));
    assert_binding_too_large(
        scaled_dot_product_attention(&gpu, &q, &k, &v, &d),
        "attn_output",
    );
    // And the device still works.
    let (q, k, v) = (t(&[1, 1, 2, 4]), t(&[1, 1, 3, 4]), t(&[1, 1, 3, 4]));
    scaled_dot_product_attention(&gpu, &q, &k, &v, &d).unwrap();
}

#[test]
fn sdpa_mask_over_the_binding_limit() {
    // A full [1, 1, L, S] mask of 2 MiB next to tiny inputs.
    let gpu = small_binding_gpu();
    let (l, s) = (1024, 512);
    let (q, k, v) = (t(&[1, 1, l, 1]), t(&[1, 1, s, 1]), t(&[1, 1, s, 1]));
    let m = Mask::bool([1, 1, l, s], vec![true; l * s]).unwrap();
    let opts = SdpaOptions {
        attn_mask: Some(&m),
        ..Default::default()
    };
    assert_binding_too_large(
        scaled_dot_product_attention(&gpu, &q, &k, &v, &opts),
        "attn_mask",
    );
}

#[test]
fn mha_inputs_over_the_binding_limit() {
    let gpu = small_binding_gpu();
    let d = MhaOptions::default();
    // E = 4, kdim = 1024: key [257, 1, 1024] is just over 1 MiB, everything else small.
    let c = MhaConfig::new(4, 1).with_kv_dims(1024, 4);
    let mha = MultiHeadAttention::new(&gpu, c, &weights(&c)).unwrap();
    let s = (SMALL_BINDING / 4096) as usize + 1;
    let (q, k, v) = (t(&[2, 1, 4]), t(&[s, 1, 1024]), t(&[s, 1, 4]));
    assert_binding_too_large(mha.forward(&q, &k, &v, &d), "key");
    let c = MhaConfig::new(4, 1).with_kv_dims(4, 1024);
    let mha = MultiHeadAttention::new(&gpu, c, &weights(&c)).unwrap();
    let (k, v) = (t(&[s, 1, 4]), t(&[s, 1, 1024]));
    assert_binding_too_large(mha.forward(&q, &k, &v, &d), "value");

    // Weights over the limit: in_proj_weight [3·512, 512] is 3 MiB.
    let c = MhaConfig::new(512, 1);
    assert_binding_too_large(
        MultiHeadAttention::new(&gpu, c, &weights(&c)),
        "in_proj_weight",
    );
}

#[test]
fn mha_attn_mask_over_the_binding_limit() {
    // A per-head attn_mask [B·h, L, S] of 2 MiB next to tiny inputs.
    let gpu = small_binding_gpu();
    let c = MhaConfig::new(1, 1);
    let mha = MultiHeadAttention::new(&gpu, c, &weights(&c)).unwrap();
    let (l, s) = (1024, 512);
    let m = Mask::float([1, l, s], vec![0.0; l * s]).unwrap();
    let opts = MhaOptions {
        attn_mask: Some(&m),
        ..Default::default()
    };
    assert_binding_too_large(
        mha.forward(&t(&[l, 1, 1]), &t(&[s, 1, 1]), &t(&[s, 1, 1]), &opts),
        "attn_mask",
    );
}

#[test]
fn too_many_heads_for_one_dispatch() {
    // 65536 query heads of one row and one key: 256 KiB of scores, within every byte limit,
    // but more heads than one dispatch dimension (65535 workgroups) takes. Refusing is fine
    // (the reference has no such limit); the refusal must not contradict itself.
    let h = 65536;
    let (q, k, v) = (t(&[1, h, 1, 1]), t(&[1, h, 1, 1]), t(&[1, h, 1, 1]));
    reference::sdpa(&q, &k, &v, &SdpaOptions::default()).unwrap();
    let err = scaled_dot_product_attention(&gpu(), &q, &k, &v, &SdpaOptions::default())
        .expect_err("65536 heads exceed one dispatch dimension");
    let Error::TooLarge { needed, limit, .. } = &err else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert!(err.to_string().contains("65536 heads"), "{err}");
    assert!(
        needed > limit,
        "a TooLarge that needs less than its limit names the wrong limit: {err}"
    );
}

#[test]
fn key_over_the_real_binding_limit() {
    // A key just over max_storage_buffer_binding_size: on the test adapter itself (128 MiB on
    // lavapipe), or on a device of it capped at 128 MiB where its own limit is larger, so the
    // key stays cheap to build.
    let mut gpu = gpu();
    if gpu.limits().max_storage_buffer_binding_size > 128 << 20 {
        gpu = capped_binding_gpu(128 << 20);
    }
    let limit = gpu.limits().max_storage_buffer_binding_size;
    eprintln!("max_storage_buffer_binding_size: {limit} bytes");
    let dh = 256;
    let s = ((limit / 4) as usize).div_ceil(dh) + 1;
    let (q, k, v) = (t(&[1, 1, 1, dh]), t(&[1, 1, s, dh]), t(&[1, 1, s, 1]));
    let err = assert_err!(
        scaled_dot_product_attention(&gpu, &q, &k, &v, &SdpaOptions::default()),
        Error::TooLarge {
            limit_name: "max_storage_buffer_binding_size",
            ..
        },
        "key",
        "max_storage_buffer_binding_size",
    );
    if let Error::TooLarge {
        needed, limit: l, ..
    } = err
    {
        assert_eq!(l, limit);
        assert_eq!(needed, (s * dh * 4) as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// Adapters and devices
// ---------------------------------------------------------------------------------------------

#[test]
fn no_adapter_of_that_name() {
    let err = assert_err!(
        Gpu::with_options(&GpuOptions {
            adapter_name: Some("no-such-adapter-xyz".into()),
            ..Default::default()
        }),
        Error::NoAdapter { .. },
        "install mesa-vulkan-drivers",
        "no-such-adapter-xyz",
    );
    eprintln!("{err}");
}

#[test]
fn destroyed_device_is_an_error_not_a_panic() {
    let options = GpuOptions::from_env();
    let backends = options.backends.unwrap_or(wgpu::Backends::PRIMARY);
    let (adapter, _) =
        wgpu_mha::gpu::choose_adapter(wgpu_mha::gpu::enumerate_adapters(backends), &options)
            .expect("a wgpu adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let gpu = Gpu::from_device(device, queue).unwrap();
    let (q, k, v) = (t(&[1, 1, 2, 4]), t(&[1, 1, 3, 4]), t(&[1, 1, 3, 4]));
    scaled_dot_product_attention(&gpu, &q, &k, &v, &SdpaOptions::default()).unwrap();
    gpu.device().destroy();
    let err = scaled_dot_product_attention(&gpu, &q, &k, &v, &SdpaOptions::default())
        .expect_err("a destroyed device cannot compute");
    assert!(
        matches!(err, Error::DeviceLost(_) | Error::Wgpu { .. }),
        "{err:?}"
    );
    eprintln!("{err}");
}

#[test]
fn no_adapter_on_no_backends() {
    assert_err!(
        Gpu::with_options(&GpuOptions {
            backends: Some(wgpu::Backends::empty()),
            ..Default::default()
        }),
        Error::NoAdapter { .. },
        "no GPU adapter found",
        "install mesa-vulkan-drivers",
    );
}

#[test]
fn reference_rows_out_of_range() {
    let c = config();
    let w = weights(&c);
    let (q, k, v) = qkv();
    let d = MhaOptions::default();
    reference::mha_forward_rows(&c, &w, &q, &k, &v, &d, &[0, L - 1]).unwrap();
    assert_err!(
        reference::mha_forward_rows(&c, &w, &q, &k, &v, &d, &[0, L]),
        Error::Config(_),
        "query row 3",
        "L=3",
    );
    // Bad inputs are refused there as everywhere else.
    assert_err!(
        reference::mha_forward_rows(&c, &w, &t(&[L, B, E + 1]), &k, &v, &d, &[0]),
        Error::Shape {
            tensor: "query",
            ..
        },
        "query",
    );
}

#[test]
fn metadata_of_a_bad_file() {
    let dir = std::env::temp_dir().join(format!("wgpu-mha-errors-meta-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("meta-garbage.safetensors");
    std::fs::write(&garbage, b"garbage!garbage!").unwrap();
    assert_err!(
        io::read_safetensors_metadata(&garbage),
        Error::Safetensors { .. },
        "meta-garbage.safetensors",
    );
    assert_err!(
        io::read_safetensors_metadata(&dir.join("meta-missing.safetensors")),
        Error::Io { .. },
        "meta-missing.safetensors",
    );
    std::fs::remove_dir_all(&dir).ok();
}
