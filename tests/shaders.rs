//! Every WGSL kernel, exactly as the crate hands it to the device, parses and validates with
//! naga — no GPU needed.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_mha::kernels::{KERNEL_NAMES, STORED_KERNELS, Storage, shader_source};

#[test]
fn every_shader_parses_and_validates() {
    let sources = wgpu_mha::kernels::shader_sources();
    // Every kernel a forward runs, and every kernel with a storage type, is among them.
    let names: Vec<_> = sources.iter().map(|(n, _)| *n).collect();
    for name in KERNEL_NAMES.iter().chain(&STORED_KERNELS) {
        assert!(names.contains(name), "{name} is not validated");
    }
    for (name, source) in sources {
        let module = validate(name, &source);
        // Every kernel has one compute entry point, `main`.
        assert_eq!(module.entry_points.len(), 1, "{name}");
        assert_eq!(module.entry_points[0].name, "main", "{name}");
        assert_eq!(
            module.entry_points[0].stage,
            naga::ShaderStage::Compute,
            "{name}"
        );
    }
}

/// Parses and validates `source`; f16 only where the source enables it (as the device does
/// only where it grants SHADER_F16).
fn validate(name: &str, source: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)));
    let mut capabilities = Capabilities::empty();
    if source.contains("enable f16;") {
        capabilities |= Capabilities::SHADER_FLOAT16;
    }
    // Subgroup operations only in the kernels the crate builds where the device has them:
    // the `_subgroup` variants and the fused kernel of 8-lane subgroups.
    if name
        .split_whitespace()
        .next()
        .is_some_and(|n| n.ends_with("_subgroup") || n == "fused_lanes")
    {
        capabilities |= Capabilities::SUBGROUP;
    }
    Validator::new(ValidationFlags::all(), capabilities)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(source)));
    module
}

/// The kernels with operands, in every storage they are built with (f16 operands and
/// result, f16 operands and f32 result), validate too; the f16 ones store f16.
#[test]
fn every_storage_variant_validates() {
    for name in STORED_KERNELS {
        for storage in Storage::ALL {
            let source = shader_source(name, storage).expect("known kernel");
            validate(&format!("{name} {storage:?}"), &source);
            let stores_f16 = source.contains("alias Elem = f16;");
            assert_eq!(
                stores_f16,
                storage.operands() == wgpu_mha::Dtype::F16,
                "{name} {storage:?}"
            );
        }
    }
    assert!(shader_source("no such kernel", Storage::F32).is_none());
}

#[test]
fn tile_sizes_are_override_constants() {
    for (name, source) in wgpu_mha::kernels::shader_sources() {
        let module = naga::front::wgsl::parse_str(&source).unwrap();
        let overrides: Vec<_> = module
            .overrides
            .iter()
            .filter_map(|(_, o)| o.name.clone())
            .collect();
        let expected: &[&str] = match name {
            "linear" | "qk" | "av" => &["WG_X", "WG_Y", "BK"],
            "linear_direct"
            | "qk_direct"
            | "av_direct"
            | "linear_direct_subgroup"
            | "qk_direct_subgroup"
            | "av_direct_subgroup" => &["WG_X", "WG_Y"],
            "softmax"
            | "softmax_vec4"
            | "softmax_rows"
            | "softmax_subgroup"
            | "softmax_vec4_subgroup" => &["WG"],
            "fused" => &["WG_X", "D_VEC", "WG_Y", "BC", "KV_VEC"],
            "fused_direct" | "fused_direct_subgroup" => &["WG", "DV_VEC"],
            "fused_lanes" => &["WG", "CPL", "HALVES"],
            _ => &[],
        };
        assert_eq!(overrides, expected, "{name}");
    }
}
