//! `wgpu-mha info`: what the machine offers and what the crate would use.

use super::{DeviceArgs, Outcome, describe};
use wgpu_mha::Result;
use wgpu_mha::gpu::{choose_adapter, enumerate_adapters};

pub fn run(args: &DeviceArgs) -> Result<Outcome> {
    let options = args.options();
    let backends = options.backends.unwrap_or(wgpu::Backends::all());
    let adapters = enumerate_adapters(backends);
    println!("Adapters found ({} on {backends:?}):", adapters.len());
    for a in &adapters {
        println!("  - {}", describe(&a.get_info()));
    }
    let gpu = args.open()?;
    println!("\nChosen: {}", describe(gpu.adapter_info()));
    println!("  why: {}", gpu.choice_reason());
    if let Some((adapter, _)) = choose_adapter(adapters, &options) {
        println!("\nAdapter features: {:?}", adapter.features());
    }
    let l = gpu.limits();
    println!("\nLimits (as requested from the adapter):");
    let rows: [(&str, u64); 10] = [
        (
            "max_storage_buffer_binding_size",
            l.max_storage_buffer_binding_size,
        ),
        ("max_buffer_size", l.max_buffer_size),
        (
            "max_compute_workgroup_storage_size",
            l.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroups_per_dimension",
            l.max_compute_workgroups_per_dimension as u64,
        ),
        (
            "max_storage_buffers_per_shader_stage",
            l.max_storage_buffers_per_shader_stage as u64,
        ),
        ("max_bind_groups", l.max_bind_groups as u64),
        (
            "min_storage_buffer_offset_alignment",
            l.min_storage_buffer_offset_alignment as u64,
        ),
        (
            "min_uniform_buffer_offset_alignment",
            l.min_uniform_buffer_offset_alignment as u64,
        ),
        ("max_immediate_size", l.max_immediate_size as u64),
    ];
    for (name, value) in rows {
        println!("  {name:<40} {value}");
    }
    println!(
        "\nScore-block memory budget: {} MiB",
        gpu.memory_budget() >> 20
    );
    println!(
        "Kernel tuning ({}): {:?}",
        gpu.tuning_source(),
        gpu.tuning()
    );
    if let Some(path) = wgpu_mha::tuning::cache_path() {
        println!("Tuning cache: {}", path.display());
    }
    Ok(Outcome::Pass)
}
