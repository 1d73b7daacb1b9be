//! Presenting benchmark rows: an aligned terminal table, CSV, and the new/old comparison.

use std::path::Path;

use wgpu_mha::kernels::KERNEL_NAMES;
use wgpu_mha::{Error, Result};

use super::bench::{NEAR_EMPTY, PASS_CLOCK, Row, TIMESTAMP_CLOCK};

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// The columns: header and the cell of a row.
type Column = (&'static str, fn(&Row) -> String);

const COLUMNS: &[Column] = &[
    ("preset", |r| r.preset.clone()),
    ("path", |r| r.path.clone()),
    ("core", |r| r.core_text()),
    ("dtype", |r| r.dtype.clone()),
    ("shape", |r| r.shape_text()),
    ("first ms", |r| format!("{:.1}", r.first_ms)),
    ("median ms", |r| format!("{:.2}", r.median_ms)),
    ("min ms", |r| format!("{:.2}", r.min_ms)),
    ("max ms", |r| format!("{:.2}", r.max_ms)),
    ("runs", |r| r.iters.to_string()),
    ("GFLOP/s", |r| format!("{:.2}", r.gflops)),
    ("upload ms", |r| format!("{:.1}", r.upload_ms)),
    ("read ms", |r| format!("{:.1}", r.readback_ms)),
    ("GPU MiB", |r| format!("{:.1}", r.gpu_mib)),
    ("CPU ref ms", |r| opt(r.cpu_ms, |v| format!("{v:.0}"))),
    ("vs CPU", |r| opt(r.speedup, |v| format!("{v:.2}x"))),
    ("max abs err", |r| {
        opt(r.max_abs_err, |v| format!("{v:.2e}"))
    }),
    ("max rel err", |r| {
        opt(r.max_rel_err, |v| format!("{v:.2e}"))
    }),
    ("check", |r| r.check.clone()),
];

impl Row {
    /// The core, with the fused kernel's key splits when it split ("fused/6").
    pub fn core_text(&self) -> String {
        if self.key_splits > 1 {
            format!("{}/{}", self.core, self.key_splits)
        } else {
            self.core.clone()
        }
    }

    pub fn shape_text(&self) -> String {
        let s = &self.shape;
        let mut text = format!("B{} L{}", s.batch, s.seq);
        if s.kv_seq != s.seq {
            text += &format!(" S{}", s.kv_seq);
        }
        text += &format!(" E{} H{}", s.d_model, s.heads);
        if s.kv_heads != s.heads {
            text += &format!("/{}", s.kv_heads);
        }
        if s.causal {
            text += " causal";
        }
        text
    }
}

/// Prints an aligned table: the first `left` columns left-aligned, the rest (numbers)
/// right-aligned.
pub fn render(headers: &[String], cells: &[Vec<String>], left: usize) {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |items: &[String]| {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i < left {
                    format!("{s:<w$}", w = widths[i])
                } else {
                    format!("{s:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(headers));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("{}", line(&rule));
    for c in cells {
        println!("{}", line(c));
    }
}

/// Prints `rows` as a table with right-aligned numbers.
pub fn print(rows: &[Row]) {
    let headers: Vec<String> = COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| COLUMNS.iter().map(|(_, f)| f(r)).collect())
        .collect();
    println!();
    render(&headers, &cells, 5);
    if let Some(r) = rows.first() {
        println!();
        println!(
            "times: {}; first = first forward of that shape in this process (allocation, and driver shader compilation on first use of a kernel); median/min/max = kernels only; upload and read timed apart.",
            r.clock
        );
        println!(
            "GFLOP/s from the median: attention core 4·B·H·pairs·d (causal rows count only the visible pairs), plus 2·B·E² per projected row on the mha path (L rows for q and the output, S for k and v). vs CPU = CPU-reference time / median. check: |gpu − ref| ≤ 1e-5·max(1, max|ref|) + 1e-4·|ref|."
        );
        if rows.iter().any(|r| r.key_splits > 1) {
            println!(
                "core fused/N: the fused kernel split each query row's keys into N runs (too few query blocks × heads to fill the device) and merged them."
            );
        }
        if rows.iter().any(|r| r.dtype == "f16") {
            println!(
                "f16 rows: the reference runs on the inputs and weights rounded to f16 (what the GPU stores), and the check is |gpu − ref| ≤ 5e-3·max(1, max|ref|) + 5e-3·|ref| (the intermediates are stored in f16 too)."
            );
        }
    }
}

/// The kernels timed in any of `rows`, in [`KERNEL_NAMES`] order.
fn timed_kernels(rows: &[Row]) -> Vec<&'static str> {
    KERNEL_NAMES
        .iter()
        .copied()
        .filter(|k| rows.iter().any(|r| r.pass_ms(k).is_some()))
        .collect()
}

/// Prints the per-pass breakdown: each kernel alone (median ms), their sum, the whole
/// forward's median, and the empty-submit cost included in every per-pass figure.
pub fn print_passes(rows: &[Row]) {
    let kernels = timed_kernels(rows);
    if kernels.is_empty() {
        return;
    }
    let mut headers: Vec<String> = ["preset", "path", "core", "dtype", "shape", "clock"]
        .map(String::from)
        .to_vec();
    headers.extend(kernels.iter().map(|k| format!("{k} ms")));
    headers.extend(["sum ms", "forward ms", "sum/fwd", "empty submit ms"].map(String::from));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                r.preset.clone(),
                r.path.clone(),
                r.core_text(),
                r.dtype.clone(),
                r.shape_text(),
                match r.passes.first() {
                    Some(p) if p.clock == TIMESTAMP_CLOCK => "gpu timestamps".into(),
                    Some(_) => "wall, run alone".into(),
                    None => "-".into(),
                },
            ];
            c.extend(kernels.iter().map(|k| match r.pass(k) {
                None => "-".into(),
                Some(p) if p.near_empty => format!("({:.2})", p.median_ms),
                Some(p) => format!("{:.2}", p.median_ms),
            }));
            let sum = r.pass_sum_ms();
            c.push(opt(sum, |v| format!("{v:.2}")));
            c.push(format!("{:.2}", r.median_ms));
            c.push(opt(sum, |v| format!("{:.2}", v / r.median_ms)));
            c.push(opt(r.empty_submit_ms, |v| format!("{v:.3}")));
            c
        })
        .collect();
    println!();
    println!(
        "per pass (median ms; every dispatch of that kernel in the forward, linear = both projections):"
    );
    render(&headers, &cells, 6);
    println!();
    println!(
        "clock \"gpu timestamps\": {TIMESTAMP_CLOCK}, used when the adapter has timestamp queries and their total is within 0.6–1.05× the same run's wall clock (and no kernel reads 0); sum/fwd < 1 is then the host's share of a forward (recording, submit, wait)."
    );
    println!(
        "clock \"wall, run alone\": {PASS_CLOCK}, the fallback; each figure includes one empty submit's cost (empty submit ms), so sum/fwd > 1 is mostly that overhead. \"-\" = the path does not run that kernel."
    );
    for r in rows {
        if r.timestamps != "sane" && !r.timestamps.is_empty() {
            println!(
                "timestamps for {} {} {}: {}",
                r.preset, r.path, r.dtype, r.timestamps
            );
        }
    }
    if rows.iter().flat_map(|r| &r.passes).any(|p| p.near_empty) {
        println!(
            "(x) = within {NEAR_EMPTY}x an empty submit: that kernel most likely recorded nothing on this call (the library chose another route); left out of the sum."
        );
    }
}

/// The attention core's rate against the GEMM's: per row, the core's kernels (every timed
/// pass but the projections) as GFLOP/s of its 4·B·H·pairs·d FLOPs, and that as a share of
/// the best projection rate (`linear`, 2·B·E² per row and projection) this run measured for
/// the same dtype. Nothing without per-pass times, or without an mha row to give the GEMM.
/// Every pass counts, even one near an empty submit (a row times only the kernels its core
/// runs, and a tiny shape's real kernels can sit that low); under the wall clock each pass
/// counts less the empty submit it includes, so a three-pass core pays it no more than a
/// fused one or the GEMM.
pub fn print_core_vs_gemm(rows: &[Row]) {
    let pass_ms = |r: &Row, p: &super::bench::PassTime| {
        let submit = if p.clock == PASS_CLOCK {
            r.empty_submit_ms.unwrap_or(0.0)
        } else {
            0.0
        };
        (p.median_ms - submit).max(0.0)
    };
    let linear_rate = |r: &Row| {
        let ms = pass_ms(r, r.pass("linear")?);
        (ms > 0.0).then(|| r.shape.projection_flops() / (ms * 1e6))
    };
    let best_gemm = |dtype: &str| {
        rows.iter()
            .filter(|r| r.dtype == dtype)
            .filter_map(|r| Some((linear_rate(r)?, r)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let core_ms = |r: &Row| {
        let ms: f64 = r
            .passes
            .iter()
            .filter(|p| p.kernel != "linear")
            .map(|p| pass_ms(r, p))
            .sum();
        (ms > 0.0).then_some(ms)
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            let ms = core_ms(r)?;
            let (gemm, _) = best_gemm(&r.dtype)?;
            let rate = r.shape.core_flops() / (ms * 1e6);
            Some(vec![
                r.preset.clone(),
                r.path.clone(),
                r.core_text(),
                r.dtype.clone(),
                r.shape_text(),
                format!("{ms:.2}"),
                format!("{rate:.1}"),
                format!("{:.0}%", 100.0 * rate / gemm),
            ])
        })
        .collect();
    if cells.is_empty() {
        return;
    }
    let headers = [
        "preset",
        "path",
        "core",
        "dtype",
        "shape",
        "core ms",
        "core GFLOP/s",
        "of GEMM",
    ]
    .map(String::from);
    println!();
    println!("attention core against the GEMM (per-pass medians):");
    render(&headers, &cells, 5);
    println!();
    for dtype in ["f32", "f16"] {
        if let Some((gemm, r)) = best_gemm(dtype) {
            println!(
                "GEMM ({dtype}): the projections of {} {} ({}), {gemm:.1} GFLOP/s, the best linear rate of this run.",
                r.preset,
                r.path,
                r.shape_text()
            );
        }
    }
    println!(
        "core ms: every kernel of the forward but the projections (under the wall clock, less an empty submit each); core GFLOP/s counts 4·B·H·pairs·d."
    );
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `rows` as CSV (the table's columns, unformatted).
pub fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    // Per-pass columns: one per kernel of the library ("" where the path does not run it).
    let mut text = String::from(
        "preset,path,core,key_splits,dtype,batch,seq,kv_seq,d_model,heads,kv_heads,causal,adapter,backend,crate_version,clock,first_ms,upload_ms,iters,median_ms,min_ms,max_ms,readback_ms,gflops,gpu_mib,cpu_ms,speedup,max_abs_err,max_rel_err,check,pass_clock,pass_runs,empty_submit_ms,pass_sum_ms,pass_near_empty",
    );
    for k in KERNEL_NAMES {
        text += &format!(",pass_{k}_ms");
    }
    text.push('\n');
    let o = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        let s = &r.shape;
        text += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},\"{}\",{},{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.preset,
            r.path,
            r.core,
            r.key_splits,
            r.dtype,
            s.batch,
            s.seq,
            s.kv_seq,
            s.d_model,
            s.heads,
            s.kv_heads,
            s.causal,
            r.adapter,
            r.backend,
            r.crate_version,
            r.clock,
            r.first_ms,
            r.upload_ms,
            r.iters,
            r.median_ms,
            r.min_ms,
            r.max_ms,
            r.readback_ms,
            r.gflops,
            r.gpu_mib,
            o(r.cpu_ms),
            o(r.speedup),
            o(r.max_abs_err),
            o(r.max_rel_err),
            r.check
        );
        let first = r.passes.first();
        let near_empty: Vec<&str> = r
            .passes
            .iter()
            .filter(|p| p.near_empty)
            .map(|p| p.kernel.as_str())
            .collect();
        text += &format!(
            ",\"{}\",{},{},{},{}",
            first.map_or("", |p| p.clock.as_str()),
            first.map_or(String::new(), |p| p.runs.to_string()),
            o(r.empty_submit_ms),
            o(r.pass_sum_ms()),
            near_empty.join(";")
        );
        for k in KERNEL_NAMES {
            text += &format!(",{}", o(r.pass_ms(k)));
        }
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| io_err(path, e))
}

/// Prints new/old median ratios for rows present in both runs.
pub fn compare(old_path: &Path, rows: &[Row]) -> Result<()> {
    let text = std::fs::read_to_string(old_path).map_err(|e| io_err(old_path, e))?;
    let old: Vec<Row> = serde_json::from_str(&text).map_err(|e| {
        Error::Config(format!(
            "{}: not a `wgpu-mha bench --json` file: {e}",
            old_path.display()
        ))
    })?;
    println!("\ncompared with {}:", old_path.display());
    let headers = ["preset", "path", "dtype", "old ms", "new ms", "new/old"].map(String::from);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            let o = old.iter().find(|o| {
                o.preset == r.preset && o.path == r.path && o.dtype == r.dtype && o.shape == r.shape
            })?;
            Some(vec![
                r.preset.clone(),
                r.path.clone(),
                r.dtype.clone(),
                format!("{:.2}", o.median_ms),
                format!("{:.2}", r.median_ms),
                format!("{:.3}", r.median_ms / o.median_ms),
            ])
        })
        .collect();
    render(&headers, &cells, 3);
    Ok(())
}
