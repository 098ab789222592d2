//! ggml tensor types and their block decoders (written from ggml's block layouts).
//!
//! A quantized row is a run of fixed-size blocks; each block holds `block_size()` values in
//! `type_size()` bytes. All multi-byte fields are little-endian.

use half::{bf16, f16};

/// Elements per K-quant super-block.
const QK_K: usize = 256;

/// The tensor types this loader can turn into f32.
#[allow(non_camel_case_types)] // ggml's own spelling, as users see it in file names
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
}

impl GgmlType {
    pub const SUPPORTED: [GgmlType; 14] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2_K,
        Self::Q3_K,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
        Self::Q8_K,
    ];

    /// The `ggml_type` number used in GGUF tensor infos.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::Q8_K => 15,
            Self::BF16 => 30,
        }
    }

    pub fn from_id(id: u32) -> Option<Self> {
        Self::SUPPORTED.into_iter().find(|t| t.id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2_K => "Q2_K",
            Self::Q3_K => "Q3_K",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
            Self::Q8_K => "Q8_K",
        }
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K | Self::Q8_K => QK_K,
        }
    }

    /// Bytes per value, as stored: [`GgmlType::type_size`] over [`GgmlType::block_size`].
    pub fn bytes_per_value(self) -> f64 {
        self.type_size() as f64 / self.block_size() as f64
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 2 + 16,
            Self::Q4_1 => 2 + 2 + 16,
            Self::Q5_0 => 2 + 4 + 16,
            Self::Q5_1 => 2 + 2 + 4 + 16,
            Self::Q8_0 => 2 + 32,
            Self::Q2_K => 16 + 64 + 2 + 2,
            Self::Q3_K => 32 + 64 + 12 + 2,
            Self::Q4_K => 2 + 2 + 12 + 128,
            Self::Q5_K => 2 + 2 + 12 + 32 + 128,
            Self::Q6_K => 128 + 64 + 16 + 2,
            Self::Q8_K => 4 + 256 + 2 * 16,
        }
    }

    fn decode_block(self, b: &[u8], y: &mut [f32]) {
        match self {
            Self::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Self::F16 => y[0] = f16_at(b, 0),
            Self::BF16 => y[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            Self::Q4_0 => q4_0(b, y),
            Self::Q4_1 => q4_1(b, y),
            Self::Q5_0 => q5_0(b, y),
            Self::Q5_1 => q5_1(b, y),
            Self::Q8_0 => q8_0(b, y),
            Self::Q2_K => q2_k(b, y),
            Self::Q3_K => q3_k(b, y),
            Self::Q4_K => q4_k(b, y),
            Self::Q5_K => q5_k(b, y),
            Self::Q6_K => q6_k(b, y),
            Self::Q8_K => q8_k(b, y),
        }
    }
}

/// A readable name for any ggml type number, including ones we cannot decode.
pub fn type_name(id: u32) -> String {
    match (GgmlType::from_id(id), known_name(id)) {
        (Some(t), _) => t.name().to_string(),
        (None, Some(name)) => format!("{name} (type {id})"),
        (None, None) => format!("unknown type {id}"),
    }
}

/// ggml's name for a type number, whether or not we decode it.
pub fn known_name(id: u32) -> Option<&'static str> {
    if let Some(t) = GgmlType::from_id(id) {
        return Some(t.name());
    }
    Some(match id {
        9 => "Q8_1",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// llama.cpp's name for a `general.file_type` (its `llama_ftype`: the quantization a file was
/// made with, which mixes tensor types, e.g. Q4_K_M keeps some tensors in Q6_K). The flag
/// llama.cpp adds when it guessed the type is ignored.
pub fn file_type_name(id: u32) -> Option<&'static str> {
    const GUESSED: u32 = 1024;
    Some(match id & !GUESSED {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// Decodes `data` (whole blocks of `ty`) into `out`. Lengths are checked by the caller
/// (`data.len() / type_size == out.len() / block_size`); a mismatch only leaves values unwritten.
pub(crate) fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    let blocks = data.chunks_exact(ty.type_size());
    for (b, y) in blocks.zip(out.chunks_exact_mut(ty.block_size())) {
        ty.decode_block(b, y);
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Q4_0: d (f16), then 16 bytes; byte j holds value j in its low nibble and value j+16 in its
/// high nibble, each stored with +8 offset.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: d and min m (f16), then nibbles as in Q4_0 without offset: x = q * d + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5-bit values of Q5_0/Q5_1: nibbles as in Q4_0, plus bit i of the u32 `qh` as bit 4 of
/// value i.
fn five_bit(qh: &[u8], qs: &[u8], mut f: impl FnMut(usize, u8)) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, &q) in qs.iter().enumerate() {
        let hi0 = ((qh >> j) & 1) as u8;
        let hi1 = ((qh >> (j + 16)) & 1) as u8;
        f(j, (q & 0x0F) | (hi0 << 4));
        f(j + 16, (q >> 4) | (hi1 << 4));
    }
}

/// Q5_0: d (f16), qh (4 bytes), 16 nibble bytes; values stored with +16 offset.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    five_bit(&b[2..6], &b[6..22], |i, q| y[i] = (q as i32 - 16) as f32 * d);
}

/// Q5_1: d, m (f16), qh, nibbles; x = q * d + m.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    five_bit(&b[4..8], &b[8..24], |i, q| y[i] = q as f32 * d + m);
}

/// Q8_0: d (f16), then 32 signed bytes.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

/// Q8_K: d (f32), 256 signed bytes, then 16 i16 partial sums (only used by dot products).
fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (y, &q) in y.iter_mut().zip(&b[4..260]) {
        *y = q as i8 as f32 * d;
    }
}

/// Q2_K: 16 scale bytes (low nibble: scale, high nibble: min, one per 16 values), 64 bytes of
/// 2-bit values, then d and dmin (f16). Each 128-value half uses 32 bytes; value
/// `half*128 + s*32 + l` sits in bits 2s..2s+2 of byte `half*32 + l`. x = d*sc*q - dmin*m.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (i, y) in y.iter_mut().enumerate() {
        let (half, shift, l) = (i / 128, (i % 128) / 32, i % 32);
        let q = (qs[half * 32 + l] >> (2 * shift)) & 3;
        let sc = scales[i / 16];
        *y = d * (sc & 0x0F) as f32 * q as f32 - dmin * (sc >> 4) as f32;
    }
}

/// Q3_K: 32 bytes of high bits (value i: bit i/32 of byte i%32), 64 bytes of low 2-bit values
/// (laid out as in Q2_K), 12 bytes packing sixteen 6-bit scales (stored +32), then d (f16).
/// A clear high bit means the value is 4 lower: q = low - (high ? 0 : 4).
fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    // Scale s: low 4 bits from byte s%8 (nibble s/8), high 2 bits from byte 8 + s%4 (bits 2*(s/4)).
    let scale = |s: usize| -> f32 {
        let lo = (sc[s % 8] >> (4 * (s / 8))) & 0x0F;
        let hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
        ((lo | (hi << 4)) as i32 - 32) as f32
    };
    for (i, y) in y.iter_mut().enumerate() {
        let (half, shift, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = ((qs[half * 32 + l] >> (2 * shift)) & 3) as i32;
        let high = (hmask[l] >> (i / 32)) & 1;
        let q = low - if high == 0 { 4 } else { 0 };
        *y = d * scale(i / 16) * q as f32;
    }
}

/// The eight 6-bit (scale, min) pairs of Q4_K/Q5_K packed into 12 bytes: pairs 0..4 use the
/// low 6 bits of bytes j and j+4; pairs 4..8 take their low 4 bits from byte j+4 (scale: low
/// nibble, min: high nibble) and their top 2 bits from the top of bytes j-4 and j.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 { (q[j] & 63, q[j + 4] & 63) } else { ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)) }
}

/// Q4_K: d, dmin (f16), 12 scale bytes, 128 nibble bytes. Each 64-value chunk c uses 32 bytes:
/// low nibbles are values 0..32 (sub-block 2c), high nibbles values 32..64 (sub-block 2c+1).
/// x = d*sc*q - dmin*m.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    // Sub-block j (32 values): the nibbles of half j % 2 of chunk j / 2, one scale and minimum.
    for (j, y) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (scale, min) = (d * sc as f32, dmin * m as f32);
        for (y, &q) in y.iter_mut().zip(&qs[j / 2 * 32..j / 2 * 32 + 32]) {
            *y = scale * ((q >> (4 * (j % 2))) & 0x0F) as f32 - min;
        }
    }
}

/// Q5_K: as Q4_K, with 32 bytes of high bits (value i: bit i/32 of byte i%32) before the nibbles.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (i, y) in y.iter_mut().enumerate() {
        let (chunk, hi, l) = (i / 64, (i % 64) / 32, i % 32);
        let low = (qs[chunk * 32 + l] >> (4 * hi)) & 0x0F;
        let q = low | (((qh[l] >> (i / 32)) & 1) << 4);
        let (sc, m) = scale_min_k4(i / 32, scales);
        *y = d * sc as f32 * q as f32 - dmin * m as f32;
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales (one per 16
/// values), d (f16). In each 128-value half (ql offset 64*half, qh offset 32*half), value
/// `32*k + l` takes its low nibble from ql[l + 32*(k%2)] (nibble k/2) and its high bits from
/// bits 2k..2k+2 of qh[l]; stored with +32 offset.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    // Runs of 16 values sharing a scale.
    for (s, y) in y.chunks_exact_mut(16).enumerate() {
        let scale = d * (scales[s] as i8) as f32;
        for (j, y) in y.iter_mut().enumerate() {
            let i = s * 16 + j;
            let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
            let low = (ql[half * 64 + l + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0F;
            let high = (qh[half * 32 + l] >> (2 * k)) & 3;
            *y = scale * ((low | (high << 4)) as i32 - 32) as f32;
        }
    }
}
