//! `wgpu-mha mha` and `wgpu-mha sdpa`: one attention on tensors from a safetensors file,
//! written to another; `--check` compares with the CPU reference (and with the file's own
//! `expected_*` tensors when it has them, as the PyTorch-made test vectors do).

use std::path::{Path, PathBuf};

use clap::Args;
use wgpu_mha::check::{Comparison, compare_as};
use wgpu_mha::io::{FileTensor, TensorMap, read_safetensors, write_safetensors};
use wgpu_mha::{
    AttentionPath, Dtype, Error, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Result,
    SdpaOptions, Tensor, reference, scaled_dot_product_attention,
};

use super::{CausalArg, DeviceArgs, DtypeArg, Outcome};

/// `--path auto|three-pass|fused`.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq)]
pub enum PathArg {
    /// Fused unless attention weights are asked for.
    #[default]
    Auto,
    /// QKᵀ, softmax and P·V as three kernels (the only path with weights).
    ThreePass,
    /// One FlashAttention-style kernel.
    Fused,
}

impl From<PathArg> for AttentionPath {
    fn from(p: PathArg) -> Self {
        match p {
            PathArg::Auto => AttentionPath::Auto,
            PathArg::ThreePass => AttentionPath::ThreePass,
            PathArg::Fused => AttentionPath::Fused,
        }
    }
}

/// What `mha` and `sdpa` share: how the core runs and whether to check it.
#[derive(Args, Debug)]
pub struct CoreArgs {
    /// Which algorithm computes the attention core.
    #[arg(long, value_enum, default_value_t)]
    path: PathArg,
    /// Storage of inputs, weights and intermediates on the GPU (arithmetic is f32).
    #[arg(long, value_enum, default_value_t)]
    dtype: DtypeArg,
    /// Compare with the CPU reference (run on the inputs as stored: rounded to f16 with
    /// `--dtype f16`); exit 1 when out of tolerance.
    #[arg(long)]
    check: bool,
}

#[derive(Args, Debug)]
pub struct MhaArgs {
    /// safetensors file: the weights by PyTorch's state-dict names, and `query`, optional
    /// `key`, `value` (default: the query), `attn_mask`, `key_padding_mask` (BOOL or F32).
    #[arg(long)]
    input: PathBuf,
    /// Number of heads.
    #[arg(long)]
    num_heads: usize,
    /// Inputs are [B, L, E] (default: PyTorch's [L, B, E]).
    #[arg(long)]
    batch_first: bool,
    /// Also write `attn_output_weights`.
    #[arg(long)]
    need_weights: bool,
    /// Weights per head [B, h, L, S] instead of averaged over heads.
    #[arg(long, requires = "need_weights")]
    per_head_weights: bool,
    /// Apply a causal mask.
    #[arg(long, value_enum)]
    causal: Option<CausalArg>,
    #[command(flatten)]
    core: CoreArgs,
    /// Where to write `attn_output` (and `attn_output_weights`).
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args, Debug)]
pub struct SdpaArgs {
    /// safetensors file with `query [B,Hq,L,d]`, `key`/`value [B,Hkv,S,d]`, optional
    /// `attn_mask` (BOOL: true = may attend, or F32: added).
    #[arg(long)]
    input: PathBuf,
    /// PyTorch's `is_causal` (top-left aligned).
    #[arg(long, conflicts_with = "causal")]
    is_causal: bool,
    /// Causal mask with an explicit alignment.
    #[arg(long, value_enum)]
    causal: Option<CausalArg>,
    /// Scale of Q·Kᵀ (default 1/√d).
    #[arg(long)]
    scale: Option<f32>,
    /// Grouped-query attention: Hq a multiple of Hkv.
    #[arg(long)]
    enable_gqa: bool,
    #[command(flatten)]
    core: CoreArgs,
    /// Where to write `attn_output`.
    #[arg(long)]
    output: PathBuf,
}

const INPUT_NAMES: [&str; 5] = ["query", "key", "value", "attn_mask", "key_padding_mask"];

/// Splits a file's tensors into inputs, weights, and `expected_*` results.
fn split(map: TensorMap) -> (TensorMap, TensorMap, TensorMap) {
    let (mut inputs, mut weights, mut expected) = Default::default();
    for (name, t) in map {
        let target: &mut TensorMap = if INPUT_NAMES.contains(&name.as_str()) {
            &mut inputs
        } else if name.starts_with("expected_") {
            &mut expected
        } else {
            &mut weights
        };
        target.insert(name, t);
    }
    (inputs, weights, expected)
}

fn take_f32(map: &mut TensorMap, name: &'static str) -> Result<Option<Tensor>> {
    map.remove(name).map(|t| t.into_f32(name)).transpose()
}

fn required(t: Option<Tensor>, name: &str, path: &Path) -> Result<Tensor> {
    t.ok_or_else(|| Error::Safetensors {
        path: path.display().to_string(),
        message: format!("no tensor named {name:?}"),
    })
}

fn last_dim(t: &Tensor) -> usize {
    t.shape.last().copied().unwrap_or(0)
}

/// Prints a comparison line; `true` when within tolerance.
fn report(what: &str, c: &Comparison) -> bool {
    println!(
        "{what}: max abs error {:.3e}, max rel error {:.3e} (tolerance {:.1e} + {:.0e}·|ref|): {}",
        c.max_abs,
        c.max_rel,
        c.atol,
        c.rtol,
        if c.passed() {
            "ok".to_string()
        } else {
            format!("FAILED ({} elements out of tolerance)", c.failures)
        }
    );
    c.passed()
}

/// Compares `got` with the reference and with the file's `expected_NAME`, if present, with
/// the tolerance of `dtype` storage.
fn check_all(
    name: &str,
    got: &Tensor,
    reference: &Tensor,
    expected: &TensorMap,
    dtype: Dtype,
) -> Result<bool> {
    let mut ok = report(
        &format!("{name} vs CPU reference"),
        &compare_as(got, reference, dtype),
    );
    if let Some(e) = expected.get(&format!("expected_{name}")) {
        let e = e.clone().into_f32("expected")?;
        ok &= report(
            &format!("{name} vs expected_{name} in the file"),
            &compare_as(got, &e, dtype),
        );
    }
    Ok(ok)
}

fn f32_entry(t: Tensor) -> FileTensor {
    FileTensor::F32(t)
}

pub fn mha(device: &DeviceArgs, args: &MhaArgs) -> Result<Outcome> {
    let (mut inputs, weights_map, expected) = split(read_safetensors(&args.input)?);
    let query = required(take_f32(&mut inputs, "query")?, "query", &args.input)?;
    let key = take_f32(&mut inputs, "key")?;
    let value = take_f32(&mut inputs, "value")?;
    let attn_mask = inputs.remove("attn_mask").map(FileTensor::into_mask);
    let key_padding_mask = inputs.remove("key_padding_mask").map(FileTensor::into_mask);

    let embed_dim = last_dim(&query);
    let config = MhaConfig::new(embed_dim, args.num_heads)
        .with_kv_dims(
            key.as_ref().map_or(embed_dim, last_dim),
            value.as_ref().map_or(embed_dim, last_dim),
        )
        .with_bias(weights_map.contains_key(wgpu_mha::weights::names::IN_PROJ_BIAS))
        .with_batch_first(args.batch_first)
        .with_dtype(args.core.dtype.into());
    let weights = MhaWeights::from_tensors(&config, &weights_map, false)?;
    let opts = MhaOptions {
        key_padding_mask: key_padding_mask.as_ref(),
        attn_mask: attn_mask.as_ref(),
        causal: args.causal.map(Into::into),
        need_weights: args.need_weights,
        average_attn_weights: !args.per_head_weights,
        path: args.core.path.into(),
    };
    // Absent key/value mean self-attention: pass the query itself (one packed projection).
    let key = key.as_ref().unwrap_or(&query);
    let value = value.as_ref().unwrap_or(key);

    let gpu = device.open()?;
    let mha = MultiHeadAttention::new(&gpu, config, &weights)?;
    let out = mha.forward(&query, key, value, &opts)?;

    let mut outcome = Outcome::Pass;
    if args.core.check {
        let dtype = config.dtype;
        let want = reference::mha_forward(
            &config,
            &weights.rounded_to(dtype),
            &query.rounded_to(dtype),
            &key.rounded_to(dtype),
            &value.rounded_to(dtype),
            &opts,
        )?;
        let mut ok = check_all(
            "attn_output",
            &out.attn_output,
            &want.attn_output,
            &expected,
            dtype,
        )?;
        if let (Some(g), Some(w)) = (&out.attn_weights, &want.attn_weights) {
            ok &= check_all("attn_output_weights", g, w, &expected, dtype)?;
        }
        if !ok {
            outcome = Outcome::CheckFailed;
        }
    }
    let mut written = TensorMap::new();
    written.insert("attn_output".into(), f32_entry(out.attn_output));
    if let Some(w) = out.attn_weights {
        written.insert("attn_output_weights".into(), f32_entry(w));
    }
    write_safetensors(&args.output, &written)?;
    println!("wrote {}", args.output.display());
    Ok(outcome)
}

pub fn sdpa(device: &DeviceArgs, args: &SdpaArgs) -> Result<Outcome> {
    let (mut inputs, extra, expected) = split(read_safetensors(&args.input)?);
    if let Some(name) = extra.keys().next() {
        return Err(Error::Safetensors {
            path: args.input.display().to_string(),
            message: format!(
                "unexpected tensor {name:?} (sdpa reads query, key, value, attn_mask)"
            ),
        });
    }
    if inputs.contains_key("key_padding_mask") {
        return Err(Error::Safetensors {
            path: args.input.display().to_string(),
            message: "key_padding_mask is an nn.MultiheadAttention input; sdpa takes attn_mask"
                .into(),
        });
    }
    let query = required(take_f32(&mut inputs, "query")?, "query", &args.input)?;
    let key = required(take_f32(&mut inputs, "key")?, "key", &args.input)?;
    let value = required(take_f32(&mut inputs, "value")?, "value", &args.input)?;
    let attn_mask = inputs.remove("attn_mask").map(FileTensor::into_mask);
    let causal = match (args.is_causal, args.causal) {
        (true, _) => Some(wgpu_mha::Causal::TopLeft),
        (false, c) => c.map(Into::into),
    };
    let opts = SdpaOptions {
        attn_mask: attn_mask.as_ref(),
        causal,
        scale: args.scale,
        enable_gqa: args.enable_gqa,
        path: args.core.path.into(),
        dtype: args.core.dtype.into(),
    };
    let gpu = device.open()?;
    let out = scaled_dot_product_attention(&gpu, &query, &key, &value, &opts)?;
    let mut outcome = Outcome::Pass;
    if args.core.check {
        let dtype = opts.dtype;
        let want = reference::sdpa(
            &query.rounded_to(dtype),
            &key.rounded_to(dtype),
            &value.rounded_to(dtype),
            &opts,
        )?;
        if !check_all("attn_output", &out, &want, &expected, dtype)? {
            outcome = Outcome::CheckFailed;
        }
    }
    let mut written = TensorMap::new();
    written.insert("attn_output".into(), f32_entry(out));
    write_safetensors(&args.output, &written)?;
    println!("wrote {}", args.output.display());
    Ok(outcome)
}
