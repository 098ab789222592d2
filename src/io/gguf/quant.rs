//! Block quantizers for GGUF export, writing ggml's layouts (the decoders are in `dequant.rs`).
//! Scales are chosen from each block's range in one pass, without the iterative search
//! llama.cpp's `quantize` runs: a little more error for the same bytes.

/// Values per Q8_0 block, and per K-quant super-block.
pub const Q8_0_BLOCK: usize = 32;
pub const QK_K: usize = 256;

pub(super) fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// The f16 value a scale is stored as, so quantizing divides by what decoding multiplies by.
fn as_stored(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// ggml's `quantize_row_q8_0_ref`: per block of 32, the scale `max|x| / 127` as f16, then each
/// value divided by it and rounded to an i8.
pub fn q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_0_BLOCK * 34);
    for block in values.chunks(Q8_0_BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16_bytes(d));
        out.extend(block.iter().map(|&v| (v * inverse).round() as i8 as u8));
    }
    out
}

/// Q4_K: per 256 values, eight sub-blocks of 32 as `x = d*sc*q - dmin*m` with 4-bit q and 6-bit
/// sc, m (packed in 12 bytes), d and dmin f16. The minimum is clamped to at most 0, as ggml does.
pub fn q4_k(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK_K * 144);
    for block in values.chunks(QK_K) {
        let subs: Vec<(f32, f32)> = block
            .chunks(32)
            .map(|s| {
                let min = s.iter().copied().fold(0f32, f32::min);
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                ((max - min) / 15.0, -min)
            })
            .collect();
        let max_scale = subs.iter().fold(0f32, |m, s| m.max(s.0));
        let max_min = subs.iter().fold(0f32, |m, s| m.max(s.1));
        let (d, dmin) = (as_stored(max_scale / 63.0), as_stored(max_min / 63.0));
        // Scales round up, so the 15 levels always span the sub-block; minimums to the nearest.
        let six_bit = |v: f32, unit: f32, round: fn(f32) -> f32| if unit > 0.0 { round(v / unit).clamp(0.0, 63.0) as u8 } else { 0 };
        let (sc, m): (Vec<u8>, Vec<u8>) = subs.iter().map(|&(s, mn)| (six_bit(s, d, f32::ceil), six_bit(mn, dmin, f32::round))).unzip();
        let mut scales = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                scales[j] = sc[j];
                scales[j + 4] = m[j];
            } else {
                scales[j + 4] = (sc[j] & 0x0F) | ((m[j] & 0x0F) << 4);
                scales[j - 4] |= (sc[j] >> 4) << 6;
                scales[j] |= (m[j] >> 4) << 6;
            }
        }
        let q: Vec<u8> = block
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let (step, offset) = (d * sc[i / 32] as f32, dmin * m[i / 32] as f32);
                if step > 0.0 { ((x + offset) / step).round().clamp(0.0, 15.0) as u8 } else { 0 }
            })
            .collect();
        out.extend(f16_bytes(d));
        out.extend(f16_bytes(dmin));
        out.extend(scales);
        // Each 64 values share 32 bytes: the first 32 in the low nibbles, the next in the high.
        for chunk in q.chunks(64) {
            out.extend((0..32).map(|l| chunk[l] | (chunk[l + 32] << 4)));
        }
    }
    out
}

/// Q6_K: per 256 values, sixteen sub-blocks of 16 as `x = d*sc*q` with 6-bit signed q (stored
/// +32), i8 sc and d f16, laid out as 128 bytes of low nibbles, 64 of high bit pairs, the scales
/// and d.
pub fn q6_k(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK_K * 210);
    for block in values.chunks(QK_K) {
        let subs: Vec<f32> = block.chunks(16).map(|s| s.iter().fold(0f32, |m, v| m.max(v.abs())) / 31.0).collect();
        let max_scale = subs.iter().fold(0f32, |m, &s| m.max(s));
        let d = as_stored(max_scale / 127.0);
        // Rounded up, so +-31 levels always reach the sub-block's largest value.
        let sc: Vec<i8> = subs.iter().map(|&s| if d > 0.0 { (s / d).ceil().clamp(0.0, 127.0) as i8 } else { 0 }).collect();
        let q: Vec<u8> = block
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let step = d * sc[i / 16] as f32;
                let level = if step > 0.0 { (x / step).round().clamp(-32.0, 31.0) as i32 } else { 0 };
                (level + 32) as u8
            })
            .collect();
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for half in 0..2 {
            let q = &q[half * 128..];
            for l in 0..32 {
                ql[half * 64 + l] = (q[l] & 0x0F) | ((q[l + 64] & 0x0F) << 4);
                ql[half * 64 + l + 32] = (q[l + 32] & 0x0F) | ((q[l + 96] & 0x0F) << 4);
                qh[half * 32 + l] = (q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6);
            }
        }
        out.extend(ql);
        out.extend(qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend(f16_bytes(d));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::dequant::{GgmlType, dequantize};
    use super::*;

    /// Smooth but uneven values, with a few outliers, over `n` values.
    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.731).sin() * 0.05 + if i % 97 == 0 { 0.3 } else { 0.0 }).collect()
    }

    fn round_trip(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        dequantize(ty, bytes, &mut out);
        out
    }

    #[test]
    fn q8_0_blocks_are_an_f16_scale_and_rounded_bytes() {
        let values: Vec<f32> = (0..32).map(|i| i as f32 - 8.0).collect();
        let bytes = q8_0(&values);
        assert_eq!(bytes.len(), 34);
        let d = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        assert!((d - 23.0 / 127.0).abs() < 1e-4, "{d}");
        // -8 / (23/127) = -44.17 -> -44; 23 -> 127.
        assert_eq!(bytes[2] as i8, -44);
        assert_eq!(bytes[33] as i8, 127);
        assert_eq!(q8_0(&[0.0; 32])[2..], [0u8; 32], "an all-zero block has scale 0 and zero values");
    }

    /// Each K-quant decodes (with the loader's decoder) to within its step: half a level of a
    /// sub-block, the 6-bit scale's rounding included.
    #[test]
    fn k_quants_decode_to_within_their_step() {
        let x = values(2 * QK_K);
        for (ty, bytes, levels, sub) in [(GgmlType::Q4_K, q4_k(&x), 15.0, 32), (GgmlType::Q6_K, q6_k(&x), 63.0, 16)] {
            assert_eq!(bytes.len(), 2 * ty.type_size(), "{ty:?}");
            let y = round_trip(ty, &bytes, x.len());
            for (s, (xs, ys)) in x.chunks(sub).zip(y.chunks(sub)).enumerate() {
                let range = xs.iter().fold(0f32, |m, v| m.max(v.abs())) * 2.0;
                let err = xs.iter().zip(ys).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err <= range / levels, "{ty:?} sub-block {s}: error {err} for a range of {range}");
            }
        }
        assert!(round_trip(GgmlType::Q4_K, &q4_k(&[0.0; QK_K]), QK_K).iter().all(|&v| v == 0.0));
        assert!(round_trip(GgmlType::Q6_K, &q6_k(&[0.0; QK_K]), QK_K).iter().all(|&v| v == 0.0));
    }
}
