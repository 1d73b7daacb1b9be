//! The whole forward, one submit each: the `nn.MultiheadAttention` forward (projections
//! included) and `scaled_dot_product_attention` alone, each with the fused and the
//! three-pass attention core, at a few sizes: `cargo bench --bench forward [-- FILTER]`.
//! Upload and readback are outside the timing.

mod common;

use criterion::{BenchmarkId, Criterion, SamplingMode};
use rand::{SeedableRng, rngs::StdRng};
use wgpu_mha::{AttentionPath, Gpu, PreparedSdpa, SdpaOptions};

const CORES: [(&str, AttentionPath); 2] = [
    ("fused", AttentionPath::Fused),
    ("3pass", AttentionPath::ThreePass),
];

fn forward(c: &mut Criterion, gpu: &Gpu) {
    for (core, path) in CORES {
        let opts = common::mha_options(path);
        let mut group = c.benchmark_group(format!("forward/mha-{core}"));
        // Same iterations per sample: ten samples cost ten runs, not fifty-five.
        group.sampling_mode(SamplingMode::Flat);
        for size in &common::SIZES {
            let (module, x) = common::mha(gpu, size);
            let Ok(p) = module.prepare(&x, &x, &x, &opts) else {
                eprintln!("mha-{core}/{}: cannot prepare; skipped", size.id());
                continue;
            };
            group.bench_function(BenchmarkId::from_parameter(size.id()), |b| {
                b.iter(|| p.run().expect("forward runs"));
            });
        }
        group.finish();
    }

    for (core, path) in CORES {
        let opts = SdpaOptions {
            path,
            ..Default::default()
        };
        let mut group = c.benchmark_group(format!("forward/sdpa-{core}"));
        group.sampling_mode(SamplingMode::Flat);
        for size in &common::SIZES {
            let mut rng = StdRng::seed_from_u64(size.seq as u64);
            let shape = [size.batch, size.heads, size.seq, size.d_model / size.heads];
            let [q, k, v] = [0; 3].map(|_| common::random(&mut rng, &shape));
            let Ok(p) = PreparedSdpa::prepare(gpu, &q, &k, &v, &opts) else {
                eprintln!("sdpa-{core}/{}: cannot prepare; skipped", size.id());
                continue;
            };
            group.bench_function(BenchmarkId::from_parameter(size.id()), |b| {
                b.iter(|| p.run().expect("sdpa runs"));
            });
        }
        group.finish();
    }
}

fn main() {
    let mut c = common::criterion();
    forward(&mut c, &common::gpu());
    c.final_summary();
}
