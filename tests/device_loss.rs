mod common;

// A destroyed device (a dedicated one: never the shared test adapter) makes every call —
// forward, SDPA, prepare, run, read, MultiHeadAttention::new — return `Error::DeviceLost`,
// never a panic, a hang or a bare wgpu error; dropping what lived on it is quiet; and a
// fresh `Gpu::new()` afterwards works in the same process. Destroyed while forwards are in
// flight on other threads, every call still returns, none panics, and each thread ends on
// `DeviceLost`; a call caught half-way may report a captured `Error::Wgpu` (wgpu invalidates
// the device before the loss callback runs), but never a readback failure.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use wgpu_mha::*;

/// How one call ended.
enum Outcome {
    Ok,
    DeviceLost,
    Wgpu(String),
    Other(String),
    Panicked(String),
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::Ok => "Ok".into(),
            Outcome::DeviceLost => "Err(DeviceLost)".into(),
            Outcome::Wgpu(m) => format!("Err(Wgpu {{ {m} }})"),
            Outcome::Other(e) => format!("Err({e})"),
            Outcome::Panicked(m) => format!("panicked: {m}"),
        }
    }
}

fn outcome<T>(f: impl FnOnce() -> Result<T>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(Error::DeviceLost(_))) => Outcome::DeviceLost,
        Ok(Err(Error::Wgpu { during, message })) => Outcome::Wgpu(format!("{during}: {message}")),
        Ok(Err(other)) => Outcome::Other(format!("{other:?}")),
        Err(panic) => Outcome::Panicked(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

#[test]
fn every_call_after_destroy_is_an_error_and_a_fresh_gpu_works() {
    // Everything on a thread of its own, so that a hang fails the test instead of blocking.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(run()).ok();
    });
    let outcomes = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(o) => o,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("a call on the destroyed device hung"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the device-loss thread panicked outside a call")
        }
    };
    // wgpu reports the loss from `Device::destroy` itself, so every call already knows:
    // `Error::Wgpu` (a captured validation error on the destroyed device) would be a
    // regression here, as would a panic.
    let mut bad = Vec::new();
    for (call, outcome) in &outcomes {
        eprintln!("{call:<44} {}", outcome.describe());
        let expected = if call.starts_with("drop") {
            matches!(outcome, Outcome::Ok)
        } else {
            matches!(outcome, Outcome::DeviceLost)
        };
        if !expected {
            bad.push(format!("{call}: {}", outcome.describe()));
        }
    }
    assert!(
        bad.is_empty(),
        "calls after Device::destroy must return Error::DeviceLost (and drops be quiet):\n{}",
        bad.join("\n")
    );
}

fn run() -> Vec<(&'static str, Outcome)> {
    let mut rng = StdRng::seed_from_u64(21);
    let gpu = Gpu::new().expect("a wgpu adapter");
    let config = MhaConfig::new(8, 2);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
    let x = random(&mut rng, &[3, 2, 8], 1.0);
    let (q, kv) = (
        random(&mut rng, &[1, 2, 3, 4], 1.0),
        random(&mut rng, &[1, 2, 5, 4], 1.0),
    );
    let sdpa_opts = SdpaOptions::default();
    let mha_opts = MhaOptions {
        need_weights: true,
        ..Default::default()
    };
    // Prepared before the loss, run after it.
    let prepared_sdpa = PreparedSdpa::prepare(&gpu, &q, &kv, &kv, &sdpa_opts).unwrap();
    let prepared_mha = mha.prepare(&x, &x, &x, &mha_opts).unwrap();
    prepared_mha.run().unwrap();
    mha.forward(&x, &x, &x, &mha_opts).unwrap();

    gpu.device().destroy();

    let mut out: Vec<(&'static str, Outcome)> = vec![
        (
            "scaled_dot_product_attention",
            outcome(|| scaled_dot_product_attention(&gpu, &q, &kv, &kv, &sdpa_opts)),
        ),
        (
            "MultiHeadAttention::forward",
            outcome(|| mha.forward(&x, &x, &x, &mha_opts)),
        ),
        (
            "MultiHeadAttention::forward (fused)",
            outcome(|| mha.forward(&x, &x, &x, &MhaOptions::default())),
        ),
        (
            "MultiHeadAttention::new",
            outcome(|| MultiHeadAttention::new(&gpu, config, &weights)),
        ),
        (
            "MultiHeadAttention::prepare",
            outcome(|| mha.prepare(&x, &x, &x, &mha_opts)),
        ),
        (
            "PreparedSdpa::prepare",
            outcome(|| PreparedSdpa::prepare(&gpu, &q, &kv, &kv, &sdpa_opts)),
        ),
        ("PreparedSdpa::run", outcome(|| prepared_sdpa.run())),
        ("PreparedSdpa::read", outcome(|| prepared_sdpa.read())),
        (
            "PreparedSdpa::run_kernel",
            outcome(|| prepared_sdpa.run_kernel(wgpu_mha::kernels::KERNEL_NAMES[0])),
        ),
        ("PreparedMha::run", outcome(|| prepared_mha.run())),
        ("PreparedMha::read", outcome(|| prepared_mha.read())),
        ("Gpu::check_alive", outcome(|| gpu.check_alive())),
        (
            "scaled_dot_product_attention (again)",
            outcome(|| scaled_dot_product_attention(&gpu, &q, &kv, &kv, &sdpa_opts)),
        ),
    ];
    // Dropping everything that lives on the lost device must not panic either.
    out.push((
        "drop PreparedMha",
        outcome(move || {
            drop(prepared_mha);
            Ok(())
        }),
    ));
    out.push((
        "drop MultiHeadAttention, PreparedSdpa, Gpu",
        outcome(move || {
            drop(mha);
            drop(prepared_sdpa);
            drop(gpu);
            Ok(())
        }),
    ));

    // A fresh device in the same process works and is right.
    let fresh = Gpu::new().expect("a fresh Gpu after a device loss");
    let got = scaled_dot_product_attention(&fresh, &q, &kv, &kv, &sdpa_opts).unwrap();
    let want = reference::sdpa(&q, &kv, &kv, &sdpa_opts).unwrap();
    let (rtol, atol) = tolerance(&want);
    assert_close("fresh Gpu after a loss", &got, &want, rtol, atol);
    let mha = MultiHeadAttention::new(&fresh, config, &weights).unwrap();
    let got = mha.forward(&x, &x, &x, &mha_opts).unwrap();
    let want = reference::mha_forward(&config, &weights, &x, &x, &x, &mha_opts).unwrap();
    let (rtol, atol) = tolerance(&want.attn_output);
    assert_close("fresh MHA", &got.attn_output, &want.attn_output, rtol, atol);
    // The shared test adapter is unaffected too.
    gpu_still_works();
    out
}

fn gpu_still_works() {
    let t = Tensor::full([1, 1, 2, 4], 0.5);
    scaled_dot_product_attention(&gpu(), &t, &t, &t, &SdpaOptions::default()).unwrap();
}

/// The device destroyed while other threads are in the middle of forwards: every call still
/// returns (a result, or `DeviceLost` once the loss is known; a captured `Wgpu` error is
/// tolerated for a call caught half-way), none panics or hangs, and the threads all finish.
#[test]
fn destroy_during_forwards_on_other_threads() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Several rounds, the loss landing at different points of the calls in flight.
        let mut all = Vec::new();
        for sleep_ms in [3, 8, 15, 25, 40, 60, 5, 12, 20, 30, 50, 80] {
            let mut round = destroy_mid_flight(sleep_ms);
            let last = round.pop();
            all.extend(round);
            all.extend(last);
        }
        tx.send(all).ok();
    });
    let outcomes = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(o) => o,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("a forward hung across Device::destroy"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test thread panicked"),
    };
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    eprintln!(
        "{} calls: {} Ok, {} DeviceLost, {} Wgpu",
        outcomes.len(),
        count(|o| matches!(o, Outcome::Ok)),
        count(|o| matches!(o, Outcome::DeviceLost)),
        count(|o| matches!(o, Outcome::Wgpu(_))),
    );
    for o in &outcomes {
        if let Outcome::Wgpu(_) = o {
            eprintln!("{}", o.describe());
        }
        assert!(
            matches!(o, Outcome::Ok | Outcome::DeviceLost | Outcome::Wgpu(_)),
            "{}",
            o.describe()
        );
    }
    // Once lost, it stays lost: every thread ended on a DeviceLost.
    assert!(matches!(outcomes.last(), Some(Outcome::DeviceLost)));
    // A call caught by the loss half-way must say so too: not a readback failure (`Other`).
}

fn destroy_mid_flight(sleep_ms: u64) -> Vec<Outcome> {
    let mut rng = StdRng::seed_from_u64(22);
    let gpu = Gpu::new().expect("a wgpu adapter");
    let config = MhaConfig::new(32, 4);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = std::sync::Arc::new(MultiHeadAttention::new(&gpu, config, &weights).unwrap());
    let x = std::sync::Arc::new(random(&mut rng, &[64, 2, 32], 1.0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (mha, x) = (mha.clone(), x.clone());
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                loop {
                    let opts = MhaOptions {
                        need_weights: t % 2 == 0,
                        ..Default::default()
                    };
                    let o = outcome(|| mha.forward(&x, &x, &x, &opts));
                    let lost = matches!(o, Outcome::DeviceLost);
                    outcomes.push(o);
                    if lost || outcomes.len() > 10_000 {
                        return outcomes;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(sleep_ms));
    gpu.device().destroy();
    let mut all = Vec::new();
    for t in threads {
        let mut o = t.join().expect("a forward thread panicked");
        // Keep each thread's last outcome last.
        let last = o.pop();
        all.extend(o);
        all.extend(last);
    }
    // Put one DeviceLost last (every thread ended on one).
    let i = all
        .iter()
        .rposition(|o| matches!(o, Outcome::DeviceLost))
        .unwrap_or(0);
    let last = all.remove(i);
    all.push(last);
    all
}
