//! `wgpu-mha bench --sweep seq=256,512,...`: one shape over a list of query = key lengths,
//! on every path ([`Path::ALL`], or those of `--path`) beside the CPU reference; a table, and plots of time and
//! GFLOP/s against length (PNG and SVG, `--plot-dir`).
//!
//! The plots are drawn by `plotters` with no system library: text goes through `ab_glyph`
//! with a TrueType font read at run time (`WGPU_MHA_FONT`, else a few usual system paths such
//! as Debian's fonts-dejavu-core). Without one the plots are drawn without text, and the
//! series are named on the terminal instead.

use std::path::{Path as FsPath, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use wgpu_mha::{Error, Result};

use super::bench::{self, BenchArgs, Path, Row, Settings, Shape};
use super::{DeviceArgs, Outcome};

/// What `--sweep` varies. Only `seq` (query and key/value length together) for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepSpec {
    /// Sequence lengths, ascending, without repeats.
    pub lens: Vec<usize>,
}

/// Parses `seq=256,512,1024`.
pub fn parse_spec(text: &str) -> std::result::Result<SweepSpec, String> {
    let (key, list) = text
        .split_once('=')
        .ok_or_else(|| format!("expected seq=L1,L2,..., got {text:?}"))?;
    if key.trim() != "seq" {
        return Err(format!(
            "only `seq` (query = key length) can be swept, got {key:?}"
        ));
    }
    let mut lens = list
        .split(',')
        .map(|v| match v.trim().parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("{v:?} is not a positive length")),
            Ok(n) => Ok(n),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    lens.sort_unstable();
    lens.dedup();
    Ok(SweepSpec { lens })
}

/// Runs the sweep of `base` (the first preset, or the custom shape).
pub fn run(
    device: &DeviceArgs,
    args: &BenchArgs,
    base: &Shape,
    spec: &SweepSpec,
) -> Result<Outcome> {
    let gpu = bench::open(device)?;
    println!(
        "sweep: {} ({}) over L = S = {:?}",
        base.name,
        shape_text(base),
        spec.lens
    );
    let jobs: Vec<(Shape, Path)> = spec
        .lens
        .iter()
        .map(|&len| base.with_len(len))
        .flat_map(|s| {
            bench::paths(args, &Path::ALL)
                .into_iter()
                .filter(|p| p.runs(&s))
                .map(|p| (s.clone(), p))
                .collect::<Vec<_>>()
        })
        .collect();
    let bar = bench::progress(jobs.len());
    let set = Settings::from_args(args);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (shape, path) in jobs {
        bar.set_message(format!("L={} {}", shape.seq, path.name()));
        match bench::measure(&gpu, &shape, path, set, &mut rng) {
            Ok(row) => rows.push(row),
            // A length the device cannot hold ends that point, not the sweep.
            Err(e) => failures.push(format!("L={} {}: {e}", shape.seq, path.name())),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    print_table(&rows);
    super::table::print_passes(&rows);
    for f in &failures {
        eprintln!("failed: {f}");
    }
    if !rows.is_empty() {
        let title = format!(
            "wgpu-mha sweep: {} ({}), {}",
            base.name,
            shape_text(base),
            gpu.adapter_info().name
        );
        let (files, text) = plot(&args.plot_dir, &base.name, &title, &rows)?;
        println!();
        for f in &files {
            let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
            println!("plot: {}", f.display());
        }
        match text {
            Some(font) => println!("plot text font: {}", font.display()),
            None => {
                println!(
                    "no TrueType font found (set WGPU_MHA_FONT=/path/to/font.ttf, or install fonts-dejavu-core): plots drawn without text. Series colours:"
                );
                for s in series(&rows) {
                    let (r, g, b) = (s.color.0, s.color.1, s.color.2);
                    println!(
                        "  rgb({r}, {g}, {b}) {}: {}",
                        if s.dashed { "dashed" } else { "solid" },
                        s.label
                    );
                }
            }
        }
    }
    let outcome = bench::write_outputs(args, &rows)?;
    if !failures.is_empty() {
        return Err(Error::Config(format!(
            "{} of {} sweep points failed (listed above)",
            failures.len(),
            failures.len() + rows.len()
        )));
    }
    Ok(outcome)
}

/// The shape without its lengths.
fn shape_text(s: &Shape) -> String {
    let mut text = format!("B{} E{} H{}", s.batch, s.d_model, s.heads);
    if s.kv_heads != s.heads {
        text += &format!("/{}", s.kv_heads);
    }
    if s.causal {
        text += " causal";
    }
    text
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// Columns of the sweep table.
type Column = (&'static str, fn(&Row) -> String);

const COLUMNS: &[Column] = &[
    ("L", |r| r.shape.seq.to_string()),
    ("path", |r| r.path.clone()),
    ("core", |r| r.core.clone()),
    ("median ms", |r| format!("{:.2}", r.median_ms)),
    ("min ms", |r| format!("{:.2}", r.min_ms)),
    ("max ms", |r| format!("{:.2}", r.max_ms)),
    ("runs", |r| r.iters.to_string()),
    ("GFLOP/s", |r| format!("{:.2}", r.gflops)),
    ("GPU MiB", |r| format!("{:.1}", r.gpu_mib)),
    ("CPU ref ms", |r| opt(r.cpu_ms, |v| format!("{v:.1}"))),
    ("CPU GFLOP/s", |r| {
        opt(r.cpu_gflops(), |v| format!("{v:.2}"))
    }),
    ("vs CPU", |r| opt(r.speedup, |v| format!("{v:.2}x"))),
    ("max abs err", |r| {
        opt(r.max_abs_err, |v| format!("{v:.2e}"))
    }),
    ("check", |r| r.check.clone()),
];

fn print_table(rows: &[Row]) {
    let headers: Vec<String> = COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| COLUMNS.iter().map(|(_, f)| f(r)).collect())
        .collect();
    println!();
    super::table::render(&headers, &cells, 3);
    if let Some(r) = rows.first() {
        println!();
        println!(
            "times: {}, median of the timed forwards; GFLOP/s counted as in `bench` (the CPU reference's with the same count). vs CPU = CPU-reference time / median.",
            r.clock
        );
    }
}

/// One line of a plot.
struct Series {
    label: String,
    color: RGBColor,
    /// The CPU reference is dashed, a GPU path solid.
    dashed: bool,
    /// (length, ms, GFLOP/s)
    points: Vec<(f64, f64, f64)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// Each path on the GPU, and its CPU reference where one ran.
fn series(rows: &[Row]) -> Vec<Series> {
    let mut out = Vec::new();
    for (i, path) in Path::ALL.iter().enumerate() {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.path == path.name()).collect();
        if mine.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let mut cores: Vec<&str> = mine.iter().map(|r| r.core.as_str()).collect();
        cores.dedup();
        out.push(Series {
            label: format!("{} (GPU, {})", path.name(), cores.join("/")),
            color,
            dashed: false,
            points: mine
                .iter()
                .map(|r| (r.shape.seq as f64, r.median_ms, r.gflops))
                .collect(),
        });
        let cpu: Vec<(f64, f64, f64)> = mine
            .iter()
            .filter_map(|r| Some((r.shape.seq as f64, r.cpu_ms?, r.cpu_gflops()?)))
            .collect();
        if !cpu.is_empty() {
            out.push(Series {
                label: format!("{} CPU reference", path.name()),
                color,
                dashed: true,
                points: cpu,
            });
        }
    }
    out
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("drawing the sweep plot: {e}"))
}

/// Draws `rows` to `DIR/sweep-NAME.png` and `.svg`; the files, and the font of the text
/// (None: drawn without text).
fn plot(
    dir: &FsPath,
    name: &str,
    title: &str,
    rows: &[Row],
) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let font = super::font::sans_serif().cloned();
    let text = font.is_some();
    let series = series(rows);
    let stem: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let png = dir.join(format!("sweep-{stem}.png"));
    let svg = dir.join(format!("sweep-{stem}.svg"));
    let size = (1400, 560);
    draw(
        BitMapBackend::new(&png, size).into_drawing_area(),
        title,
        &series,
        text,
    )?;
    draw(
        SVGBackend::new(&svg, size).into_drawing_area(),
        title,
        &series,
        text,
    )?;
    Ok((vec![png, svg], font))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series],
    text: bool,
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let area = if text {
        root.titled(title, ("sans-serif", 22)).map_err(plot_err)?
    } else {
        root.clone()
    };
    let panels = area.split_evenly((1, 2));
    // One legend, on the time panel: the series are the same in both.
    panel(
        &panels[0],
        "time",
        "ms (median)",
        series,
        |p| p.1,
        text,
        text,
    )?;
    panel(
        &panels[1],
        "throughput",
        "GFLOP/s",
        series,
        |p| p.2,
        text,
        false,
    )?;
    root.present().map_err(plot_err)
}

/// One chart: `value` of every series against length, both axes logarithmic.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    series: &[Series],
    value: fn(&(f64, f64, f64)) -> f64,
    text: bool,
    legend: bool,
) -> Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x_min, x_max) = bounds(points().map(|p| p.0));
    let (y_min, y_max) = bounds(points().map(value));
    let mut lens: Vec<f64> = points().map(|p| p.0).collect();
    lens.sort_by(f64::total_cmp);
    lens.dedup();
    let x = (x_min / 1.25..x_max * 1.25)
        .log_scale()
        .with_key_points(lens);
    let (y_lo, y_hi) = (y_min / 1.5, y_max * 1.5);
    let y = (y_lo..y_hi)
        .log_scale()
        .with_key_points(nice_ticks(y_lo, y_hi));

    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder
            .caption(caption, ("sans-serif", 18))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d(x, y).map_err(plot_err)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("sequence length L = S")
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| short(*v))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
    } else {
        chart
            .configure_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(plot_err)?;
    }
    for s in series {
        let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, value(p))).collect();
        let style = s.color.stroke_width(2);
        let anno = if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
                .map_err(plot_err)?
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(plot_err)?
        };
        if legend {
            let color = s.color;
            // A gap in the middle marks the dashed (CPU reference) series.
            let (a, b) = if s.dashed { (9, 15) } else { (12, 12) };
            anno.label(s.label.clone()).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (a, 0)], color.stroke_width(2))
                    + PathElement::new(vec![(b, 0), (24, 0)], color.stroke_width(2))
            });
        }
        let marker = if s.dashed {
            s.color.stroke_width(1)
        } else {
            s.color.filled()
        };
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, marker)))
            .map_err(plot_err)?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Smallest and largest positive value (1, 10 when there is none).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if hi > 0.0 {
        (lo, if hi > lo { hi } else { lo * 2.0 })
    } else {
        (1.0, 10.0)
    }
}

/// 1, 2 and 5 times the powers of ten between `lo` and `hi`.
fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (first..=last)
        .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

/// A tick label: few digits, no trailing zeros.
fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1e-3 {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    } else {
        format!("{v:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_sorts_and_rejects() {
        assert_eq!(
            parse_spec("seq=512,128, 256,128").unwrap().lens,
            [128, 256, 512]
        );
        assert!(parse_spec("kv=1,2").is_err());
        assert!(parse_spec("seq=1,0").is_err());
        assert!(parse_spec("seq=a").is_err());
        assert!(parse_spec("128,256").is_err());
    }

    #[test]
    fn bounds_ignore_non_positive() {
        assert_eq!(bounds([0.0, 2.0, 8.0].into_iter()), (2.0, 8.0));
        assert_eq!(bounds([3.0].into_iter()), (3.0, 6.0));
        assert_eq!(bounds(std::iter::empty()), (1.0, 10.0));
    }

    #[test]
    fn ticks_are_one_two_five() {
        let ticks = nice_ticks(0.3, 40.0);
        assert_eq!(ticks.len(), 6);
        for (got, want) in ticks.iter().zip([0.5, 1.0, 2.0, 5.0, 10.0, 20.0]) {
            assert!((got - want).abs() < 1e-9, "{ticks:?}");
        }
        assert_eq!(short(2.0), "2");
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(2000.0), "2000");
    }
}
