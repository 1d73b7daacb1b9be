//! Score matrices larger than one binding or the caller's memory budget run block by block
//! and give the same answer as the reference.

mod common;

use common::*;
use rand::Rng;
use rand::seq::index::sample;
use wgpu_mha::*;

/// 8 heads at length 4096: the whole score matrix is 512 MiB, four times what one storage
/// binding holds on lavapipe. A budget of the same 128 MiB makes every adapter (a GPU's
/// bindings may hold 2 GiB) walk the same four blocks. Checked on sampled query rows (the
/// full reference is slow).
#[test]
fn long_self_attention_runs_block_by_block() {
    let gpu = Gpu::new().expect("adapter (install mesa-vulkan-drivers)");
    gpu.set_memory_budget(128 << 20);
    let mut rng = rng();
    let (len, embed, heads) = (4096, 128, 8);
    let scores_bytes = (heads * len * len * 4) as u64;
    let block_limit = gpu
        .limits()
        .max_storage_buffer_binding_size
        .min(gpu.memory_budget());
    assert!(
        scores_bytes > block_limit,
        "the score matrix ({scores_bytes} bytes) must exceed what one block may hold ({block_limit})"
    );

    let config = MhaConfig::new(embed, heads).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
    let x = random(&mut rng, &[1, len, embed], 1.0);
    // The three-pass path is the one that walks blocks of the score matrix.
    let opts = MhaOptions {
        causal: Some(Causal::TopLeft),
        path: AttentionPath::ThreePass,
        ..Default::default()
    };
    let prepared = mha.prepare(&x, &x, &x, &opts).unwrap();
    assert_eq!(prepared.path(), AttentionPath::ThreePass);
    // Everything this forward holds on the GPU is far below the score matrix.
    assert!(
        prepared.allocated_bytes() < scores_bytes / 2,
        "allocated {} bytes",
        prepared.allocated_bytes()
    );
    prepared.run().unwrap();
    let got = prepared.read().unwrap().attn_output;

    // First, last, block boundaries (1024 rows a block) and random rows.
    let mut rows = vec![0, 1023, 1024, 2047, 2048, len - 1];
    rows.extend(sample(&mut rng, len, 10));
    let want = reference::mha_forward_rows(&config, &weights, &x, &x, &x, &opts, &rows).unwrap();
    let picked: Vec<f32> = rows
        .iter()
        .flat_map(|&r| got.data[r * embed..(r + 1) * embed].to_vec())
        .collect();
    let picked = Tensor::new([1, rows.len(), embed], picked).unwrap();
    let (rtol, atol) = tolerance(&want.attn_output);
    let err = assert_close("sampled rows", &picked, &want.attn_output, rtol, atol);
    eprintln!(
        "4096 × 8 heads: max abs error on {} sampled rows: {err:.2e}",
        rows.len()
    );
}

/// A tiny budget forces blocks that split batches and query rows; weights (averaged and per
/// head) must still land in the right places.
#[test]
fn small_budget_splits_batches_and_rows() {
    let gpu = Gpu::new().expect("adapter (install mesa-vulkan-drivers)");
    let mut rng = rng();
    let (batch, len, kv_len, embed, heads) = (3, 37, 29, 24, 3);
    // One query row of scores over all heads is heads·S·4 = 348 bytes; allow 5 rows.
    gpu.set_memory_budget((heads * kv_len * 4 * 5) as u64);
    let config = MhaConfig::new(embed, heads);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
    let q = random(&mut rng, &[len, batch, embed], 1.0);
    let kv = random(&mut rng, &[kv_len, batch, embed], 1.0);
    let mask = random_bool_mask(&mut rng, &[batch, kv_len], 0.2);
    for average in [true, false] {
        let opts = MhaOptions {
            path: AttentionPath::ThreePass,
            key_padding_mask: Some(&mask),
            causal: Some(Causal::BottomRight),
            need_weights: true,
            average_attn_weights: average,
            ..Default::default()
        };
        check(&mha, &weights, (&q, &kv), &opts);
    }

    // Whole batches per block: 2 of the 3 batches fit.
    gpu.set_memory_budget((heads * kv_len * 4 * len * 2) as u64);
    let opts = MhaOptions {
        need_weights: true,
        average_attn_weights: false,
        path: AttentionPath::ThreePass,
        ..Default::default()
    };
    check(&mha, &weights, (&q, &kv), &opts);
}

/// One forward with weights, output and weights checked against the reference.
fn check(
    mha: &MultiHeadAttention,
    weights: &MhaWeights,
    (q, kv): (&Tensor, &Tensor),
    opts: &MhaOptions,
) {
    let got = mha.forward(q, kv, kv, opts).unwrap();
    let want = reference::mha_forward(mha.config(), weights, q, kv, kv, opts).unwrap();
    let (rtol, atol) = tolerance(&want.attn_output);
    assert_close("output", &got.attn_output, &want.attn_output, rtol, atol);
    assert_close(
        "weights",
        got.attn_weights.as_ref().unwrap(),
        want.attn_weights.as_ref().unwrap(),
        1e-4,
        1e-5,
    );
}

/// Calls of more row tiles than a grid's 65535 workgroups run instead of failing: 2 100 000
/// queries against 4 keys. Past the register-blocked kernels' grid (32 rows per workgroup at
/// 8×8) three passes run on the staged kernels' larger tiles; the staged fused kernel (32
/// rows per workgroup) is launched once per 65535 query blocks, twice here.
#[test]
fn calls_past_the_grid_limit_run() {
    let gpu = gpu();
    let staged = staged_gpu();
    let mut rng = rng();
    for (len_q, len_kv) in [(2_100_000, 4)] {
        let q = random(&mut rng, &[1, 1, len_q, 4], 1.0);
        let k = random(&mut rng, &[1, 1, len_kv, 4], 1.0);
        let v = random(&mut rng, &[1, 1, len_kv, 4], 1.0);
        let runs = [
            (&gpu, AttentionPath::Auto),
            (&gpu, AttentionPath::ThreePass),
            (&gpu, AttentionPath::Fused),
            (&staged, AttentionPath::Fused),
        ];
        let want = reference::sdpa(&q, &k, &v, &SdpaOptions::default()).unwrap();
        let (rtol, atol) = tolerance(&want);
        for (i, (device, path)) in runs.into_iter().enumerate() {
            let what = format!("L {len_q} S {len_kv} {path:?} (run {i})");
            let opts = SdpaOptions {
                path,
                ..Default::default()
            };
            let got = scaled_dot_product_attention(device, &q, &k, &v, &opts)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_close(&what, &got, &want, rtol, atol);
        }
    }
}

/// Long rows of keys give the reference's answer or a `TooLarge` error, never a wrong one:
/// lavapipe stops every loop of a shader invocation after 65535 iterations in all, so there
/// the kernels whose loops would run longer are not used (the fused kernel walks the keys in
/// runs instead, one dispatch each), and `Auto` always answers. Elsewhere every path simply
/// runs. Causal alignments, a boolean mask and grouped-query heads go through the runs too.
#[test]
fn long_rows_of_keys_are_right_or_refused() {
    let gpu = gpu();
    let staged = staged_gpu();
    let mut rng = rng();
    // 36 query rows: the register-blocked fused kernel shares keys and values among 8
    // lanes of 4 rows where the device has subgroups, and walks these keys in runs.
    // 52412 keys at 8 rows: just past what the register-blocked P·V may walk with its
    // key-at-a-time recompute (taken for the NaN values behind blocked keys).
    for (len_q, len_kv, d) in [
        (1, 65536, 8),
        (4, 20000, 64),
        (3, 9000, 16),
        (36, 12000, 64),
        (8, 52412, 4),
    ] {
        let q = random(&mut rng, &[1, 4, len_q, d], 1.0);
        let k = random(&mut rng, &[1, 2, len_kv, d], 1.0);
        let v = random(&mut rng, &[1, 2, len_kv, d], 1.0);
        let mask = random_bool_mask(&mut rng, &[len_q, len_kv], 0.3);
        // Every 97th key blocked for every row (SDPA's polarity: true attends), its values
        // NaN: a key of probability 0 adds nothing, here also where a run of keys takes the
        // careful second walk.
        let blocked = |s: usize| s % 97 == 5;
        let nan_mask = Mask::bool(
            vec![len_q, len_kv],
            (0..len_q * len_kv)
                .map(|i| !blocked(i % len_kv) && rng.random_bool(0.7))
                .collect(),
        )
        .unwrap();
        let mut v_nan = v.clone();
        for (i, x) in v_nan.data.iter_mut().enumerate() {
            if blocked(i / d % len_kv) {
                *x = f32::NAN;
            }
        }
        let options = [
            ("plain", None, None, &v),
            ("causal top-left", None, Some(Causal::TopLeft), &v),
            ("causal bottom-right", None, Some(Causal::BottomRight), &v),
            ("masked", Some(&mask), None, &v),
            (
                "masked, NaN values where blocked",
                Some(&nan_mask),
                None,
                &v_nan,
            ),
        ];
        for (option, attn_mask, causal, v) in options {
            let base = SdpaOptions {
                attn_mask,
                causal,
                enable_gqa: true,
                ..Default::default()
            };
            let want = reference::sdpa(&q, &k, v, &base).unwrap();
            let (rtol, atol) = tolerance(&want);
            for (device, name) in [(&gpu, "adapter's tuning"), (&staged, "staged kernels")] {
                for path in [
                    AttentionPath::Auto,
                    AttentionPath::ThreePass,
                    AttentionPath::Fused,
                ] {
                    let what = format!("L {len_q} S {len_kv} d {d}, {option}, {name}, {path:?}");
                    let opts = SdpaOptions { path, ..base };
                    match scaled_dot_product_attention(device, &q, &k, v, &opts) {
                        Ok(got) => {
                            assert_close(&what, &got, &want, rtol, atol);
                        }
                        Err(Error::TooLarge { .. }) if path != AttentionPath::Auto => {
                            eprintln!("{what}: refused (TooLarge)");
                        }
                        Err(e) => panic!("{what}: {e}"),
                    }
                }
            }
        }
    }
}
