//! The parameters of `nn.MultiheadAttention`, by PyTorch's state-dict names and layouts, so a
//! `safetensors.torch.save_file(mha.state_dict(), path)` export loads unchanged.

use std::path::Path;

use rand::Rng;

use crate::error::{Error, Result};
use crate::io::{FileTensor, TensorMap, read_safetensors};
use crate::options::MhaConfig;
use crate::problem::validate_config;
use crate::tensor::Tensor;

/// State-dict names.
pub mod names {
    pub const IN_PROJ_WEIGHT: &str = "in_proj_weight";
    pub const Q_PROJ_WEIGHT: &str = "q_proj_weight";
    pub const K_PROJ_WEIGHT: &str = "k_proj_weight";
    pub const V_PROJ_WEIGHT: &str = "v_proj_weight";
    pub const IN_PROJ_BIAS: &str = "in_proj_bias";
    pub const OUT_PROJ_WEIGHT: &str = "out_proj.weight";
    pub const OUT_PROJ_BIAS: &str = "out_proj.bias";
}

/// How the q/k/v projection weights are stored.
#[derive(Clone, Debug, PartialEq)]
pub enum InProjWeight {
    /// `in_proj_weight [3E, E]`: rows `0..E` project q, `E..2E` k, `2E..3E` v.
    Packed(Vec<f32>),
    /// `q_proj_weight [E, E]`, `k_proj_weight [E, kdim]`, `v_proj_weight [E, vdim]`.
    Separate {
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
    },
}

/// All parameters of an `nn.MultiheadAttention` (row-major `[out, in]` weights, like
/// `nn.Linear`).
#[derive(Clone, Debug, PartialEq)]
pub struct MhaWeights {
    pub in_proj: InProjWeight,
    /// `in_proj_bias [3E]` (packed even when the weights are separate, as in PyTorch).
    pub in_proj_bias: Option<Vec<f32>>,
    /// `out_proj.weight [E, E]`.
    pub out_proj_weight: Vec<f32>,
    /// `out_proj.bias [E]`.
    pub out_proj_bias: Option<Vec<f32>>,
}

/// Which projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proj {
    Q,
    K,
    V,
}

impl MhaWeights {
    /// The weights as the GPU stores them in `dtype` (f16: each element rounded): what the
    /// CPU reference needs to check a `dtype` forward.
    pub fn rounded_to(&self, dtype: crate::options::Dtype) -> MhaWeights {
        let round = |v: &Vec<f32>| v.iter().map(|&x| dtype.round(x)).collect::<Vec<f32>>();
        MhaWeights {
            in_proj: match &self.in_proj {
                InProjWeight::Packed(w) => InProjWeight::Packed(round(w)),
                InProjWeight::Separate { q, k, v } => InProjWeight::Separate {
                    q: round(q),
                    k: round(k),
                    v: round(v),
                },
            },
            in_proj_bias: self.in_proj_bias.as_ref().map(round),
            out_proj_weight: round(&self.out_proj_weight),
            out_proj_bias: self.out_proj_bias.as_ref().map(round),
        }
    }

    /// Random weights in PyTorch's init range (`xavier_uniform`-like), biases small and
    /// nonzero so a missing bias shows in a check.
    pub fn random(config: &MhaConfig, rng: &mut impl Rng) -> Self {
        let e = config.embed_dim;
        let mut uniform = |n: usize, fan_in: usize, fan_out: usize| -> Vec<f32> {
            let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        let in_proj = if config.packed_in_proj() {
            InProjWeight::Packed(uniform(3 * e * e, e, 3 * e))
        } else {
            InProjWeight::Separate {
                q: uniform(e * e, e, e),
                k: uniform(e * config.kdim, config.kdim, e),
                v: uniform(e * config.vdim, config.vdim, e),
            }
        };
        let out_proj_weight = uniform(e * e, e, e);
        let (in_proj_bias, out_proj_bias) = if config.bias {
            (Some(uniform(3 * e, 50, 50)), Some(uniform(e, 50, 50)))
        } else {
            (None, None)
        };
        Self {
            in_proj,
            in_proj_bias,
            out_proj_weight,
            out_proj_bias,
        }
    }

    /// The `[E, in]` weight of one projection and the offset of its first element.
    pub fn proj_weight(&self, proj: Proj, embed_dim: usize) -> (&[f32], usize) {
        match (&self.in_proj, proj) {
            (InProjWeight::Packed(w), p) => (w, p as usize * embed_dim * embed_dim),
            (InProjWeight::Separate { q, .. }, Proj::Q) => (q, 0),
            (InProjWeight::Separate { k, .. }, Proj::K) => (k, 0),
            (InProjWeight::Separate { v, .. }, Proj::V) => (v, 0),
        }
    }

    /// The `[E]` bias of one projection, if any.
    pub fn proj_bias(&self, proj: Proj, embed_dim: usize) -> Option<&[f32]> {
        let start = proj as usize * embed_dim;
        self.in_proj_bias
            .as_deref()
            .map(|b| &b[start..start + embed_dim])
    }

    /// Checks every parameter against the configuration.
    pub fn validate(&self, config: &MhaConfig) -> Result<()> {
        validate_config(config)?;
        let e = config.embed_dim;
        let check = |name: &'static str, got: usize, shape: Vec<usize>| -> Result<()> {
            let want: usize = shape.iter().product();
            if got != want {
                return Err(Error::Shape {
                    tensor: name,
                    expected: format!("{shape:?}"),
                    got: vec![got],
                });
            }
            Ok(())
        };
        match &self.in_proj {
            InProjWeight::Packed(w) => {
                if !config.packed_in_proj() {
                    return Err(Error::Config(format!(
                        "kdim ({}) / vdim ({}) differ from embed_dim ({e}): PyTorch stores q_proj_weight, k_proj_weight and v_proj_weight, not in_proj_weight",
                        config.kdim, config.vdim
                    )));
                }
                check(names::IN_PROJ_WEIGHT, w.len(), vec![3 * e, e])?;
            }
            InProjWeight::Separate { q, k, v } => {
                check(names::Q_PROJ_WEIGHT, q.len(), vec![e, e])?;
                check(names::K_PROJ_WEIGHT, k.len(), vec![e, config.kdim])?;
                check(names::V_PROJ_WEIGHT, v.len(), vec![e, config.vdim])?;
            }
        }
        check(
            names::OUT_PROJ_WEIGHT,
            self.out_proj_weight.len(),
            vec![e, e],
        )?;
        match (&self.in_proj_bias, &self.out_proj_bias, config.bias) {
            (Some(bi), Some(bo), true) => {
                check(names::IN_PROJ_BIAS, bi.len(), vec![3 * e])?;
                check(names::OUT_PROJ_BIAS, bo.len(), vec![e])
            }
            (None, None, false) => Ok(()),
            (None, _, true) => Err(missing(names::IN_PROJ_BIAS)),
            (_, None, true) => Err(missing(names::OUT_PROJ_BIAS)),
            (Some(_), _, false) => Err(unexpected(names::IN_PROJ_BIAS)),
            (_, Some(_), false) => Err(unexpected(names::OUT_PROJ_BIAS)),
        }
    }

    /// Takes the parameters out of named tensors (a state dict); every name must be used and
    /// every shape must match. Other names in `tensors` are an error unless `allow_extra`.
    pub fn from_tensors(
        config: &MhaConfig,
        tensors: &TensorMap,
        allow_extra: bool,
    ) -> Result<Self> {
        validate_config(config)?;
        let e = config.embed_dim;
        let mut used = Vec::new();
        let mut take = |name: &'static str, shape: Vec<usize>| -> Result<Option<Vec<f32>>> {
            let Some(t) = tensors.get(name) else {
                return Ok(None);
            };
            used.push(name);
            let t = t.clone().into_f32(name)?;
            if t.shape != shape {
                return Err(Error::Shape {
                    tensor: name,
                    expected: format!("{shape:?}"),
                    got: t.shape,
                });
            }
            Ok(Some(t.data))
        };
        let in_proj = if config.packed_in_proj() {
            InProjWeight::Packed(
                take(names::IN_PROJ_WEIGHT, vec![3 * e, e])?.ok_or_else(|| {
                    Error::MissingWeight {
                        name: names::IN_PROJ_WEIGHT.into(),
                        hint: " (kdim = vdim = embed_dim, so PyTorch packs q, k, v into one [3E, E] weight)",
                    }
                })?,
            )
        } else {
            let hint = " (kdim or vdim differ from embed_dim, so PyTorch stores separate q/k/v_proj_weight)";
            let mut sep = |name: &'static str, width: usize| {
                take(name, vec![e, width])?.ok_or_else(|| Error::MissingWeight {
                    name: name.into(),
                    hint,
                })
            };
            InProjWeight::Separate {
                q: sep(names::Q_PROJ_WEIGHT, e)?,
                k: sep(names::K_PROJ_WEIGHT, config.kdim)?,
                v: sep(names::V_PROJ_WEIGHT, config.vdim)?,
            }
        };
        let out_proj_weight =
            take(names::OUT_PROJ_WEIGHT, vec![e, e])?.ok_or_else(|| Error::MissingWeight {
                name: names::OUT_PROJ_WEIGHT.into(),
                hint: "",
            })?;
        let in_proj_bias = take(names::IN_PROJ_BIAS, vec![3 * e])?;
        let out_proj_bias = take(names::OUT_PROJ_BIAS, vec![e])?;
        let weights = Self {
            in_proj,
            in_proj_bias,
            out_proj_weight,
            out_proj_bias,
        };
        if !allow_extra {
            let known = [
                names::IN_PROJ_WEIGHT,
                names::Q_PROJ_WEIGHT,
                names::K_PROJ_WEIGHT,
                names::V_PROJ_WEIGHT,
                names::IN_PROJ_BIAS,
                names::OUT_PROJ_WEIGHT,
                names::OUT_PROJ_BIAS,
            ];
            if let Some(extra) = tensors
                .keys()
                .find(|k| !used.contains(&k.as_str()) || !known.contains(&k.as_str()))
            {
                return Err(unexpected(extra));
            }
        }
        weights.validate(config)?;
        Ok(weights)
    }

    /// Loads a safetensors state dict (exactly the module's parameters).
    pub fn load(config: &MhaConfig, path: &Path) -> Result<Self> {
        Self::from_tensors(config, &read_safetensors(path)?, false)
    }

    /// The parameters as named tensors (a state dict).
    pub fn to_tensors(&self, config: &MhaConfig) -> TensorMap {
        let e = config.embed_dim;
        let mut map = TensorMap::new();
        let mut put = |name: &str, shape: Vec<usize>, data: &[f32]| {
            map.insert(
                name.to_string(),
                FileTensor::F32(Tensor {
                    shape,
                    data: data.to_vec(),
                }),
            );
        };
        match &self.in_proj {
            InProjWeight::Packed(w) => put(names::IN_PROJ_WEIGHT, vec![3 * e, e], w),
            InProjWeight::Separate { q, k, v } => {
                put(names::Q_PROJ_WEIGHT, vec![e, e], q);
                put(names::K_PROJ_WEIGHT, vec![e, config.kdim], k);
                put(names::V_PROJ_WEIGHT, vec![e, config.vdim], v);
            }
        }
        put(names::OUT_PROJ_WEIGHT, vec![e, e], &self.out_proj_weight);
        if let Some(b) = &self.in_proj_bias {
            put(names::IN_PROJ_BIAS, vec![3 * e], b);
        }
        if let Some(b) = &self.out_proj_bias {
            put(names::OUT_PROJ_BIAS, vec![e], b);
        }
        map
    }
}

fn missing(name: &str) -> Error {
    Error::MissingWeight {
        name: name.into(),
        hint: " (the module was configured with bias = true)",
    }
}

fn unexpected(name: &str) -> Error {
    Error::UnexpectedWeight { name: name.into() }
}
