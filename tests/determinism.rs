mod common;

// The same inputs on the same adapter give bit-identical outputs, run after run: MHA with
// weights (averaged and per head), SDPA, several shapes, both attention paths, fresh modules,
// and a problem tiled block by block (three-pass) under a small memory budget on a dedicated
// Gpu.

use common::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use wgpu_mha::*;

const RUNS: usize = 3;

fn bits(t: &Tensor) -> Vec<u32> {
    t.data.iter().map(|v| v.to_bits()).collect()
}

#[track_caller]
fn identical(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape, b.shape, "{what}: shape");
    let (a, b) = (bits(a), bits(b));
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!(
            "{what}: element {i} differs between runs: {} vs {}",
            f32::from_bits(a[i]),
            f32::from_bits(b[i])
        );
    }
}

struct MhaShape {
    batch: usize,
    len: usize,
    kv_len: usize,
    embed: usize,
    heads: usize,
    kv_dims: Option<(usize, usize)>,
}

fn mha_shapes() -> Vec<MhaShape> {
    vec![
        MhaShape {
            batch: 1,
            len: 1,
            kv_len: 1,
            embed: 4,
            heads: 1,
            kv_dims: None,
        },
        MhaShape {
            batch: 2,
            len: 7,
            kv_len: 7,
            embed: 24,
            heads: 3,
            kv_dims: None,
        },
        MhaShape {
            batch: 3,
            len: 13,
            kv_len: 29,
            embed: 40,
            heads: 5,
            kv_dims: Some((12, 20)),
        },
        MhaShape {
            batch: 1,
            len: 70,
            kv_len: 67,
            embed: 64,
            heads: 4,
            kv_dims: None,
        },
    ]
}

fn mha_runs_identical(gpu: &Gpu, shape: &MhaShape, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (kdim, vdim) = shape.kv_dims.unwrap_or((shape.embed, shape.embed));
    let config = MhaConfig::new(shape.embed, shape.heads)
        .with_kv_dims(kdim, vdim)
        .with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let q = random(&mut rng, &[shape.batch, shape.len, shape.embed], 1.0);
    let self_attention = shape.kv_dims.is_none() && shape.len == shape.kv_len;
    let (k, v) = if self_attention {
        (q.clone(), q.clone())
    } else {
        (
            random(&mut rng, &[shape.batch, shape.kv_len, kdim], 1.0),
            random(&mut rng, &[shape.batch, shape.kv_len, vdim], 1.0),
        )
    };
    let mask = random_float_mask(&mut rng, &[shape.len, shape.kv_len]);
    // Weights averaged, per head (three-pass), and none on each path.
    let variants = [
        (true, true, AttentionPath::Auto),
        (true, false, AttentionPath::Auto),
        (false, true, AttentionPath::ThreePass),
        (false, true, AttentionPath::Fused),
    ];
    for (need_weights, average, path) in variants {
        let opts = MhaOptions {
            attn_mask: Some(&mask),
            causal: Some(Causal::BottomRight),
            need_weights,
            average_attn_weights: average,
            path,
            ..Default::default()
        };
        let mut first: Option<MhaOutput> = None;
        for run in 0..RUNS {
            // A fresh module every run (uploads must not matter), and two forwards on each.
            let mha = MultiHeadAttention::new(gpu, config, &weights).unwrap();
            let out = mha.forward(&q, &k, &v, &opts).unwrap();
            let out2 = mha.forward(&q, &k, &v, &opts).unwrap();
            identical("same module", &out.attn_output, &out2.attn_output);
            match &first {
                None => {
                    let want =
                        reference::mha_forward(&config, &weights, &q, &k, &v, &opts).unwrap();
                    let (rtol, atol) = tolerance(&want.attn_output);
                    assert_close(
                        "vs reference",
                        &out.attn_output,
                        &want.attn_output,
                        rtol,
                        atol,
                    );
                    first = Some(out);
                }
                Some(f) => {
                    let what = format!(
                        "MHA B{} L{} S{} E{} h{} weights {need_weights} average {average} \
                         {path:?}, run {run}",
                        shape.batch, shape.len, shape.kv_len, shape.embed, shape.heads
                    );
                    identical(&what, &out.attn_output, &f.attn_output);
                    if need_weights {
                        identical(
                            &format!("{what} weights"),
                            out.attn_weights.as_ref().unwrap(),
                            f.attn_weights.as_ref().unwrap(),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn mha_is_bit_identical_run_to_run() {
    let gpu = gpu();
    for (i, shape) in mha_shapes().iter().enumerate() {
        mha_runs_identical(&gpu, shape, 100 + i as u64);
    }
}

#[test]
fn sdpa_is_bit_identical_run_to_run() {
    let gpu = gpu();
    // (B, Hq, Hkv, L, S, d, dv)
    let shapes = [
        (1, 1, 1, 1, 1, 1, 1),
        (2, 4, 2, 9, 5, 16, 16),
        (1, 6, 3, 33, 47, 64, 32),
        (3, 2, 2, 5, 130, 7, 13),
        (1, 8, 1, 1, 300, 128, 128),
    ];
    for (i, &(b, hq, hkv, l, s, d, dv)) in shapes.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(200 + i as u64);
        let q = random(&mut rng, &[b, hq, l, d], 1.0);
        let k = random(&mut rng, &[b, hkv, s, d], 1.0);
        let v = random(&mut rng, &[b, hkv, s, dv], 1.0);
        let mask = random_bool_mask(&mut rng, &[b, 1, l, s], 0.8);
        let cases = [(None, None), (Some(&mask), Some(Causal::TopLeft))];
        for ((mask, causal), path) in cases
            .into_iter()
            .flat_map(|c| [AttentionPath::ThreePass, AttentionPath::Fused].map(|p| (c, p)))
        {
            let opts = SdpaOptions {
                attn_mask: mask,
                causal,
                enable_gqa: true,
                path,
                ..Default::default()
            };
            let first = scaled_dot_product_attention(&gpu, &q, &k, &v, &opts).unwrap();
            let want = reference::sdpa(&q, &k, &v, &opts).unwrap();
            let (rtol, atol) = tolerance(&want);
            assert_close("vs reference", &first, &want, rtol, atol);
            for run in 1..RUNS {
                let out = scaled_dot_product_attention(&gpu, &q, &k, &v, &opts).unwrap();
                identical(
                    &format!("SDPA shape {i} causal {causal:?}, run {run}"),
                    &out,
                    &first,
                );
            }
            // The prepared form gives the same bits as the one-call form.
            let prepared = PreparedSdpa::prepare(&gpu, &q, &k, &v, &opts).unwrap();
            for _ in 0..2 {
                prepared.run().unwrap();
                identical("prepared", &prepared.read().unwrap(), &first);
            }
        }
    }
}

#[test]
fn tiled_problem_is_bit_identical_run_to_run() {
    // A dedicated Gpu: the budget is per Gpu, and the shared one must keep the default.
    let gpu = Gpu::new().expect("a wgpu adapter");
    let mut rng = StdRng::seed_from_u64(300);
    let (batch, len, kv_len, embed, heads) = (3, 41, 37, 24, 3);
    // One query row of scores over every head is heads·S·4 bytes; allow 4 rows per block.
    let budget = (heads * kv_len * 4 * 4) as u64;
    gpu.set_memory_budget(budget);
    assert!(((batch * heads * len * kv_len * 4) as u64) > 20 * budget);
    let config = MhaConfig::new(embed, heads);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
    let q = random(&mut rng, &[len, batch, embed], 1.0);
    let kv = random(&mut rng, &[kv_len, batch, embed], 1.0);
    let kpm = random_bool_mask(&mut rng, &[batch, kv_len], 0.2);
    let untiled = Gpu::new().unwrap();
    // The budget bounds the three-pass path's score blocks (the fused one stores none).
    for need_weights in [false, true] {
        let opts = MhaOptions {
            key_padding_mask: Some(&kpm),
            causal: Some(Causal::TopLeft),
            need_weights,
            average_attn_weights: false,
            path: AttentionPath::ThreePass,
            ..Default::default()
        };
        let first = mha.forward(&q, &kv, &kv, &opts).unwrap();
        let want = reference::mha_forward(&config, &weights, &q, &kv, &kv, &opts).unwrap();
        let (rtol, atol) = tolerance(&want.attn_output);
        assert_close(
            "tiled vs reference",
            &first.attn_output,
            &want.attn_output,
            rtol,
            atol,
        );
        for run in 1..RUNS {
            let out = mha.forward(&q, &kv, &kv, &opts).unwrap();
            identical(
                &format!("tiled MHA run {run}"),
                &out.attn_output,
                &first.attn_output,
            );
            if need_weights {
                identical(
                    "tiled weights",
                    out.attn_weights.as_ref().unwrap(),
                    first.attn_weights.as_ref().unwrap(),
                );
            }
        }
        // SDPA under the same budget.
        let (qs, ks) = (
            random(&mut rng, &[2, heads, len, 8], 1.0),
            random(&mut rng, &[2, heads, kv_len, 8], 1.0),
        );
        let opts = SdpaOptions {
            path: AttentionPath::ThreePass,
            ..Default::default()
        };
        let first = scaled_dot_product_attention(&gpu, &qs, &ks, &ks, &opts).unwrap();
        for run in 1..RUNS {
            let out = scaled_dot_product_attention(&gpu, &qs, &ks, &ks, &opts).unwrap();
            identical(&format!("tiled SDPA run {run}"), &out, &first);
        }
        // For the record: does the blocking change any bit against the untiled default?
        let out = scaled_dot_product_attention(&untiled, &qs, &ks, &ks, &opts).unwrap();
        let differ = bits(&out)
            .iter()
            .zip(bits(&first))
            .filter(|(a, b)| **a != *b)
            .count();
        eprintln!(
            "tiled vs untiled SDPA: {differ} of {} elements differ in bits",
            out.numel()
        );
        let want = reference::sdpa(&qs, &ks, &ks, &opts).unwrap();
        let (rtol, atol) = tolerance(&want);
        assert_close("tiled SDPA vs reference", &first, &want, rtol, atol);
    }
}
