//! Shared by the criterion benches: the device, the sizes, random inputs, and criterion
//! settings short enough for a software adapter (lavapipe).

use std::time::Duration;

use criterion::Criterion;
use rand::{Rng, SeedableRng, rngs::StdRng};
use wgpu_mha::{AttentionPath, Gpu, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Tensor};

/// One benchmark shape: self-attention of batch × seq tokens of width d_model.
pub struct Size {
    pub batch: usize,
    pub seq: usize,
    pub d_model: usize,
    pub heads: usize,
}

impl Size {
    /// The criterion parameter id, e.g. `B1_L128_E256_H4`.
    pub fn id(&self) -> String {
        format!(
            "B{}_L{}_E{}_H{}",
            self.batch, self.seq, self.d_model, self.heads
        )
    }
}

/// Small enough that one forward takes well under a second on lavapipe with two cores.
pub const SIZES: [Size; 3] = [
    Size {
        batch: 1,
        seq: 128,
        d_model: 256,
        heads: 4,
    },
    Size {
        batch: 1,
        seq: 256,
        d_model: 512,
        heads: 8,
    },
    Size {
        batch: 1,
        seq: 512,
        d_model: 256,
        heads: 4,
    },
];

/// The default adapter. None is a failure, not an empty run: it says what to install.
pub fn gpu() -> Gpu {
    match Gpu::new() {
        Ok(gpu) => {
            eprintln!("adapter: {}", gpu.adapter_info().name);
            gpu
        }
        Err(e) => panic!(
            "the benches need a wgpu adapter and found none: {e}\n\
             On Debian/Ubuntu without a GPU: apt-get update && apt-get install -y mesa-vulkan-drivers"
        ),
    }
}

pub fn random(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
    )
    .expect("shape and data agree")
}

/// A batch-first MHA module of `size` with random weights, and a random input for it.
pub fn mha(gpu: &Gpu, size: &Size) -> (MultiHeadAttention, Tensor) {
    let mut rng = StdRng::seed_from_u64(size.seq as u64);
    let config = MhaConfig::new(size.d_model, size.heads).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut rng);
    let module = MultiHeadAttention::new(gpu, config, &weights).expect("module uploads");
    let x = random(&mut rng, &[size.batch, size.seq, size.d_model]);
    (module, x)
}

/// Options of every MHA bench: self-attention, no weights returned, the attention core
/// `path`.
pub fn mha_options(path: AttentionPath) -> MhaOptions<'static> {
    MhaOptions {
        path,
        ..Default::default()
    }
}

/// The plot font lookup of the CLI's sweep plots; criterion's report plots use the same
/// plotters build, which draws text only with a registered font.
#[path = "../../src/cli/font.rs"]
mod font;

/// Ten samples, short warm-up and measurement: a few seconds per benchmark. Command-line
/// flags (`--sample-size`, `--measurement-time`, a filter) still override. Report plots
/// only where a font for them was found.
pub fn criterion() -> Criterion {
    let c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let c = if font::sans_serif().is_some() {
        c
    } else {
        eprintln!("no TrueType font found (WGPU_MHA_FONT): criterion reports without plots");
        c.without_plots()
    };
    c.configure_from_args()
}
