//! What a caller can ask for: causal alignment, SDPA options, the MHA module's configuration
//! and per-call options. Plain data; validation lives in [`crate::problem`].

use crate::tensor::Mask;

/// Which causal mask: the two conventions in use differ when the query and key lengths differ.
///
/// Query row `l` may attend to key `s` when `s <= l + offset`, where `offset` is `0` for
/// [`Causal::TopLeft`] and `S - L` for [`Causal::BottomRight`]. They agree when `L == S`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Causal {
    /// PyTorch's `is_causal=True` / `torch.tril(torch.ones(L, S))`.
    TopLeft,
    /// FlashAttention ≥ 2.1 and PyTorch's `causal_lower_right`: the last query row sees every
    /// key, as in a KV-cache decode step.
    BottomRight,
}

impl Causal {
    /// `offset` such that key `s` is visible from query row `l` iff `s <= l + offset`.
    pub fn offset(self, len_q: usize, len_kv: usize) -> i64 {
        match self {
            Causal::TopLeft => 0,
            Causal::BottomRight => len_kv as i64 - len_q as i64,
        }
    }
}

/// Which algorithm computes the attention core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionPath {
    /// Three passes when the caller asks for attention weights; otherwise what the adapter's
    /// tuning prefers (GPUs: fused; CPU adapters: three passes), except that calls of at most
    /// four query rows take the fused kernel where the three passes would run the staged
    /// kernels' tall tiles; falling back to the other path where one cannot run.
    #[default]
    Auto,
    /// QKᵀ → softmax → P·V as three kernels over blocks of the score matrix; the only path
    /// that can return attention weights.
    ThreePass,
    /// One kernel, FlashAttention-2 style: the score matrix is never stored, memory grows
    /// linearly with the sequence length.
    Fused,
}

/// How tensors are stored on the GPU. Arithmetic is f32 either way (f32 accumulation, f32
/// softmax); results come back as f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// f32 storage: the default.
    #[default]
    F32,
    /// f16 storage of inputs, weights and intermediates (rounded to nearest on upload; a
    /// finite input or weight beyond ±65504 is refused with
    /// [`Error::OutOfRange`](crate::Error::OutOfRange)). Half the memory and the bytes moved; needs an
    /// adapter that grants `SHADER_F16`, else calls fail with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    F16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// `x` as stored: f16 rounds to nearest (ties to even), f32 is exact.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Dtype::F32 => x,
            Dtype::F16 => half::f16::from_f32(x).to_f32(),
        }
    }

    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

/// Options of [`scaled_dot_product_attention`](crate::scaled_dot_product_attention), as in
/// PyTorch's `F.scaled_dot_product_attention` (no dropout: this is inference).
#[derive(Clone, Copy, Debug, Default)]
pub struct SdpaOptions<'a> {
    /// Bool (`true` = MAY attend, SDPA's polarity) or float (added to the scores), any shape
    /// broadcastable to `[B, H, L, S]`.
    pub attn_mask: Option<&'a Mask>,
    /// A causal mask, combined with `attn_mask` when both are given (PyTorch refuses the
    /// combination; here they simply both apply).
    pub causal: Option<Causal>,
    /// Scale of `Q·Kᵀ`; `None` means `1/√d`.
    pub scale: Option<f32>,
    /// Grouped-query attention: query head `h` uses key/value head `h / (Hq / Hkv)`.
    pub enable_gqa: bool,
    /// Which algorithm runs (the result is the same up to rounding).
    pub path: AttentionPath,
    /// How query, key and value are stored on the GPU (the output is f32).
    pub dtype: Dtype,
}

/// The shape of an `nn.MultiheadAttention` module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MhaConfig {
    /// `embed_dim` (E): query width and output width.
    pub embed_dim: usize,
    /// `num_heads` (h): must divide `embed_dim`.
    pub num_heads: usize,
    /// `kdim`: width of the key input (PyTorch default: `embed_dim`).
    pub kdim: usize,
    /// `vdim`: width of the value input (PyTorch default: `embed_dim`).
    pub vdim: usize,
    /// Whether the projections have biases (PyTorch default: true).
    pub bias: bool,
    /// `[B, L, E]` when true, PyTorch's default `[L, B, E]` when false.
    pub batch_first: bool,
    /// How weights, inputs and intermediates are stored on the GPU, as after PyTorch's
    /// `module.half()` (the output is f32).
    pub dtype: Dtype,
}

impl MhaConfig {
    /// PyTorch's defaults: `kdim = vdim = embed_dim`, bias on, `batch_first = false`.
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            kdim: embed_dim,
            vdim: embed_dim,
            bias: true,
            batch_first: false,
            dtype: Dtype::F32,
        }
    }

    /// Sets `kdim` and `vdim`.
    pub fn with_kv_dims(mut self, kdim: usize, vdim: usize) -> Self {
        self.kdim = kdim;
        self.vdim = vdim;
        self
    }

    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets `batch_first`.
    pub fn with_batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// Sets `dtype`, the storage on the GPU.
    pub fn with_dtype(mut self, dtype: Dtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Whether q, k and v projections share one packed `in_proj_weight` (PyTorch's
    /// `_qkv_same_embed_dim`).
    pub fn packed_in_proj(&self) -> bool {
        self.kdim == self.embed_dim && self.vdim == self.embed_dim
    }

    /// Head size `d = E / h` (only meaningful once validated).
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads.max(1)
    }
}

/// Per-call options of [`MultiHeadAttention::forward`](crate::MultiHeadAttention::forward),
/// as in `nn.MultiheadAttention.forward`.
#[derive(Clone, Copy, Debug)]
pub struct MhaOptions<'a> {
    /// `[B, S]` (`[S]` unbatched): bool (`true` = ignore that key) or float (added).
    pub key_padding_mask: Option<&'a Mask>,
    /// `[L, S]` or `[B·h, L, S]` (`[h, L, S]` unbatched): bool (`true` = may NOT attend) or
    /// float (added).
    pub attn_mask: Option<&'a Mask>,
    /// A causal mask, added to the others.
    pub causal: Option<Causal>,
    /// Return the attention probabilities. PyTorch defaults to `true`; here it defaults to
    /// `false`, since it costs a `[B, L, S]` (or `[B, h, L, S]`) readback.
    pub need_weights: bool,
    /// Average the weights over heads (`[B, L, S]`) or not (`[B, h, L, S]`).
    pub average_attn_weights: bool,
    /// Which algorithm runs the attention core (`Fused` cannot return weights).
    pub path: AttentionPath,
}

impl Default for MhaOptions<'_> {
    fn default() -> Self {
        Self {
            key_padding_mask: None,
            attn_mask: None,
            causal: None,
            need_weights: false,
            average_attn_weights: true,
            path: AttentionPath::Auto,
        }
    }
}

/// What an MHA forward returns, as `nn.MultiheadAttention.forward` does.
#[derive(Clone, Debug, PartialEq)]
pub struct MhaOutput {
    /// `attn_output`, in the caller's layout (`[L, B, E]`, `[B, L, E]` or `[L, E]`).
    pub attn_output: crate::tensor::Tensor,
    /// `attn_output_weights` when `need_weights`: `[B, L, S]` averaged, `[B, h, L, S]` per
    /// head (no `B` when unbatched).
    pub attn_weights: Option<crate::tensor::Tensor>,
}
