mod common;

// One `MultiHeadAttention` (and one `Gpu`) shared by 8 threads, each running many small
// forwards and SDPA calls at once: every result must be bit-identical to the same call made
// alone, and match the CPU reference. `WGPU_MHA_SOAK=1` runs 20 times as many calls
// (`WGPU_MHA_SOAK=n` multiplies by n).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wgpu_mha::*;

/// What must be shareable between threads, checked at compile time.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Gpu>();
    send_sync::<MultiHeadAttention>();
    send_sync::<PreparedMha<'static>>();
    send_sync::<PreparedSdpa>();
    send_sync::<MhaWeights>();
    send_sync::<Error>();
};

const THREADS: usize = 8;

fn soak() -> usize {
    match std::env::var("WGPU_MHA_SOAK").ok().as_deref() {
        None | Some("") | Some("0") => 1,
        Some("1") => 20,
        Some(n) => n.parse().unwrap_or(20),
    }
}

/// One precomputed call: inputs, options, the result alone on the GPU, the reference.
struct MhaJob {
    q: Tensor,
    kv: Option<(Tensor, Tensor)>,
    mask: Option<Mask>,
    causal: Option<Causal>,
    need_weights: bool,
    path: AttentionPath,
    alone: MhaOutput,
}

impl MhaJob {
    fn run(&self, mha: &MultiHeadAttention) -> MhaOutput {
        let opts = MhaOptions {
            key_padding_mask: self.mask.as_ref(),
            causal: self.causal,
            need_weights: self.need_weights,
            path: self.path,
            ..Default::default()
        };
        match &self.kv {
            Some((k, v)) => mha.forward(&self.q, k, v, &opts),
            None => mha.forward(&self.q, &self.q, &self.q, &opts),
        }
        .unwrap()
    }

    fn reference(&self, config: &MhaConfig, weights: &MhaWeights) -> MhaOutput {
        let opts = MhaOptions {
            key_padding_mask: self.mask.as_ref(),
            causal: self.causal,
            need_weights: self.need_weights,
            ..Default::default()
        };
        let (k, v) = match &self.kv {
            Some((k, v)) => (k, v),
            None => (&self.q, &self.q),
        };
        reference::mha_forward(config, weights, &self.q, k, v, &opts).unwrap()
    }
}

struct SdpaJob {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: Option<Causal>,
    path: AttentionPath,
    alone: Tensor,
}

impl SdpaJob {
    fn opts(&self) -> SdpaOptions<'static> {
        SdpaOptions {
            causal: self.causal,
            enable_gqa: true,
            path: self.path,
            ..Default::default()
        }
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn one_module_from_eight_threads() {
    let gpu = gpu();
    let mut rng = rng();
    let (e, heads) = (24, 3);
    let config = MhaConfig::new(e, heads).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = Arc::new(MultiHeadAttention::new(&gpu, config, &weights).unwrap());

    // Different shapes and options, so that concurrent calls have different buffer sizes,
    // block plans and readbacks.
    let mut mha_jobs = Vec::new();
    for i in 0..12 {
        let (b, l, s) = (1 + i % 3, 1 + (i * 5) % 11, 1 + (i * 7) % 13);
        let q = random(&mut rng, &[b, l, e], 1.0);
        let kv = (i % 2 == 0).then(|| {
            (
                random(&mut rng, &[b, s, e], 1.0),
                random(&mut rng, &[b, s, e], 1.0),
            )
        });
        let s = if kv.is_some() { s } else { l };
        let mask = (i % 3 == 1).then(|| random_bool_mask(&mut rng, &[b, s], 0.3));
        let mut job = MhaJob {
            q,
            kv,
            mask,
            causal: [None, Some(Causal::TopLeft), Some(Causal::BottomRight)][i % 3],
            need_weights: i % 4 == 0,
            // Weights need the three-pass path (Auto picks it); the rest alternate.
            path: match i % 4 {
                0 => AttentionPath::Auto,
                2 => AttentionPath::ThreePass,
                _ => AttentionPath::Fused,
            },
            alone: MhaOutput {
                attn_output: Tensor::full([0], 0.0),
                attn_weights: None,
            },
        };
        job.alone = job.run(&mha);
        let want = job.reference(&config, &weights);
        let (rtol, atol) = tolerance(&want.attn_output);
        assert_close(
            "alone",
            &job.alone.attn_output,
            &want.attn_output,
            rtol,
            atol,
        );
        mha_jobs.push(job);
    }
    let mut sdpa_jobs = Vec::new();
    for i in 0..6 {
        let (hkv, group, l, s, d) = (1 + i % 2, 1 + i % 3, 2 + i, 3 + 2 * i, 4 + 4 * i);
        let mut job = SdpaJob {
            q: random(&mut rng, &[2, hkv * group, l, d], 1.0),
            k: random(&mut rng, &[2, hkv, s, d], 1.0),
            v: random(&mut rng, &[2, hkv, s, d + 1], 1.0),
            causal: (i % 2 == 1).then_some(Causal::BottomRight),
            path: [AttentionPath::ThreePass, AttentionPath::Fused][(i / 2) % 2],
            alone: Tensor::full([0], 0.0),
        };
        job.alone =
            scaled_dot_product_attention(&gpu, &job.q, &job.k, &job.v, &job.opts()).unwrap();
        let want = reference::sdpa(&job.q, &job.k, &job.v, &job.opts()).unwrap();
        let (rtol, atol) = tolerance(&want);
        assert_close("sdpa alone", &job.alone, &want, rtol, atol);
        sdpa_jobs.push(job);
    }
    let mha_jobs = Arc::new(mha_jobs);
    let sdpa_jobs = Arc::new(sdpa_jobs);

    let per_thread = 40 * soak();
    let done = Arc::new(AtomicUsize::new(0));
    let start = std::time::Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (mha, mha_jobs, sdpa_jobs, done, gpu) = (
                mha.clone(),
                mha_jobs.clone(),
                sdpa_jobs.clone(),
                done.clone(),
                gpu.clone(),
            );
            let seed: u64 = rng.random();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                for n in 0..per_thread {
                    if rng.random_bool(0.75) {
                        let i = rng.random_range(0..mha_jobs.len());
                        let job = &mha_jobs[i];
                        let got = job.run(&mha);
                        assert_eq!(
                            bits(&got.attn_output),
                            bits(&job.alone.attn_output),
                            "thread {t}, call {n}: MHA job {i} differs from the same call alone"
                        );
                        assert_eq!(
                            got.attn_weights.as_ref().map(bits),
                            job.alone.attn_weights.as_ref().map(bits),
                            "thread {t}, call {n}: MHA job {i} weights"
                        );
                    } else {
                        let i = rng.random_range(0..sdpa_jobs.len());
                        let job = &sdpa_jobs[i];
                        let got =
                            scaled_dot_product_attention(&gpu, &job.q, &job.k, &job.v, &job.opts())
                                .unwrap();
                        assert_eq!(
                            bits(&got),
                            bits(&job.alone),
                            "thread {t}, call {n}: SDPA job {i} differs from the same call alone"
                        );
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for (t, thread) in threads.into_iter().enumerate() {
        if let Err(e) = thread.join() {
            std::panic::resume_unwind(Box::new(format!("thread {t} failed: {e:?}")));
        }
    }
    eprintln!(
        "{} calls from {THREADS} threads in {:.2?}",
        done.load(Ordering::Relaxed),
        start.elapsed()
    );
    assert_eq!(done.load(Ordering::Relaxed), THREADS * per_thread);
}

/// Errors raised on some threads (bad inputs) never leak into the
/// results or errors of calls running at the same time on others.
#[test]
fn errors_on_some_threads_do_not_leak_into_others() {
    let gpu = gpu();
    let mut rng = rng();
    let config = MhaConfig::new(16, 2);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = Arc::new(MultiHeadAttention::new(&gpu, config, &weights).unwrap());
    let x = Arc::new(random(&mut rng, &[5, 2, 16], 1.0));
    let alone = mha.forward(&x, &x, &x, &MhaOptions::default()).unwrap();
    let alone = Arc::new(bits(&alone.attn_output));
    let per_thread = 25 * soak();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (mha, x, alone) = (mha.clone(), x.clone(), alone.clone());
            std::thread::spawn(move || {
                let bad = Tensor::full([5, 2, 17], 0.5);
                for n in 0..per_thread {
                    if t % 2 == 0 {
                        let got = mha.forward(&x, &x, &x, &MhaOptions::default()).unwrap();
                        assert_eq!(bits(&got.attn_output), *alone, "thread {t}, call {n}");
                    } else {
                        let err = mha
                            .forward(&bad, &bad, &bad, &MhaOptions::default())
                            .unwrap_err();
                        assert!(
                            matches!(
                                err,
                                Error::Shape {
                                    tensor: "query",
                                    ..
                                }
                            ),
                            "thread {t}, call {n}: {err:?}"
                        );
                    }
                }
            })
        })
        .collect();
    for (t, thread) in threads.into_iter().enumerate() {
        if let Err(e) = thread.join() {
            std::panic::resume_unwind(Box::new(format!("thread {t} failed: {e:?}")));
        }
    }
}
