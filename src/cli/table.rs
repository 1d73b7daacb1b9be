//! Presenting benchmark rows: an aligned terminal table, CSV, and the new/old comparison.

use std::path::Path;

use wgpu_mha::{Error, Result};

use super::bench::Row;

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// The columns: header and the cell of a row.
type Column = (&'static str, fn(&Row) -> String);

const COLUMNS: &[Column] = &[
    ("preset", |r| r.preset.clone()),
    ("path", |r| r.path.clone()),
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
    fn shape_text(&self) -> String {
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

/// Prints `rows` as a table with right-aligned numbers.
pub fn print(rows: &[Row]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| COLUMNS.iter().map(|(_, f)| f(r)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |items: Vec<String>| {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i < 3 {
                    format!("{s:<w$}", w = widths[i])
                } else {
                    format!("{s:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!();
    println!(
        "{}",
        line(COLUMNS.iter().map(|(h, _)| h.to_string()).collect())
    );
    println!("{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for c in cells {
        println!("{}", line(c));
    }
    if let Some(r) = rows.first() {
        println!();
        println!(
            "times: {}; first = first forward of that shape in this process (allocation, and driver shader compilation on first use of a kernel); median/min/max = kernels only; upload and read timed apart.",
            r.clock
        );
        println!(
            "GFLOP/s from the median: attention core 4·B·H·pairs·d (causal rows count only the visible pairs), plus 2·B·L·E² per projection on the mha path. vs CPU = CPU-reference time / median. check: |gpu − ref| ≤ 1e-5·max(1, max|ref|) + 1e-4·|ref|."
        );
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `rows` as CSV (the table's columns, unformatted).
pub fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut text = String::from(
        "preset,path,batch,seq,kv_seq,d_model,heads,kv_heads,causal,adapter,backend,crate_version,clock,first_ms,upload_ms,iters,median_ms,min_ms,max_ms,readback_ms,gflops,gpu_mib,cpu_ms,speedup,max_abs_err,max_rel_err,check\n",
    );
    let o = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        let s = &r.shape;
        text += &format!(
            "{},{},{},{},{},{},{},{},{},\"{}\",{},{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.preset,
            r.path,
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
    println!(
        "{:<14} {:<5} {:>12} {:>12} {:>10}",
        "preset", "path", "old ms", "new ms", "new/old"
    );
    for r in rows {
        if let Some(o) = old
            .iter()
            .find(|o| o.preset == r.preset && o.path == r.path && o.shape == r.shape)
        {
            println!(
                "{:<14} {:<5} {:>12.2} {:>12.2} {:>10.3}",
                r.preset,
                r.path,
                o.median_ms,
                r.median_ms,
                r.median_ms / o.median_ms
            );
        }
    }
    Ok(())
}
