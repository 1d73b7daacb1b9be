//! Per-adapter kernel configuration: tile and workgroup sizes, chosen by measuring candidates
//! on the adapter (`wgpu-mha tune`) and cached on disk, keyed by adapter, driver and crate
//! version. Without a cached entry the crate uses defaults for the adapter. A tuning
//! changes only how work is split, never what is computed: results agree up to rounding.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Tile sizes of the matrix-product kernels (WGSL override constants of `gemm_tile.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GemmTiles {
    /// Invocations along the output columns; a tile is 8·wg_x columns wide.
    pub wg_x: u32,
    /// Invocations along the output rows; a tile is 8·wg_y rows tall.
    pub wg_y: u32,
    /// Depth of one workgroup-memory stage.
    pub bk: u32,
}

impl GemmTiles {
    pub fn tile_rows(&self) -> u32 {
        8 * self.wg_y
    }

    pub fn tile_cols(&self) -> u32 {
        8 * self.wg_x
    }

    pub fn invocations(&self) -> u32 {
        self.wg_x * self.wg_y
    }

    /// Bytes of workgroup memory: one staged slab of each operand.
    pub fn workgroup_bytes(&self) -> u32 {
        32 * self.bk * (self.wg_x + self.wg_y)
    }
}

/// Workgroup memory the P·V kernel adds to its slabs: two slab flags (`av.wgsl`), counted
/// as WebGPU counts a variable, rounded up to 16 bytes.
pub const AV_FLAG_BYTES: u32 = 16;

/// Tiles of the P·V kernel, derived from the GEMM tiles: its output is one head wide (64
/// columns in most models), so its tile trades columns for rows — no idle columns in
/// 64-wide heads (P·V took half the time on lavapipe), no more invocations and no more slab
/// memory than the GEMM tiles (the kernel adds [`AV_FLAG_BYTES`]). What `Tuning::av`
/// falls back to when unset; the defaults set it.
pub fn av_tiles(tiles: &GemmTiles) -> GemmTiles {
    if tiles.wg_x <= 8 {
        return *tiles;
    }
    GemmTiles {
        wg_x: 8,
        wg_y: (tiles.wg_y * tiles.wg_x / 8).min(tiles.wg_x + tiles.wg_y - 8),
        bk: tiles.bk,
    }
}

/// Workgroup shape of the register-blocked matrix products (`qk_direct.wgsl`,
/// `av_direct.wgsl`, `linear_direct.wgsl`, WGSL override constants): each invocation
/// computes a block of [`DirectTiles::ROWS`] × [`DirectTiles::COLS`] outputs from operands
/// read straight from storage as vec4, without workgroup memory (8 × 4 in the linear and
/// P·V kernels whose subgroups share rows, `Tuning::direct_subgroups`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirectTiles {
    /// Invocations along the output columns.
    pub wg_x: u32,
    /// Invocations along the output rows.
    pub wg_y: u32,
}

impl DirectTiles {
    /// Output rows per invocation.
    pub const ROWS: u32 = 4;
    /// Output columns per invocation.
    pub const COLS: u32 = 8;

    pub fn tile_rows(&self) -> u32 {
        Self::ROWS * self.wg_y
    }

    pub fn tile_cols(&self) -> u32 {
        Self::COLS * self.wg_x
    }

    pub fn invocations(&self) -> u32 {
        self.wg_x * self.wg_y
    }
}

/// Every tunable choice of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tuning {
    pub gemm: GemmTiles,
    /// Invocations per workgroup of the softmax kernels (a power of two): invocations per
    /// row, or with `softmax_whole_rows` rows per workgroup.
    pub softmax_wg: u32,
    /// Each invocation takes whole rows of the softmax (`softmax_rows.wgsl`, rows whose
    /// length is a multiple of 4) instead of a workgroup sharing each row: on a CPU adapter
    /// the workgroup's merge cost more than the row.
    #[serde(default)]
    pub softmax_whole_rows: bool,
    /// A workgroup per row merges its statistics with subgroup operations
    /// (`softmax_reduce_subgroup.wgsl`: one barrier) where the device has them, instead of
    /// a tree through workgroup memory (log2 of the width in barriers). Off by default (see
    /// [`Tuning::default`]); `tune` turns it on where it measures faster.
    #[serde(default)]
    pub softmax_subgroups: bool,
    /// Preferred (query rows, keys) per workgroup of the fused kernel; the largest that fits
    /// the device when `None` or when this one does not fit.
    pub fused_block: Option<(u32, u32)>,
    /// What `AttentionPath::Auto` runs when no weights are asked for: the fused kernel or
    /// the three-pass path (the defaults, [`Tuning::for_adapter`]: the fused kernel on CPU
    /// adapters with 8-wide subgroups, where the kernel of 8-lane subgroups runs; three
    /// passes elsewhere, faster on an H200 and on lavapipe's 4-wide build). A preference for
    /// the fused kernel holds only for calls that run the kind of fused kernel it was
    /// measured with (`tune`'s SDPA probe; the kernel of 8-lane subgroups for the defaults);
    /// others run three passes. Either way, calls
    /// of fewer than 32 query rows run three passes where the register-blocked kernels
    /// serve them and the fused kernel would not split their keys among workgroups
    /// (`fused_split_groups` 0), and the fused kernel where the staged kernels would serve
    /// them (it skips the work of their idle tile rows) or where the score blocks of three
    /// passes do not fit.
    #[serde(default = "prefer_fused_default")]
    pub prefer_fused: bool,
    /// The fused kernel splits a call's keys among workgroups (flash-decoding) when its query
    /// blocks × heads are fewer than this, aiming at about this many workgroups; 0: never.
    /// A decode step has one query block per head: 32 workgroups for 32 heads cannot fill a
    /// GPU, while a CPU adapter's few cores are busy with them.
    #[serde(default)]
    pub fused_split_groups: u32,
    /// Tiles of the P·V kernel; `None`: derived from `gemm` ([`av_tiles`]). Its output is
    /// one head wide, so on a GPU the derived tall tiles can leave too few workgroups.
    #[serde(default)]
    pub av: Option<GemmTiles>,
    /// QKᵀ, P·V and the linear layer as register blocks read straight from storage
    /// (`qk_direct.wgsl`, `av_direct.wgsl`, `linear_direct.wgsl`) with this workgroup shape, wherever the layout allows vec4 loads
    /// (head sizes, keys, offsets and strides that are multiples of 4); `None`, or another
    /// layout: the staged kernels (`gemm_tile.wgsl`).
    #[serde(default)]
    pub direct: Option<DirectTiles>,
    /// The register-blocked QKᵀ, P·V and linear kernels share each row group's rows
    /// through subgroup operations (one lane loads, the subgroup broadcasts;
    /// `direct_subgroup.wgsl`, and `linear_shared.wgsl` and `av_shared.wgsl`, whose
    /// subgroups take 8 rows and 4·wg_x columns) where the device has them and its
    /// subgroups are exactly `direct.wg_x` invocations wide, at least 8 (lavapipe: 8);
    /// elsewhere each invocation loads its own rows.
    #[serde(default)]
    pub direct_subgroups: bool,
    /// The fused path register-blocked (`fused_direct.wgsl`: 4 query rows per invocation,
    /// scores in registers, its output rows in its own part of workgroup memory, no
    /// barriers) with at most this many invocations per workgroup — halved while their
    /// output rows (4 × dv rounded up to a power of two, each) do not fit the device's
    /// workgroup memory — wherever the layout allows vec4 loads and the keys are not split
    /// among workgroups; `None`, or another call: the staged kernel (`fused.wgsl`).
    #[serde(default)]
    pub fused_direct: Option<u32>,
    /// For calls of at least 32 query rows where the device has subgroup operations, the
    /// fused path shares loads among subgroup lanes: on subgroups of exactly 8,
    /// `fused_lanes.wgsl` (each subgroup 32 query rows, its lanes splitting the keys and
    /// the output columns; workgroups of `fused_direct` invocations rounded down to a
    /// multiple of 8); on wider ones, the register-blocked kernel's keys and values
    /// (`fused_subgroup.wgsl`) where the workgroup is a whole number of them. Elsewhere
    /// each invocation loads its own.
    #[serde(default)]
    pub fused_subgroups: bool,
    /// `fused_lanes.wgsl` takes its dot products 16 query rows at a time, each lane loading
    /// its keys twice per block, instead of all 32 at once: half the code of its hottest loop,
    /// so it compiles in less time and runs slower. On lavapipe bert-base MHA's cold start
    /// (fresh shader cache: device, pipelines, first forward) took 0.83 s against 0.97, and
    /// the kernel ran 7–10% slower. On by default, which keeps a cold start within a second;
    /// `tune` measures both.
    #[serde(default = "fused_lanes_halves_default")]
    pub fused_lanes_halves: bool,
}

fn fused_lanes_halves_default() -> bool {
    true
}

/// Invocations per workgroup of the register-blocked fused kernel on CPU adapters.
const FUSED_DIRECT_CPU: u32 = 16;

fn prefer_fused_default() -> bool {
    true
}

impl Default for Tuning {
    /// Measured best on lavapipe (2 cores, Mesa 22.3) and safe within WebGPU's minimum limits
    /// (256 invocations, 16 KiB of workgroup memory).
    fn default() -> Self {
        Self {
            gemm: GemmTiles {
                wg_x: 16,
                wg_y: 16,
                bk: 16,
            },
            softmax_wg: 128,
            // bert-base's softmax on lavapipe: 4.2 ms against 6.9 with a workgroup per row
            // (batched, rows of 128: 1.6 against 3.8).
            softmax_whole_rows: true,
            // Measured slower than the tree on both adapters at hand: on an H200 tune's
            // softmax (B1 H8 256×256) took 0.09 ms against 0.07-0.08; on lavapipe an
            // invocation per row needs no merge at all. `tune` measures it per adapter.
            softmax_subgroups: false,
            fused_block: None,
            prefer_fused: true,
            fused_split_groups: 0,
            // P·V 128 rows tall: on lavapipe the P·V pass of bert-base took 40 ms against
            // 46 ms with the 192-row tiles derived from the GEMM's (batched: 15 vs 19 ms).
            av: Some(GemmTiles {
                wg_x: 8,
                wg_y: 16,
                bk: 16,
            }),
            // bert-base on lavapipe: QKᵀ 25 ms against 45 staged, P·V 20 against 35.
            direct: Some(DirectTiles { wg_x: 8, wg_y: 8 }),
            // bert-base on lavapipe: the linear layer 2× faster, P·V 1.8×, QKᵀ 1.1×.
            direct_subgroups: true,
            fused_direct: Some(FUSED_DIRECT_CPU),
            // The fused path on lavapipe: bert-base SDPA 51 ms against 65.
            fused_subgroups: true,
            fused_lanes_halves: fused_lanes_halves_default(),
        }
    }
}

impl Tuning {
    /// The P·V kernel's tiles: `av`, else derived from the GEMM tiles.
    pub fn av_tiles(&self) -> GemmTiles {
        self.av.unwrap_or_else(|| av_tiles(&self.gemm))
    }

    /// The defaults for a device type, as measured on lavapipe (CPU adapters) and on an
    /// NVIDIA H200 (GPUs); `wgpu-mha tune` measures an adapter's own.
    ///
    /// - Both run QKᵀ and P·V register-blocked where the layout allows. GPUs take 4×8
    ///   workgroups: on the H200 tune's three-pass SDPA took 0.13 ms against 0.30 with the
    ///   staged kernels (8×8: 0.14), and long's P·V 0.44 ms against 2.12.
    /// - With them `Auto` prefers three passes here ([`Tuning::for_adapter`] prefers the
    ///   fused kernel where the adapter runs the kernel of 8-lane subgroups). On the H200 the
    ///   bench's SDPA rows ran faster through three passes than through the fused kernel:
    ///   bert-base 0.23 ms against 0.39, long 1.11 against 1.86, batched 0.17 against 0.18,
    ///   long-causal 0.90 against 1.18 (2.4–3.6× before the kernels were built without
    ///   wgpu's loop counters).
    /// - Softmax: on a CPU adapter an invocation per row (`softmax_whole_rows`) and rows of 8
    ///   invocations — one SIMD batch of lavapipe's (a row of 512 scores: 10.6 ms at 8,
    ///   21 ms at 64, per bert-base pass); on the H200 a workgroup per row, 128 invocations
    ///   (an invocation per row took 0.14 ms against 0.10).
    /// - Splitting keys buys nothing on two cores; GPUs split up to 1024 workgroups.
    /// - P·V tiles of the staged kernel: 64 rows on GPUs (on an H200 0.34 ms against
    ///   0.43–0.45 for the derived 192-row tiles; bk 32 measured 0.31–0.32 but needs more
    ///   than WebGPU's minimum 16 KiB of workgroup memory).
    pub fn for_device_type(device_type: wgpu::DeviceType) -> Self {
        Self::for_device(device_type, false)
    }

    /// The defaults for an adapter: those of its device type, with `Auto` preferring the
    /// fused kernel where a CPU adapter's subgroups are exactly 8 wide (`features` has
    /// `SUBGROUP`), so that the kernel of 8-lane subgroups (`fused_lanes.wgsl`) runs.
    ///
    /// On lavapipe that kernel ran bert-base SDPA in 23.5 ms against 38.3 through three
    /// passes (batched 8.9 against 12.6, long-causal 137.3 against 197.7; one bench run),
    /// and with an empty shader cache the device, its pipelines and bert-base MHA's first
    /// forward took 0.83–0.88 s (the dot products 16 rows at a time: `fused_lanes_halves`).
    /// Without
    /// subgroup sharing (lavapipe's 4-wide build) the fused kernel ran bert-base SDPA in
    /// 73 ms against 53 through three passes, so three passes stay the default there.
    pub fn for_adapter(info: &wgpu::AdapterInfo, features: wgpu::Features) -> Self {
        let lanes8 = features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == 8
            && info.subgroup_max_size == 8;
        Self::for_device(info.device_type, lanes8)
    }

    fn for_device(device_type: wgpu::DeviceType, lanes8: bool) -> Self {
        let cpu = device_type == wgpu::DeviceType::Cpu;
        Self {
            prefer_fused: cpu && lanes8,
            softmax_wg: if cpu { 8 } else { 128 },
            softmax_whole_rows: cpu,
            fused_split_groups: if cpu { 0 } else { 1024 },
            av: if cpu {
                Self::default().av
            } else {
                Some(GemmTiles {
                    wg_x: 8,
                    wg_y: 8,
                    bk: 16,
                })
            },
            direct: if cpu {
                Self::default().direct
            } else {
                Some(DirectTiles { wg_x: 4, wg_y: 8 })
            },
            // Not measured on a GPU, where 4 invocations share rows and subgroups are wider.
            direct_subgroups: cpu,
            fused_subgroups: cpu,
            fused_direct: if cpu { Some(FUSED_DIRECT_CPU) } else { None },
            ..Self::default()
        }
    }

    /// Checks the tuning against a device's limits.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<()> {
        let g = &self.gemm;
        let bad = |what: String| Err(Error::Config(format!("tuning: {what}")));
        let av = self.av_tiles();
        let positive = |t: &GemmTiles| t.wg_x > 0 && t.wg_y > 0 && t.bk > 0;
        let direct_ok =
            self.direct.is_none_or(|d| d.wg_x > 0 && d.wg_y > 0) && self.fused_direct != Some(0);
        if !positive(g) || !positive(&av) || !direct_ok || self.softmax_wg == 0 {
            return bad("sizes must be positive".into());
        }
        if !self.softmax_wg.is_power_of_two() {
            return bad(format!(
                "softmax_wg {} is not a power of two",
                self.softmax_wg
            ));
        }
        let invocations = g
            .invocations()
            .max(av.invocations())
            .max(self.softmax_wg)
            .max(self.direct.map_or(0, |d| d.invocations()))
            .max(self.fused_direct.unwrap_or(0));
        if invocations > limits.max_compute_invocations_per_workgroup {
            return bad(format!(
                "{invocations} invocations per workgroup, the device allows {}",
                limits.max_compute_invocations_per_workgroup
            ));
        }
        let needs = [
            ("GEMM", g.workgroup_bytes()),
            ("P·V", av.workgroup_bytes() + AV_FLAG_BYTES),
        ];
        for (what, bytes) in needs {
            if bytes > limits.max_compute_workgroup_storage_size {
                return bad(format!(
                    "{what} tiles need {bytes} bytes of workgroup memory, the device allows {}",
                    limits.max_compute_workgroup_storage_size
                ));
            }
        }
        Ok(())
    }
}

/// Version of what a cached tuning holds: entries of an older format are not read (a field
/// they lack would otherwise take a value no measurement chose).
const CACHE_FORMAT: u32 = 6;

/// The SDPA call `[batch, heads, L, S, d]` on which `wgpu-mha tune` measures the attention
/// kernels and which core `Auto` prefers; a preference holds for calls that run the same
/// kind of fused kernel. On a CPU adapter 8 heads of 256 × 256 (lavapipe: milliseconds, so
/// the whole tune takes seconds); on a GPU 8 heads of 2048 × 2048, since the small call takes
/// about 0.1 ms there and its candidates' differences drown in a submit's cost (on an H200,
/// a tune on it chose settings that ran the presets' MHA 1.4–1.7× slower than the defaults).
pub fn sdpa_probe(device_type: wgpu::DeviceType) -> [usize; 5] {
    if device_type == wgpu::DeviceType::Cpu {
        [1, 8, 256, 256, 64]
    } else {
        [1, 8, 2048, 2048, 64]
    }
}

/// The key of an adapter in the cache: name, backend, driver, driver info, crate version,
/// cache format.
pub fn cache_key(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} | {:?} | {} | {} | wgpu-mha {} | tuning format {CACHE_FORMAT}",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        env!("CARGO_PKG_VERSION")
    )
}

/// Where tunings are cached: `$WGPU_MHA_CACHE_DIR/tuning.json`, else
/// `$XDG_CACHE_HOME/wgpu-mha/tuning.json`, else `~/.cache/wgpu-mha/tuning.json`.
pub fn cache_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = var("WGPU_MHA_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("wgpu-mha")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/wgpu-mha")))?;
    Some(dir.join("tuning.json"))
}

type Cache = std::collections::BTreeMap<String, Tuning>;

fn read_cache(path: &std::path::Path) -> Cache {
    // A missing or unreadable cache is no cache: defaults apply.
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The cached tuning of this adapter, if any.
pub fn load_cached(info: &wgpu::AdapterInfo) -> Option<Tuning> {
    read_cache(&cache_path()?).get(&cache_key(info)).copied()
}

/// Stores `tuning` for this adapter, keeping other adapters' entries; returns the file.
pub fn store(info: &wgpu::AdapterInfo, tuning: &Tuning) -> Result<PathBuf> {
    let path = cache_path().ok_or_else(|| {
        Error::Config("no cache directory: set WGPU_MHA_CACHE_DIR or HOME".into())
    })?;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut cache = read_cache(&path);
    cache.insert(cache_key(info), *tuning);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(&cache).expect("tunings serialize");
    std::fs::write(&path, text).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_webgpu_minimum_limits() {
        let limits = wgpu::Limits::default();
        // The measured P·V tiles: 128 rows on lavapipe, 64 on an H200.
        let cpu = Tuning::for_device_type(wgpu::DeviceType::Cpu);
        assert_eq!(cpu.av_tiles().tile_rows(), 128);
        assert_eq!(
            cpu,
            Tuning {
                prefer_fused: false,
                softmax_wg: 8,
                ..Tuning::default()
            }
        );
        // Auto prefers the fused kernel where the kernel of 8-lane subgroups runs: a CPU
        // adapter with subgroups exactly 8 wide.
        let adapter = |device_type, width| wgpu::AdapterInfo {
            device_type,
            subgroup_min_size: width,
            subgroup_max_size: width,
            ..wgpu::AdapterInfo::new(device_type, wgpu::Backend::Vulkan)
        };
        let subgroups = wgpu::Features::SUBGROUP;
        let lavapipe = Tuning::for_adapter(&adapter(wgpu::DeviceType::Cpu, 8), subgroups);
        assert_eq!(
            lavapipe,
            Tuning {
                prefer_fused: true,
                ..cpu
            }
        );
        for (device_type, width, features) in [
            (wgpu::DeviceType::Cpu, 4, subgroups),
            (wgpu::DeviceType::Cpu, 8, wgpu::Features::empty()),
            (wgpu::DeviceType::DiscreteGpu, 8, subgroups),
        ] {
            let t = Tuning::for_adapter(&adapter(device_type, width), features);
            assert_eq!(
                t,
                Tuning::for_device_type(device_type),
                "{device_type:?} {width}"
            );
        }
        let gpu = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
        assert_eq!(gpu.av_tiles().tile_rows(), 64);
        for device_type in [wgpu::DeviceType::Cpu, wgpu::DeviceType::DiscreteGpu] {
            let t = Tuning::for_device_type(device_type);
            t.check(&limits).unwrap();
            let av = t.av_tiles();
            assert_eq!(av.wg_x, 8);
            assert!(
                av.workgroup_bytes() + AV_FLAG_BYTES <= limits.max_compute_workgroup_storage_size
            );
            assert!(av.invocations() <= limits.max_compute_invocations_per_workgroup);
        }
    }

    #[test]
    fn narrow_tiles_are_kept_for_pv() {
        let narrow = GemmTiles {
            wg_x: 8,
            wg_y: 8,
            bk: 32,
        };
        assert_eq!(av_tiles(&narrow), narrow);
    }
}
