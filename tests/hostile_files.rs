mod common;

// Hostile safetensors files: every lie a header can tell — about its own length, offsets,
// sizes, shapes, dtypes, names — is a clear typed error, found before anything large is
// allocated, never a panic or an abort. Hand-built byte strings, plus a mutation fuzz of
// valid files (proptest). Inputs that crash the cargo-fuzz targets (fuzz/) belong here as
// regression tests; none has so far.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use wgpu_mha::io::{self, FileTensor, TensorMap};
use wgpu_mha::weights::names;
use wgpu_mha::{Error, MhaConfig, MhaWeights, Tensor};

use common::raw_safetensors;

/// A file whose length field says `n` whatever follows.
fn with_len(n: u64, rest: &[u8]) -> Vec<u8> {
    let mut out = n.to_le_bytes().to_vec();
    out.extend_from_slice(rest);
    out
}

/// `parse_safetensors` must fail with `Error::Safetensors` whose message holds every needle.
#[track_caller]
fn refused(what: &str, bytes: &[u8], needles: &[&str]) -> String {
    let err = match io::parse_safetensors(bytes) {
        Ok(map) => panic!("{what}: parsed as {:?}", map.keys().collect::<Vec<_>>()),
        Err(e) => e,
    };
    assert!(
        matches!(err, Error::Safetensors { .. }),
        "{what}: expected Error::Safetensors, got {err:?}"
    );
    let msg = err.to_string();
    for needle in needles {
        assert!(
            msg.contains(needle),
            "{what}: the message {msg:?} does not mention {needle:?}"
        );
    }
    // The same file on disk: the same refusal, naming the path.
    let path = temp_file(what, bytes);
    let err = io::read_safetensors(&path).expect_err(what);
    assert!(
        matches!(err, Error::Safetensors { .. }),
        "{what} (file): {err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{what} (file): {err}"
    );
    std::fs::remove_file(&path).ok();
    msg
}

/// A fresh file under the temp dir holding `bytes`.
fn temp_file(what: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-mha-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(60)
        .collect();
    let path = dir.join(format!("{name}.safetensors"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn f32_tensor(shape: &[usize], data: Vec<f32>) -> FileTensor {
    FileTensor::F32(Tensor::new(shape.to_vec(), data).unwrap())
}

/// A small valid file: an F32 tensor, a BOOL tensor and an empty one.
fn good_map() -> TensorMap {
    let mut map = TensorMap::new();
    map.insert("w".into(), f32_tensor(&[2, 3], vec![1.5; 6]));
    map.insert(
        "mask".into(),
        FileTensor::Bool {
            shape: vec![4],
            data: vec![true, false, false, true],
        },
    );
    map.insert("empty".into(), f32_tensor(&[0, 5], vec![]));
    map
}

#[test]
fn valid_files_round_trip_through_bytes_and_disk() {
    let map = good_map();
    let bytes = io::serialize_safetensors(&map).unwrap();
    assert_eq!(io::parse_safetensors(&bytes).unwrap(), map);
    let path = temp_file("round trip", &bytes);
    assert_eq!(io::read_safetensors(&path).unwrap(), map);
    assert!(io::read_safetensors_metadata(&path).unwrap().is_empty());
    std::fs::remove_file(&path).ok();

    // Hand-written: metadata, padding, U8 read as bool (nonzero = true), scalar shape.
    let bytes = raw_safetensors(
        r#"{"__metadata__":{"format":"pt"},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"u":{"dtype":"U8","shape":[3],"data_offsets":[4,7]}}"#,
        &[0, 0, 128, 63, 0, 7, 1],
    );
    let map = io::parse_safetensors(&bytes).unwrap();
    assert_eq!(map["s"], f32_tensor(&[], vec![1.0]));
    assert_eq!(
        map["u"],
        FileTensor::Bool {
            shape: vec![3],
            data: vec![false, true, true]
        }
    );
    let path = temp_file("metadata", &bytes);
    assert_eq!(
        io::read_safetensors_metadata(&path).unwrap()["format"],
        "pt"
    );
    assert_eq!(io::read_safetensors(&path).unwrap(), map);
    std::fs::remove_file(&path).ok();

    // An empty file of tensors is valid.
    assert!(
        io::parse_safetensors(&raw_safetensors("{}", &[]))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn too_short_for_the_length_prefix() {
    refused("empty", &[], &["shorter than the 8-byte header length"]);
    refused("three bytes", &[1, 2, 3], &["3 bytes"]);
    refused("seven bytes", &[2, 0, 0, 0, 0, 0, 0], &["7 bytes"]);
}

#[test]
fn header_length_that_lies() {
    refused("u64::MAX", &with_len(u64::MAX, b"{}"), &["over the"]);
    refused(
        "just over the limit",
        &with_len(io::MAX_HEADER_BYTES + 1, b"{}"),
        &["100000001", "limit"],
    );
    refused(
        "longer than the file",
        &with_len(1 << 20, b"{}      "),
        &["1048576", "only 8 bytes follow"],
    );
    refused(
        "one byte past the end",
        &with_len(9, b"{}      "),
        &["only 8"],
    );
    // Too short: the JSON is cut.
    let good = io::serialize_safetensors(&good_map()).unwrap();
    let mut short = good.clone();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap());
    short[..8].copy_from_slice(&(n - 3).to_le_bytes());
    refused("header length short by 3", &short, &["invalid header"]);
    // Zero: no header at all.
    refused("zero header length", &with_len(0, &[]), &["invalid header"]);
}

#[test]
fn header_that_is_not_a_json_object() {
    refused("not UTF-8", &with_len(8, b"{\"\xff\":1} "), &["UTF-8"]);
    refused(
        "not JSON",
        &raw_safetensors("{not json", &[]),
        &["invalid header"],
    );
    refused(
        "an array",
        &raw_safetensors("[1, 2]", &[]),
        &["invalid header"],
    );
    refused(
        "a string",
        &raw_safetensors("\"w\"", &[]),
        &["invalid header"],
    );
    refused("null", &raw_safetensors("null", &[]), &["invalid header"]);
    refused(
        "trailing garbage",
        &raw_safetensors("{} x", &[]),
        &["invalid header"],
    );
    refused(
        "NUL padding instead of spaces",
        &with_len(8, b"{}\0\0\0\0\0\0"),
        &["invalid header"],
    );
    refused(
        "entry is not an object",
        &raw_safetensors(r#"{"w": 3}"#, &[]),
        &["invalid header"],
    );
    refused(
        "missing data_offsets",
        &raw_safetensors(r#"{"w":{"dtype":"F32","shape":[1]}}"#, &[0; 4]),
        &["data_offsets"],
    );
    refused(
        "missing shape",
        &raw_safetensors(r#"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, &[0; 4]),
        &["shape"],
    );
    refused(
        "missing dtype",
        &raw_safetensors(r#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]),
        &["dtype"],
    );
    refused(
        "three offsets",
        &raw_safetensors(
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
            &[0; 4],
        ),
        &["invalid header"],
    );
    refused(
        "metadata not strings",
        &raw_safetensors(r#"{"__metadata__":{"a":1}}"#, &[]),
        &["invalid header"],
    );
    // Nesting deeper than serde_json's recursion limit is an error, not a stack overflow.
    let deep = format!(
        r#"{{"w":{{"dtype":"F32","shape":{}1{},"data_offsets":[0,4]}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    refused(
        "deep nesting",
        &raw_safetensors(&deep, &[0; 4]),
        &["invalid header"],
    );
}

#[test]
fn offsets_that_lie() {
    let f = |offsets: &str, data: &[u8]| {
        raw_safetensors(
            &format!(r#"{{"w":{{"dtype":"F32","shape":[2],"data_offsets":{offsets}}}}}"#),
            data,
        )
    };
    refused("past the end", &f("[0,8]", &[0; 4]), &["truncated"]);
    refused(
        "end before start",
        &f("[8,0]", &[0; 8]),
        &["data_offsets [8, 0]", "\"w\""],
    );
    refused(
        "span disagrees with shape",
        &f("[0,12]", &[0; 12]),
        &["8 bytes"],
    );
    refused("not starting at 0", &f("[4,12]", &[0; 12]), &["a gap"]);
    refused("trailing bytes", &f("[0,8]", &[0; 9]), &["trailing"]);
    refused(
        "huge offsets",
        &f(&format!("[{},{}]", u64::MAX - 8, u64::MAX), &[0; 8]),
        &["a gap"],
    );
    refused(
        "offsets beyond u64",
        &f("[0,18446744073709551624]", &[0; 8]),
        &["invalid header"],
    );
    refused(
        "negative offsets",
        &f("[-8,0]", &[0; 8]),
        &["invalid header"],
    );
    refused("float offsets", &f("[0,8.0]", &[0; 8]), &["invalid header"]);

    // Two tensors over the same bytes; a hole between two tensors.
    refused(
        "overlap",
        &raw_safetensors(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            &[0; 8],
        ),
        &["overlapping"],
    );
    refused(
        "hole",
        &raw_safetensors(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            &[0; 12],
        ),
        &["a gap"],
    );
    // Every truncation of a valid file is refused.
    let good = io::serialize_safetensors(&good_map()).unwrap();
    for cut in 0..good.len() {
        assert!(
            io::parse_safetensors(&good[..cut]).is_err(),
            "a file cut to {cut} of {} bytes parsed",
            good.len()
        );
    }
}

#[test]
fn absurd_shapes_are_refused_without_allocating() {
    let f = |dtype: &str, shape: &str, offsets: &str| {
        raw_safetensors(
            &format!(r#"{{"w":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#),
            &[0; 16],
        )
    };
    // Element counts that overflow.
    refused(
        "count overflows",
        &f("F32", "[4294967296,4294967296,4294967296]", "[0,16]"),
        &["more elements than fit"],
    );
    refused(
        "count overflows after a zero-free prefix",
        &f("BOOL", "[18446744073709551615,2]", "[0,16]"),
        &["more elements than fit"],
    );
    // Counts that fit but whose bytes do not.
    refused(
        "bytes overflow",
        &f("F32", "[4611686018427387904]", "[0,16]"),
        &["more bytes than fit"],
    );
    // Counts whose bytes fit in u64, with offsets that agree: the file is too short, which
    // is found before any allocation (2^62 bytes would abort the process).
    refused(
        "exabytes claimed",
        &f("F32", "[1152921504606846976]", "[0,4611686018427387904]"),
        &["truncated"],
    );
    refused(
        "a dimension beyond u64",
        &f("F32", "[1e30]", "[0,16]"),
        &["invalid header"],
    );
    refused(
        "a negative dimension",
        &f("F32", "[-4]", "[0,16]"),
        &["invalid header"],
    );
    // A zero anywhere makes the count zero, however large the other dimensions.
    let zero = raw_safetensors(
        r#"{"w":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}}"#,
        &[],
    );
    let map = io::parse_safetensors(&zero).unwrap();
    assert_eq!(map["w"].shape(), &[0, usize::MAX]);
}

#[test]
fn unsupported_or_unknown_dtypes() {
    for (dtype, bytes) in [
        ("F16", 2),
        ("BF16", 2),
        ("F64", 8),
        ("I64", 8),
        ("I32", 4),
        ("F8_E4M3", 1),
        ("F17", 4),
        ("", 4),
        ("f32", 4),
    ] {
        let bytes = raw_safetensors(
            &format!(
                r#"{{"half_weight":{{"dtype":"{dtype}","shape":[2],"data_offsets":[0,{}]}}}}"#,
                2 * bytes
            ),
            &vec![0; 2 * bytes],
        );
        let err = io::parse_safetensors(&bytes).expect_err(dtype);
        match &err {
            Error::Dtype { tensor, got, .. } => {
                assert_eq!(tensor, "half_weight");
                assert_eq!(got, dtype);
            }
            other => panic!("{dtype}: expected Error::Dtype, got {other:?}"),
        }
        assert!(err.to_string().contains("F32"), "{err}");
    }
    refused(
        "dtype not a string",
        &raw_safetensors(
            r#"{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
        &["invalid header"],
    );
    // A known dtype is checked for size before its type is refused: a lying F16 entry is a
    // header error, and sub-byte dtypes must fill whole bytes.
    refused(
        "F16 with offsets that lie",
        &raw_safetensors(
            r#"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
        &["6 bytes"],
    );
    refused(
        "three F4 values",
        &raw_safetensors(
            r#"{"h":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
            &[0; 2],
        ),
        &["whole number of bytes"],
    );
    // The metadata of a valid file with dtypes this crate does not read is still readable.
    let path = temp_file(
        "f16 metadata",
        &raw_safetensors(
            r#"{"__metadata__":{"k":"v"},"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
    );
    assert_eq!(io::read_safetensors_metadata(&path).unwrap()["k"], "v");
    assert!(matches!(
        io::read_safetensors(&path),
        Err(Error::Dtype { .. })
    ));
    std::fs::remove_file(&path).ok();
    // A long hostile dtype is clipped in the message.
    let long = "X".repeat(1 << 20);
    let err = io::parse_safetensors(&raw_safetensors(
        &format!(r#"{{"w":{{"dtype":"{long}","shape":[1],"data_offsets":[0,4]}}}}"#),
        &[0; 4],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::Dtype { .. }));
    assert!(
        err.to_string().len() < 400,
        "{} bytes",
        err.to_string().len()
    );
}

#[test]
fn bool_bytes_other_than_0_or_1() {
    refused(
        "BOOL byte 2",
        &raw_safetensors(
            r#"{"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}"#,
            &[0, 1, 2],
        ),
        &["BOOL element 2", "0x02"],
    );
}

#[test]
fn duplicate_names() {
    // Both entries cover the same bytes: a reader that keeps the last of two equal keys sees
    // a valid file, with either meaning. Refused.
    refused(
        "duplicate tensor",
        &raw_safetensors(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"BOOL","shape":[8],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
        &["\"w\" appears twice"],
    );
    refused(
        "duplicate empty tensor",
        &raw_safetensors(
            r#"{"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#,
            &[],
        ),
        &["appears twice"],
    );
    refused(
        "duplicate metadata",
        &raw_safetensors(r#"{"__metadata__":{},"__metadata__":{}}"#, &[]),
        &["\"__metadata__\" appears twice"],
    );
    refused(
        "duplicate metadata key",
        &raw_safetensors(r#"{"__metadata__":{"a":"1","a":"2"}}"#, &[]),
        &["\"a\" appears twice"],
    );
    // A megabyte-long duplicated name is clipped in the message.
    let long = "n".repeat(1 << 20);
    let msg = refused(
        "long duplicate",
        &raw_safetensors(
            &format!(
                r#"{{"{long}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}},"{long}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}}}"#
            ),
            &[],
        ),
        &["appears twice"],
    );
    assert!(msg.len() < 400, "{} bytes", msg.len());
}

#[test]
fn missing_or_wrong_names_in_a_weights_file() {
    let config = MhaConfig::new(4, 2);
    let good = MhaWeights::random(&config, &mut common::rng()).to_tensors(&config);
    let load = |map: &TensorMap| {
        let path = temp_file("weights", &io::serialize_safetensors(map).unwrap());
        let result = MhaWeights::load(&config, &path);
        std::fs::remove_file(&path).ok();
        result
    };
    load(&good).unwrap();
    for name in [
        names::IN_PROJ_WEIGHT,
        names::OUT_PROJ_WEIGHT,
        names::IN_PROJ_BIAS,
        names::OUT_PROJ_BIAS,
    ] {
        let mut map = good.clone();
        map.remove(name);
        match load(&map) {
            Err(Error::MissingWeight { name: got, .. }) => assert_eq!(got, name),
            other => panic!("without {name}: {other:?}"),
        }
    }
    let mut map = good.clone();
    let w = map.remove(names::IN_PROJ_WEIGHT).unwrap();
    map.insert("in_proj_weights".into(), w);
    assert!(matches!(load(&map), Err(Error::MissingWeight { .. })));
    let mut map = good.clone();
    map.insert("extra".into(), f32_tensor(&[1], vec![0.0]));
    assert!(matches!(load(&map), Err(Error::UnexpectedWeight { .. })));
}

#[test]
fn size_limit_and_huge_sparse_files() {
    let dir = std::env::temp_dir().join(format!("wgpu-mha-hostile-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = io::serialize_safetensors(&good_map()).unwrap();
    let path = dir.join("small.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    // The caller's limit is honoured.
    let err = io::read_safetensors_with_limit(&path, bytes.len() as u64 - 1).unwrap_err();
    assert!(
        matches!(err, Error::Safetensors { .. }) && err.to_string().contains("over the limit"),
        "{err}"
    );
    io::read_safetensors_with_limit(&path, bytes.len() as u64).unwrap();
    if !cfg!(unix) {
        // Extending a file is only sparse (free) on Unix file systems.
        std::fs::remove_dir_all(&dir).ok();
        return;
    }

    // A sparse file far over the default limit (no disk used): refused on its size alone.
    let huge = dir.join("huge.safetensors");
    let header = raw_safetensors(
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    std::fs::write(&huge, &header).unwrap();
    let set_len = |path: &Path, len: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap()
    };
    set_len(&huge, io::DEFAULT_MAX_FILE_BYTES + 1);
    let err = io::read_safetensors(&huge).unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
    // Under the limit but with a gigabyte the header does not describe: refused from the
    // header alone, without reading (or allocating) the gigabyte.
    set_len(&huge, 1 << 30);
    let start = std::time::Instant::now();
    let err = io::read_safetensors(&huge).unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
    assert!(io::read_safetensors_metadata(&huge).is_err());
    assert!(start.elapsed().as_secs_f64() < 1.0, "{:?}", start.elapsed());
    std::fs::remove_dir_all(&dir).ok();
}

/// One random mutation of a file.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Replaces a byte of the header with a JSON-significant character.
    Token {
        at: usize,
        token: u8,
    },
    SetLen {
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (
            any::<usize>(),
            prop::sample::select(b"{}[],:\"0123456789-e.".to_vec())
        )
            .prop_map(|(at, token)| Mutation::Token { at, token }),
        prop_oneof![
            0u64..256,
            any::<u64>(),
            Just(io::MAX_HEADER_BYTES),
            Just(u64::MAX)
        ]
        .prop_map(|value| Mutation::SetLen { value }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Flip { at, mask } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= mask;
            }
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Insert { at, bytes: ins } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, ins.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Mutation::Token { at, token } => {
            let header_end = bytes.len().min(8 + 200);
            if header_end > 8 {
                bytes[8 + at % (header_end - 8)] = *token;
            }
        }
        Mutation::SetLen { value } => {
            if bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&value.to_le_bytes());
            }
        }
    }
}

fn seed_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(io::serialize_safetensors(&good_map()).unwrap()),
        Just(raw_safetensors(
            r#"{"__metadata__":{"format":"pt"},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"u":{"dtype":"U8","shape":[3],"data_offsets":[4,7]}}"#,
            &[0, 0, 128, 63, 0, 7, 1],
        )),
        Just(raw_safetensors(
            r#"{"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"b":{"dtype":"BOOL","shape":[2,1],"data_offsets":[8,10]}}"#,
            &[0, 0, 0, 64, 0, 0, 128, 191, 1, 0],
        )),
    ]
}

/// Bitwise equality of two tensor maps (NaN payloads included).
fn same(a: &TensorMap, b: &TensorMap) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, ta), (nb, tb))| {
            na == nb
                && match (ta, tb) {
                    (FileTensor::F32(x), FileTensor::F32(y)) => {
                        x.shape == y.shape
                            && x.data
                                .iter()
                                .map(|v| v.to_bits())
                                .eq(y.data.iter().map(|v| v.to_bits()))
                    }
                    (x, y) => x == y,
                }
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Mutated files never panic; what parses agrees with the reference implementation
    /// (the `safetensors` crate), survives a round trip, and reads the same from disk.
    #[test]
    fn mutated_files_never_panic(
        seed in seed_file(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = seed;
        for m in &mutations {
            apply(&mut bytes, m);
        }
        match io::parse_safetensors(&bytes) {
            Ok(map) => {
                let st = safetensors::SafeTensors::deserialize(&bytes);
                prop_assert!(st.is_ok(), "accepted here, refused by the safetensors crate: {:?}", st.err());
                let st = st.unwrap();
                prop_assert_eq!(st.len(), map.len());
                for (name, t) in &map {
                    let view = st.tensor(name).unwrap();
                    prop_assert_eq!(view.shape(), t.shape());
                }
                let again = io::parse_safetensors(&io::serialize_safetensors(&map).unwrap()).unwrap();
                prop_assert!(same(&again, &map));
                let path = temp_file("mutated", &bytes);
                let from_disk = io::read_safetensors(&path).unwrap();
                std::fs::remove_file(&path).ok();
                prop_assert!(same(&from_disk, &map));
            }
            Err(e) => {
                prop_assert!(
                    matches!(e, Error::Safetensors { .. } | Error::Dtype { .. }),
                    "{:?}", e
                );
            }
        }
    }
}
