//! safetensors files: named tensors in, named tensors out. Used by the weights loader and the
//! CLI.
//!
//! Reading treats the file as hostile: the 8-byte header length, the JSON header and every
//! tensor's dtype, shape and offsets are checked against each other and against the real size
//! of the file *before* anything is converted or any tensor data is allocated, so a header
//! that lies (offsets past the end, overlapping or missing ranges, a shape whose element
//! count overflows or disagrees with its byte range, duplicate names, an absurd header
//! length) is a [`Error::Safetensors`] naming the problem, and a dtype other than F32, BOOL
//! and U8 is an [`Error::Dtype`] naming the tensor (once the header has been checked). [`read_safetensors`] also refuses files larger than
//! [`DEFAULT_MAX_FILE_BYTES`] (see [`read_safetensors_with_limit`]) and reads tensor data
//! straight into the tensors, never holding the file twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

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

/// The largest JSON header accepted, in bytes (the limit of the reference implementation).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The largest file [`read_safetensors`] reads: 16 GiB. Larger files need
/// [`read_safetensors_with_limit`].
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 30;

/// Bytes of the little-endian `u64` header length that starts every file.
const LEN_PREFIX: u64 = 8;

fn st_err(path: &Path, e: impl fmt::Display) -> Error {
    Error::Safetensors {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What the file says a tensor is, before any check.
#[derive(Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The JSON header as written: tensors in file order, the optional `__metadata__`, and no
/// name twice (serde's maps would silently keep the last of two equal keys, and the
/// safetensors format forbids duplicates).
struct RawHeader {
    metadata: Option<BTreeMap<String, String>>,
    tensors: Vec<(String, RawInfo)>,
}

/// A JSON object whose keys must be unique, in file order.
struct UniqueMap<V>(Vec<(String, V)>);

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format!(
        "the name {:?} appears twice in the header",
        clip(key)
    ))
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seen = BTreeSet::new();
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(duplicate(&key));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(UniqueMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seen = BTreeSet::new();
                let mut header = RawHeader {
                    metadata: None,
                    tensors: Vec::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(duplicate(&key));
                    }
                    if key == "__metadata__" {
                        let UniqueMap(entries) = map.next_value::<UniqueMap<String>>()?;
                        header.metadata = Some(entries.into_iter().collect());
                    } else {
                        let info = map.next_value::<RawInfo>()?;
                        header.tensors.push((key, info));
                    }
                }
                Ok(header)
            }
        }
        deserializer.deserialize_map(HeaderVisitor)
    }
}

/// The element type of a tensor entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F32,
    /// BOOL: every byte must be 0 or 1.
    Bool,
    /// U8, read as a bool mask (nonzero = true), as some exporters write masks.
    U8,
    /// A valid safetensors dtype this crate does not read (F16, I64, …): its size is known,
    /// so the header can still be checked (and its metadata read); reading its data is an
    /// [`Error::Dtype`].
    Unsupported {
        bits: u64,
    },
}

impl Kind {
    /// The kind of a dtype name, `None` when safetensors knows no such dtype.
    fn of(dtype: &str) -> Option<Kind> {
        match dtype {
            "F32" => Some(Kind::F32),
            "BOOL" => Some(Kind::Bool),
            "U8" => Some(Kind::U8),
            other => serde_json::from_value::<Dtype>(serde_json::Value::String(other.into()))
                .ok()
                .map(|d| Kind::Unsupported {
                    bits: d.bitsize() as u64,
                }),
        }
    }

    fn bits(self) -> u64 {
        match self {
            Kind::F32 => 32,
            Kind::Bool | Kind::U8 => 8,
            Kind::Unsupported { bits } => bits,
        }
    }
}

fn dtype_err(entry_name: &str, dtype: &str) -> Error {
    Error::Dtype {
        tensor: clip(entry_name),
        expected: "F32 (or BOOL for masks)",
        got: clip(dtype),
    }
}

/// One checked tensor entry: its data is `start..start + bytes` of the data section.
struct Entry {
    name: String,
    dtype: String,
    kind: Kind,
    shape: Vec<usize>,
    /// Element count (fits `usize`, checked).
    count: usize,
    start: u64,
    bytes: u64,
}

/// A checked header: the tensors in file order (contiguous, no gap, no overlap), the
/// metadata, and where the data section starts and how long it is.
struct Header {
    tensors: Vec<Entry>,
    metadata: BTreeMap<String, String>,
    data_start: u64,
    data_len: u64,
}

/// A name, shortened for an error message (a hostile name may be megabytes long).
fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Checks the header length prefix against the file length and the header limit; returns
/// the header length.
fn header_len(prefix: [u8; 8], file_len: u64) -> std::result::Result<u64, String> {
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "the header length field says {n} bytes, over the {MAX_HEADER_BYTES}-byte limit (not a safetensors file, or a corrupt one)"
        ));
    }
    let rest = file_len - LEN_PREFIX;
    if n > rest {
        return Err(format!(
            "the header length field says {n} bytes but only {rest} bytes follow it (truncated file?)"
        ));
    }
    Ok(n)
}

/// Parses and checks the JSON header (`n` bytes) of a file of `file_len` bytes.
fn parse_header(json: &[u8], file_len: u64) -> Result<Header, Error> {
    let err = |m: String| st_err(Path::new("<bytes>"), m);
    let n = json.len() as u64;
    let text = std::str::from_utf8(json).map_err(|e| err(format!("header is not UTF-8: {e}")))?;
    let raw: RawHeader =
        serde_json::from_str(text).map_err(|e| err(format!("invalid header: {e}")))?;

    let mut tensors = Vec::with_capacity(raw.tensors.len());
    for (name, info) in raw.tensors {
        let kind = Kind::of(&info.dtype).ok_or_else(|| dtype_err(&name, &info.dtype))?;
        let shape: Vec<usize> = info
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                err(format!(
                    "tensor {:?}: a dimension of shape {:?} does not fit in memory",
                    clip(&name),
                    info.shape
                ))
            })?;
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                err(format!(
                    "tensor {:?}: shape {:?} has more elements than fit in memory",
                    clip(&name),
                    shape
                ))
            })?;
        // In u128: a usize count times at most 64 bits cannot overflow.
        let bits = count as u128 * u128::from(kind.bits());
        if !bits.is_multiple_of(8) {
            return Err(err(format!(
                "tensor {:?}: shape {:?} of {} is not a whole number of bytes",
                clip(&name),
                shape,
                clip(&info.dtype)
            )));
        }
        let bytes = u64::try_from(bits / 8).map_err(|_| {
            err(format!(
                "tensor {:?}: shape {:?} of {} needs more bytes than fit in memory",
                clip(&name),
                shape,
                clip(&info.dtype)
            ))
        })?;
        let [start, end] = info.data_offsets;
        if end < start || end - start != bytes {
            return Err(err(format!(
                "tensor {:?}: data_offsets [{start}, {end}] do not hold the {bytes} bytes of {} {:?}",
                clip(&name),
                clip(&info.dtype),
                shape
            )));
        }
        tensors.push(Entry {
            name,
            dtype: info.dtype,
            kind,
            shape,
            count,
            start,
            bytes,
        });
    }

    // The data section must be covered exactly: no gap, no overlap, nothing after.
    tensors.sort_by_key(|t| (t.start, t.bytes));
    let mut data_len = 0u64;
    for t in &tensors {
        if t.start != data_len {
            return Err(err(format!(
                "tensor {:?}: data starts at byte {} but the previous tensor ends at {data_len} ({})",
                clip(&t.name),
                t.start,
                if t.start > data_len {
                    "a gap"
                } else {
                    "overlapping data"
                }
            )));
        }
        data_len += t.bytes; // <= end offset, which fit in u64
    }
    let data_start = LEN_PREFIX + n;
    let available = file_len - data_start;
    if data_len != available {
        return Err(err(if data_len > available {
            format!(
                "the header describes {data_len} bytes of tensor data but the file holds only {available} (truncated file, or offsets past its end)"
            )
        } else {
            format!(
                "the header describes {data_len} bytes of tensor data but {available} follow the header (trailing bytes)"
            )
        }));
    }
    Ok(Header {
        tensors,
        metadata: raw.metadata.unwrap_or_default(),
        data_start,
        data_len,
    })
}

impl Header {
    /// `Error::Dtype` for the first tensor (in file order) of a dtype this crate does not read.
    fn check_dtypes(&self) -> Result<()> {
        match self
            .tensors
            .iter()
            .find(|t| matches!(t.kind, Kind::Unsupported { .. }))
        {
            Some(t) => Err(dtype_err(&t.name, &t.dtype)),
            None => Ok(()),
        }
    }
}

/// The header of in-memory file bytes.
fn header_of_bytes(bytes: &[u8]) -> Result<Header> {
    let file_len = bytes.len() as u64;
    let prefix: [u8; 8] = bytes
        .get(..LEN_PREFIX as usize)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| {
            st_err(
                Path::new("<bytes>"),
                format!(
                    "{file_len} bytes is shorter than the 8-byte header length (not a safetensors file)"
                ),
            )
        })?;
    let n = header_len(prefix, file_len).map_err(|m| st_err(Path::new("<bytes>"), m))?;
    parse_header(
        &bytes[LEN_PREFIX as usize..(LEN_PREFIX + n) as usize],
        file_len,
    )
}

/// Converts one tensor's checked bytes.
fn convert(entry: &Entry, data: &[u8]) -> Result<FileTensor> {
    debug_assert_eq!(data.len() as u64, entry.bytes);
    Ok(match entry.kind {
        Kind::F32 => FileTensor::F32(Tensor {
            shape: entry.shape.clone(),
            data: data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }),
        Kind::Bool => FileTensor::Bool {
            shape: entry.shape.clone(),
            data: bools(entry, data)?,
        },
        Kind::U8 => FileTensor::Bool {
            shape: entry.shape.clone(),
            data: data.iter().map(|&b| b != 0).collect(),
        },
        Kind::Unsupported { .. } => return Err(dtype_err(&entry.name, &entry.dtype)),
    })
}

/// BOOL bytes, each 0 or 1.
fn bools(entry: &Entry, data: &[u8]) -> Result<Vec<bool>> {
    data.iter()
        .enumerate()
        .map(|(i, &b)| match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(st_err(
                Path::new("<bytes>"),
                format!(
                    "tensor {:?}: BOOL element {i} is byte {b:#04x}, not 0 or 1",
                    clip(&entry.name)
                ),
            )),
        })
        .collect()
}

/// Puts the path into a safetensors error raised on bytes.
fn with_path(path: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Safetensors { message, .. } => st_err(path, message),
        other => other,
    }
}

/// Reads every tensor of a safetensors file. Accepts F32 and BOOL (also U8, nonzero = true,
/// as some exporters write bool masks); anything else is a dtype error naming the tensor.
/// Files over [`DEFAULT_MAX_FILE_BYTES`] are refused.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    read_safetensors_with_limit(path, DEFAULT_MAX_FILE_BYTES)
}

/// Opens `path`, refuses it when larger than `max_bytes`, and reads and checks its header.
fn open_checked(path: &Path, max_bytes: u64) -> Result<(std::fs::File, Header)> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    if file_len > max_bytes {
        return Err(st_err(
            path,
            format!("the file is {file_len} bytes, over the limit of {max_bytes}"),
        ));
    }
    if file_len < LEN_PREFIX {
        return Err(st_err(
            path,
            format!(
                "{file_len} bytes is shorter than the 8-byte header length (not a safetensors file)"
            ),
        ));
    }
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(|e| io_err(path, e))?;
    let n = header_len(prefix, file_len).map_err(|m| st_err(path, m))?;
    // n <= the file's real length, so this allocation is backed by bytes that exist.
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json).map_err(|e| io_err(path, e))?;
    let header = parse_header(&json, file_len).map_err(with_path(path))?;
    Ok((file, header))
}

/// [`read_safetensors`] with a file size limit of `max_bytes`. The header is checked against
/// the file's size before any tensor data is read; each tensor is then read straight into its
/// own storage.
pub fn read_safetensors_with_limit(path: &Path, max_bytes: u64) -> Result<TensorMap> {
    let (mut file, header) = open_checked(path, max_bytes)?;
    header.check_dtypes()?;
    let mut out = TensorMap::new();
    // Entries are contiguous and sorted, so the data is read front to back.
    for entry in &header.tensors {
        let tensor = match entry.kind {
            Kind::F32 => {
                let mut data = vec![0f32; entry.count];
                file.read_exact(bytemuck::cast_slice_mut(&mut data))
                    .map_err(|e| io_err(path, e))?;
                for x in &mut data {
                    *x = f32::from_bits(u32::from_le(x.to_bits()));
                }
                FileTensor::F32(Tensor {
                    shape: entry.shape.clone(),
                    data,
                })
            }
            Kind::Bool | Kind::U8 | Kind::Unsupported { .. } => {
                let mut bytes = vec![0u8; entry.bytes as usize];
                file.read_exact(&mut bytes).map_err(|e| io_err(path, e))?;
                convert(entry, &bytes).map_err(with_path(path))?
            }
        };
        out.insert(entry.name.clone(), tensor);
    }
    debug_assert_eq!(
        header.tensors.iter().map(|t| t.bytes).sum::<u64>(),
        header.data_len
    );
    Ok(out)
}

/// The `__metadata__` string map of a safetensors file (empty when it has none). Reads and
/// checks the header only.
pub fn read_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let (_, header) = open_checked(path, u64::MAX)?;
    Ok(header.metadata)
}

/// Parses safetensors bytes (see [`read_safetensors`]).
pub fn parse_safetensors(bytes: &[u8]) -> Result<TensorMap> {
    let header = header_of_bytes(bytes)?;
    header.check_dtypes()?;
    let data = &bytes[header.data_start as usize..];
    let mut out = TensorMap::new();
    for entry in &header.tensors {
        let start = entry.start as usize;
        let tensor = convert(entry, &data[start..start + entry.bytes as usize])?;
        out.insert(entry.name.clone(), tensor);
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
