//! Each kernel alone through `PreparedMha::run_kernel` on a prepared self-attention forward,
//! at a few sizes: the projection GEMM (`linear`), QKᵀ (`qk`), `softmax` and P·V (`av`) of
//! the three-pass core, and the `fused` core. `cargo bench --bench kernels [-- FILTER]`. Wall
//! clock of record + submit + wait, as the `bench` command's per-pass table.

mod common;

use criterion::{BenchmarkId, Criterion, SamplingMode};
use wgpu_mha::kernels::KERNEL_NAMES;
use wgpu_mha::{AttentionPath, Gpu};

/// Each kernel, and the attention core whose forward runs it (none asks for attention
/// weights, so no `head_mean`).
const KERNELS: [(&str, AttentionPath); 5] = [
    ("linear", AttentionPath::ThreePass),
    ("qk", AttentionPath::ThreePass),
    ("softmax", AttentionPath::ThreePass),
    ("av", AttentionPath::ThreePass),
    ("fused", AttentionPath::Fused),
];

fn kernels(c: &mut Criterion, gpu: &Gpu) {
    let modules: Vec<_> = common::SIZES
        .iter()
        .map(|size| (size.id(), common::mha(gpu, size)))
        .collect();
    for (kernel, path) in KERNELS {
        assert!(
            KERNEL_NAMES.contains(&kernel),
            "the library has no kernel {kernel:?}"
        );
        let opts = common::mha_options(path);
        let mut group = c.benchmark_group(format!("kernel/{kernel}"));
        // Same iterations per sample: ten samples cost ten runs, not fifty-five.
        group.sampling_mode(SamplingMode::Flat);
        for (id, (module, x)) in &modules {
            let p = match module.prepare(x, x, x, &opts) {
                Ok(p) if p.path() == path => p,
                Ok(_) | Err(_) => {
                    eprintln!("{kernel}/{id}: the device cannot run the {path:?} core; skipped");
                    continue;
                }
            };
            // Real values in every intermediate buffer before the kernel runs alone.
            p.run().expect("forward runs");
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| p.run_kernel(kernel).expect("kernel runs"));
            });
        }
        group.finish();
    }
}

fn main() {
    let mut c = common::criterion();
    kernels(&mut c, &common::gpu());
    c.final_summary();
}
