//! Every WGSL kernel, exactly as the crate hands it to the device, parses and validates with
//! naga — no GPU needed.

use naga::valid::{Capabilities, ValidationFlags, Validator};

#[test]
fn every_shader_parses_and_validates() {
    let sources = wgpu_mha::kernels::shader_sources();
    let names: Vec<_> = sources.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["linear", "qk", "av", "softmax", "head_mean", "fused"]
    );
    for (name, source) in sources {
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(&source)));
        Validator::new(ValidationFlags::all(), Capabilities::empty())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(&source)));
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
            "softmax" => &["WG"],
            "fused" => &["WG_X", "D_VEC", "WG_Y", "BC", "KV_VEC"],
            _ => &[],
        };
        assert_eq!(overrides, expected, "{name}");
    }
}
