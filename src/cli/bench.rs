//! `wgpu-mha bench`: how fast attention runs on this adapter, and whether it is right.
//!
//! Every row is one shape on one path — the full MHA forward (projections included) or SDPA
//! alone. For each: the first run (buffer allocation, and the driver's shader compilation
//! where it compiles lazily), then a warm-up and N timed runs of the kernels alone
//! (record + submit + wait, wall clock), with upload and readback timed apart; the CPU
//! reference on the same inputs, for the speed-up and the error.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use wgpu_mha::check::compare;
use wgpu_mha::{
    Causal, Error, Gpu, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, PreparedSdpa,
    Result, SdpaOptions, Tensor, reference,
};

use super::{DeviceArgs, Outcome, describe};

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
    iters: Option<usize>,
    /// Skip the CPU reference (no speed-up, no error check) — for huge shapes.
    #[arg(long)]
    no_cpu: bool,
    /// Write every figure as JSON (an array of row objects).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write every figure as CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Print new/old time ratios against an earlier --json file.
    #[arg(long, value_name = "OLD.json")]
    compare: Option<PathBuf>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
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
    /// only), plus 2·B·L·E·E per projection for the full forward.
    fn flops(&self, path: Path) -> f64 {
        let core = 4.0 * (self.batch * self.heads) as f64 * self.pairs() * self.head_dim() as f64;
        match path {
            Path::Sdpa => core,
            Path::Mha => {
                let e = self.d_model as f64;
                let b = self.batch as f64;
                core + 2.0 * b * e * e * (2.0 * self.seq as f64 + 2.0 * self.kv_seq as f64)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Path {
    Mha,
    Sdpa,
}

/// Every figure of one row; this is what --json writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub preset: String,
    pub path: String,
    pub shape: Shape,
    pub adapter: String,
    pub backend: String,
    pub crate_version: String,
    /// Clock of every time below.
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
}

fn ms(d: Duration) -> f64 {
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

/// Times `run` after one warm-up: `iters` runs, or as many as fit about two seconds.
fn time_runs(iters: Option<usize>, mut run: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let start = Instant::now();
    run()?;
    let warm = start.elapsed().as_secs_f64().max(1e-6);
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

/// What one path produced: its timings, its output, and the reference's.
struct Measured {
    first_ms: f64,
    upload_ms: f64,
    times: Vec<f64>,
    readback_ms: f64,
    bytes: u64,
    got: Tensor,
    cpu: Option<(f64, Tensor)>,
}

fn measure_mha(gpu: &Gpu, shape: &Shape, args: &BenchArgs, rng: &mut StdRng) -> Result<Measured> {
    let config = MhaConfig::new(shape.d_model, shape.heads).with_batch_first(true);
    let weights = MhaWeights::random(&config, rng);
    let mha = MultiHeadAttention::new(gpu, config, &weights)?;
    let x = random(rng, &[shape.batch, shape.seq, shape.d_model]);
    let kv = (shape.kv_seq != shape.seq)
        .then(|| random(rng, &[shape.batch, shape.kv_seq, shape.d_model]));
    let kv_ref = kv.as_ref().unwrap_or(&x);
    let opts = MhaOptions {
        causal: shape.causal.then_some(Causal::TopLeft),
        ..Default::default()
    };

    let t = Instant::now();
    let first = mha.prepare(&x, kv_ref, kv_ref, &opts)?;
    first.run()?;
    first.read()?;
    let first_ms = ms(t.elapsed());
    drop(first);

    let t = Instant::now();
    let prepared = mha.prepare(&x, kv_ref, kv_ref, &opts)?;
    let upload_ms = ms(t.elapsed());
    let times = time_runs(args.iters, || prepared.run())?;
    let t = Instant::now();
    let got = prepared.read()?.attn_output;
    let readback_ms = ms(t.elapsed());
    let cpu = (!args.no_cpu)
        .then(|| -> Result<(f64, Tensor)> {
            let t = Instant::now();
            let want = reference::mha_forward(&config, &weights, &x, kv_ref, kv_ref, &opts)?;
            Ok((ms(t.elapsed()), want.attn_output))
        })
        .transpose()?;
    Ok(Measured {
        first_ms,
        upload_ms,
        times,
        readback_ms,
        bytes: prepared.allocated_bytes(),
        got,
        cpu,
    })
}

fn measure_sdpa(gpu: &Gpu, shape: &Shape, args: &BenchArgs, rng: &mut StdRng) -> Result<Measured> {
    let d = shape.head_dim();
    let q = random(rng, &[shape.batch, shape.heads, shape.seq, d]);
    let k = random(rng, &[shape.batch, shape.kv_heads, shape.kv_seq, d]);
    let v = random(rng, &[shape.batch, shape.kv_heads, shape.kv_seq, d]);
    let opts = SdpaOptions {
        causal: shape.causal.then_some(Causal::TopLeft),
        enable_gqa: shape.kv_heads != shape.heads,
        ..Default::default()
    };
    let t = Instant::now();
    let first = PreparedSdpa::prepare(gpu, &q, &k, &v, &opts)?;
    first.run()?;
    first.read()?;
    let first_ms = ms(t.elapsed());
    drop(first);

    let t = Instant::now();
    let prepared = PreparedSdpa::prepare(gpu, &q, &k, &v, &opts)?;
    let upload_ms = ms(t.elapsed());
    let times = time_runs(args.iters, || prepared.run())?;
    let t = Instant::now();
    let got = prepared.read()?;
    let readback_ms = ms(t.elapsed());
    let cpu = (!args.no_cpu)
        .then(|| -> Result<(f64, Tensor)> {
            let t = Instant::now();
            let want = reference::sdpa(&q, &k, &v, &opts)?;
            Ok((ms(t.elapsed()), want))
        })
        .transpose()?;
    Ok(Measured {
        first_ms,
        upload_ms,
        times,
        readback_ms,
        bytes: prepared.allocated_bytes(),
        got,
        cpu,
    })
}

fn shapes(args: &BenchArgs) -> Result<Vec<Shape>> {
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

pub fn run(device: &DeviceArgs, args: &BenchArgs) -> Result<Outcome> {
    let shapes = shapes(args)?;
    let t = Instant::now();
    let gpu = device.open()?;
    let startup_ms = ms(t.elapsed());
    let info = gpu.adapter_info().clone();
    println!("adapter: {}", describe(&info));
    println!("device + pipelines: {startup_ms:.0} ms (wall clock)");

    let jobs: Vec<(Shape, Path)> = shapes
        .iter()
        .flat_map(|s| {
            let mut v = Vec::new();
            if s.mha {
                v.push((s.clone(), Path::Mha));
            }
            v.push((s.clone(), Path::Sdpa));
            v
        })
        .collect();
    let bar = ProgressBar::new(jobs.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .expect("valid template"),
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut rows = Vec::new();
    for (shape, path) in jobs {
        bar.set_message(format!("{} {:?}", shape.name, path));
        let m = match path {
            Path::Mha => measure_mha(&gpu, &shape, args, &mut rng)?,
            Path::Sdpa => measure_sdpa(&gpu, &shape, args, &mut rng)?,
        };
        let median = m.times[m.times.len() / 2];
        let cmp = m.cpu.as_ref().map(|(_, want)| compare(&m.got, want));
        rows.push(Row {
            preset: shape.name.clone(),
            path: format!("{path:?}").to_lowercase(),
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
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    super::table::print(&rows);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialize");
        std::fs::write(path, text).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.csv {
        super::table::write_csv(path, &rows)?;
        println!("wrote {}", path.display());
    }
    if let Some(old) = &args.compare {
        super::table::compare(old, &rows)?;
    }
    Ok(if rows.iter().any(|r| r.check == "FAILED") {
        Outcome::CheckFailed
    } else {
        Outcome::Pass
    })
}
