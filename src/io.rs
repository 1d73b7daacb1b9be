//! safetensors files: named tensors in, named tensors out. Used by the weights loader and the
//! CLI. Reading checks every dtype and shape before converting anything.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::tensor::{Mask, MaskData, Tensor};

/// A tensor read from a file: f32 data, or a bool mask.
#[derive(Clone, Debug, PartialEq)]
pub enum FileTensor {
    F32(Tensor),
    Bool { shape: Vec<usize>, data: Vec<bool> },
}

impl FileTensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            FileTensor::F32(t) => &t.shape,
            FileTensor::Bool { shape, .. } => shape,
        }
    }

    fn dtype_name(&self) -> &'static str {
        match self {
            FileTensor::F32(_) => "F32",
            FileTensor::Bool { .. } => "BOOL",
        }
    }

    /// This tensor as f32 data, or an error naming it.
    pub fn into_f32(self, name: &str) -> Result<Tensor> {
        match self {
            FileTensor::F32(t) => Ok(t),
            other => Err(Error::Dtype {
                tensor: name.to_string(),
                expected: "F32",
                got: other.dtype_name().into(),
            }),
        }
    }

    /// This tensor as a mask (bool or float).
    pub fn into_mask(self) -> Mask {
        match self {
            FileTensor::F32(t) => Mask {
                shape: t.shape,
                data: MaskData::Float(t.data),
            },
            FileTensor::Bool { shape, data } => Mask {
                shape,
                data: MaskData::Bool(data),
            },
        }
    }
}

/// Named tensors, in name order.
pub type TensorMap = BTreeMap<String, FileTensor>;

fn st_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Safetensors {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Reads every tensor of a safetensors file. Accepts F32 and BOOL (also U8 0/1, as some
/// exporters write bool masks); anything else is a dtype error naming the tensor.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_safetensors(&bytes).map_err(|e| match e {
        Error::Safetensors { message, .. } => st_err(path, message),
        other => other,
    })
}

/// The `__metadata__` string map of a safetensors file (empty when it has none).
pub fn read_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| st_err(path, e))?;
    Ok(meta
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default())
}

/// Parses safetensors bytes (see [`read_safetensors`]).
pub fn parse_safetensors(bytes: &[u8]) -> Result<TensorMap> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| st_err(Path::new("<bytes>"), e))?;
    let mut out = TensorMap::new();
    for (name, view) in file.iter() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let tensor = match view.dtype() {
            Dtype::F32 => FileTensor::F32(Tensor {
                shape,
                data: data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            }),
            Dtype::BOOL | Dtype::U8 => FileTensor::Bool {
                shape,
                data: data.iter().map(|&b| b != 0).collect(),
            },
            other => {
                return Err(Error::Dtype {
                    tensor: name.to_string(),
                    expected: "F32 (or BOOL for masks)",
                    got: format!("{other:?}"),
                });
            }
        };
        out.insert(name.to_string(), tensor);
    }
    Ok(out)
}

/// Serializes tensors to safetensors bytes.
pub fn serialize_safetensors(tensors: &TensorMap) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| match t {
            FileTensor::F32(t) => (
                name.clone(),
                Dtype::F32,
                t.shape.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            FileTensor::Bool { shape, data } => (
                name.clone(),
                Dtype::BOOL,
                shape.clone(),
                data.iter().map(|&b| b as u8).collect(),
            ),
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.as_str(), v))
                .map_err(|e| st_err(Path::new(name), e))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| st_err(Path::new("<output>"), e))
}

/// Writes tensors to a safetensors file.
pub fn write_safetensors(path: &Path, tensors: &TensorMap) -> Result<()> {
    let bytes = serialize_safetensors(tensors)?;
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}
