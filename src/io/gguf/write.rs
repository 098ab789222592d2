//! Writing the GGUF container (version 3, little-endian) and the block formats an export offers:
//! f32, f16, Q8_0, Q4_K and Q6_K, in the byte layouts llama.cpp reads.

use std::io::Write;

use super::dequant::GgmlType;
use super::file::MetaValue;
use super::quant;

/// llama.cpp's default, which readers assume when `general.alignment` is absent.
const ALIGNMENT: usize = 32;

/// The tensor formats an export writes (llama.cpp's file types).
#[allow(non_camel_case_types)] // ggml's own spelling, as users see it in file names
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
    /// 8-bit blocks of 32 values with an f16 scale: half of f16's size, error about 0.4% of a
    /// block's largest value.
    Q8_0,
    /// llama.cpp's most used 4-bit mix: Q4_K, with Q6_K for the output head (the embedding when
    /// tied) and for the value projections and down-projections of a third of the layers (the
    /// first and last eighth among them).
    Q4_K_M,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            "q4_k_m" => Ok(Self::Q4_K_M),
            other => Err(format!("'{other}' is not a GGUF precision this export writes (f32, f16, q8_0, q4_k_m)")),
        }
    }
}

impl Precision {
    /// llama.cpp's `llama_ftype` number for `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Q4_K_M => 15,
        }
    }

    /// The type of the matrix `gguf_name` (in a model of `layers` blocks, whose head is the
    /// token embedding when `tied`), as llama.cpp's `llama_tensor_get_type` picks it for this
    /// file type.
    pub fn matrix_type(self, gguf_name: &str, layers: usize, tied: bool) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_K_M => {
                let layer = gguf_name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|l| l.parse::<usize>().ok());
                let sensitive = gguf_name.contains(".attn_v.") || gguf_name.contains(".ffn_down.");
                match layer {
                    Some(i) if sensitive && more_bits(i, layers) => GgmlType::Q6_K,
                    // The output head, whichever tensor it is.
                    None if gguf_name.starts_with("output.") || (tied && gguf_name.starts_with("token_embd.")) => GgmlType::Q6_K,
                    _ => GgmlType::Q4_K,
                }
            }
        }
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third between.
fn more_bits(layer: usize, layers: usize) -> bool {
    let eighth = layers / 8;
    layer < eighth || layer >= 7 * layers / 8 || (layer - eighth) % 3 == 2
}

/// One tensor to write: its GGUF name, HF shape (`[out, in]`), type and encoded bytes.
pub struct TensorData {
    pub name: String,
    pub hf_shape: Vec<usize>,
    pub ty: GgmlType,
    pub bytes: Vec<u8>,
}

impl TensorData {
    /// `values` (row-major, HF layout) in `ty` (f32, f16, Q8_0, Q4_K or Q6_K). Blocks run along
    /// rows: a row length the type's block does not divide falls back to Q8_0, as llama.cpp
    /// falls back for such tensors, or to f16 when 32 does not divide it either.
    pub fn encode(name: String, hf_shape: Vec<usize>, values: &[f32], ty: GgmlType) -> Self {
        let ty = written_type(ty, hf_shape.last().copied().unwrap_or(1));
        let bytes = match ty {
            GgmlType::F16 => values.iter().flat_map(|&v| quant::f16_bytes(v)).collect(),
            GgmlType::Q8_0 => quant::q8_0(values),
            GgmlType::Q4_K => quant::q4_k(values),
            GgmlType::Q6_K => quant::q6_k(values),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        Self { name, hf_shape, ty, bytes }
    }
}

/// The type [`TensorData::encode`] writes for `ty` asked of rows of `row` values.
pub fn written_type(ty: GgmlType, row: usize) -> GgmlType {
    let fits = |t: GgmlType| row.is_multiple_of(t.block_size());
    match ty {
        GgmlType::Q4_K | GgmlType::Q6_K | GgmlType::Q8_0 if !fits(ty) => {
            if fits(GgmlType::Q8_0) {
                GgmlType::Q8_0
            } else {
                GgmlType::F16
            }
        }
        GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_K | GgmlType::Q6_K => ty,
        _ => GgmlType::F32,
    }
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
