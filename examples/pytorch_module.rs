//! Load an `nn.MultiheadAttention` exported from PyTorch and run it on the GPU, checked
//! against the CPU reference.
//!
//! ```text
//! cargo run --release --example pytorch_module -- tests/data/cases/mha_self_batch_first.safetensors
//! ```
//!
//! The file holds the module's `state_dict()` (saved with `safetensors.torch.save_file`) and a
//! `query` tensor `[B, L, E]`; the module was built with `batch_first=True`.

use wgpu_mha::check::compare;
use wgpu_mha::io::read_safetensors;
use wgpu_mha::{Gpu, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, reference};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/data/cases/mha_self_batch_first.safetensors".into());
    let tensors = read_safetensors(path.as_ref())?;
    let query = tensors
        .get("query")
        .ok_or("the file has no `query` tensor")?
        .clone()
        .into_f32("query")?;
    let embed_dim = *query.shape.last().ok_or("query is a scalar")?;

    // The configuration PyTorch used: nn.MultiheadAttention(embed_dim, 4, batch_first=True).
    let config = MhaConfig::new(embed_dim, 4).with_batch_first(true);
    // The file also carries inputs and expected outputs: allow names beyond the weights.
    let weights = MhaWeights::from_tensors(&config, &tensors, true)?;

    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.adapter_info().name);
    let mha = MultiHeadAttention::new(&gpu, config, &weights)?;
    let opts = MhaOptions {
        need_weights: true,
        ..Default::default()
    };
    // The same tensor as query, key and value: self-attention, one packed projection.
    let out = mha.forward(&query, &query, &query, &opts)?;
    let want = reference::mha_forward(&config, &weights, &query, &query, &query, &opts)?;
    let c = compare(&out.attn_output, &want.attn_output);
    println!(
        "attn_output {:?}: max abs error vs CPU reference {:.2e} ({})",
        out.attn_output.shape,
        c.max_abs,
        if c.passed() { "ok" } else { "FAILED" }
    );
    if let Some(expected) = tensors.get("expected_attn_output") {
        let c = compare(&out.attn_output, &expected.clone().into_f32("expected")?);
        println!(
            "attn_output: max abs error vs PyTorch's own output {:.2e} ({})",
            c.max_abs,
            if c.passed() { "ok" } else { "FAILED" }
        );
    }
    println!(
        "attn_output_weights {:?}",
        out.attn_weights.map(|w| w.shape).unwrap_or_default()
    );
    Ok(())
}
