//! Kernel tunings change how the work is split, never the answer: every candidate
//! configuration gives the reference's result; the cache round-trips per adapter.

mod common;

use common::*;
use wgpu_mha::tuning::{self, DirectTiles, GemmTiles};
use wgpu_mha::*;

/// The path `Auto` should take: the fused one where `fused`, else three passes.
fn path_if_fused(fused: bool) -> AttentionPath {
    if fused {
        AttentionPath::Fused
    } else {
        AttentionPath::ThreePass
    }
}

fn tunings() -> Vec<Tuning> {
    let base = Tuning::default();
    let gemm = |wg_x, wg_y, bk| GemmTiles { wg_x, wg_y, bk };
    vec![
        Tuning {
            gemm: gemm(8, 8, 16),
            softmax_wg: 64,
            softmax_whole_rows: false,
            // A workgroup per row, merged through workgroup memory: the path for devices
            // without subgroup operations.
            softmax_subgroups: false,
            fused_block: Some((16, 16)),
            prefer_fused: true,
            fused_split_groups: 1 << 16,
            av: Some(gemm(8, 4, 16)),
            direct: Some(DirectTiles { wg_x: 4, wg_y: 2 }),
            // Asked for, but 4 invocations share rows: no device's subgroups are that
            // narrow on the adapters at hand, so each reads its own rows.
            direct_subgroups: true,
            fused_direct: Some(8),
            fused_subgroups: true,
            fused_lanes_halves: false,
        },
        Tuning {
            gemm: gemm(16, 8, 32),
            softmax_wg: 256,
            softmax_whole_rows: true,
            softmax_subgroups: false,
            fused_block: Some((64, 16)),
            prefer_fused: false,
            fused_split_groups: 0,
            av: None,
            direct: None,
            direct_subgroups: false,
            fused_direct: None,
            fused_subgroups: false,
            fused_lanes_halves: true,
        },
        Tuning {
            gemm: gemm(4, 16, 8),
            softmax_wg: 32,
            softmax_whole_rows: false,
            // Merged with subgroup operations where the adapter has them (lavapipe does).
            softmax_subgroups: true,
            fused_block: Some((16, 8)),
            prefer_fused: true,
            fused_split_groups: 256,
            av: Some(gemm(4, 8, 32)),
            direct: Some(DirectTiles { wg_x: 16, wg_y: 4 }),
            direct_subgroups: false,
            fused_direct: Some(64),
            fused_subgroups: true,
            fused_lanes_halves: true,
        },
        // The register-blocked kernels at the CPU shape, each invocation reading its own
        // rows (the path without subgroup operations), and sharing them through subgroups
        // with another number of groups per workgroup.
        Tuning {
            direct_subgroups: false,
            ..base
        },
        Tuning {
            direct: Some(DirectTiles { wg_x: 8, wg_y: 3 }),
            direct_subgroups: true,
            ..base
        },
        // The register-blocked fused kernel with workgroups of 12 (not a whole number of
        // lavapipe's 8-wide subgroups: each invocation reads its own keys) and of 40 (five
        // subgroups sharing them), and with its keys and values never shared.
        Tuning {
            fused_direct: Some(12),
            fused_split_groups: 0,
            ..base
        },
        Tuning {
            fused_direct: Some(40),
            fused_split_groups: 0,
            ..base
        },
        Tuning {
            fused_subgroups: false,
            fused_split_groups: 0,
            ..base
        },
        // The 8-lane subgroup kernel with its dot products over all 32 rows at once (the
        // default takes them 16 at a time).
        Tuning {
            fused_lanes_halves: false,
            fused_split_groups: 0,
            ..base
        },
        Tuning {
            fused_block: Some((32, 32)),
            ..base
        },
        // The register-blocked fused kernel at its largest tuned workgroup (no key splits,
        // which would take the staged kernel).
        Tuning {
            fused_direct: Some(64),
            fused_split_groups: 0,
            ..base
        },
    ]
}

#[test]
fn every_tuning_gives_the_reference_result() {
    let mut rng = rng();
    let config = MhaConfig::new(48, 3).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let x = random(&mut rng, &[2, 45, 48], 1.0);
    // 72 keys: the register-blocked P·V can run; 70: it cannot (the staged one runs).
    let inputs: Vec<_> = [70, 72]
        .into_iter()
        .map(|s| {
            (
                random(&mut rng, &[2, s, 48], 1.0),
                random_bool_mask(&mut rng, &[2, s], 0.2),
            )
        })
        .collect();
    for tuning in tunings() {
        let gpu = Gpu::with_options(&GpuOptions {
            tuning: Some(tuning),
            ..GpuOptions::from_env()
        })
        .unwrap_or_else(|e| panic!("{tuning:?}: {e} (install mesa-vulkan-drivers if no adapter)"));
        assert_eq!(gpu.tuning(), tuning);
        assert_eq!(gpu.tuning_source(), "given by the caller");
        if !tuning.direct_subgroups {
            assert!(!gpu.direct_subgroups(), "{tuning:?}");
        }
        if !tuning.fused_subgroups {
            assert!(!gpu.fused_subgroups(), "{tuning:?}");
        }
        let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
        for ((kv, mask), (path, need_weights)) in inputs.iter().flat_map(|input| {
            [
                (AttentionPath::ThreePass, true),
                (AttentionPath::ThreePass, false),
                (AttentionPath::Fused, false),
            ]
            .map(|run| (input, run))
        }) {
            let opts = MhaOptions {
                key_padding_mask: Some(mask),
                causal: Some(Causal::BottomRight),
                need_weights,
                path,
                ..Default::default()
            };
            let got = mha.forward(&x, kv, kv, &opts).unwrap();
            let want = reference::mha_forward(&config, &weights, &x, kv, kv, &opts).unwrap();
            let (rtol, atol) = tolerance(&want.attn_output);
            assert_close(
                &format!(
                    "{tuning:?} {path:?} S {} weights {need_weights}",
                    kv.shape[1]
                ),
                &got.attn_output,
                &want.attn_output,
                rtol,
                atol,
            );
            if need_weights {
                assert_close(
                    "weights",
                    got.attn_weights.as_ref().unwrap(),
                    want.attn_weights.as_ref().unwrap(),
                    1e-4,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn auto_follows_the_tuned_preference() {
    let mut rng = rng();
    // 32 query rows: one subgroup's worth of the fused kernel where 8-lane subgroups share.
    let q = random(&mut rng, &[1, 2, 32, 16], 1.0);
    for prefer_fused in [true, false] {
        let gpu = Gpu::with_options(&GpuOptions {
            tuning: Some(Tuning {
                prefer_fused,
                ..Tuning::default()
            }),
            ..GpuOptions::from_env()
        })
        .unwrap();
        let prepared = PreparedSdpa::prepare(&gpu, &q, &q, &q, &SdpaOptions::default()).unwrap();
        let expected = path_if_fused(prefer_fused);
        assert_eq!(prepared.path(), expected);
        // Causal calls follow the preference (both paths skip the tiles past the diagonal).
        let causal = SdpaOptions {
            causal: Some(Causal::TopLeft),
            ..Default::default()
        };
        let prepared = PreparedSdpa::prepare(&gpu, &q, &q, &q, &causal).unwrap();
        assert_eq!(prepared.path(), expected);
        // Calls of fewer than 32 query rows run three passes where they have
        // register-blocked kernels (4-row blocks), whatever the preference, and take the
        // fused kernel where they would fill the staged kernels' tall tiles.
        let one = random(&mut rng, &[1, 2, 1, 16], 1.0);
        let prepared = PreparedSdpa::prepare(&gpu, &one, &q, &q, &SdpaOptions::default()).unwrap();
        assert_eq!(prepared.path(), AttentionPath::ThreePass);
        let staged = gpu
            .with_tuning(Tuning {
                direct: None,
                ..gpu.tuning()
            })
            .unwrap();
        let prepared =
            PreparedSdpa::prepare(&staged, &one, &q, &q, &SdpaOptions::default()).unwrap();
        assert_eq!(prepared.path(), AttentionPath::Fused);
        // Three passes preferred, but its score block cannot fit the budget: fused it is.
        gpu.set_memory_budget(4096);
        let long = random(&mut rng, &[1, 2, 2048, 16], 1.0);
        let prepared =
            PreparedSdpa::prepare(&gpu, &q, &long, &long, &SdpaOptions::default()).unwrap();
        assert_eq!(prepared.path(), AttentionPath::Fused);
    }
}

/// Without a tuning, `Auto` takes the fused kernel where a CPU adapter runs the kernel of
/// 8-lane subgroups (lavapipe's default build) and three passes elsewhere (its 4-wide
/// build, GPUs).
#[test]
fn the_adapter_defaults_prefer_the_kernel_of_8_lane_subgroups() {
    let mut rng = rng();
    let probe = gpu();
    let defaults = Tuning::for_adapter(probe.adapter_info(), probe.device().features());
    let gpu = probe.with_tuning(defaults).unwrap();
    let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let lanes8 = cpu && gpu.fused_subgroup_width() == Some(8);
    assert_eq!(defaults.prefer_fused, lanes8, "{:?}", gpu.adapter_info());
    let q = random(&mut rng, &[1, 2, 32, 16], 1.0);
    let prepared = PreparedSdpa::prepare(&gpu, &q, &q, &q, &SdpaOptions::default()).unwrap();
    let expected = path_if_fused(lanes8);
    assert_eq!(prepared.path(), expected);
    assert_eq!(prepared.fused_subgroups(), lanes8);
    // Head sizes the kernel of 8-lane subgroups cannot read as vec4 take the staged fused
    // kernel, which the preference was not measured on: three passes.
    let odd = random(&mut rng, &[1, 2, 32, 18], 1.0);
    let prepared = PreparedSdpa::prepare(&gpu, &odd, &odd, &odd, &SdpaOptions::default()).unwrap();
    assert_eq!(prepared.path(), AttentionPath::ThreePass);
}

#[test]
fn a_tuning_beyond_the_device_is_refused() {
    let too_big = Tuning {
        gemm: GemmTiles {
            wg_x: 64,
            wg_y: 64,
            bk: 64,
        },
        ..Tuning::default()
    };
    let err = Gpu::with_options(&GpuOptions {
        tuning: Some(too_big),
        ..GpuOptions::from_env()
    })
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("tuning"), "{err}");
}

/// `Gpu::with_tuning` rebuilds the kernels on the same device (what `tune` measures with):
/// same answers, the new tuning reported, bad tunings refused.
#[test]
fn with_tuning_shares_the_device() {
    let base = gpu();
    let mut rng = rng();
    let q = random(&mut rng, &[1, 2, 40, 16], 1.0);
    let want = reference::sdpa(&q, &q, &q, &SdpaOptions::default()).unwrap();
    let (rtol, atol) = tolerance(&want);
    for tuning in tunings() {
        let tuned = base.with_tuning(tuning).unwrap();
        assert_eq!(tuned.tuning(), tuning);
        assert_eq!(tuned.tuning_source(), "given by the caller");
        assert_eq!(tuned.adapter_info(), base.adapter_info());
        for path in [AttentionPath::ThreePass, AttentionPath::Fused] {
            let opts = SdpaOptions {
                path,
                ..Default::default()
            };
            let got = scaled_dot_product_attention(&tuned, &q, &q, &q, &opts).unwrap();
            assert_close(&format!("{tuning:?} {path:?}"), &got, &want, rtol, atol);
        }
    }
    let too_big = Tuning {
        softmax_wg: 1 << 20,
        ..Tuning::default()
    };
    assert!(matches!(base.with_tuning(too_big), Err(Error::Config(_))));
}

#[test]
fn the_cache_is_keyed_by_adapter_and_crate_version() {
    // The cache location comes from the environment; this test owns its own directory.
    let dir = std::env::temp_dir().join(format!("wgpu-mha-tuning-{}", std::process::id()));
    // SAFETY: no other thread of this test binary reads WGPU_MHA_CACHE_DIR (the other
    // tests pass their tuning explicitly).
    unsafe { std::env::set_var("WGPU_MHA_CACHE_DIR", &dir) };
    let gpu = gpu();
    let info = gpu.adapter_info().clone();
    assert_eq!(tuning::load_cached(&info), None);
    let tuned = tunings()[1];
    let path = tuning::store(&info, &tuned).unwrap();
    assert!(path.starts_with(&dir));
    assert_eq!(tuning::load_cached(&info), Some(tuned));
    assert!(tuning::cache_key(&info).contains(env!("CARGO_PKG_VERSION")));
    let mut other = info.clone();
    other.driver_info = "another driver".into();
    assert_eq!(tuning::load_cached(&other), None);
    // A Gpu opened now picks the cached tuning up.
    let fresh = Gpu::new().unwrap();
    assert_eq!(fresh.tuning(), tuned);
    assert_eq!(fresh.tuning_source(), "cached by `wgpu-mha tune`");
    std::fs::remove_dir_all(&dir).ok();
}
