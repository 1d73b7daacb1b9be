//! The input validation shared by the GPU path and the CPU reference
//! (`wgpu_mha::problem::validate_mha` / `validate_sdpa`) on arbitrary shapes — ranks 0 to 5,
//! zero, one, huge and overflowing dimensions, data lengths that agree or not, masks of any
//! shape and dtype, every option. Validation must never panic; an accepted problem must be
//! self-consistent, and when it is small the CPU reference must run it without panicking
//! and return the promised shapes.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use wgpu_mha::problem::{validate_mha, validate_sdpa};
use wgpu_mha::{Causal, Mask, MaskData, MhaConfig, MhaOptions, MhaWeights, SdpaOptions, Tensor};

/// A dimension: mostly small, sometimes huge.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dim {
    Small(u8),
    Zero,
    One,
    Big(u32),
    Huge(u64),
    Max,
}

impl Dim {
    fn get(self) -> usize {
        match self {
            Dim::Small(n) => (n % 9) as usize,
            Dim::Zero => 0,
            Dim::One => 1,
            Dim::Big(n) => n as usize,
            Dim::Huge(n) => n as usize,
            Dim::Max => usize::MAX,
        }
    }
}

/// How the data length relates to the shape.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    Exact,
    Off(i8),
}

/// Most elements any fuzz input may allocate.
const MAX_ELEMS: usize = 1 << 14;

fn elems(shape: &[usize], len: Len) -> usize {
    let exact = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let n = match (exact, len) {
        (Some(n), Len::Exact) => n,
        (Some(n), Len::Off(d)) => n.saturating_add_signed(d as isize),
        (None, _) => 3,
    };
    n.min(MAX_ELEMS)
}

#[derive(Arbitrary, Debug)]
struct Shape {
    dims: Vec<Dim>,
    len: Len,
}

impl Shape {
    fn dims(&self) -> Vec<usize> {
        self.dims.iter().take(5).map(|d| d.get()).collect()
    }
    fn tensor(&self, value: f32) -> Tensor {
        let shape = self.dims();
        let n = elems(&shape, self.len);
        Tensor {
            shape,
            data: vec![value; n],
        }
    }
}

#[derive(Arbitrary, Debug)]
struct MaskSpec {
    shape: Shape,
    float: bool,
    value: f32,
    flag: bool,
}

impl MaskSpec {
    fn mask(&self) -> Mask {
        let shape = self.shape.dims();
        let n = elems(&shape, self.shape.len);
        Mask {
            shape,
            data: if self.float {
                MaskData::Float(vec![self.value; n])
            } else {
                MaskData::Bool(vec![self.flag; n])
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    embed_dim: Dim,
    num_heads: Dim,
    kdim: Dim,
    vdim: Dim,
    bias: bool,
    batch_first: bool,
    query: Shape,
    key: Shape,
    value: Shape,
    mask_a: Option<MaskSpec>,
    mask_b: Option<MaskSpec>,
    causal: Option<bool>,
    need_weights: bool,
    average: bool,
    scale: Option<f32>,
    enable_gqa: bool,
    value_fill: f32,
}

/// With `WGPU_MHA_FUZZ_TRACE` set, one line per input says how far it got (run the target
/// over its corpus with `-runs=0` to see how much of it reaches the reference).
fn trace(what: &str) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("WGPU_MHA_FUZZ_TRACE").is_some()) {
        eprintln!("trace: {what}");
    }
}

/// Work small enough for the reference to run on every accepted input.
fn small(dims: &wgpu_mha::problem::CoreDims) -> bool {
    let work = [
        dims.batch,
        dims.heads_q,
        dims.len_q,
        dims.len_kv,
        dims.head_dim + dims.head_dim_v,
    ]
    .iter()
    .try_fold(1usize, |a, &d| a.checked_mul(d));
    matches!(work, Some(w) if w <= 1 << 16)
}

fuzz_target!(|input: Input| {
    let causal = input.causal.map(|top_left| {
        if top_left {
            Causal::TopLeft
        } else {
            Causal::BottomRight
        }
    });
    let (q, k, v) = (
        input.query.tensor(input.value_fill),
        input.key.tensor(0.5),
        input.value.tensor(-0.25),
    );
    let mask_a = input.mask_a.as_ref().map(MaskSpec::mask);
    let mask_b = input.mask_b.as_ref().map(MaskSpec::mask);

    // SDPA.
    let opts = SdpaOptions {
        attn_mask: mask_a.as_ref(),
        causal,
        scale: input.scale,
        enable_gqa: input.enable_gqa,
        ..Default::default()
    };
    if let Ok(p) = validate_sdpa(&q, &k, &v, &opts) {
        let d = p.dims;
        assert!(d.heads_q.is_multiple_of(d.heads_kv));
        assert!(p.scale.is_finite());
        assert_eq!(p.out_shape.len(), q.shape.len());
        trace("sdpa valid");
        if small(&d) {
            trace("sdpa reference");
            let out = wgpu_mha::reference::sdpa(&q, &k, &v, &opts).expect("validated");
            assert_eq!(out.shape, p.out_shape);
            assert_eq!(out.data.len(), out.shape.iter().product::<usize>());
        }
    }

    // MHA.
    let mut config = MhaConfig::new(input.embed_dim.get(), input.num_heads.get())
        .with_kv_dims(input.kdim.get(), input.vdim.get())
        .with_bias(input.bias)
        .with_batch_first(input.batch_first);
    if input.kdim.get() == 0 && matches!(input.kdim, Dim::Small(_)) {
        // Often keep the default kdim = vdim = embed_dim (the packed projection).
        config = config.with_kv_dims(config.embed_dim, config.embed_dim);
    }
    let opts = MhaOptions {
        attn_mask: mask_a.as_ref(),
        key_padding_mask: mask_b.as_ref(),
        causal,
        need_weights: input.need_weights,
        average_attn_weights: input.average,
        ..Default::default()
    };
    if let Ok(p) = validate_mha(&config, &q, &k, &v, &opts) {
        trace("mha valid");
        let d = p.dims;
        assert_eq!(d.heads_q * d.head_dim, config.embed_dim);
        let out_shape = p.out_shape();
        let weights_shape = p.weights_shape();
        let elems = |s: &[usize]| s.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
        assert_eq!(elems(&out_shape), Some(q.data.len()));
        let weights_small = config
            .embed_dim
            .checked_mul(config.embed_dim + config.kdim + config.vdim)
            .is_some_and(|n| n <= 1 << 14);
        if small(&d) && weights_small {
            trace("mha reference");
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            let weights = MhaWeights::random(&config, &mut rng);
            let out = wgpu_mha::reference::mha_forward(&config, &weights, &q, &k, &v, &opts)
                .expect("validated");
            assert_eq!(out.attn_output.shape, out_shape);
            match out.attn_weights {
                Some(w) => {
                    assert!(opts.need_weights);
                    assert_eq!(w.shape, weights_shape);
                }
                None => assert!(!opts.need_weights),
            }
        }
    }
});
