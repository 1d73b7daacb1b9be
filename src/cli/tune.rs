//! `wgpu-mha tune`: measures the kernel configurations that fit this adapter on small
//! representative problems, keeps the fastest of each family, and caches the result for the
//! adapter (see `wgpu_mha::tuning`). Seconds, not minutes: a handful of candidates each.

use std::time::Instant;

use clap::Args;
use wgpu_mha::kernels::fused::{self, BLOCKS};
use wgpu_mha::tuning::{self, DirectTiles, GemmTiles};
use wgpu_mha::{
    AttentionPath, Gpu, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, PreparedSdpa,
    Result, SdpaOptions, Tensor, Tuning,
};

use super::{DeviceArgs, Outcome, describe};

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Timed runs per candidate (the fastest counts).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measure and print, but do not write the cache.
    #[arg(long)]
    no_save: bool,
}

const GEMM_CANDIDATES: [(u32, u32, u32); 8] = [
    (8, 8, 32),
    (8, 8, 16),
    (16, 8, 16),
    (8, 16, 16),
    (16, 16, 16),
    (16, 8, 32),
    (8, 16, 32),
    (4, 8, 32),
];

/// Softmax (whole rows per invocation, invocations per workgroup, subgroup merge: used only
/// where the device has subgroup operations, and only by a workgroup per row).
const SOFTMAX_CANDIDATES: [(bool, u32, bool); 14] = [
    (false, 8, false),
    (false, 16, false),
    (false, 32, false),
    (false, 64, false),
    (false, 128, false),
    (false, 256, false),
    (false, 16, true),
    (false, 32, true),
    (false, 64, true),
    (false, 128, true),
    (false, 256, true),
    (true, 8, false),
    (true, 32, false),
    (true, 64, false),
];

/// P·V tiles (wg_x, wg_y, bk); `None`: derived from the GEMM tiles.
const AV_CANDIDATES: [Option<(u32, u32, u32)>; 6] = [
    None,
    Some((8, 4, 16)),
    Some((8, 8, 16)),
    Some((8, 8, 32)),
    Some((8, 16, 16)),
    Some((4, 8, 16)),
];

/// Workgroups (wg_x, wg_y) of the register-blocked QKᵀ and P·V; `None`: the staged kernels.
const DIRECT_CANDIDATES: [Option<(u32, u32)>; 6] = [
    None,
    Some((8, 8)),
    Some((8, 4)),
    Some((4, 8)),
    Some((16, 8)),
    Some((8, 16)),
];

/// Workgroups the fused kernel aims at by splitting keys (0: never split).
const SPLIT_CANDIDATES: [u32; 4] = [0, 256, 1024, 4096];

/// Invocations per workgroup of the register-blocked fused kernel; `None`: the staged one.
const FUSED_DIRECT_CANDIDATES: [Option<u32>; 5] = [None, Some(8), Some(16), Some(32), Some(64)];

/// Deterministic, non-zero inputs.
fn tensor(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    Tensor::new(shape.to_vec(), data).expect("shape and data agree")
}

/// Untimed warm-up per candidate: at least one run and this long, since a GPU raises its
/// clocks only under sustained load.
const WARM_UP: std::time::Duration = std::time::Duration::from_millis(200);

/// Fastest of `runs` runs of `f`, in milliseconds, after the warm-up.
fn fastest(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    while start.elapsed() < WARM_UP {
        f()?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

/// The device with its kernels built for `tuning`, or why it cannot run it. One device
/// serves every candidate: drivers limit how many devices a process may open (an NVIDIA
/// driver refused after 28).
fn open(probe: &Gpu, tuning: Tuning) -> Result<Gpu> {
    probe.with_tuning(tuning)
}

/// The fused path of the SDPA probe under `tuning`.
fn time_fused(probe: &Gpu, tuning: Tuning, runs: usize) -> Result<f64> {
    time_sdpa(&open(probe, tuning)?, AttentionPath::Fused, None, runs)
}

/// Tokens of the MHA whose projections time the linear kernel: the SDPA probe's query rows.
fn gemm_tokens(gpu: &Gpu) -> usize {
    probe_shape(gpu)[2]
}

/// The linear kernel (in- and out-projections of a 512-wide MHA of [`gemm_tokens`]).
fn time_gemm(gpu: &Gpu, runs: usize) -> Result<f64> {
    let config = MhaConfig::new(512, 8).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rand::rng());
    let mha = MultiHeadAttention::new(gpu, config, &weights)?;
    let x = tensor(&[1, gemm_tokens(gpu), 512], 1);
    let prepared = mha.prepare(&x, &x, &x, &MhaOptions::default())?;
    prepared.run()?;
    fastest(runs, || prepared.run_kernel("linear"))
}

/// The SDPA probe of the device type ([`tuning::sdpa_probe`]) on `path` (`kernel` alone if
/// given).
fn time_sdpa(gpu: &Gpu, path: AttentionPath, kernel: Option<&str>, runs: usize) -> Result<f64> {
    time_sdpa_shape(gpu, probe_shape(gpu), path, kernel, runs)
}

fn probe_shape(gpu: &Gpu) -> [usize; 5] {
    tuning::sdpa_probe(gpu.adapter_info().device_type)
}

/// The SDPA probe as the families' titles name it.
fn probe_name(gpu: &Gpu) -> String {
    let [b, h, l, s, d] = probe_shape(gpu);
    format!("B{b} H{h} L{l} S{s} d{d}")
}

/// An SDPA call of shape `[batch, heads, L, S, d]` on `path`, prepared.
fn prepare_sdpa(
    gpu: &Gpu,
    [b, h, l, s, d]: [usize; 5],
    path: AttentionPath,
) -> Result<PreparedSdpa> {
    let (q, k, v) = (
        tensor(&[b, h, l, d], 1),
        tensor(&[b, h, s, d], 2),
        tensor(&[b, h, s, d], 3),
    );
    let opts = SdpaOptions {
        path,
        ..Default::default()
    };
    PreparedSdpa::prepare(gpu, &q, &k, &v, &opts)
}

/// SDPA of shape `[batch, heads, L, S, d]` on `path` (`kernel` alone if given).
fn time_sdpa_shape(
    gpu: &Gpu,
    shape: [usize; 5],
    path: AttentionPath,
    kernel: Option<&str>,
    runs: usize,
) -> Result<f64> {
    let prepared = prepare_sdpa(gpu, shape, path)?;
    prepared.run()?;
    fastest(runs, || match kernel {
        Some(name) => prepared.run_kernel(name),
        None => prepared.run(),
    })
}

/// Measures each candidate; prints one line each; returns the fastest.
fn pick<T: Copy + std::fmt::Debug>(
    family: &str,
    candidates: impl IntoIterator<Item = T>,
    mut measure: impl FnMut(T) -> Result<f64>,
) -> Option<T> {
    println!("\n{family}:");
    let mut best: Option<(T, f64)> = None;
    for c in candidates {
        match measure(c) {
            Ok(ms) => {
                println!("  {c:?}: {ms:.2} ms");
                if best.is_none_or(|(_, b)| ms < b) {
                    best = Some((c, ms));
                }
            }
            Err(e) => println!("  {c:?}: skipped ({e})"),
        }
    }
    if let Some((c, ms)) = best {
        println!("  → {c:?} ({ms:.2} ms)");
    }
    best.map(|(c, _)| c)
}

pub fn run(device: &DeviceArgs, args: &TuneArgs) -> Result<Outcome> {
    let start = Instant::now();
    let probe = device.open()?;
    let info = probe.adapter_info().clone();
    // Candidates not measured (or failing everywhere) keep the adapter's defaults.
    let base = Tuning::for_adapter(&info, probe.device().features());
    let probe_name = probe_name(&probe);
    println!("adapter: {}", describe(&info));
    println!(
        "times: wall clock, fastest of {} runs after a warm-up",
        args.runs
    );

    // Each family is measured on the winners so far (the adapter's defaults until
    // measured), and its winner joins them; a family of which no candidate ran keeps its
    // default.
    let mut tuned = base;

    // The staged tiles serve the layouts the register-blocked linear kernel cannot read
    // (and every call where the tuning has none): measured with it off, or every
    // candidate would time the same register-blocked kernel.
    if let Some((wg_x, wg_y, bk)) = pick(
        &format!(
            "GEMM tiles (wg_x, wg_y, bk) — staged linear kernel, projections of B1 L{} E512",
            gemm_tokens(&probe)
        ),
        GEMM_CANDIDATES,
        |(wg_x, wg_y, bk)| {
            let gemm = GemmTiles { wg_x, wg_y, bk };
            let tuning = Tuning {
                gemm,
                direct: None,
                ..tuned
            };
            time_gemm(&open(&probe, tuning)?, args.runs)
        },
    ) {
        tuned.gemm = GemmTiles { wg_x, wg_y, bk };
    }

    if let Some((whole_rows, wg, subgroups)) = pick(
        &format!(
            "softmax (whole rows per invocation, invocations per workgroup, subgroup merge) — scores of SDPA {probe_name}"
        ),
        SOFTMAX_CANDIDATES,
        |(whole_rows, wg, subgroups)| {
            if subgroups && !probe.device().features().contains(wgpu::Features::SUBGROUP) {
                let why = "the device has no subgroup operations";
                return Err(wgpu_mha::Error::Config(why.into()));
            }
            let tuning = Tuning {
                softmax_wg: wg,
                softmax_whole_rows: whole_rows,
                softmax_subgroups: subgroups,
                ..tuned
            };
            let gpu = open(&probe, tuning)?;
            time_sdpa(&gpu, AttentionPath::ThreePass, Some("softmax"), args.runs)
        },
    ) {
        tuned.softmax_whole_rows = whole_rows;
        tuned.softmax_wg = wg;
        tuned.softmax_subgroups = subgroups;
    }

    // The staged P·V tiles serve layouts the register-blocked kernel cannot read (and every
    // call where the tuning has none): measured with it off.
    if let Some(tiles) = pick(
        &format!(
            "staged P·V tiles (wg_x, wg_y, bk; None: from the GEMM tiles) — P·V of SDPA {probe_name}"
        ),
        AV_CANDIDATES,
        |tiles| {
            let tuning = Tuning {
                av: tiles.map(|(wg_x, wg_y, bk)| GemmTiles { wg_x, wg_y, bk }),
                direct: None,
                ..tuned
            };
            let gpu = open(&probe, tuning)?;
            time_sdpa(&gpu, AttentionPath::ThreePass, Some("av"), args.runs)
        },
    ) {
        tuned.av = tiles.map(|(wg_x, wg_y, bk)| GemmTiles { wg_x, wg_y, bk });
    }

    if let Some(shape) = pick(
        &format!(
            "register-blocked QKᵀ, P·V and linear (wg_x, wg_y; None: staged) — three-pass SDPA {probe_name}"
        ),
        DIRECT_CANDIDATES,
        |shape| {
            let direct = shape.map(|(wg_x, wg_y)| DirectTiles { wg_x, wg_y });
            let gpu = open(&probe, Tuning { direct, ..tuned })?;
            time_sdpa(&gpu, AttentionPath::ThreePass, None, args.runs)
        },
    ) {
        tuned.direct = shape.map(|(wg_x, wg_y)| DirectTiles { wg_x, wg_y });
    }

    // Only where the winner's groups of rows are one subgroup of this device.
    if tuned.direct.is_some()
        && let Some(subgroups) = pick(
            &format!(
                "register-blocked rows shared through subgroups — three-pass SDPA {probe_name}"
            ),
            [false, true],
            |subgroups| {
                let gpu = open(
                    &probe,
                    Tuning {
                        direct_subgroups: subgroups,
                        ..tuned
                    },
                )?;
                if gpu.direct_subgroups() != subgroups {
                    let why = "the device's subgroups are not direct.wg_x invocations wide";
                    return Err(wgpu_mha::Error::Config(why.into()));
                }
                time_sdpa(&gpu, AttentionPath::ThreePass, None, args.runs)
            },
        )
    {
        tuned.direct_subgroups = subgroups;
    }

    // The staged fused kernel's block, measured with the register-blocked one off.
    if let Some(block) = pick(
        &format!("fused block (query rows, keys) — SDPA {probe_name}"),
        BLOCKS,
        |block| {
            let tuning = Tuning {
                fused_block: Some(block),
                fused_direct: None,
                ..tuned
            };
            time_fused(&probe, tuning, args.runs)
        },
    ) {
        tuned.fused_block = Some(block);
    }

    // The staged kernel as it runs (with the key splits so far); the register-blocked one
    // without key splits, which it does not have. A workgroup that would not fit the
    // device's workgroup memory (it would run smaller, under another candidate's name) is
    // skipped.
    if let Some(invocations) = pick(
        &format!(
            "register-blocked fused kernel (invocations per workgroup; None: staged) — SDPA {probe_name}"
        ),
        FUSED_DIRECT_CANDIDATES,
        |invocations| {
            let tuning = Tuning {
                fused_direct: invocations,
                fused_split_groups: if invocations.is_some() {
                    0
                } else {
                    tuned.fused_split_groups
                },
                ..tuned
            };
            let gpu = open(&probe, tuning)?;
            let shape = probe_shape(&gpu);
            if let Some(n) = invocations {
                // The subgroup width the fused path may share through under this tuning.
                let width = gpu.fused_subgroup_width();
                let runs_with = fused::direct_workgroup(n, 64, 64, shape[2], width, &gpu.limits());
                if runs_with != Some(n) {
                    let why = format!("{n} invocations' output rows do not fit: {runs_with:?}");
                    return Err(wgpu_mha::Error::Config(why));
                }
            }
            let prepared = prepare_sdpa(&gpu, shape, AttentionPath::Fused)?;
            if prepared.register_blocked_fused() != invocations.is_some() {
                let why = "the call did not run the kernel measured";
                return Err(wgpu_mha::Error::Config(why.into()));
            }
            prepared.run()?;
            fastest(args.runs, || prepared.run())
        },
    ) {
        tuned.fused_direct = invocations;
    }

    // Only where the winner is the register-blocked kernel and the call can share.
    if tuned.fused_direct.is_some()
        && let Some(subgroups) = pick(
            &format!(
                "fused kernel's loads shared through subgroups (32 query rows per 8-lane subgroup, or keys and values) — SDPA {probe_name}"
            ),
            [false, true],
            |subgroups| {
                let gpu = open(
                    &probe,
                    Tuning {
                        fused_subgroups: subgroups,
                        ..tuned
                    },
                )?;
                let prepared = prepare_sdpa(&gpu, probe_shape(&gpu), AttentionPath::Fused)?;
                if prepared.fused_subgroups() != subgroups {
                    let why = "the device's subgroups do not fit this workgroup";
                    return Err(wgpu_mha::Error::Config(why.into()));
                }
                prepared.run()?;
                fastest(args.runs, || prepared.run())
            },
        )
    {
        tuned.fused_subgroups = subgroups;
    }

    // Only where the fused kernel of 8-lane subgroups runs: its dot products 16 rows at a
    // time (compiles sooner) or all 32 at once. Warm speed decides, as for every family.
    if tuned.fused_direct.is_some()
        && open(&probe, tuned).is_ok_and(|gpu| gpu.fused_subgroup_width() == Some(8))
        && let Some(halves) = pick(
            &format!(
                "8-lane subgroup kernel's dot products 16 query rows at a time (else 32) — SDPA {probe_name}"
            ),
            [true, false],
            |halves| {
                let tuning = Tuning {
                    fused_lanes_halves: halves,
                    ..tuned
                };
                time_fused(&probe, tuning, args.runs)
            },
        )
    {
        tuned.fused_lanes_halves = halves;
    }

    // Key splits pay where a call has few query blocks: a decode step (the bench's preset).
    if let Some(target) = pick(
        "fused key splits (target workgroups; 0: never) — SDPA decode B1 H32 L1 S4096 d128",
        SPLIT_CANDIDATES,
        |target| {
            let tuning = Tuning {
                fused_split_groups: target,
                ..tuned
            };
            let shape = [1, 32, 1, 4096, 128];
            let gpu = open(&probe, tuning)?;
            time_sdpa_shape(&gpu, shape, AttentionPath::Fused, None, args.runs)
        },
    ) {
        tuned.fused_split_groups = target;
    }

    // Which core Auto should run here: the tuned fused kernel against the tuned three passes.
    if let Some(core) = pick(
        &format!("attention core for AttentionPath::Auto — SDPA {probe_name}"),
        [AttentionPath::Fused, AttentionPath::ThreePass],
        |path| time_sdpa(&open(&probe, tuned)?, path, None, args.runs),
    ) {
        tuned.prefer_fused = core == AttentionPath::Fused;
    }
    println!(
        "\ntuned: {tuned:?} (in {:.1} s)",
        start.elapsed().as_secs_f64()
    );
    if args.no_save {
        println!("not saved (--no-save)");
    } else {
        let path = tuning::store(&info, &tuned)?;
        println!("saved for this adapter in {}", path.display());
    }
    Ok(Outcome::Pass)
}
