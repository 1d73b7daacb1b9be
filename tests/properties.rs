mod common;

// Property tests: random problems — shapes with 1s and primes, head sizes 1..=256, every
// layout, kdim/vdim, bias, masks (bool and float, fully blocked rows, -inf and NaN entries),
// causal in both alignments, grouped-query attention, custom scales, attention weights
// averaged or per head, each attention path (Auto, three-pass, fused) — run on the GPU and through the CPU reference. Valid problems must
// agree within the project's tolerance (NaN exactly where the reference has NaN, and nowhere
// else); invalid ones must fail with the same error variant and message on both. Masks with
// NaN entries have properties of their own, so that a NaN bug does not hide the others.
//
// `PROPTEST_CASES=n` sets the number of cases of every property (a long local run:
// `PROPTEST_CASES=5000 cargo test --release --test properties`). Failures are shrunk and
// printed, not persisted; add a shrunk failure to tests/nonfinite.rs or as a named test.

use std::fmt::Debug;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wgpu_mha::*;

/// Cases per property: `PROPTEST_CASES`, else `default`.
fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

/// GPU vs reference: same shape; NaN exactly where the reference has NaN; infinities equal;
/// finite values within `|got − want| ≤ atol + rtol·|want|`, the tolerance taken over the
/// finite part of the reference (so a NaN row does not loosen the others).
fn compare(
    what: &str,
    got: &Tensor,
    want: &Tensor,
    tol: Option<(f32, f32)>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(&got.shape, &want.shape, "{}: shape", what);
    let (rtol, atol) = tol.unwrap_or_else(|| tolerance(want));
    for (i, (&g, &w)) in got.data.iter().zip(&want.data).enumerate() {
        prop_assert!(
            matches_nonfinite(g, w, rtol, atol),
            "{}: element {} of shape {:?} (row {} of {}-wide rows): got {}, want {} (rtol {}, atol {})",
            what,
            i,
            want.shape,
            i / want.shape.last().copied().unwrap_or(1).max(1),
            want.shape.last().copied().unwrap_or(1),
            g,
            w,
            rtol,
            atol
        );
    }
    Ok(())
}

/// Both failed with the same variant and message, or both succeeded (returned for comparing).
fn same_outcome<A: Debug, B: Debug>(
    gpu: Result<A>,
    cpu: Result<B>,
) -> Result<Option<(A, B)>, TestCaseError> {
    match (gpu, cpu) {
        (Ok(g), Ok(c)) => Ok(Some((g, c))),
        (Err(g), Err(c)) => {
            prop_assert_eq!(
                std::mem::discriminant(&g),
                std::mem::discriminant(&c),
                "GPU error {:?} vs reference error {:?}",
                g,
                c
            );
            prop_assert_eq!(g.to_string(), c.to_string());
            Ok(None)
        }
        (g, c) => Err(TestCaseError::fail(format!(
            "GPU and reference disagree on validity: GPU {g:?}, reference {c:?}"
        ))),
    }
}

/// Refusals of the GPU alone, which the reference (that has no algorithms to choose) cannot
/// share: the fused path asked for attention weights (`Config`), or a fused kernel for a
/// head size the device's workgroup limits cannot hold (`TooLarge`).
fn gpu_only_refusal<T>(
    path: AttentionPath,
    need_weights: bool,
    gpu: &Result<T>,
    cpu_ok: bool,
) -> bool {
    match gpu {
        Err(Error::Config(msg)) if path == AttentionPath::Fused && need_weights && cpu_ok => {
            assert!(msg.contains("fused"), "{msg}");
            true
        }
        Err(Error::TooLarge { what, .. }) if path == AttentionPath::Fused && cpu_ok => {
            assert!(what.contains("fused"), "{what}");
            true
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Masks
// ---------------------------------------------------------------------------------------------

/// What a mask holds.
#[derive(Clone, Copy, Debug)]
enum MaskFill {
    /// Bool with probability `p` of `true`.
    Bool { p: f64 },
    /// Float: values in [-2, 2), a fraction `p` of -inf, and a NaN entry when `nan`.
    Float { p: f64, nan: bool },
}

#[derive(Clone, Copy, Debug)]
struct MaskSpec {
    fill: MaskFill,
    /// Block one whole row (`L` mask: one query row; `S` mask: every key of one batch).
    full_row: bool,
}

/// Masks of every kind; with `nan`, always a float mask holding a NaN entry.
fn mask_spec(nan: bool) -> BoxedStrategy<MaskSpec> {
    let float = |nan| {
        prop::sample::select(vec![0.0, 0.2, 0.6]).prop_map(move |p| MaskFill::Float { p, nan })
    };
    let fill = if nan {
        float(true).boxed()
    } else {
        prop_oneof![
            prop::sample::select(vec![0.0, 0.1, 0.5, 0.9, 1.0]).prop_map(|p| MaskFill::Bool { p }),
            float(false),
        ]
        .boxed()
    };
    (fill, prop::bool::weighted(0.25))
        .prop_map(|(fill, full_row)| MaskSpec { fill, full_row })
        .boxed()
}

/// A mask of `shape` as `spec` says; with `full_row`, the row (last dim) `row` of the first
/// block is entirely blocked under `blocked_is_true`'s polarity.
fn make_mask(
    rng: &mut StdRng,
    spec: MaskSpec,
    shape: &[usize],
    blocked_is_true: bool,
    row: usize,
) -> Mask {
    let n: usize = shape.iter().product();
    let width = shape.last().copied().unwrap_or(1).max(1);
    let rows = n / width;
    let blocked_row = spec.full_row && rows > 0;
    let row = row % rows.max(1);
    match spec.fill {
        MaskFill::Bool { p } => {
            let mut data: Vec<bool> = (0..n).map(|_| rng.random_bool(p)).collect();
            if blocked_row {
                data[row * width..(row + 1) * width].fill(blocked_is_true);
            }
            Mask::bool(shape.to_vec(), data).unwrap()
        }
        MaskFill::Float { p, nan } => {
            let mut data: Vec<f32> = (0..n)
                .map(|_| {
                    if rng.random_bool(p) {
                        f32::NEG_INFINITY
                    } else {
                        rng.random_range(-2.0..2.0)
                    }
                })
                .collect();
            if nan && n > 0 {
                let i = rng.random_range(0..n);
                data[i] = f32::NAN;
            }
            if blocked_row {
                data[row * width..(row + 1) * width].fill(f32::NEG_INFINITY);
            }
            Mask::float(shape.to_vec(), data).unwrap()
        }
    }
}

fn causal() -> impl Strategy<Value = Option<Causal>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Causal::TopLeft)),
        1 => Just(Some(Causal::BottomRight)),
    ]
}

/// Which attention algorithm: Auto (fused without weights), three-pass or fused.
fn path() -> impl Strategy<Value = AttentionPath> {
    prop_oneof![
        Just(AttentionPath::Auto),
        Just(AttentionPath::ThreePass),
        Just(AttentionPath::Fused),
    ]
}

/// Sequence lengths: mostly 1..=9 (1s and primes), sometimes longer primes.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1usize..=9,
        1 => prop::sample::select(vec![11usize, 13, 17, 31]),
    ]
}

/// Head sizes 1..=256: mostly small, with primes and the powers of two kernels like.
fn head_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1usize..=16,
        2 => prop::sample::select(vec![17usize, 24, 31, 32, 37, 64]),
        1 => prop::sample::select(vec![96usize, 127, 128, 200, 256]),
    ]
}

// ---------------------------------------------------------------------------------------------
// MHA
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MhaCase {
    batch: usize,
    len_q: usize,
    len_kv: usize,
    heads: usize,
    head_dim: usize,
    /// `None`: kdim = vdim = embed_dim (packed projection).
    kv_dims: Option<(usize, usize)>,
    bias: bool,
    batch_first: bool,
    batched: bool,
    /// Query, key and value are one tensor (needs kv_dims None and len_kv == len_q).
    self_attention: bool,
    attn_mask: Option<(MaskSpec, bool)>,
    key_padding_mask: Option<MaskSpec>,
    causal: Option<Causal>,
    need_weights: bool,
    average: bool,
    path: AttentionPath,
    input_scale: f32,
    seed: u64,
}

/// `Some` always when `always`, else with probability `p`.
fn some_if<S>(always: bool, p: f64, s: S) -> BoxedStrategy<Option<S::Value>>
where
    S: Strategy + 'static,
{
    if always {
        s.prop_map(Some).boxed()
    } else {
        prop::option::weighted(p, s).boxed()
    }
}

/// MHA cases; with `nan`, the attn_mask is a float mask holding a NaN.
fn mha_case(nan: bool) -> impl Strategy<Value = MhaCase> {
    (
        (1usize..=3, length(), length(), 1usize..=4, head_size()),
        prop::option::weighted(0.3, (1usize..=40, 1usize..=40)),
        (any::<bool>(), any::<bool>(), prop::bool::weighted(0.8)),
        prop::bool::weighted(0.4),
        (
            some_if(nan, 0.4, (mask_spec(nan), any::<bool>())),
            prop::option::weighted(0.4, mask_spec(false)),
        ),
        causal(),
        (prop::bool::weighted(0.4), any::<bool>(), path()),
        (prop::sample::select(vec![0.1f32, 1.0, 2.0]), any::<u64>()),
    )
        .prop_map(
            |(
                (batch, len_q, len_kv, heads, head_dim),
                kv_dims,
                (bias, batch_first, batched),
                self_attention,
                (attn_mask, key_padding_mask),
                causal,
                (need_weights, average, path),
                (input_scale, seed),
            )| {
                // Keep the weights (3·E²) and the reference's work small.
                let heads = heads.min((256 / head_dim).max(1));
                let self_attention = self_attention && kv_dims.is_none();
                MhaCase {
                    batch: if batched { batch } else { 1 },
                    len_q,
                    len_kv: if self_attention { len_q } else { len_kv },
                    heads,
                    head_dim,
                    kv_dims,
                    bias,
                    batch_first,
                    batched,
                    self_attention,
                    attn_mask,
                    key_padding_mask,
                    causal,
                    need_weights,
                    average,
                    path,
                    input_scale,
                    seed,
                }
            },
        )
}

/// The inputs of an MHA case: config, weights, query, key, value, attn_mask, key_padding_mask.
struct MhaInputs {
    config: MhaConfig,
    weights: MhaWeights,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Option<Mask>,
    key_padding_mask: Option<Mask>,
}

fn mha_inputs(c: &MhaCase) -> MhaInputs {
    let mut rng = StdRng::seed_from_u64(c.seed);
    let e = c.heads * c.head_dim;
    let (kdim, vdim) = c.kv_dims.unwrap_or((e, e));
    let config = MhaConfig::new(e, c.heads)
        .with_kv_dims(kdim, vdim)
        .with_bias(c.bias)
        .with_batch_first(c.batch_first);
    let weights = MhaWeights::random(&config, &mut rng);
    let shape = |len: usize, width: usize| -> Vec<usize> {
        match (c.batched, c.batch_first) {
            (false, _) => vec![len, width],
            (true, true) => vec![c.batch, len, width],
            (true, false) => vec![len, c.batch, width],
        }
    };
    let q = random(&mut rng, &shape(c.len_q, e), c.input_scale);
    let (k, v) = if c.self_attention {
        (q.clone(), q.clone())
    } else {
        (
            random(&mut rng, &shape(c.len_kv, kdim), c.input_scale),
            random(&mut rng, &shape(c.len_kv, vdim), c.input_scale),
        )
    };
    let row = rng.random_range(0..64);
    let attn_mask = c.attn_mask.map(|(spec, per_head)| {
        let shape = if per_head {
            vec![c.batch * c.heads, c.len_q, c.len_kv]
        } else {
            vec![c.len_q, c.len_kv]
        };
        make_mask(&mut rng, spec, &shape, true, row)
    });
    let key_padding_mask = c.key_padding_mask.map(|spec| {
        let shape = if c.batched {
            vec![c.batch, c.len_kv]
        } else {
            vec![c.len_kv]
        };
        make_mask(&mut rng, spec, &shape, true, row)
    });
    MhaInputs {
        config,
        weights,
        q,
        k,
        v,
        attn_mask,
        key_padding_mask,
    }
}

fn run_mha(c: &MhaCase, inputs: &MhaInputs) -> Result<(), TestCaseError> {
    let opts = MhaOptions {
        attn_mask: inputs.attn_mask.as_ref(),
        key_padding_mask: inputs.key_padding_mask.as_ref(),
        causal: c.causal,
        need_weights: c.need_weights,
        average_attn_weights: c.average,
        path: c.path,
    };
    let (q, k, v) = (&inputs.q, &inputs.k, &inputs.v);
    let gpu = MultiHeadAttention::new(&gpu(), inputs.config, &inputs.weights)
        .and_then(|mha| mha.forward(q, k, v, &opts));
    let cpu = reference::mha_forward(&inputs.config, &inputs.weights, q, k, v, &opts);
    if gpu_only_refusal(c.path, c.need_weights, &gpu, cpu.is_ok()) {
        return Ok(());
    }
    let Some((got, want)) = same_outcome(gpu, cpu)? else {
        return Ok(());
    };
    compare("attn_output", &got.attn_output, &want.attn_output, None)?;
    match (&got.attn_weights, &want.attn_weights) {
        (Some(g), Some(w)) => compare("attn_weights", g, w, Some((1e-4, 1e-5)))?,
        (None, None) => prop_assert!(!c.need_weights),
        (g, w) => prop_assert!(
            false,
            "weights on one side only: GPU {:?}, reference {:?}",
            g.is_some(),
            w.is_some()
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(300))]

    /// Valid MHA forwards agree with the reference.
    #[test]
    fn mha_matches_reference(case in mha_case(false)) {
        let inputs = mha_inputs(&case);
        run_mha(&case, &inputs)?;
    }
}

proptest! {
    #![proptest_config(config(80))]

    /// With a NaN in a float attn_mask: NaN exactly in the rows the reference has NaN (every
    /// element of a row whose scores hold a NaN), and the other rows unaffected.
    #[test]
    fn mha_with_nan_mask_matches_reference(case in mha_case(true)) {
        let inputs = mha_inputs(&case);
        run_mha(&case, &inputs)?;
    }
}

// ---------------------------------------------------------------------------------------------
// SDPA
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct SdpaCase {
    /// `None`: 3-D `[H, L, d]` inputs.
    batch: Option<usize>,
    heads_kv: usize,
    group: usize,
    enable_gqa: bool,
    len_q: usize,
    len_kv: usize,
    head_dim: usize,
    head_dim_v: usize,
    /// Mask rank (0..=4, trailing dims of [B, H, L, S]) and which of them are full (else 1).
    mask: Option<(MaskSpec, usize, [bool; 4])>,
    causal: Option<Causal>,
    /// The scale as a multiple of 1/√d.
    scale: Option<f32>,
    path: AttentionPath,
    /// Storage of q, k, v: f16 rounds them on upload and computes in f32, so the reference
    /// on the rounded inputs holds it to the f32 tolerance.
    dtype: Dtype,
    input_scale: f32,
    seed: u64,
}

impl SdpaCase {
    fn heads_q(&self) -> usize {
        self.heads_kv * self.group
    }
    fn work(&self) -> usize {
        self.batch.unwrap_or(1)
            * self.heads_q()
            * self.len_q
            * self.len_kv
            * (self.head_dim + self.head_dim_v)
    }
}

/// SDPA cases; with `nan`, the mask is a float mask holding a NaN.
fn sdpa_case(nan: bool) -> impl Strategy<Value = SdpaCase> {
    (
        (
            prop::option::weighted(0.8, 1usize..=3),
            1usize..=3,
            1usize..=4,
            any::<bool>(),
        ),
        (length(), length(), head_size(), head_size()),
        some_if(
            nan,
            0.5,
            (
                mask_spec(nan),
                0usize..=4,
                prop::array::uniform4(any::<bool>()),
            ),
        ),
        causal(),
        (
            prop::option::weighted(0.3, -2.0f32..2.0),
            path(),
            prop::sample::select(vec![Dtype::F32, Dtype::F16]),
        ),
        (prop::sample::select(vec![0.1f32, 1.0, 2.0]), any::<u64>()),
    )
        .prop_map(
            |(
                (batch, heads_kv, group, gqa),
                (len_q, len_kv, head_dim, head_dim_v),
                mask,
                causal,
                (scale, path, dtype),
                (input_scale, seed),
            )| {
                let mut c = SdpaCase {
                    batch,
                    heads_kv,
                    group,
                    enable_gqa: gqa || group > 1,
                    len_q,
                    len_kv,
                    head_dim,
                    head_dim_v,
                    mask,
                    causal,
                    scale,
                    path,
                    dtype,
                    input_scale,
                    seed,
                };
                // Keep the reference's work small.
                while c.work() > 200_000 {
                    if c.len_q >= c.len_kv && c.len_q > 1 {
                        c.len_q = c.len_q.div_ceil(2);
                    } else if c.len_kv > 1 {
                        c.len_kv = c.len_kv.div_ceil(2);
                    } else if c.group > 1 {
                        c.group -= 1;
                    } else {
                        c.heads_kv = 1;
                        c.batch = c.batch.map(|_| 1);
                        break;
                    }
                }
                c
            },
        )
}

struct SdpaInputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<Mask>,
}

fn sdpa_inputs(c: &SdpaCase) -> SdpaInputs {
    let mut rng = StdRng::seed_from_u64(c.seed);
    let lead = |h: usize| -> Vec<usize> {
        match c.batch {
            Some(b) => vec![b, h],
            None => vec![h],
        }
    };
    let with = |h: usize, len: usize, width: usize| -> Vec<usize> {
        let mut s = lead(h);
        s.extend([len, width]);
        s
    };
    let q = random(
        &mut rng,
        &with(c.heads_q(), c.len_q, c.head_dim),
        c.input_scale,
    );
    let k = random(
        &mut rng,
        &with(c.heads_kv, c.len_kv, c.head_dim),
        c.input_scale,
    );
    let v = random(
        &mut rng,
        &with(c.heads_kv, c.len_kv, c.head_dim_v),
        c.input_scale,
    );
    let row = rng.random_range(0..64);
    let mask = c.mask.map(|(spec, rank, full)| {
        let target = [c.batch.unwrap_or(1), c.heads_q(), c.len_q, c.len_kv];
        let shape: Vec<usize> = (4 - rank..4)
            .map(|i| if full[i] { target[i] } else { 1 })
            .collect();
        make_mask(&mut rng, spec, &shape, false, row)
    });
    SdpaInputs { q, k, v, mask }
}

fn run_sdpa(c: &SdpaCase, inputs: &SdpaInputs) -> Result<(), TestCaseError> {
    let opts = SdpaOptions {
        attn_mask: inputs.mask.as_ref(),
        causal: c.causal,
        scale: c.scale.map(|s| s / (c.head_dim as f32).sqrt()),
        enable_gqa: c.enable_gqa,
        path: c.path,
        dtype: c.dtype,
    };
    let (q, k, v) = (&inputs.q, &inputs.k, &inputs.v);
    let gpu = scaled_dot_product_attention(&gpu(), q, k, v, &opts);
    let round = |t: &Tensor| t.rounded_to(c.dtype);
    let cpu = reference::sdpa(&round(q), &round(k), &round(v), &opts);
    if gpu_only_refusal(c.path, false, &gpu, cpu.is_ok()) {
        return Ok(());
    }
    if let Some((got, want)) = same_outcome(gpu, cpu)? {
        compare("sdpa output", &got, &want, None)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(350))]

    /// Valid SDPA calls agree with the reference.
    #[test]
    fn sdpa_matches_reference(case in sdpa_case(false)) {
        let inputs = sdpa_inputs(&case);
        run_sdpa(&case, &inputs)?;
    }
}

proptest! {
    #![proptest_config(config(80))]

    /// With a NaN in a float mask (broadcast over whatever the mask's shape leaves out).
    #[test]
    fn sdpa_with_nan_mask_matches_reference(case in sdpa_case(true)) {
        let inputs = sdpa_inputs(&case);
        run_sdpa(&case, &inputs)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Invalid inputs
// ---------------------------------------------------------------------------------------------

/// One way to break a valid MHA call.
#[derive(Clone, Copy, Debug)]
enum MhaBreak {
    QueryWidth,
    KeyWidth,
    ValueWidth,
    ValueLength,
    KeyBatch,
    QueryRank(usize),
    KeyRank,
    AttnMaskShape,
    KeyPaddingMaskShape,
    MaskDataLength,
    TensorDataLength,
    ZeroLength,
    ZeroBatch,
    HeadsDoNotDivide,
    ZeroHeads,
    ZeroKdim,
}

fn mha_break() -> impl Strategy<Value = MhaBreak> {
    prop_oneof![
        Just(MhaBreak::QueryWidth),
        Just(MhaBreak::KeyWidth),
        Just(MhaBreak::ValueWidth),
        Just(MhaBreak::ValueLength),
        Just(MhaBreak::KeyBatch),
        prop::sample::select(vec![0usize, 1, 4, 5]).prop_map(MhaBreak::QueryRank),
        Just(MhaBreak::KeyRank),
        Just(MhaBreak::AttnMaskShape),
        Just(MhaBreak::KeyPaddingMaskShape),
        Just(MhaBreak::MaskDataLength),
        Just(MhaBreak::TensorDataLength),
        Just(MhaBreak::ZeroLength),
        Just(MhaBreak::ZeroBatch),
        Just(MhaBreak::HeadsDoNotDivide),
        Just(MhaBreak::ZeroHeads),
        Just(MhaBreak::ZeroKdim),
    ]
}

/// `shape` with dimension `i` (from the end when negative) changed by `f`.
fn with_dim(t: &Tensor, i: isize, f: impl Fn(usize) -> usize) -> Tensor {
    let mut shape = t.shape.clone();
    let i = if i < 0 {
        (shape.len() as isize + i) as usize
    } else {
        i as usize
    };
    shape[i] = f(shape[i]);
    Tensor::full(shape, 0.5)
}

fn break_mha(inputs: &mut MhaInputs, c: &MhaCase, how: MhaBreak) {
    let batch_dim: isize = if !c.batched {
        -3 // no batch dim; handled below
    } else if c.batch_first {
        0
    } else {
        1
    };
    let len_dim: isize = if c.batched && c.batch_first { 1 } else { 0 };
    match how {
        MhaBreak::QueryWidth => inputs.q = with_dim(&inputs.q, -1, |d| d + 1),
        MhaBreak::KeyWidth => inputs.k = with_dim(&inputs.k, -1, |d| d + 2),
        MhaBreak::ValueWidth => inputs.v = with_dim(&inputs.v, -1, |d| d + 3),
        MhaBreak::ValueLength => inputs.v = with_dim(&inputs.v, len_dim, |d| d + 1),
        MhaBreak::KeyBatch if c.batched => {
            inputs.k = with_dim(&inputs.k, batch_dim, |d| d + 1);
        }
        MhaBreak::KeyBatch | MhaBreak::KeyRank => {
            let mut shape = inputs.k.shape.clone();
            shape.insert(0, 1);
            inputs.k = Tensor::full(shape, 0.5);
        }
        MhaBreak::QueryRank(rank) => {
            let shape: Vec<usize> = (0..rank).map(|i| i + 1).collect();
            inputs.q = Tensor::full(shape, 0.5);
        }
        MhaBreak::AttnMaskShape => {
            inputs.attn_mask = Some(
                Mask::bool(
                    vec![c.len_q + 1, c.len_kv],
                    vec![false; (c.len_q + 1) * c.len_kv],
                )
                .unwrap(),
            );
        }
        MhaBreak::KeyPaddingMaskShape => {
            inputs.key_padding_mask = Some(
                Mask::float(
                    vec![c.batch + 1, c.len_kv],
                    vec![0.0; (c.batch + 1) * c.len_kv],
                )
                .unwrap(),
            );
        }
        MhaBreak::MaskDataLength => {
            let mut m =
                Mask::bool(vec![c.len_q, c.len_kv], vec![false; c.len_q * c.len_kv]).unwrap();
            m.data = MaskData::Bool(vec![false; c.len_q * c.len_kv + 1]);
            inputs.attn_mask = Some(m);
        }
        MhaBreak::TensorDataLength => {
            inputs.q.data.pop();
        }
        MhaBreak::ZeroLength => {
            inputs.q = with_dim(&inputs.q, len_dim, |_| 0);
        }
        MhaBreak::ZeroBatch if c.batched => {
            inputs.q = with_dim(&inputs.q, batch_dim, |_| 0);
            inputs.k = with_dim(&inputs.k, batch_dim, |_| 0);
            inputs.v = with_dim(&inputs.v, batch_dim, |_| 0);
        }
        MhaBreak::ZeroBatch => inputs.q.data.clear(),
        MhaBreak::HeadsDoNotDivide => {
            inputs.config.num_heads = inputs.config.embed_dim + 1;
        }
        MhaBreak::ZeroHeads => inputs.config.num_heads = 0,
        MhaBreak::ZeroKdim => inputs.config.kdim = 0,
    }
}

/// One way to break a valid SDPA call.
#[derive(Clone, Copy, Debug)]
enum SdpaBreak {
    KeyHeadDim,
    ValueLength,
    ValueHeads,
    KeyBatch,
    QueryRank(usize),
    KeyRank,
    HeadsWithoutGqa,
    HeadsNotAMultiple,
    MaskNotBroadcastable,
    MaskRank5,
    MaskDataLength,
    ScaleNotFinite(u8),
    ZeroDim(usize),
}

fn sdpa_break() -> impl Strategy<Value = SdpaBreak> {
    prop_oneof![
        Just(SdpaBreak::KeyHeadDim),
        Just(SdpaBreak::ValueLength),
        Just(SdpaBreak::ValueHeads),
        Just(SdpaBreak::KeyBatch),
        prop::sample::select(vec![0usize, 1, 2, 5]).prop_map(SdpaBreak::QueryRank),
        Just(SdpaBreak::KeyRank),
        Just(SdpaBreak::HeadsWithoutGqa),
        Just(SdpaBreak::HeadsNotAMultiple),
        Just(SdpaBreak::MaskNotBroadcastable),
        Just(SdpaBreak::MaskRank5),
        Just(SdpaBreak::MaskDataLength),
        (0u8..3).prop_map(SdpaBreak::ScaleNotFinite),
        (0usize..4).prop_map(SdpaBreak::ZeroDim),
    ]
}

fn break_sdpa(inputs: &mut SdpaInputs, c: &mut SdpaCase, how: SdpaBreak) {
    let lead = if c.batch.is_some() { 1 } else { 0 };
    match how {
        SdpaBreak::KeyHeadDim => inputs.k = with_dim(&inputs.k, -1, |d| d + 1),
        SdpaBreak::ValueLength => inputs.v = with_dim(&inputs.v, -2, |d| d + 1),
        SdpaBreak::ValueHeads => inputs.v = with_dim(&inputs.v, lead, |d| d + 1),
        SdpaBreak::KeyBatch if c.batch.is_some() => {
            inputs.k = with_dim(&inputs.k, 0, |d| d + 1);
        }
        SdpaBreak::KeyBatch | SdpaBreak::KeyRank => {
            let mut shape = inputs.k.shape.clone();
            if c.batch.is_some() {
                shape.remove(0);
            } else {
                shape.insert(0, 1);
            }
            inputs.k = Tensor::full(shape, 0.5);
        }
        SdpaBreak::QueryRank(rank) => {
            inputs.q = Tensor::full((0..rank).map(|i| i + 1).collect::<Vec<_>>(), 0.5);
        }
        SdpaBreak::HeadsWithoutGqa => {
            inputs.q = with_dim(&inputs.q, lead, |h| h + c.heads_kv);
            c.enable_gqa = false;
        }
        SdpaBreak::HeadsNotAMultiple => {
            inputs.k = with_dim(&inputs.k, lead, |_| c.heads_q() + 1);
            inputs.v = with_dim(&inputs.v, lead, |_| c.heads_q() + 1);
            c.enable_gqa = true;
        }
        SdpaBreak::MaskNotBroadcastable => {
            let shape = vec![c.len_q + 1, c.len_kv];
            let n = shape.iter().product();
            inputs.mask = Some(Mask::float(shape, vec![0.0; n]).unwrap());
        }
        SdpaBreak::MaskRank5 => {
            inputs.mask = Some(Mask::bool(vec![1, 1, 1, 1, 1], vec![true]).unwrap());
        }
        SdpaBreak::MaskDataLength => {
            inputs.mask = Some(Mask {
                shape: vec![c.len_q, c.len_kv],
                data: MaskData::Float(vec![0.0; c.len_q * c.len_kv + 2]),
            });
        }
        SdpaBreak::ScaleNotFinite(which) => {
            c.scale = Some([f32::NAN, f32::INFINITY, f32::NEG_INFINITY][which as usize]);
        }
        SdpaBreak::ZeroDim(which) => {
            let t = match which % 3 {
                0 => &mut inputs.q,
                1 => &mut inputs.k,
                _ => &mut inputs.v,
            };
            *t = with_dim(t, if which == 3 { -1 } else { -2 }, |_| 0);
        }
    }
}

proptest! {
    #![proptest_config(config(150))]

    /// Broken MHA calls fail alike on the GPU and in the reference.
    #[test]
    fn invalid_mha_fails_alike(case in mha_case(false), how in mha_break()) {
        let mut inputs = mha_inputs(&case);
        break_mha(&mut inputs, &case, how);
        run_mha(&case, &inputs)?;
    }

    /// Broken SDPA calls fail alike on the GPU and in the reference.
    #[test]
    fn invalid_sdpa_fails_alike(case in sdpa_case(false), how in sdpa_break()) {
        let mut case = case;
        let mut inputs = sdpa_inputs(&case);
        break_sdpa(&mut inputs, &mut case, how);
        // A custom non-finite scale is passed as is (not divided by √d).
        if let SdpaBreak::ScaleNotFinite(_) = how {
            let opts = SdpaOptions {
                attn_mask: inputs.mask.as_ref(),
                causal: case.causal,
                scale: case.scale,
                enable_gqa: case.enable_gqa,
                path: case.path,
                dtype: case.dtype,
            };
            let (q, k, v) = (&inputs.q, &inputs.k, &inputs.v);
            let gpu = scaled_dot_product_attention(&gpu(), q, k, v, &opts);
            let cpu = reference::sdpa(q, k, v, &opts);
            prop_assert!(same_outcome(gpu, cpu)?.is_none(), "a non-finite scale was accepted");
        } else {
            run_sdpa(&case, &inputs)?;
        }
    }
}
