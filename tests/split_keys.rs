//! The fused kernel with its keys split among workgroups (flash-decoding: splits, a merge,
//! and the recomputation of query blocks where a split met a non-finite value) gives the
//! reference's answer under every option and every non-finite rule. The default tuning of a
//! CPU adapter never splits, so these tests force it with `fused_split_groups`.

mod common;

use common::*;
use rand::rngs::StdRng;
use wgpu_mha::*;

/// The test device with a tuning whose fused kernel splits keys whenever a call has at
/// least 4 key blocks (sharing the device: no test opens one of its own).
fn splitting_gpu() -> Gpu {
    with_split_groups(1 << 16)
}

fn with_split_groups(target: u32) -> Gpu {
    let gpu = gpu();
    let tuning = Tuning {
        fused_split_groups: target,
        ..gpu.tuning()
    };
    gpu.with_tuning(tuning).expect("the tuning builds")
}

/// Runs SDPA fused with split keys (asserting that it split), poisoned output; returns the
/// output and the reference's.
fn split_sdpa(
    gpu: &Gpu,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    opts: &SdpaOptions,
) -> (Tensor, Tensor) {
    let opts = SdpaOptions {
        path: AttentionPath::Fused,
        ..*opts
    };
    let prepared = PreparedSdpa::prepare(gpu, q, k, v, &opts).unwrap();
    assert!(prepared.key_splits() > 1, "not split: {:?}", q.shape);
    poison(gpu, prepared.output_buffer());
    prepared.run().unwrap();
    let got = prepared.read().unwrap();
    let round = |t: &Tensor| t.rounded_to(opts.dtype);
    let want = reference::sdpa(&round(q), &round(k), &round(v), &opts).unwrap();
    (got, want)
}

fn check(label: &str, got: &Tensor, want: &Tensor) {
    let (rtol, atol) = tolerance(want);
    let err = assert_close(label, got, want, rtol, atol);
    eprintln!("{label}: max abs error {err:.2e}");
}

fn qkv(
    rng: &mut StdRng,
    b: usize,
    (hq, hkv): (usize, usize),
    (l, s): (usize, usize),
    (d, dv): (usize, usize),
) -> (Tensor, Tensor, Tensor) {
    (
        random(rng, &[b, hq, l, d], 1.0),
        random(rng, &[b, hkv, s, d], 1.0),
        random(rng, &[b, hkv, s, dv], 1.0),
    )
}

#[test]
fn split_keys_match_reference_under_every_option() {
    let gpu = splitting_gpu();
    let mut rng = rng();
    // (name, batch, (hq, hkv), (L, S), (d, dv))
    let shapes = [
        ("decode L1 S300", 1, (4, 4), (1, 300), (64, 64)),
        ("decode GQA 8/2", 2, (8, 2), (1, 257), (32, 32)),
        ("few rows L7 S400", 1, (3, 3), (7, 400), (16, 16)),
        ("odd sizes dv != d", 1, (2, 2), (5, 333), (13, 7)),
        ("head size 128", 1, (2, 2), (3, 256), (128, 128)),
    ];
    for (name, b, heads, lens, dims) in shapes {
        let (q, k, v) = qkv(&mut rng, b, heads, lens, dims);
        let (l, s) = lens;
        let float_mask = random_float_mask(&mut rng, &[b, 1, l, s]);
        let bool_mask = random_bool_mask(&mut rng, &[l, s], 0.7);
        let base = SdpaOptions {
            enable_gqa: heads.0 != heads.1,
            ..Default::default()
        };
        let sets = [
            ("default", base),
            (
                "causal bottom-right",
                SdpaOptions {
                    causal: Some(Causal::BottomRight),
                    ..base
                },
            ),
            (
                "float mask",
                SdpaOptions {
                    attn_mask: Some(&float_mask),
                    ..base
                },
            ),
            (
                "bool mask + scale",
                SdpaOptions {
                    attn_mask: Some(&bool_mask),
                    scale: Some(0.3),
                    ..base
                },
            ),
            (
                "f16",
                SdpaOptions {
                    dtype: Dtype::F16,
                    ..base
                },
            ),
        ];
        for (what, opts) in sets {
            let (got, want) = split_sdpa(&gpu, (&q, &k, &v), &opts);
            check(&format!("{name}, {what}"), &got, &want);
        }
    }
}

/// Top-left causal with L < S leaves whole splits past every row's limit: they see nothing
/// and must not disturb the merge. Rows masked everywhere come out as zeros.
#[test]
fn empty_splits_and_fully_masked_rows() {
    let gpu = splitting_gpu();
    let mut rng = rng();
    let (q, k, v) = qkv(&mut rng, 1, (2, 2), (6, 300), (16, 16));
    let opts = SdpaOptions {
        causal: Some(Causal::TopLeft),
        ..Default::default()
    };
    let (got, want) = split_sdpa(&gpu, (&q, &k, &v), &opts);
    check("top-left causal, L6 S300", &got, &want);

    // Row 2 of every head may attend to nothing (SDPA bool mask: false = blocked).
    let mut allowed = vec![true; 6 * 300];
    allowed[2 * 300..3 * 300].fill(false);
    let mask = Mask::bool([6, 300], allowed).unwrap();
    let opts = SdpaOptions {
        attn_mask: Some(&mask),
        ..Default::default()
    };
    let (got, want) = split_sdpa(&gpu, (&q, &k, &v), &opts);
    check("a fully masked row", &got, &want);
    for h in 0..2 {
        let row = &got.data[(h * 6 + 2) * 16..(h * 6 + 3) * 16];
        assert!(row.iter().all(|&x| x == 0.0), "head {h}: {row:?}");
    }
}

/// A NaN query poisons its row in every split (NaN out); other rows are untouched.
#[test]
fn a_poisoned_row_is_nan_across_splits() {
    let gpu = splitting_gpu();
    let mut rng = rng();
    let (mut q, k, v) = qkv(&mut rng, 1, (2, 2), (3, 300), (16, 16));
    q.data[16 + 5] = f32::NAN; // head 0, row 1
    let (got, want) = split_sdpa(&gpu, (&q, &k, &v), &Default::default());
    for r in 0..6 {
        let row = &got.data[r * 16..(r + 1) * 16];
        if r == 1 {
            assert!(row.iter().all(|x| x.is_nan()), "row {r}: {row:?}");
        } else {
            assert!(row.iter().all(|x| x.is_finite()), "row {r}: {row:?}");
        }
    }
    let finite = |t: &Tensor| {
        let data = t
            .data
            .iter()
            .map(|&x| if x.is_nan() { 0.0 } else { x })
            .collect();
        Tensor::new(t.shape.clone(), data).unwrap()
    };
    check("the other rows", &finite(&got), &finite(&want));
}

/// A NaN value whose key's probability underflows f32 counts as masked (the reference's
/// rule). Within its own split that key may be the largest, so the split flags its block and
/// the block is recomputed whole: the output stays finite and equals the reference.
#[test]
fn a_nan_value_behind_a_large_negative_mask_is_recomputed_whole() {
    let gpu = splitting_gpu();
    let mut rng = rng();
    let (l, s, d) = (3, 320, 16);
    let (q, k, mut v) = qkv(&mut rng, 1, (2, 2), (l, s), (d, d));
    // Keys 160.. lie 200 below the others: probability exp(-200) underflows.
    let mut additive = vec![0.0f32; l * s];
    for row in additive.chunks_mut(s) {
        row[160..].fill(-200.0);
    }
    let mask = Mask::float([l, s], additive).unwrap();
    v.data[(300 * d) + 3] = f32::NAN; // head 0, key 300, column 3
    v.data[(s + 250) * d + 9] = f32::INFINITY; // head 1, key 250, column 9
    let opts = SdpaOptions {
        attn_mask: Some(&mask),
        ..Default::default()
    };
    let (got, want) = split_sdpa(&gpu, (&q, &k, &v), &opts);
    assert!(want.data.iter().all(|x| x.is_finite()));
    check("NaN and inf values behind -200", &got, &want);

    // Without the mask the same values reach their columns: NaN there, finite elsewhere.
    let (got, want) = split_sdpa(&gpu, (&q, &k, &v), &Default::default());
    for (i, (&g, &w)) in got.data.iter().zip(&want.data).enumerate() {
        assert_eq!(g.is_nan(), w.is_nan(), "element {i}: {g} vs {w}");
    }
}

/// The MHA module's fused core splits too (one query row against many keys: a decode step).
#[test]
fn mha_decode_step_with_split_keys() {
    let gpu = splitting_gpu();
    let mut rng = rng();
    let config = MhaConfig::new(64, 4).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
    let q = random(&mut rng, &[2, 1, 64], 1.0);
    let kv = random(&mut rng, &[2, 300, 64], 1.0);
    let kpm = random_bool_mask(&mut rng, &[2, 300], 0.3);
    let opts = MhaOptions {
        key_padding_mask: Some(&kpm),
        path: AttentionPath::Fused,
        ..Default::default()
    };
    let prepared = mha.prepare(&q, &kv, &kv, &opts).unwrap();
    assert!(prepared.key_splits() > 1);
    poison(&gpu, prepared.output_buffer());
    prepared.run().unwrap();
    let got = prepared.read().unwrap();
    let want = reference::mha_forward(&config, &weights, &q, &kv, &kv, &opts).unwrap();
    check("MHA decode", &got.attn_output, &want.attn_output);
}

/// The split count follows the tuning: none at 0, none where the call already has enough
/// workgroups, more for fewer query rows.
#[test]
fn split_count_follows_the_tuning() {
    let mut rng = rng();
    let (q1, k, v) = qkv(&mut rng, 1, (4, 4), (1, 1024), (64, 64));
    let q64 = random(&mut rng, &[1, 4, 64, 64], 1.0);
    let splits = |target: u32, q: &Tensor| {
        let gpu = with_split_groups(target);
        let opts = SdpaOptions {
            path: AttentionPath::Fused,
            ..Default::default()
        };
        PreparedSdpa::prepare(&gpu, q, &k, &v, &opts)
            .unwrap()
            .key_splits()
    };
    assert_eq!(splits(0, &q1), 1);
    assert_eq!(splits(4, &q1), 1, "4 heads already make 4 workgroups");
    assert!(splits(64, &q1) > 1);
    assert!(splits(64, &q1) >= splits(64, &q64));
    let three_pass = PreparedSdpa::prepare(
        &splitting_gpu(),
        &q1,
        &k,
        &v,
        &SdpaOptions {
            path: AttentionPath::ThreePass,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(three_pass.key_splits(), 1);
}
