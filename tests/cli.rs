//! The `wgpu-mha` binary end to end: `mha` and `sdpa --check` against PyTorch-made files,
//! `info`, a small `bench` with `--json` / `--csv` / `--compare`, and errors as exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wgpu_mha::io::read_safetensors;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wgpu-mha"))
}

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cases")
        .join(format!("{name}.safetensors"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-mha-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the binary runs");
    let (out, err) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn mha_check_agrees_with_pytorch_files() {
    for (name, heads, extra) in [
        ("mha_self_seqfirst_default", 4, vec![]),
        (
            "mha_need_weights_per_head",
            4,
            vec!["--need-weights", "--per-head-weights"],
        ),
        (
            "mha_causal_bottom_right_L5_S12",
            4,
            vec!["--causal", "bottom-right"],
        ),
        ("mha_kdim16_vdim20_E24", 4, vec![]),
    ] {
        // The heads and flags each case was made with.
        let meta = wgpu_mha::io::read_safetensors_metadata(&case(name)).unwrap();
        let heads = meta["num_heads"].parse().unwrap_or(heads);
        let out = scratch(&format!("{name}.out.safetensors"));
        let mut cmd = bin();
        cmd.args(["mha", "--input"])
            .arg(case(name))
            .args(["--num-heads", &heads.to_string(), "--check", "--output"])
            .arg(&out)
            .args(&extra);
        if meta["batch_first"] == "true" {
            cmd.arg("--batch-first");
        }
        let (code, stdout, stderr) = run(&mut cmd);
        assert_eq!(code, 0, "{name}: {stdout}\n{stderr}");
        assert!(stdout.contains("attn_output vs CPU reference"), "{stdout}");
        assert!(
            stdout.contains("vs expected_attn_output in the file"),
            "{stdout}"
        );
        assert!(!stdout.contains("FAILED"), "{stdout}");
        let written = read_safetensors(&out).unwrap();
        assert!(written.contains_key("attn_output"));
        assert_eq!(
            written.contains_key("attn_output_weights"),
            extra.contains(&"--need-weights")
        );
    }
}

#[test]
fn sdpa_check_agrees_with_pytorch_files() {
    for (name, extra) in [
        ("sdpa_plain", vec![]),
        ("sdpa_gqa_hq8_hkv2", vec!["--enable-gqa"]),
        ("sdpa_causal_top_left", vec!["--is-causal"]),
        ("sdpa_custom_scale", vec!["--scale", "0.3"]),
    ] {
        let out = scratch(&format!("{name}.out.safetensors"));
        let (code, stdout, stderr) = run(bin()
            .args(["sdpa", "--check", "--input"])
            .arg(case(name))
            .arg("--output")
            .arg(&out)
            .args(&extra));
        assert_eq!(code, 0, "{name}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("vs expected_attn_output in the file: "),
            "{stdout}"
        );
        assert!(!stdout.contains("FAILED"), "{stdout}");
        assert!(read_safetensors(&out).unwrap().contains_key("attn_output"));
    }
}

#[test]
fn a_wrong_flag_fails_the_check() {
    // The case was made without a causal mask: checking against its expected output fails.
    let out = scratch("wrong.out.safetensors");
    let (code, stdout, _) = run(bin()
        .args(["sdpa", "--check", "--is-causal", "--input"])
        .arg(case("sdpa_plain"))
        .arg("--output")
        .arg(&out));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
}

#[test]
fn bad_input_is_an_error_message_and_exit_code_2() {
    let garbage = scratch("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let (code, _, stderr) = run(bin()
        .args(["mha", "--num-heads", "4", "--input"])
        .arg(&garbage)
        .args(["--output", "/dev/null"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("error: safetensors"), "{stderr}");

    // 32 is not divisible by 5 heads.
    let (code, _, stderr) = run(bin()
        .args(["mha", "--num-heads", "5", "--input"])
        .arg(case("mha_self_seqfirst_default"))
        .args(["--output", "/dev/null"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("divisible by num_heads"), "{stderr}");

    let (code, _, stderr) = run(bin().args(["info", "--adapter", "no-such-adapter-xyz"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("install mesa-vulkan-drivers"), "{stderr}");
}

#[test]
fn info_names_the_chosen_adapter() {
    let (code, stdout, stderr) = run(bin().arg("info"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Chosen: "), "{stdout}");
    assert!(stdout.contains("why: "), "{stdout}");
    assert!(
        stdout.contains("max_storage_buffer_binding_size"),
        "{stdout}"
    );
}

#[test]
fn bench_writes_json_csv_and_compares() {
    let json = scratch("bench.json");
    let csv = scratch("bench.csv");
    let small = [
        "bench",
        "--batch",
        "2",
        "--seq",
        "24",
        "--d-model",
        "32",
        "--heads",
        "4",
        "--iters",
        "2",
    ];
    let (code, stdout, stderr) = run(bin()
        .args(small)
        .arg("--json")
        .arg(&json)
        .arg("--csv")
        .arg(&csv));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for column in ["median ms", "GFLOP/s", "vs CPU", "max abs err", "check"] {
        assert!(stdout.contains(column), "no {column:?} column:\n{stdout}");
    }
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "mha and sdpa rows");
    for row in rows {
        assert_eq!(row["check"], "ok", "{row}");
        assert!(row["median_ms"].as_f64().unwrap() > 0.0);
        assert!(row["gflops"].as_f64().unwrap() > 0.0);
        assert_eq!(row["crate_version"], env!("CARGO_PKG_VERSION"));
    }
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3);
    // The core against the GEMM: both rows, a share of the mha row's projection rate.
    let section = stdout
        .split("attention core against the GEMM")
        .nth(1)
        .unwrap_or_else(|| panic!("no core-against-GEMM table:\n{stdout}"));
    assert!(
        section.contains("GEMM (f32): the projections of custom mha"),
        "{section}"
    );
    let shares: Vec<f64> = section
        .lines()
        .filter(|l| l.starts_with("custom "))
        .map(|l| {
            let share = l.split_whitespace().last().unwrap();
            share.trim_end_matches('%').parse().unwrap()
        })
        .collect();
    assert_eq!(shares.len(), 2, "{section}");
    assert!(shares.iter().all(|&s| s > 0.0), "{section}");

    let (code, stdout, stderr) = run(bin().args(small).arg("--compare").arg(&json));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("new/old"), "{stdout}");
    assert!(stdout.matches("custom ").count() >= 2, "{stdout}");
}

#[test]
fn sweep_draws_png_and_svg() {
    let dir = scratch("sweep");
    let json = scratch("sweep.json");
    let (code, stdout, stderr) = run(bin()
        .env("WGPU_MHA_FONT", "none")
        .args([
            "bench",
            "--sweep",
            "seq=8,16",
            "--batch",
            "1",
            "--d-model",
            "16",
            "--heads",
            "2",
            "--iters",
            "1",
            "--pass-runs",
            "1",
            "--plot-dir",
        ])
        .arg(&dir)
        .arg("--json")
        .arg(&json));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for ext in ["png", "svg"] {
        let plot = files
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {files:?}"));
        assert!(
            std::fs::metadata(plot).unwrap().len() > 1000,
            "{plot:?} is tiny"
        );
    }
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    // Two lengths × every path, each checked against the reference, with per-pass figures.
    assert!(rows.len() >= 4, "{rows:?}");
    for row in rows {
        assert_eq!(row["check"], "ok", "{row}");
        assert!(!row["passes"].as_array().unwrap().is_empty(), "{row}");
    }
}
