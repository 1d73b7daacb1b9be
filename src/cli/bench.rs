//! `wgpu-mha bench`: how fast attention runs on this adapter, and whether it is right.
//!
//! Every row is one shape on one path — the full MHA forward (projections included) or SDPA
//! alone. For each: the first run (buffer allocation, and the driver's shader compilation
//! where it compiles lazily), then a warm-up (300 ms at least) and N timed runs of the
//! kernels alone (record + submit + wait, wall clock), with upload and readback timed apart; the CPU
//! reference on the same inputs, for the speed-up and the error. Then each kernel of the
//! path alone ([`PreparedMha::run_kernel`]), for a per-pass breakdown. `--sweep` runs one
//! shape over a list of sequence lengths instead (`super::sweep`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use wgpu_mha::check::compare_as;
use wgpu_mha::kernels::KERNEL_NAMES;
use wgpu_mha::{
    AttentionPath, Causal, Dtype, Error, Gpu, MhaConfig, MhaOptions, MhaWeights,
    MultiHeadAttention, PreparedMha, PreparedSdpa, Result, RunTiming, SdpaOptions, Tensor,
    reference,
};

use super::{DeviceArgs, DtypeArg, Outcome, describe};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// batch 1, seq 512, d_model 768, 12 heads
    BertBase,
    /// batch 1, seq 2048, d_model 512, 8 heads
    Long,
    /// batch 8, seq 128, d_model 512, 8 heads
    Batched,
    /// as long, causal
    LongCausal,
    /// batch 1, 1 query against 4096 keys, 32 heads of 128 (SDPA only)
    Decode,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Presets to run (repeatable); default: all, unless a custom shape is given.
    #[arg(long = "preset", value_enum)]
    presets: Vec<Preset>,
    /// Custom shape: batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Custom shape: query sequence length.
    #[arg(long)]
    seq: Option<usize>,
    /// Custom shape: key/value sequence length (default: --seq).
    #[arg(long)]
    kv_seq: Option<usize>,
    /// Custom shape: model width (E).
    #[arg(long)]
    d_model: Option<usize>,
    /// Custom shape: heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Custom shape: key/value heads (GQA; SDPA only when it differs from --heads).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Custom shape: causal (top-left).
    #[arg(long)]
    causal: bool,
    /// Timed runs per row (default: as many as fit about two seconds, 3 to 30).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Skip the CPU reference (no speed-up, no error check) — for huge shapes.
    #[arg(long)]
    pub no_cpu: bool,
    /// Write every figure as JSON (an array of row objects).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write every figure as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Print new/old time ratios against an earlier --json file.
    #[arg(long, value_name = "OLD.json")]
    pub compare: Option<PathBuf>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Paths to run (repeatable); default: mha and sdpa, or all of them with --sweep.
    #[arg(long = "path", value_enum)]
    pub paths: Vec<Path>,
    /// Storage dtypes to run (repeatable); default: f32. `--dtype f32 --dtype f16` gives
    /// both rows of each path (f16 needs SHADER_F16; --sweep takes the first).
    #[arg(long = "dtype", value_enum)]
    pub dtypes: Vec<DtypeArg>,
    /// Timed runs of each kernel alone, for the per-pass breakdown (0: no breakdown).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub pass_runs: usize,
    /// Sweep the first preset (default bert-base; or the custom shape) over query = key
    /// lengths, e.g. `seq=256,512,1024`, on every path, and plot time and GFLOP/s.
    #[arg(long, value_name = "seq=L1,L2,...", value_parser = super::sweep::parse_spec)]
    pub sweep: Option<super::sweep::SweepSpec>,
    /// Where --sweep writes its plots (PNG and SVG).
    #[arg(long, value_name = "DIR", default_value = "target/wgpu-mha-sweep")]
    pub plot_dir: PathBuf,
}

/// One benchmark shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Shape {
    pub name: String,
    pub batch: usize,
    pub seq: usize,
    pub kv_seq: usize,
    pub d_model: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub causal: bool,
    /// Run the full MHA forward as well as SDPA.
    pub mha: bool,
}

impl Shape {
    fn preset(p: Preset) -> Self {
        let base = |name: &str, batch, seq, d_model, heads| Shape {
            name: name.into(),
            batch,
            seq,
            kv_seq: seq,
            d_model,
            heads,
            kv_heads: heads,
            causal: false,
            mha: true,
        };
        match p {
            Preset::BertBase => base("bert-base", 1, 512, 768, 12),
            Preset::Long => base("long", 1, 2048, 512, 8),
            Preset::Batched => base("batched", 8, 128, 512, 8),
            Preset::LongCausal => Shape {
                causal: true,
                ..base("long-causal", 1, 2048, 512, 8)
            },
            Preset::Decode => Shape {
                seq: 1,
                mha: false,
                ..base("decode", 1, 4096, 32 * 128, 32)
            },
        }
    }

    fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }

    /// Query–key pairs actually computed: all of them, or the causal triangle (top-left).
    fn pairs(&self) -> f64 {
        if !self.causal {
            return (self.seq * self.kv_seq) as f64;
        }
        (0..self.seq).map(|l| (l + 1).min(self.kv_seq) as f64).sum()
    }

    /// FLOPs counted for a row: attention core 4·B·H·pairs·d (causal: the visible pairs
    /// only), plus the projections' 2·B·E² per projected row (L for q and the output, S for
    /// k and v) when the path runs them.
    pub fn flops(&self, path: Path) -> f64 {
        if path.projections() {
            self.core_flops() + self.projection_flops()
        } else {
            self.core_flops()
        }
    }

    /// The attention core's FLOPs: 4·B·H·pairs·d.
    pub fn core_flops(&self) -> f64 {
        4.0 * (self.batch * self.heads) as f64 * self.pairs() * self.head_dim() as f64
    }

    /// The four projections' FLOPs (q and the output over L rows, k and v over S): 2·B·E²
    /// per row.
    pub fn projection_flops(&self) -> f64 {
        let e = self.d_model as f64;
        2.0 * self.batch as f64 * e * e * (2.0 * self.seq as f64 + 2.0 * self.kv_seq as f64)
    }

    /// The same shape with query and key/value length `len`.
    pub fn with_len(&self, len: usize) -> Self {
        Shape {
            seq: len,
            kv_seq: len,
            ..self.clone()
        }
    }
}

/// One way of computing attention that the bench times. Every table, file, sweep and plot
/// iterates these; a new path is one more variant here, its entries in the `match`es below,
/// and (if it needs other inputs) its arm in [`measure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Path {
    /// `nn.MultiheadAttention` forward: in-projection, attention core (the library's
    /// choice), out-projection.
    Mha,
    /// `F.scaled_dot_product_attention` alone, the library's choice of core (fused unless
    /// the device cannot run it).
    Sdpa,
    /// SDPA with the three-pass core (QKᵀ, softmax, P·V) pinned: the baseline of the fused
    /// kernel.
    #[value(name = "sdpa-3pass")]
    SdpaThreePass,
    /// SDPA with the fused (FlashAttention-style) core pinned.
    #[value(name = "sdpa-fused")]
    SdpaFused,
}

impl Path {
    /// Every path: what `--sweep` runs unless `--path` is given.
    pub const ALL: [Path; 4] = [Path::Mha, Path::Sdpa, Path::SdpaThreePass, Path::SdpaFused];
    /// What a plain `bench` runs unless `--path` is given.
    pub const DEFAULT: [Path; 2] = [Path::Mha, Path::Sdpa];

    pub fn name(self) -> &'static str {
        match self {
            Path::Mha => "mha",
            Path::Sdpa => "sdpa",
            Path::SdpaThreePass => "sdpa-3pass",
            Path::SdpaFused => "sdpa-fused",
        }
    }

    /// The attention core asked of the library.
    fn attention(self) -> AttentionPath {
        match self {
            Path::Mha | Path::Sdpa => AttentionPath::Auto,
            Path::SdpaThreePass => AttentionPath::ThreePass,
            Path::SdpaFused => AttentionPath::Fused,
        }
    }

    /// Whether the path runs `shape` (the MHA forward has no grouped-query attention).
    pub fn runs(self, shape: &Shape) -> bool {
        match self {
            Path::Mha => shape.mha,
            Path::Sdpa | Path::SdpaThreePass | Path::SdpaFused => true,
        }
    }

    /// Whether the counted FLOPs include the four projections.
    fn projections(self) -> bool {
        match self {
            Path::Mha => true,
            Path::Sdpa | Path::SdpaThreePass | Path::SdpaFused => false,
        }
    }

    /// Kernels a forward of this path never dispatches as the bench prepares it: `linear`
    /// without projections, `head_mean` always (the bench asks for no attention weights).
    fn never_runs(self) -> &'static [&'static str] {
        match self {
            Path::Mha => &["head_mean"],
            Path::Sdpa | Path::SdpaThreePass | Path::SdpaFused => &["linear", "head_mean"],
        }
    }

    /// The kernels timed alone for this path when the library ran `core`: every kernel of
    /// the library ([`KERNEL_NAMES`], in the order a forward runs them) but those the path
    /// never runs and those of the other core. A kernel this list gets wrong records nothing,
    /// times as an empty submit, and is flagged `near_empty`.
    pub fn kernels(self, core: AttentionPath) -> Vec<&'static str> {
        let other_core: &[&str] = match core {
            AttentionPath::Fused => &["qk", "softmax", "av"],
            AttentionPath::ThreePass => &["fused"],
            AttentionPath::Auto => &[],
        };
        KERNEL_NAMES
            .iter()
            .copied()
            .filter(|k| !self.never_runs().contains(k) && !other_core.contains(k))
            .collect()
    }
}

/// How a row names the attention core that ran.
fn core_name(core: AttentionPath) -> &'static str {
    match core {
        AttentionPath::Fused => "fused",
        AttentionPath::ThreePass => "three-pass",
        AttentionPath::Auto => "auto",
    }
}

/// The clock of the per-pass figures; a GPU timestamp source would be another value.
pub const PASS_CLOCK: &str = "wall clock, pass run alone (record + submit + wait)";

/// Clock of per-pass figures taken from GPU timestamp queries.
pub const TIMESTAMP_CLOCK: &str = "GPU timestamps (each dispatch in its own pass)";

/// Timestamps are trusted when their total lies within this band of the same run's wall
/// clock: lavapipe 22.3 was measured to read 0 or half the real time for some kernels.
const SANE_TIMESTAMPS: std::ops::RangeInclusive<f64> = 0.6..=1.05;

/// One kernel of a row, run alone (`run_kernel`): every dispatch of that kernel in the
/// forward (both projections for `linear`, every score block for the attention kernels).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PassTime {
    pub kernel: String,
    /// Where the figures come from (see [`PASS_CLOCK`]).
    pub clock: String,
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// The median is within [`NEAR_EMPTY`]× an empty submit: the kernel most likely recorded
    /// nothing (the library took another route for this call); left out of the sum.
    #[serde(default)]
    pub near_empty: bool,
}

/// A per-pass median at most this many times an empty submit's counts as "ran nothing".
pub const NEAR_EMPTY: f64 = 2.0;

/// Every figure of one row; this is what --json writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub preset: String,
    pub path: String,
    /// The attention core the library ran: "fused" or "three-pass".
    #[serde(default)]
    pub core: String,
    /// Storage of inputs, weights and intermediates: "f32" or "f16".
    #[serde(default = "f32_name")]
    pub dtype: String,
    /// Runs of keys the fused kernel split each query row into (1: none).
    #[serde(default = "one")]
    pub key_splits: u32,
    pub shape: Shape,
    pub adapter: String,
    pub backend: String,
    pub crate_version: String,
    /// Clock of every time below except `passes` (each of which names its own).
    pub clock: String,
    pub first_ms: f64,
    pub upload_ms: f64,
    pub iters: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub readback_ms: f64,
    pub gflops: f64,
    pub flops_counted: String,
    pub gpu_mib: f64,
    pub cpu_ms: Option<f64>,
    pub speedup: Option<f64>,
    pub max_abs_err: Option<f64>,
    pub max_rel_err: Option<f64>,
    /// "ok", "FAILED", or "unchecked" (--no-cpu).
    pub check: String,
    /// Each kernel of the path alone, in the order the forward runs them (empty with
    /// `--pass-runs 0`).
    #[serde(default)]
    pub passes: Vec<PassTime>,
    /// Median of an empty submit (encoder + submit + wait), the fixed cost inside every
    /// per-pass figure; same clock as `passes`.
    #[serde(default)]
    pub empty_submit_ms: Option<f64>,
    /// Median GPU time of a forward from timestamp queries, when the adapter has them and
    /// they agreed with the wall clock.
    #[serde(default)]
    pub timestamp_ms: Option<f64>,
    /// What became of the timestamps: "sane", "unavailable …", "rejected: …".
    #[serde(default)]
    pub timestamps: String,
}

impl Row {
    /// Sum of the per-pass medians, those near an empty submit left out (None when none
    /// is left).
    pub fn pass_sum_ms(&self) -> Option<f64> {
        let ran: Vec<f64> = self
            .passes
            .iter()
            .filter(|p| !p.near_empty)
            .map(|p| p.median_ms)
            .collect();
        (!ran.is_empty()).then(|| ran.iter().fold(0.0, |a, b| a + b))
    }

    /// The per-pass figures of `kernel`, if it was timed.
    pub fn pass(&self, kernel: &str) -> Option<&PassTime> {
        self.passes.iter().find(|p| p.kernel == kernel)
    }

    /// The per-pass median of `kernel`, if it was timed.
    pub fn pass_ms(&self, kernel: &str) -> Option<f64> {
        self.pass(kernel).map(|p| p.median_ms)
    }

    /// CPU-reference throughput with the same FLOP count as `gflops`.
    pub fn cpu_gflops(&self) -> Option<f64> {
        self.cpu_ms.map(|cpu| self.gflops * self.median_ms / cpu)
    }
}

fn one() -> u32 {
    1
}

fn f32_name() -> String {
    Dtype::F32.name().into()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn random(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect(),
    )
    .expect("shape and data agree")
}

/// Warm-up before timed runs: at least one run and at least this long. A GPU raises its
/// clocks only under sustained load: on an H200 a bert-base SDPA timed after a single
/// warm-up run read up to 4.5× its warm time.
const WARM_UP: Duration = Duration::from_millis(300);

/// Times `run` after a warm-up ([`WARM_UP`]): `iters` runs, or as many as fit about two
/// seconds.
fn time_runs(iters: Option<usize>, mut run: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let start = Instant::now();
    let mut warm_runs = 0u32;
    while warm_runs == 0 || (start.elapsed() < WARM_UP && warm_runs < 1000) {
        run()?;
        warm_runs += 1;
    }
    let warm = (start.elapsed().as_secs_f64() / warm_runs as f64).max(1e-6);
    let n = iters
        .unwrap_or(((2.0 / warm).ceil() as usize).clamp(3, 30))
        .max(1);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run()?;
        times.push(ms(t.elapsed()));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times)
}

/// What the benchmark needs of a prepared forward, MHA or SDPA alike.
trait Prepared {
    fn run(&self) -> Result<()>;
    fn run_kernel(&self, name: &str) -> Result<()>;
    fn run_timed(&self) -> Result<RunTiming>;
    /// The attention output of the last run.
    fn output(&self) -> Result<Tensor>;
    fn path(&self) -> AttentionPath;
    fn key_splits(&self) -> u32;
    fn allocated_bytes(&self) -> u64;
}

/// Both prepared calls have these methods under the same names; only the output differs.
macro_rules! prepared {
    ($ty:ty, |$p:ident| $output:expr) => {
        impl Prepared for $ty {
            fn run(&self) -> Result<()> {
                <$ty>::run(self)
            }
            fn run_kernel(&self, name: &str) -> Result<()> {
                <$ty>::run_kernel(self, name)
            }
            fn run_timed(&self) -> Result<RunTiming> {
                <$ty>::run_timed(self)
            }
            fn output(&self) -> Result<Tensor> {
                let $p = self;
                $output
            }
            fn path(&self) -> AttentionPath {
                <$ty>::path(self)
            }
            fn key_splits(&self) -> u32 {
                <$ty>::key_splits(self)
            }
            fn allocated_bytes(&self) -> u64 {
                <$ty>::allocated_bytes(self)
            }
        }
    };
}

prepared!(PreparedMha<'_>, |p| Ok(p.read()?.attn_output));
prepared!(PreparedSdpa, |p| p.read());

/// What the timestamp queries said about a row.
struct Timestamps {
    /// Median GPU total of a forward, when the timestamps were sane.
    total_ms: Option<f64>,
    /// "sane", "unavailable", or why they were rejected.
    note: String,
    /// Per kernel, when sane (moved into the row's passes).
    passes: Vec<PassTime>,
}

/// `runs` timed forwards: per-kernel GPU times from timestamp queries, kept only when
/// every kernel reads a nonzero time and their total agrees with the wall clock.
fn time_with_timestamps(
    prepared: &dyn Prepared,
    kernels: &[&str],
    runs: usize,
) -> Result<Timestamps> {
    let mut totals = Vec::new();
    let mut per_kernel: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    for _ in 0..runs.max(1) {
        let timing = prepared.run_timed()?;
        let Some(dispatches) = &timing.kernels else {
            return Ok(Timestamps {
                total_ms: None,
                note: "unavailable (no TIMESTAMP_QUERY)".into(),
                passes: Vec::new(),
            });
        };
        let gpu_ms: f64 = dispatches.iter().map(|(_, d)| ms(*d)).sum();
        let wall_ms = ms(timing.wall);
        if !SANE_TIMESTAMPS.contains(&(gpu_ms / wall_ms)) {
            return Ok(Timestamps {
                total_ms: None,
                note: format!("rejected: GPU total {gpu_ms:.2} ms vs wall {wall_ms:.2} ms"),
                passes: Vec::new(),
            });
        }
        for (i, kernel) in kernels.iter().enumerate() {
            let t: f64 = dispatches
                .iter()
                .filter(|(name, _)| name == kernel)
                .map(|(_, d)| ms(*d))
                .sum();
            if t == 0.0 && dispatches.iter().any(|(name, _)| name == kernel) {
                return Ok(Timestamps {
                    total_ms: None,
                    note: format!("rejected: {kernel} read 0"),
                    passes: Vec::new(),
                });
            }
            per_kernel[i].push(t);
        }
        totals.push(gpu_ms);
    }
    totals.sort_by(|a, b| a.total_cmp(b));
    let passes = kernels
        .iter()
        .zip(per_kernel)
        .map(|(kernel, mut t)| {
            t.sort_by(|a, b| a.total_cmp(b));
            PassTime {
                kernel: kernel.to_string(),
                clock: TIMESTAMP_CLOCK.into(),
                runs: t.len(),
                median_ms: t[t.len() / 2],
                min_ms: t[0],
                max_ms: t[t.len() - 1],
                near_empty: t[t.len() / 2] == 0.0,
            }
        })
        .collect();
    Ok(Timestamps {
        total_ms: Some(totals[totals.len() / 2]),
        note: "sane".into(),
        passes,
    })
}

/// Per-pass times: from GPU timestamps where the adapter has them and they agree with the
/// wall clock, else each of `kernels` run alone, `runs` times after one warm-up, on the
/// inputs the timed forwards left in the buffers.
fn time_passes(
    prepared: &dyn Prepared,
    kernels: &[&str],
    runs: usize,
) -> Result<(Vec<PassTime>, Timestamps)> {
    if runs == 0 {
        return Ok((
            Vec::new(),
            Timestamps {
                total_ms: None,
                note: "not measured (--pass-runs 0)".into(),
                passes: Vec::new(),
            },
        ));
    }
    let mut stamps = time_with_timestamps(prepared, kernels, runs)?;
    if stamps.total_ms.is_some() {
        let passes = std::mem::take(&mut stamps.passes);
        return Ok((passes, stamps));
    }
    let alone: Result<Vec<PassTime>> = kernels
        .iter()
        .map(|&kernel| {
            let times = time_runs(Some(runs), || prepared.run_kernel(kernel))?;
            Ok(PassTime {
                kernel: kernel.into(),
                clock: PASS_CLOCK.into(),
                runs: times.len(),
                median_ms: times[times.len() / 2],
                min_ms: times[0],
                max_ms: times[times.len() - 1],
                near_empty: false,
            })
        })
        .collect();
    Ok((alone?, stamps))
}

/// Median of an empty submit: encoder, submit, wait, as `run_kernel` does around its
/// dispatches.
fn empty_submit_ms(gpu: &Gpu, runs: usize) -> Result<f64> {
    let times = time_runs(Some(runs.max(3)), || {
        let encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgpu-mha bench empty submit"),
            });
        gpu.queue().submit([encoder.finish()]);
        gpu.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Wgpu {
                during: "device poll",
                message: e.to_string(),
            })?;
        Ok(())
    })?;
    Ok(times[times.len() / 2])
}

/// How a row is measured.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Timed forwards (None: as many as fit about two seconds).
    pub iters: Option<usize>,
    /// Run the CPU reference.
    pub cpu: bool,
    /// Timed runs of each kernel alone (0: none).
    pub pass_runs: usize,
    /// Storage of inputs, weights and intermediates.
    pub dtype: Dtype,
}

impl Settings {
    pub fn from_args(args: &BenchArgs) -> Self {
        Self {
            iters: args.iters,
            cpu: !args.no_cpu,
            pass_runs: args.pass_runs,
            dtype: args.dtypes.first().copied().unwrap_or_default().into(),
        }
    }
}

/// The dtypes `args` asks for (`--dtype`), else f32.
pub fn dtypes(args: &BenchArgs) -> Vec<Dtype> {
    if args.dtypes.is_empty() {
        vec![Dtype::F32]
    } else {
        args.dtypes.iter().map(|&d| d.into()).collect()
    }
}

/// What one path produced: its timings, its output, and the reference's.
struct Measured {
    first_ms: f64,
    upload_ms: f64,
    times: Vec<f64>,
    readback_ms: f64,
    bytes: u64,
    core: AttentionPath,
    key_splits: u32,
    passes: Vec<PassTime>,
    timestamps: Timestamps,
    got: Tensor,
    cpu: Option<(f64, Tensor)>,
}

fn measure_mha(
    gpu: &Gpu,
    shape: &Shape,
    path: Path,
    set: Settings,
    rng: &mut StdRng,
) -> Result<Measured> {
    let config = MhaConfig::new(shape.d_model, shape.heads)
        .with_batch_first(true)
        .with_dtype(set.dtype);
    let weights = MhaWeights::random(&config, rng);
    let mha = MultiHeadAttention::new(gpu, config, &weights)?;
    let x = random(rng, &[shape.batch, shape.seq, shape.d_model]);
    let kv = (shape.kv_seq != shape.seq)
        .then(|| random(rng, &[shape.batch, shape.kv_seq, shape.d_model]));
    let kv_ref = kv.as_ref().unwrap_or(&x);
    let opts = MhaOptions {
        causal: shape.causal.then_some(Causal::TopLeft),
        path: path.attention(),
        ..Default::default()
    };

    // The reference sees what the GPU stores: the inputs and weights rounded to the dtype.
    let reference = || {
        let (x, kv) = (x.rounded_to(set.dtype), kv_ref.rounded_to(set.dtype));
        let weights = weights.rounded_to(set.dtype);
        Ok(reference::mha_forward(&config, &weights, &x, &kv, &kv, &opts)?.attn_output)
    };
    measure_prepared(
        || mha.prepare(&x, kv_ref, kv_ref, &opts),
        path,
        set,
        reference,
    )
}

fn measure_sdpa(
    gpu: &Gpu,
    shape: &Shape,
    path: Path,
    set: Settings,
    rng: &mut StdRng,
) -> Result<Measured> {
    let d = shape.head_dim();
    let q = random(rng, &[shape.batch, shape.heads, shape.seq, d]);
    let k = random(rng, &[shape.batch, shape.kv_heads, shape.kv_seq, d]);
    let v = random(rng, &[shape.batch, shape.kv_heads, shape.kv_seq, d]);
    let opts = SdpaOptions {
        causal: shape.causal.then_some(Causal::TopLeft),
        enable_gqa: shape.kv_heads != shape.heads,
        path: path.attention(),
        dtype: set.dtype,
        ..Default::default()
    };
    let round = |t: &Tensor| t.rounded_to(set.dtype);
    measure_prepared(
        || PreparedSdpa::prepare(gpu, &q, &k, &v, &opts),
        path,
        set,
        || reference::sdpa(&round(&q), &round(&k), &round(&v), &opts),
    )
}

/// The protocol of one row: the first run of a fresh preparation (allocation and driver
/// compilation included), then a second preparation (the upload), timed runs, the readback,
/// the per-pass figures, and the CPU reference (`reference`) when asked.
fn measure_prepared<P: Prepared>(
    prepare: impl Fn() -> Result<P>,
    path: Path,
    set: Settings,
    reference: impl FnOnce() -> Result<Tensor>,
) -> Result<Measured> {
    let t = Instant::now();
    let first = prepare()?;
    first.run()?;
    first.output()?;
    let first_ms = ms(t.elapsed());
    drop(first);

    let t = Instant::now();
    let prepared = prepare()?;
    let upload_ms = ms(t.elapsed());
    let times = time_runs(set.iters, || prepared.run())?;
    let t = Instant::now();
    let got = prepared.output()?;
    let readback_ms = ms(t.elapsed());
    let core = prepared.path();
    let (passes, timestamps) = time_passes(&prepared, &path.kernels(core), set.pass_runs)?;
    let cpu = set
        .cpu
        .then(|| -> Result<(f64, Tensor)> {
            let t = Instant::now();
            let want = reference()?;
            Ok((ms(t.elapsed()), want))
        })
        .transpose()?;
    Ok(Measured {
        first_ms,
        upload_ms,
        times,
        readback_ms,
        bytes: prepared.allocated_bytes(),
        core,
        key_splits: prepared.key_splits(),
        passes,
        timestamps,
        got,
        cpu,
    })
}

/// Measures `shape` on `path`: one row of the table.
pub fn measure(
    gpu: &Gpu,
    shape: &Shape,
    path: Path,
    set: Settings,
    rng: &mut StdRng,
) -> Result<Row> {
    let mut m = match path {
        Path::Mha => measure_mha(gpu, shape, path, set, rng)?,
        Path::Sdpa | Path::SdpaThreePass | Path::SdpaFused => {
            measure_sdpa(gpu, shape, path, set, rng)?
        }
    };
    let timed_passes = m.passes.iter().any(|p| p.clock == TIMESTAMP_CLOCK);
    let empty_submit_ms = if m.passes.is_empty() || timed_passes {
        None
    } else {
        let empty = empty_submit_ms(gpu, set.pass_runs)?;
        for p in &mut m.passes {
            p.near_empty = p.median_ms <= NEAR_EMPTY * empty;
        }
        Some(empty)
    };
    let info = gpu.adapter_info();
    let median = m.times[m.times.len() / 2];
    let cmp = m
        .cpu
        .as_ref()
        .map(|(_, want)| compare_as(&m.got, want, set.dtype));
    Ok(Row {
        preset: shape.name.clone(),
        path: path.name().into(),
        core: core_name(m.core).into(),
        dtype: set.dtype.name().into(),
        key_splits: m.key_splits,
        shape: shape.clone(),
        adapter: info.name.clone(),
        backend: format!("{:?}", info.backend),
        crate_version: env!("CARGO_PKG_VERSION").into(),
        clock: "wall clock (record + submit + wait)".into(),
        first_ms: m.first_ms,
        upload_ms: m.upload_ms,
        iters: m.times.len(),
        median_ms: median,
        min_ms: m.times[0],
        max_ms: *m.times.last().expect("at least one run"),
        readback_ms: m.readback_ms,
        gflops: shape.flops(path) / (median * 1e6),
        flops_counted: if shape.causal {
            "visible (causal) pairs only".into()
        } else {
            "all pairs".into()
        },
        gpu_mib: m.bytes as f64 / (1 << 20) as f64,
        cpu_ms: m.cpu.as_ref().map(|(t, _)| *t),
        speedup: m.cpu.as_ref().map(|(t, _)| t / median),
        max_abs_err: cmp.map(|c| c.max_abs as f64),
        max_rel_err: cmp.map(|c| c.max_rel as f64),
        check: match cmp {
            None => "unchecked".into(),
            Some(c) if c.passed() => "ok".into(),
            Some(_) => "FAILED".into(),
        },
        passes: m.passes,
        empty_submit_ms,
        timestamp_ms: m.timestamps.total_ms,
        timestamps: m.timestamps.note,
    })
}

/// The shapes `args` asks for: the presets, then the custom shape; all presets if neither.
pub fn shapes(args: &BenchArgs) -> Result<Vec<Shape>> {
    let custom = [
        args.batch,
        args.seq,
        args.kv_seq,
        args.d_model,
        args.heads,
        args.kv_heads,
    ];
    let mut shapes: Vec<Shape> = args.presets.iter().map(|&p| Shape::preset(p)).collect();
    if custom.iter().any(Option::is_some) || args.causal {
        let seq = args.seq.unwrap_or(512);
        let heads = args.heads.unwrap_or(8);
        let kv_heads = args.kv_heads.unwrap_or(heads);
        let shape = Shape {
            name: "custom".into(),
            batch: args.batch.unwrap_or(1),
            seq,
            kv_seq: args.kv_seq.unwrap_or(seq),
            d_model: args.d_model.unwrap_or(512),
            heads,
            kv_heads,
            causal: args.causal,
            mha: kv_heads == heads,
        };
        if shape.heads == 0 || !shape.d_model.is_multiple_of(shape.heads) {
            return Err(Error::Config(format!(
                "--d-model ({}) must be a positive multiple of --heads ({})",
                shape.d_model, shape.heads
            )));
        }
        shapes.push(shape);
    } else if shapes.is_empty() {
        shapes = [
            Preset::BertBase,
            Preset::Long,
            Preset::Batched,
            Preset::LongCausal,
            Preset::Decode,
        ]
        .map(Shape::preset)
        .to_vec();
    }
    Ok(shapes)
}

/// The paths `args` asks for (`--path`), else `default`.
pub fn paths(args: &BenchArgs, default: &[Path]) -> Vec<Path> {
    if args.paths.is_empty() {
        default.to_vec()
    } else {
        Path::ALL
            .into_iter()
            .filter(|p| args.paths.contains(p))
            .collect()
    }
}

/// Opens the device and prints the adapter line.
pub fn open(device: &DeviceArgs) -> Result<Gpu> {
    let t = Instant::now();
    let gpu = device.open()?;
    let startup_ms = ms(t.elapsed());
    println!("adapter: {}", describe(gpu.adapter_info()));
    println!("device + pipelines: {startup_ms:.0} ms (wall clock)");
    println!(
        "kernel tuning ({}): {:?}",
        gpu.tuning_source(),
        gpu.tuning()
    );
    let state = |on: bool| if on { "on" } else { "off" };
    println!(
        "subgroup broadcasts: register-blocked rows {}, fused {} \
         (on where the tuning asks, the device has subgroups and their width fits)",
        state(gpu.direct_subgroups()),
        match gpu.fused_subgroup_width() {
            _ if gpu.tuning().fused_direct.is_none() => "off (staged kernel)",
            Some(8) if gpu.tuning().fused_lanes_halves => {
                "on (32 query rows per 8-lane subgroup, dot products 16 rows at a time)"
            }
            Some(8) => "on (32 query rows per 8-lane subgroup)",
            Some(_) => "on (keys and values)",
            None => "off",
        },
    );
    Ok(gpu)
}

/// A progress bar of `len` rows.
pub fn progress(len: usize) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .expect("valid template"),
    )
}

/// Writes --json and --csv, prints --compare; the outcome of the checks.
pub fn write_outputs(args: &BenchArgs, rows: &[Row]) -> Result<Outcome> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(rows).expect("rows serialize");
        std::fs::write(path, text).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.csv {
        super::table::write_csv(path, rows)?;
        println!("wrote {}", path.display());
    }
    if let Some(old) = &args.compare {
        super::table::compare(old, rows)?;
    }
    Ok(if rows.iter().any(|r| r.check == "FAILED") {
        Outcome::CheckFailed
    } else {
        Outcome::Pass
    })
}

pub fn run(device: &DeviceArgs, args: &BenchArgs) -> Result<Outcome> {
    let shapes = shapes(args)?;
    if let Some(spec) = &args.sweep {
        return super::sweep::run(device, args, &shapes[0], spec);
    }
    let gpu = open(device)?;
    let dtypes = dtypes(args);
    let jobs: Vec<(&Shape, Path, Dtype)> = shapes
        .iter()
        .flat_map(|s| {
            paths(args, &Path::DEFAULT)
                .into_iter()
                .filter(|p| p.runs(s))
                .flat_map(|p| dtypes.iter().map(move |&d| (p, d)))
                .map(move |(p, d)| (s, p, d))
        })
        .collect();
    let bar = progress(jobs.len());
    let set = Settings::from_args(args);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut rows = Vec::new();
    for (shape, path, dtype) in jobs {
        bar.set_message(format!("{} {} {}", shape.name, path.name(), dtype.name()));
        rows.push(measure(
            &gpu,
            shape,
            path,
            Settings { dtype, ..set },
            &mut rng,
        )?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    super::table::print(&rows);
    super::table::print_passes(&rows);
    super::table::print_core_vs_gemm(&rows);
    write_outputs(args, &rows)
}
