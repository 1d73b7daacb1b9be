//! `wgpu_mha::io::parse_safetensors` on arbitrary bytes: it must never panic, and whatever
//! it accepts must also be accepted by the reference implementation (the `safetensors`
//! crate) with the same names, shapes and bytes, and must survive a serialize/parse round
//! trip bit for bit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpu_mha::Error;
use wgpu_mha::io::{self, FileTensor, TensorMap};

fn bits(map: &TensorMap) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    map.iter()
        .map(|(name, t)| {
            let data = match t {
                FileTensor::F32(t) => t.data.iter().map(|v| v.to_bits()).collect(),
                FileTensor::Bool { data, .. } => data.iter().map(|&b| b as u32).collect(),
            };
            (name.clone(), t.shape().to_vec(), data)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    match io::parse_safetensors(data) {
        Ok(map) => {
            let st = safetensors::SafeTensors::deserialize(data)
                .expect("accepted by wgpu-mha but refused by the safetensors crate");
            assert_eq!(st.len(), map.len());
            for (name, t) in &map {
                let view = st.tensor(name).expect("a name the reference does not know");
                assert_eq!(view.shape(), t.shape(), "{name}");
                match t {
                    FileTensor::F32(t) => {
                        assert_eq!(view.dtype(), safetensors::Dtype::F32);
                        let ours: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                        assert_eq!(view.data(), &ours[..], "{name}");
                    }
                    FileTensor::Bool { data, .. } => {
                        assert!(matches!(
                            view.dtype(),
                            safetensors::Dtype::BOOL | safetensors::Dtype::U8
                        ));
                        assert!(view.data().iter().map(|&b| b != 0).eq(data.iter().copied()));
                    }
                }
            }
            let bytes = io::serialize_safetensors(&map).expect("serializing what was parsed");
            let again = io::parse_safetensors(&bytes).expect("parsing what was serialized");
            assert_eq!(bits(&again), bits(&map));
        }
        Err(Error::Safetensors { message, .. }) => assert!(!message.is_empty()),
        Err(Error::Dtype { tensor, got, .. }) => {
            assert!(tensor.len() <= 84 && got.len() <= 84, "unclipped names");
        }
        Err(other) => panic!("unexpected error variant: {other:?}"),
    }
});
