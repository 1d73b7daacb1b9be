mod common;

// Checks the GPU path and the CPU reference against PyTorch's own float32 outputs, stored in
// `tests/data/cases/*.safetensors` by `tests/data/make_vectors.py` (layout described in
// `tests/data/README.md`). Every case is run, failures are collected, and one panic at the
// end lists them all.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use common::gpu;
use wgpu_mha::io::{TensorMap, read_safetensors, read_safetensors_metadata};
use wgpu_mha::{
    AttentionPath, Causal, Dtype, Gpu, Mask, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention,
    SdpaOptions, Tensor, reference, scaled_dot_product_attention,
};

/// The fewest case files the suite accepts: fewer means files went missing.
const MIN_CASES: usize = 40;

type Meta = BTreeMap<String, String>;

/// One case file: its name (file stem), string metadata and tensors.
struct Case {
    name: String,
    meta: Meta,
    tensors: TensorMap,
}

impl Case {
    fn get(&self, key: &str) -> Result<&str, String> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("metadata `{key}` missing"))
    }

    fn usize(&self, key: &str) -> Result<usize, String> {
        let v = self.get(key)?;
        v.parse()
            .map_err(|e| format!("metadata `{key}` = {v:?} is not an integer: {e}"))
    }

    fn f32(&self, key: &str) -> Result<f32, String> {
        let v = self.get(key)?;
        v.parse()
            .map_err(|e| format!("metadata `{key}` = {v:?} is not a number: {e}"))
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        match self.get(key)? {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!(
                "metadata `{key}` = {other:?} is neither \"true\" nor \"false\""
            )),
        }
    }

    fn causal(&self) -> Result<Option<Causal>, String> {
        match self.get("causal")? {
            "none" => Ok(None),
            "top-left" => Ok(Some(Causal::TopLeft)),
            "bottom-right" => Ok(Some(Causal::BottomRight)),
            other => Err(format!("metadata `causal` = {other:?} is not known")),
        }
    }

    /// `(rtol, atol)` from the metadata.
    fn tolerance(&self) -> Result<(f32, f32), String> {
        Ok((self.f32("rtol")?, self.f32("atol")?))
    }

    fn tensor(&self, name: &str) -> Result<Tensor, String> {
        self.tensors
            .get(name)
            .ok_or_else(|| format!("tensor `{name}` missing"))?
            .clone()
            .into_f32(name)
            .map_err(|e| e.to_string())
    }

    fn mask(&self, name: &str) -> Option<Mask> {
        self.tensors.get(name).map(|t| t.clone().into_mask())
    }
}

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/cases")
}

/// Every `*.safetensors` file of the cases folder, sorted by name.
fn case_paths() -> Vec<PathBuf> {
    let dir = cases_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "safetensors"))
        .collect();
    paths.sort();
    paths
}

/// Every case whose `kind` metadata is `kind`.
fn load_cases(kind: &str) -> Vec<Case> {
    case_paths()
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let meta = read_safetensors_metadata(&path)
                .unwrap_or_else(|e| panic!("{name}: reading metadata: {e}"));
            let tensors =
                read_safetensors(&path).unwrap_or_else(|e| panic!("{name}: reading tensors: {e}"));
            Case {
                name,
                meta,
                tensors,
            }
        })
        .filter(|case| case.meta.get("kind").map(String::as_str) == Some(kind))
        .collect()
}

/// Checks `max |got − want| ≤ atol + rtol·|want|` element-wise with matching shapes and no
/// NaN in `got`; returns the max abs error and the largest `|diff| / (atol + rtol·|want|)`, or
/// a message naming the first offending element.
fn compare(what: &str, got: &Tensor, want: &Tensor, rtol: f32, atol: f32) -> Result<Stats, String> {
    if got.shape != want.shape {
        return Err(format!(
            "{what}: shape {:?}, expected {:?}",
            got.shape, want.shape
        ));
    }
    if got.data.len() != want.data.len() {
        return Err(format!(
            "{what}: {} elements, expected {}",
            got.data.len(),
            want.data.len()
        ));
    }
    if let Some(i) = got.data.iter().position(|v| v.is_nan()) {
        return Err(format!(
            "{what}: NaN at element {i} ({:?} of shape {:?})",
            unravel(i, &got.shape),
            got.shape
        ));
    }
    let mut stats = Stats::default();
    for (i, (&g, &w)) in got.data.iter().zip(&want.data).enumerate() {
        let err = (g - w).abs();
        let bound = atol + rtol * w.abs();
        // A NaN error (a NaN or infinite expected value) fails too.
        if err.is_nan() || err > bound {
            return Err(format!(
                "{what}: element {i} ({:?} of shape {:?}): got {g}, want {w}, |diff| {err} > atol {atol} + rtol {rtol}·|want|",
                unravel(i, &want.shape),
                want.shape
            ));
        }
        stats = stats.max(Stats {
            max_err: err,
            max_ratio: err / bound,
        });
    }
    Ok(stats)
}

/// The worst errors of one comparison.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    /// Max `|got − want|`.
    max_err: f32,
    /// Max `|got − want| / (atol + rtol·|want|)`: at most 1 when within tolerance.
    max_ratio: f32,
}

impl Stats {
    fn max(self, other: Stats) -> Stats {
        Stats {
            max_err: self.max_err.max(other.max_err),
            max_ratio: self.max_ratio.max(other.max_ratio),
        }
    }
}

/// The multi-index of flat index `i` in a row-major tensor of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *slot = i % dim;
            i /= dim;
        }
    }
    index
}

/// Compares one `(attn_output, attn_weights)` result with the case's expected tensors.
/// Returns the worst errors over both.
fn check_output(
    case: &Case,
    path: &str,
    attn_output: &Tensor,
    attn_weights: Option<&Tensor>,
    need_weights: bool,
) -> Result<Stats, String> {
    let (rtol, atol) = case.tolerance()?;
    let want = case.tensor("expected_attn_output")?;
    let mut stats = compare(
        &format!("{path} attn_output"),
        attn_output,
        &want,
        rtol,
        atol,
    )?;
    match (need_weights, attn_weights) {
        (true, Some(got)) => {
            let want = case.tensor("expected_attn_output_weights")?;
            stats = stats.max(compare(
                &format!("{path} attn_output_weights"),
                got,
                &want,
                rtol,
                atol,
            )?);
        }
        (true, None) => return Err(format!("{path}: need_weights but no attn_weights returned")),
        (false, Some(_)) => {
            return Err(format!(
                "{path}: attn_weights returned without need_weights"
            ));
        }
        (false, None) => {}
    }
    Ok(stats)
}

/// Runs `f`, turning a panic into an error message so one bad case does not hide the rest.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic payload".into());
            Err(format!("{what}: panicked: {message}"))
        }
    }
}

/// Runs every case of `kind` through `run` (which returns the GPU and CPU errors, each named)
/// and panics once, listing every failure.
fn run_all(kind: &str, run: impl Fn(&Gpu, &Case) -> Vec<Result<(String, Stats), String>>) {
    let gpu = gpu();
    let cases = load_cases(kind);
    assert!(!cases.is_empty(), "no `{kind}` cases found");
    let mut failures = Vec::new();
    let mut worst = BTreeMap::<String, Stats>::new();
    for case in &cases {
        let mut line = format!("{:44}", case.name);
        let mut ok = true;
        for result in run(&gpu, case) {
            match result {
                Ok((path, stats)) => {
                    line += &format!(
                        " {path} max|err|={:.3e} (err/tol {:.3})",
                        stats.max_err, stats.max_ratio
                    );
                    let w = worst.entry(path).or_default();
                    *w = w.max(stats);
                }
                Err(message) => {
                    ok = false;
                    line += " FAILED";
                    failures.push(format!("{}: {message}", case.name));
                }
            }
        }
        eprintln!("{line}{}", if ok { "  ok" } else { "" });
    }
    eprintln!(
        "{kind}: {} cases, {} failures; worst over all cases: {worst:?}",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failure(s) over {} `{kind}` cases:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

/// Everything an MHA case needs, read from its file.
struct MhaCase {
    config: MhaConfig,
    weights: MhaWeights,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    self_attention: bool,
    attn_mask: Option<Mask>,
    key_padding_mask: Option<Mask>,
    causal: Option<Causal>,
    need_weights: bool,
    average_attn_weights: bool,
}

impl MhaCase {
    fn load(case: &Case) -> Result<Self, String> {
        let config = MhaConfig::new(case.usize("embed_dim")?, case.usize("num_heads")?)
            .with_kv_dims(case.usize("kdim")?, case.usize("vdim")?)
            .with_bias(case.bool("bias")?)
            .with_batch_first(case.bool("batch_first")?);
        let weights = MhaWeights::from_tensors(&config, &case.tensors, true)
            .map_err(|e| format!("weights: {e}"))?;
        Ok(Self {
            config,
            weights,
            query: case.tensor("query")?,
            key: case.tensor("key")?,
            value: case.tensor("value")?,
            self_attention: case.bool("self_attention")?,
            attn_mask: case.mask("attn_mask"),
            key_padding_mask: case.mask("key_padding_mask"),
            causal: case.causal()?,
            need_weights: case.bool("need_weights")?,
            average_attn_weights: case.bool("average_attn_weights")?,
        })
    }

    fn options(&self, path: AttentionPath) -> MhaOptions<'_> {
        MhaOptions {
            path,
            key_padding_mask: self.key_padding_mask.as_ref(),
            attn_mask: self.attn_mask.as_ref(),
            causal: self.causal,
            need_weights: self.need_weights,
            average_attn_weights: self.average_attn_weights,
        }
    }

    /// `(query, key, value)`: for self-attention the same tensor three times, so the GPU path
    /// sees one data pointer and takes its packed-projection route.
    fn qkv(&self) -> (&Tensor, &Tensor, &Tensor) {
        if self.self_attention {
            (&self.query, &self.query, &self.query)
        } else {
            (&self.query, &self.key, &self.value)
        }
    }
}

#[test]
fn case_files_are_all_there() {
    let paths = case_paths();
    assert!(
        paths.len() >= MIN_CASES,
        "expected at least {MIN_CASES} case files in {}, found {}",
        cases_dir().display(),
        paths.len()
    );
    let mut bad = Vec::new();
    for path in &paths {
        let meta = read_safetensors_metadata(path)
            .unwrap_or_else(|e| panic!("{}: reading metadata: {e}", path.display()));
        match meta.get("kind").map(String::as_str) {
            Some("mha" | "sdpa") => {}
            other => bad.push(format!("{}: kind {other:?}", path.display())),
        }
    }
    assert!(
        bad.is_empty(),
        "cases of unknown kind:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn mha_matches_pytorch() {
    run_all("mha", |gpu, case| {
        let loaded = match guarded("load", || MhaCase::load(case)) {
            Ok(loaded) => loaded,
            Err(e) => return vec![Err(e)],
        };
        let (q, k, v) = loaded.qkv();
        let opts = loaded.options(AttentionPath::Auto);
        // Both GPU paths; the fused one only where no weights are asked for.
        let mut paths = vec![("gpu three-pass", AttentionPath::ThreePass)];
        if !loaded.need_weights {
            paths.push(("gpu fused", AttentionPath::Fused));
        }
        let mut results: Vec<_> = paths
            .into_iter()
            .map(|(name, path)| {
                guarded(name, || {
                    let mha = MultiHeadAttention::new(gpu, loaded.config, &loaded.weights)
                        .map_err(|e| format!("{name}: MultiHeadAttention::new: {e}"))?;
                    let out = mha
                        .forward(q, k, v, &loaded.options(path))
                        .map_err(|e| format!("{name}: forward: {e}"))?;
                    let err = check_output(
                        case,
                        name,
                        &out.attn_output,
                        out.attn_weights.as_ref(),
                        loaded.need_weights,
                    )?;
                    Ok((name.to_string(), err))
                })
            })
            .collect();
        let cpu_result = guarded("cpu", || {
            let out = reference::mha_forward(&loaded.config, &loaded.weights, q, k, v, &opts)
                .map_err(|e| format!("cpu: mha_forward: {e}"))?;
            let err = check_output(
                case,
                "cpu",
                &out.attn_output,
                out.attn_weights.as_ref(),
                loaded.need_weights,
            )?;
            Ok(("cpu".to_string(), err))
        });
        results.push(cpu_result);
        results
    });
}

#[test]
fn sdpa_matches_pytorch() {
    run_all("sdpa", |gpu, case| {
        let inputs = guarded("load", || {
            let scale = match case.get("scale")? {
                "default" => None,
                s => Some(
                    s.parse::<f32>()
                        .map_err(|e| format!("metadata `scale` = {s:?}: {e}"))?,
                ),
            };
            Ok((
                case.tensor("query")?,
                case.tensor("key")?,
                case.tensor("value")?,
                case.mask("attn_mask"),
                case.causal()?,
                scale,
                case.bool("enable_gqa")?,
            ))
        });
        let (q, k, v, mask, causal, scale, enable_gqa) = match inputs {
            Ok(inputs) => inputs,
            Err(e) => return vec![Err(e)],
        };
        let opts = SdpaOptions {
            attn_mask: mask.as_ref(),
            causal,
            scale,
            enable_gqa,
            path: AttentionPath::Auto,
            dtype: Dtype::F32,
        };
        let mut results: Vec<_> = [
            ("gpu three-pass", AttentionPath::ThreePass),
            ("gpu fused", AttentionPath::Fused),
        ]
        .into_iter()
        .map(|(name, path)| {
            guarded(name, || {
                let opts = SdpaOptions { path, ..opts };
                let out = scaled_dot_product_attention(gpu, &q, &k, &v, &opts)
                    .map_err(|e| format!("{name}: scaled_dot_product_attention: {e}"))?;
                Ok((
                    name.to_string(),
                    check_output(case, name, &out, None, false)?,
                ))
            })
        })
        .collect();
        let cpu_result = guarded("cpu", || {
            let out = reference::sdpa(&q, &k, &v, &opts).map_err(|e| format!("cpu: sdpa: {e}"))?;
            Ok((
                "cpu".to_string(),
                check_output(case, "cpu", &out, None, false)?,
            ))
        });
        results.push(cpu_result);
        results
    });
}
