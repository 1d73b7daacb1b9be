//! Host tensors: row-major `f32` data with a shape, and masks (bool or float).

use crate::error::{Error, Result};

/// A dense row-major `f32` tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// The tensor as the GPU stores it in `dtype` (f16: each element rounded): the input to
    /// give the CPU reference when checking a `dtype` forward.
    pub fn rounded_to(&self, dtype: crate::options::Dtype) -> Tensor {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&x| dtype.round(x)).collect(),
        }
    }

    /// Wraps `data` with `shape`; the lengths must agree.
    pub fn new(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        check_len("tensor", &shape, data.len())?;
        Ok(Self { shape, data })
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: impl Into<Vec<usize>>, value: f32) -> Self {
        let shape = shape.into();
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![value; n],
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Checks that data and shape agree; `name` goes into the error.
    pub(crate) fn validate(&self, name: &'static str) -> Result<()> {
        check_len(name, &self.shape, self.data.len())
    }
}

/// The element data of a mask: PyTorch accepts bool and floating masks.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskData {
    /// Boolean mask. What `true` means depends on the API (see [`Mask`]).
    Bool(Vec<bool>),
    /// Float mask, added to the scores (`-inf` blocks a position).
    Float(Vec<f32>),
}

/// An attention mask with its shape.
///
/// Polarity of bool masks follows PyTorch, and differs between the two APIs:
/// - `nn.MultiheadAttention` (`attn_mask`, `key_padding_mask`): `true` = may NOT attend.
/// - `F.scaled_dot_product_attention` (`attn_mask`): `true` = may attend.
///
/// Float masks are added to the scores in both.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask {
    pub shape: Vec<usize>,
    pub data: MaskData,
}

impl Mask {
    /// A bool mask.
    pub fn bool(shape: impl Into<Vec<usize>>, data: Vec<bool>) -> Result<Self> {
        let shape = shape.into();
        check_len("mask", &shape, data.len())?;
        Ok(Self {
            shape,
            data: MaskData::Bool(data),
        })
    }

    /// A float (additive) mask.
    pub fn float(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        check_len("mask", &shape, data.len())?;
        Ok(Self {
            shape,
            data: MaskData::Float(data),
        })
    }

    pub(crate) fn len(&self) -> usize {
        match &self.data {
            MaskData::Bool(v) => v.len(),
            MaskData::Float(v) => v.len(),
        }
    }

    pub(crate) fn validate(&self, name: &'static str) -> Result<()> {
        check_len(name, &self.shape, self.len())
    }

    /// The additive value at flat index `i`, with `bool_true_blocks` giving the polarity.
    pub(crate) fn additive(&self, i: usize, bool_true_blocks: bool) -> f32 {
        match &self.data {
            MaskData::Bool(v) => {
                if v[i] == bool_true_blocks {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            }
            MaskData::Float(v) => v[i],
        }
    }

    /// The whole mask as additive floats.
    pub(crate) fn to_additive(&self, bool_true_blocks: bool) -> Vec<f32> {
        (0..self.len())
            .map(|i| self.additive(i, bool_true_blocks))
            .collect()
    }
}

fn check_len(name: &'static str, shape: &[usize], got: usize) -> Result<()> {
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Shape {
            tensor: name,
            expected: "a shape whose element count fits in usize".into(),
            got: shape.to_vec(),
        })?;
    if expected != got {
        return Err(Error::DataLength {
            tensor: name,
            shape: shape.to_vec(),
            expected,
            got,
        });
    }
    Ok(())
}
