//! Writing the GGUF container (version 3, little-endian) and the block formats an export offers:
//! f32, f16 and Q8_0, byte for byte as llama.cpp's reference code lays them out.

use std::io::Write;

use super::dequant::GgmlType;
use super::file::MetaValue;

/// llama.cpp's default, which readers assume when `general.alignment` is absent.
const ALIGNMENT: usize = 32;
/// Values per Q8_0 block.
const Q8_0_BLOCK: usize = 32;

/// The tensor formats an export writes.
#[allow(non_camel_case_types)] // ggml's own spelling, as users see it in file names
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
    /// 8-bit blocks of 32 values with an f16 scale: half of f16's size, error about 0.4% of a
    /// block's largest value.
    Q8_0,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            other => Err(format!("'{other}' is not a GGUF precision this export writes (f32, f16, q8_0)")),
        }
    }
}

impl Precision {
    fn ggml_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
        }
    }
}

/// One tensor to write: its GGUF name, HF shape (`[out, in]`), type and encoded bytes.
pub struct TensorData {
    pub name: String,
    pub hf_shape: Vec<usize>,
    pub ty: GgmlType,
    pub bytes: Vec<u8>,
}

impl TensorData {
    /// `values` (row-major, HF layout) in `precision`. Q8_0 blocks run along rows, so a row
    /// length that is not a multiple of 32 falls back to f16.
    pub fn encode(name: String, hf_shape: Vec<usize>, values: &[f32], precision: Precision) -> Self {
        let row = hf_shape.last().copied().unwrap_or(1);
        let precision = if precision == Precision::Q8_0 && !row.is_multiple_of(Q8_0_BLOCK) { Precision::F16 } else { precision };
        let bytes = match precision {
            Precision::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Precision::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            Precision::Q8_0 => quantize_q8_0(values),
        };
        Self { name, hf_shape, ty: precision.ggml_type(), bytes }
    }
}

/// ggml's `quantize_row_q8_0_ref`: per block of 32, the scale `max|x| / 127` as f16, then each
/// value divided by it and rounded to an i8.
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_0_BLOCK * 34);
    for block in values.chunks(Q8_0_BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&v| (v * inverse).round() as i8 as u8));
    }
    out
}

/// The whole file: header, metadata, tensor directory, then each tensor's bytes at an aligned
/// offset.
pub fn write_gguf(out: &mut impl Write, metadata: &[(String, MetaValue)], tensors: &[TensorData]) -> std::io::Result<()> {
    let mut head = Vec::new();
    head.extend(b"GGUF");
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut head, key);
        head.extend(type_id(value).to_le_bytes());
        put_value(&mut head, value);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut head, &t.name);
        head.extend((t.hf_shape.len() as u32).to_le_bytes());
        // GGUF lists dimensions fastest first: HF's [out, in] is ne = [in, out].
        for &d in t.hf_shape.iter().rev() {
            head.extend((d as u64).to_le_bytes());
        }
        head.extend(t.ty.id().to_le_bytes());
        head.extend((offset as u64).to_le_bytes());
        offset = (offset + t.bytes.len()).next_multiple_of(ALIGNMENT);
    }
    head.resize(head.len().next_multiple_of(ALIGNMENT), 0);
    out.write_all(&head)?;
    for t in tensors {
        out.write_all(&t.bytes)?;
        out.write_all(&vec![0u8; t.bytes.len().next_multiple_of(ALIGNMENT) - t.bytes.len()])?;
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// `gguf_type` numbers.
fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend(x.to_le_bytes()),
        MetaValue::U16(x) => out.extend(x.to_le_bytes()),
        MetaValue::I16(x) => out.extend(x.to_le_bytes()),
        MetaValue::U32(x) => out.extend(x.to_le_bytes()),
        MetaValue::I32(x) => out.extend(x.to_le_bytes()),
        MetaValue::U64(x) => out.extend(x.to_le_bytes()),
        MetaValue::I64(x) => out.extend(x.to_le_bytes()),
        MetaValue::F32(x) => out.extend(x.to_le_bytes()),
        MetaValue::F64(x) => out.extend(x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(items) => {
            // An empty array still names an element type; any will do.
            let element = items.first().map_or(type_id(&MetaValue::I32(0)), type_id);
            out.extend(element.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_are_an_f16_scale_and_rounded_bytes() {
        let values: Vec<f32> = (0..32).map(|i| i as f32 - 8.0).collect();
        let bytes = quantize_q8_0(&values);
        assert_eq!(bytes.len(), 34);
        let d = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        assert!((d - 23.0 / 127.0).abs() < 1e-4, "{d}");
        // -8 / (23/127) = -44.17 -> -44; 23 -> 127.
        assert_eq!(bytes[2] as i8, -44);
        assert_eq!(bytes[33] as i8, 127);
        assert_eq!(quantize_q8_0(&[0.0; 32])[2..], [0u8; 32], "an all-zero block has scale 0 and zero values");
    }
}
