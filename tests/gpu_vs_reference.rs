//! The GPU paths against the CPU reference over many shapes and every option, on fresh
//! random inputs, with output buffers poisoned (NaN) before the kernels run so that any
//! element they fail to write shows.

mod common;

use common::*;
use rand::Rng;
use rand::rngs::StdRng;
use wgpu_mha::*;

/// One MHA forward on every GPU path that can serve it (fused only without weights), with
/// poisoned outputs, checked against the reference.
fn check_mha(
    label: &str,
    mha: &MultiHeadAttention,
    weights: &MhaWeights,
    qkv: (&Tensor, &Tensor, &Tensor),
    opts: &MhaOptions,
) {
    check_mha_path(
        label,
        mha,
        weights,
        qkv,
        &MhaOptions {
            path: AttentionPath::ThreePass,
            ..*opts
        },
    );
    if !opts.need_weights {
        check_mha_path(
            &format!("{label} [fused]"),
            mha,
            weights,
            qkv,
            &MhaOptions {
                path: AttentionPath::Fused,
                ..*opts
            },
        );
    }
}

fn check_mha_path(
    label: &str,
    mha: &MultiHeadAttention,
    weights: &MhaWeights,
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
    let want = reference::mha_forward(mha.config(), weights, q, k, v, opts).unwrap();
    let (rtol, atol) = tolerance(&want.attn_output);
    let err = assert_close(label, &got.attn_output, &want.attn_output, rtol, atol);
    match (&got.attn_weights, &want.attn_weights) {
        (Some(g), Some(w)) => {
            assert_close(&format!("{label} weights"), g, w, 1e-4, 1e-5);
        }
        (None, None) => {}
        _ => panic!("{label}: weights present on one side only"),
    }
    eprintln!("{label}: max abs error {err:.2e}");
}

struct MhaCase {
    name: &'static str,
    batch: usize,
    len: usize,
    kv_len: usize,
    embed: usize,
    heads: usize,
    kdim: usize,
    vdim: usize,
    bias: bool,
    batch_first: bool,
    batched: bool,
    /// Magnitude of the query and key inputs.
    qk_scale: f32,
    /// Magnitude of the value input.
    v_scale: f32,
}

const BASE: MhaCase = MhaCase {
    name: "",
    batch: 2,
    len: 11,
    kv_len: 11,
    embed: 32,
    heads: 4,
    kdim: 32,
    vdim: 32,
    bias: true,
    batch_first: false,
    batched: true,
    qk_scale: 1.0,
    v_scale: 1.0,
};

fn mha_cases() -> Vec<MhaCase> {
    vec![
        MhaCase {
            name: "odd sizes L37 E60 h5",
            batch: 2,
            len: 37,
            kv_len: 37,
            embed: 60,
            heads: 5,
            kdim: 60,
            vdim: 60,
            ..BASE
        },
        MhaCase {
            name: "head size 13",
            len: 19,
            kv_len: 19,
            embed: 39,
            heads: 3,
            kdim: 39,
            vdim: 39,
            batch_first: true,
            ..BASE
        },
        MhaCase {
            name: "one head",
            embed: 16,
            heads: 1,
            kdim: 16,
            vdim: 16,
            ..BASE
        },
        MhaCase {
            name: "16 heads",
            embed: 64,
            heads: 16,
            kdim: 64,
            vdim: 64,
            batch_first: true,
            ..BASE
        },
        MhaCase {
            name: "cross L7 S23",
            len: 7,
            kv_len: 23,
            ..BASE
        },
        MhaCase {
            name: "kdim 10 vdim 33",
            embed: 24,
            heads: 4,
            kdim: 10,
            vdim: 33,
            len: 9,
            kv_len: 14,
            ..BASE
        },
        MhaCase {
            name: "no bias",
            bias: false,
            batch_first: true,
            ..BASE
        },
        MhaCase {
            name: "unbatched",
            batch: 1,
            batched: false,
            len: 13,
            kv_len: 17,
            ..BASE
        },
        MhaCase {
            // Large outputs (values ×1e3) and logits about 100× the usual, far past where
            // exp overflows without the max subtracted. Not q/k ×1e3: logits of ~1e6 make the
            // softmax so ill-conditioned that f32 rounding of the scores alone moved an
            // output by 7e-4 of its magnitude (1 seed in 30).
            name: "large values ×1e3, logits ×100",
            qk_scale: 10.0,
            v_scale: 1e3,
            ..BASE
        },
        MhaCase {
            name: "long rows S300",
            batch: 1,
            len: 5,
            kv_len: 300,
            ..BASE
        },
        MhaCase {
            name: "tall L130",
            batch: 1,
            len: 130,
            kv_len: 70,
            embed: 20,
            heads: 2,
            kdim: 20,
            vdim: 20,
            ..BASE
        },
    ]
}

fn input(rng: &mut StdRng, c: &MhaCase, (len, width): (usize, usize), scale: f32) -> Tensor {
    let shape = match (c.batched, c.batch_first) {
        (false, _) => vec![len, width],
        (true, true) => vec![c.batch, len, width],
        (true, false) => vec![len, c.batch, width],
    };
    random(rng, &shape, scale)
}

#[test]
fn mha_shapes_and_options_match_reference() {
    let gpu = gpu();
    let mut rng = rng();
    for c in mha_cases() {
        let config = MhaConfig::new(c.embed, c.heads)
            .with_kv_dims(c.kdim, c.vdim)
            .with_bias(c.bias)
            .with_batch_first(c.batch_first);
        let weights = MhaWeights::random(&config, &mut rng);
        let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
        let q = input(&mut rng, &c, (c.len, c.embed), c.qk_scale);
        let k = input(&mut rng, &c, (c.kv_len, c.kdim), c.qk_scale);
        let v = input(&mut rng, &c, (c.kv_len, c.vdim), c.v_scale);
        let kpm_shape: Vec<usize> = if c.batched {
            vec![c.batch, c.kv_len]
        } else {
            vec![c.kv_len]
        };
        let per_head = if c.batched {
            c.batch * c.heads
        } else {
            c.heads
        };
        let bool_2d = random_bool_mask(&mut rng, &[c.len, c.kv_len], 0.3);
        let float_3d = random_float_mask(&mut rng, &[per_head, c.len, c.kv_len]);
        let kpm_bool = random_bool_mask(&mut rng, &kpm_shape, 0.25);
        let kpm_float = random_float_mask(&mut rng, &kpm_shape);
        let option_sets: Vec<(&str, MhaOptions)> = vec![
            ("plain", MhaOptions::default()),
            (
                "bool attn_mask [L,S] + weights",
                MhaOptions {
                    attn_mask: Some(&bool_2d),
                    need_weights: true,
                    ..Default::default()
                },
            ),
            (
                "float attn_mask [B·h,L,S] + per-head weights",
                MhaOptions {
                    attn_mask: Some(&float_3d),
                    need_weights: true,
                    average_attn_weights: false,
                    ..Default::default()
                },
            ),
            (
                "bool key_padding_mask + causal top-left",
                MhaOptions {
                    key_padding_mask: Some(&kpm_bool),
                    causal: Some(Causal::TopLeft),
                    ..Default::default()
                },
            ),
            (
                "float key_padding_mask + causal bottom-right + weights",
                MhaOptions {
                    key_padding_mask: Some(&kpm_float),
                    causal: Some(Causal::BottomRight),
                    need_weights: true,
                    ..Default::default()
                },
            ),
            (
                "both masks",
                MhaOptions {
                    attn_mask: Some(&float_3d),
                    key_padding_mask: Some(&kpm_float),
                    ..Default::default()
                },
            ),
        ];
        for (opt_name, opts) in &option_sets {
            check_mha(
                &format!("{} / {opt_name}", c.name),
                &mha,
                &weights,
                (&q, &k, &v),
                opts,
            );
        }
        // Self-attention takes the one-launch packed projection: same tensor three times.
        if c.kdim == c.embed && c.vdim == c.embed {
            let x = input(&mut rng, &c, (c.len, c.embed), c.qk_scale);
            check_mha(
                &format!("{} / self-attention", c.name),
                &mha,
                &weights,
                (&x, &x, &x),
                &MhaOptions {
                    causal: Some(Causal::TopLeft),
                    need_weights: true,
                    ..Default::default()
                },
            );
        }
    }
}

#[test]
fn rows_that_attend_to_nothing_are_zero_not_nan() {
    let gpu = gpu();
    let mut rng = rng();
    let (batch, len, kv_len, embed, heads) = (2, 6, 5, 16, 2);
    let config = MhaConfig::new(embed, heads).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
    let q = random(&mut rng, &[batch, len, embed], 1.0);
    let kv = random(&mut rng, &[batch, kv_len, embed], 1.0);
    // Rows 1 and 4 blocked everywhere; bottom-right causal with L > S also empties row 0.
    let mut blocked = vec![false; len * kv_len];
    for s in 0..kv_len {
        blocked[kv_len + s] = true;
        blocked[4 * kv_len + s] = true;
    }
    let mask = Mask::bool([len, kv_len], blocked).unwrap();
    let opts = MhaOptions {
        attn_mask: Some(&mask),
        causal: Some(Causal::BottomRight),
        need_weights: true,
        average_attn_weights: false,
        ..Default::default()
    };
    check_mha("blocked rows", &mha, &weights, (&q, &kv, &kv), &opts);
    let got = mha.forward(&q, &kv, &kv, &opts).unwrap();
    let w = got.attn_weights.unwrap();
    assert!(w.data.iter().all(|x| x.is_finite()));
    // Per-head weights [B, h, L, S]: row 1 of every (b, h) is all zeros.
    for bh in 0..batch * heads {
        let row = &w.data[(bh * len + 1) * kv_len..(bh * len + 2) * kv_len];
        assert!(row.iter().all(|&x| x == 0.0), "{row:?}");
    }
    // The output of a blocked row is the out-projection bias.
    let bias = weights.out_proj_bias.as_ref().unwrap();
    let out_row = &got.attn_output.data[embed..2 * embed];
    for (o, b) in out_row.iter().zip(bias) {
        assert!((o - b).abs() < 1e-5);
    }
}

/// One SDPA call on both GPU paths with a poisoned output, checked against the reference;
/// the fused path also on its staged kernel (where the adapter's tuning runs the
/// register-blocked one, as on a CPU adapter).
fn check_sdpa(label: &str, q: &Tensor, k: &Tensor, v: &Tensor, opts: &SdpaOptions) {
    let runs = [
        (AttentionPath::ThreePass, gpu(), ""),
        (AttentionPath::Fused, gpu(), ""),
        (AttentionPath::Fused, staged_gpu(), ", staged"),
    ];
    for (path, gpu, kernels) in runs {
        check_sdpa_path(
            &gpu,
            &format!("{label} [{path:?}{kernels}]"),
            q,
            k,
            v,
            &SdpaOptions { path, ..*opts },
        );
    }
}

fn check_sdpa_path(gpu: &Gpu, label: &str, q: &Tensor, k: &Tensor, v: &Tensor, opts: &SdpaOptions) {
    let prepared = PreparedSdpa::prepare(gpu, q, k, v, opts).unwrap();
    assert_eq!(prepared.path(), opts.path, "{label}");
    poison(gpu, prepared.output_buffer());
    prepared.run().unwrap();
    let got = prepared.read().unwrap();
    let want = reference::sdpa(q, k, v, opts).unwrap();
    let (rtol, atol) = tolerance(&want);
    let err = assert_close(label, &got, &want, rtol, atol);
    eprintln!("{label}: max abs error {err:.2e}");
}

#[test]
fn sdpa_shapes_and_options_match_reference() {
    let mut rng = rng();
    // (name, batch, hq, hkv, L, S, d, dv)
    let shapes = [
        ("plain", 2, 4, 4, 16, 16, 32, 32),
        ("cross", 1, 3, 3, 7, 41, 16, 16),
        ("GQA 8/2", 2, 8, 2, 9, 12, 8, 8),
        ("MQA 6/1", 1, 6, 1, 10, 10, 16, 16),
        ("dv != d", 2, 2, 2, 11, 13, 13, 7),
        ("decode L1", 1, 4, 4, 1, 200, 64, 64),
        ("head size 128", 1, 2, 2, 20, 20, 128, 128),
        // More query rows than one subgroup of the register-blocked fused kernel takes
        // (8 lanes × 4 rows), the last subgroup partly past the end.
        ("GQA 4/2, 45 queries", 1, 4, 2, 45, 37, 16, 16),
    ];
    for (name, b, hq, hkv, l, s, d, dv) in shapes {
        let q = random(&mut rng, &[b, hq, l, d], 1.0);
        let k = random(&mut rng, &[b, hkv, s, d], 1.0);
        let v = random(&mut rng, &[b, hkv, s, dv], 1.0);
        let bool_ls = random_bool_mask(&mut rng, &[l, s], 0.7);
        let float_b1ls = random_float_mask(&mut rng, &[b, 1, l, s]);
        let bool_full = random_bool_mask(&mut rng, &[b, hq, l, s], 0.6);
        let float_s = random_float_mask(&mut rng, &[s]);
        let gqa = hq != hkv;
        let base = SdpaOptions {
            enable_gqa: gqa,
            ..Default::default()
        };
        let sets: Vec<(&str, SdpaOptions)> = vec![
            ("default", base),
            (
                "scale 0.3",
                SdpaOptions {
                    scale: Some(0.3),
                    ..base
                },
            ),
            (
                "causal top-left",
                SdpaOptions {
                    causal: Some(Causal::TopLeft),
                    ..base
                },
            ),
            (
                "causal bottom-right",
                SdpaOptions {
                    causal: Some(Causal::BottomRight),
                    ..base
                },
            ),
            (
                "bool mask [L,S]",
                SdpaOptions {
                    attn_mask: Some(&bool_ls),
                    ..base
                },
            ),
            (
                "float mask [B,1,L,S]",
                SdpaOptions {
                    attn_mask: Some(&float_b1ls),
                    ..base
                },
            ),
            (
                "bool mask [B,H,L,S] + causal",
                SdpaOptions {
                    attn_mask: Some(&bool_full),
                    causal: Some(Causal::TopLeft),
                    ..base
                },
            ),
            (
                "float mask [S]",
                SdpaOptions {
                    attn_mask: Some(&float_s),
                    ..base
                },
            ),
        ];
        for (opt_name, opts) in &sets {
            check_sdpa(&format!("sdpa {name} / {opt_name}"), &q, &k, &v, opts);
        }
    }
    // 3-D [H, L, d] inputs.
    let q = random(&mut rng, &[3, 8, 16], 1.0);
    let k = random(&mut rng, &[3, 10, 16], 1.0);
    check_sdpa("sdpa 3-D", &q, &k, &k, &SdpaOptions::default());
    // Magnitude 1e3 and rows with nothing to attend to.
    let q = random(&mut rng, &[1, 2, 6, 8], 1e3);
    let k = random(&mut rng, &[1, 2, 6, 8], 1e3);
    let mut allowed: Vec<bool> = (0..36).map(|_| rng.random_bool(0.8)).collect();
    allowed[12..18].iter_mut().for_each(|a| *a = false);
    let mask = Mask::bool([6, 6], allowed).unwrap();
    check_sdpa(
        "sdpa 1e3 + blocked row",
        &q,
        &k,
        &k,
        &SdpaOptions {
            attn_mask: Some(&mask),
            ..Default::default()
        },
    );
}

/// The non-finite rules, on both paths and the reference alike: a NaN query row is NaN and
/// touches no other row; a non-finite key or value reaches only the rows that may attend to
/// it — blocked (bool mask, -inf, causal) keys never touch a row.
#[test]
fn non_finite_inputs_stay_where_they_belong() {
    let mut rng = rng();
    let (b, h, l, s, d) = (1, 2, 6, 9, 8);
    let mut q = random(&mut rng, &[b, h, l, d], 1.0);
    let mut k = random(&mut rng, &[b, h, s, d], 1.0);
    let mut v = random(&mut rng, &[b, h, s, d], 1.0);
    q.data[(2 * d)..(3 * d)].fill(f32::NAN); // head 0, query row 2
    k.data[7 * d] = f32::NAN; // head 0, key 7
    v.data[(s + 8) * d + 3] = f32::INFINITY; // head 1, value 8
    // Keys 7 and 8 blocked for query rows 0 and 1 (SDPA polarity: false = blocked).
    let mut allowed = vec![true; l * s];
    for row in 0..2 {
        allowed[row * s + 7] = false;
        allowed[row * s + 8] = false;
    }
    let mask = Mask::bool([l, s], allowed).unwrap();
    for causal in [None, Some(Causal::TopLeft)] {
        let opts = SdpaOptions {
            attn_mask: Some(&mask),
            causal,
            ..Default::default()
        };
        let want = reference::sdpa(&q, &k, &v, &opts).unwrap();
        for path in [AttentionPath::ThreePass, AttentionPath::Fused] {
            let got =
                scaled_dot_product_attention(&gpu(), &q, &k, &v, &SdpaOptions { path, ..opts })
                    .unwrap();
            for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
                let (head, row) = (i / (l * d), i / d % l);
                assert_eq!(
                    g.is_nan(),
                    w.is_nan(),
                    "{path:?} {causal:?} head {head} row {row}: got {g}, want {w}"
                );
                if !w.is_nan() {
                    assert!(
                        g == w || (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                        "{path:?} {causal:?} element {i}: {g} vs {w}"
                    );
                }
            }
            let row = |head: usize, r: usize| &got.data[(head * l + r) * d..(head * l + r + 1) * d];
            // The NaN query row is NaN; its neighbours are not.
            assert!(row(0, 2).iter().all(|x| x.is_nan()), "{path:?}");
            assert!(
                row(0, 3).iter().all(|x| x.is_finite()) || causal.is_none(),
                "{path:?}"
            );
            // Rows 0 and 1 never see key 7 (NaN) or value 8 (inf).
            for r in 0..2 {
                assert!(
                    row(0, r).iter().all(|x| x.is_finite()),
                    "{path:?} head 0 row {r}"
                );
                assert!(
                    row(1, r).iter().all(|x| x.is_finite()),
                    "{path:?} head 1 row {r}"
                );
            }
        }
    }
}

/// Causal three-pass calls skip the score tiles wholly past the diagonal (not computed, not
/// written; softmax reads no score past a row's limit) and stop each P·V tile at its last
/// row's limit. Long enough for whole tiles to be skipped at two tile sizes, with weights
/// (zeros past the diagonal), masks, both alignments and row blocks that start mid-sequence.
#[test]
fn causal_three_pass_skips_tiles_past_the_diagonal() {
    let mut rng = rng();
    for tiles in [None, Some((8, 8, 16))] {
        let tuning = match tiles {
            None => gpu().tuning(),
            Some((wg_x, wg_y, bk)) => Tuning {
                gemm: tuning::GemmTiles { wg_x, wg_y, bk },
                ..gpu().tuning()
            },
        };
        let gpu = gpu().with_tuning(tuning).unwrap();
        // Blocks of a few dozen query rows: most start mid-sequence.
        gpu.set_memory_budget(64 << 10);
        // (L, S): square; more keys than queries; fewer.
        for (l, s) in [(300, 300), (200, 520), (260, 90)] {
            let q = random(&mut rng, &[2, 3, l, 16], 1.0);
            let k = random(&mut rng, &[2, 3, s, 16], 1.0);
            let v = random(&mut rng, &[2, 3, s, 8], 1.0);
            let mask = random_float_mask(&mut rng, &[2, 1, l, s]);
            // Non-causal first: it fills the pooled score buffer with probabilities that the
            // causal calls after it must neither read nor leave in their results.
            for causal in [None, Some(Causal::TopLeft), Some(Causal::BottomRight)] {
                for attn_mask in [None, Some(&mask)] {
                    let opts = SdpaOptions {
                        causal,
                        attn_mask,
                        path: AttentionPath::ThreePass,
                        ..Default::default()
                    };
                    let label = format!(
                        "{tiles:?} L{l} S{s} {causal:?} mask {}",
                        attn_mask.is_some()
                    );
                    let prepared = PreparedSdpa::prepare(&gpu, &q, &k, &v, &opts).unwrap();
                    poison(&gpu, prepared.output_buffer());
                    prepared.run().unwrap();
                    let got = prepared.read().unwrap();
                    let want = reference::sdpa(&q, &k, &v, &opts).unwrap();
                    let (rtol, atol) = tolerance(&want);
                    assert_close(&label, &got, &want, rtol, atol);
                }
            }
        }
    }
    // Weights through the MHA module: probabilities past the diagonal are exact zeros.
    let config = MhaConfig::new(16, 2).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu(), config, &weights).unwrap();
    let x = random(&mut rng, &[1, 300, 16], 1.0);
    let opts = MhaOptions {
        causal: Some(Causal::TopLeft),
        need_weights: true,
        average_attn_weights: false,
        path: AttentionPath::ThreePass,
        ..Default::default()
    };
    check_mha_path(
        "MHA L300 causal, per-head weights",
        &mha,
        &weights,
        (&x, &x, &x),
        &opts,
    );
    let got = mha.forward(&x, &x, &x, &opts).unwrap();
    let w = got.attn_weights.unwrap();
    for h in 0..2 {
        for l in 0..300 {
            let row = &w.data[(h * 300 + l) * 300..(h * 300 + l + 1) * 300];
            assert!(row[l + 1..].iter().all(|&p| p == 0.0), "head {h} row {l}");
        }
    }
}
