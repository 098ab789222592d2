//! Attention as the decoder-only architectures (Llama, OPT, BLOOM) call it, and the mask they are
//! given. One entry, [`attend`], picks the computation:
//! - the flash-style kernel ([`crate::kernels::attention`]) wherever the mask is causal order and
//!   right padding (training batches, generation) and it pays: always on the CPU, where it skips
//!   the masked half of the scores and the `[B, H, S, T]` buffers; on wgpu when the full scores
//!   would not fit half a storage binding (long sequences on laptop GPUs, which bind 128 MiB);
//! - otherwise transformers' eager attention in tensor ops (K/V repeated per query head, an
//!   additive mask), which the GPU's tuned matmuls run faster at short lengths.

use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels::{self, AttentionSpec};

/// Which keys each query may see: causal order after `past` cached positions, and padding.
#[derive(Clone, Debug)]
pub struct Mask {
    pub batch: usize,
    pub seq: usize,
    pub past: usize,
    /// `[B, past + S]`, 1 = a real token; `None`: nothing is padded.
    pub padding: Option<Vec<u32>>,
    /// The padding as lengths when it is all on the right (see [`Mask::key_lengths`]), found once.
    key_lengths: Option<Vec<u32>>,
    /// The additive form, built once for every layer that needs it.
    additive: OnceLock<Tensor<4>>,
}

/// The causal mask of `batch` rows of `seq` new tokens after `past` cached ones; `padding` is
/// `[B, past + S]`, 1 = real token.
pub fn attention_mask(padding: Option<&[u32]>, batch: usize, seq: usize, past: usize) -> Mask {
    let key_lengths = match padding {
        None => Some(Vec::new()),
        Some(p) => right_padded_lengths(p, batch, past + seq),
    };
    Mask { batch, seq, past, padding: padding.map(<[u32]>::to_vec), key_lengths, additive: OnceLock::new() }
}

/// Each row's real tokens when every row of `padding` (`batch` rows of `total`) is real tokens
/// followed by padding only; `None` otherwise.
fn right_padded_lengths(padding: &[u32], batch: usize, total: usize) -> Option<Vec<u32>> {
    padding
        .chunks(total.max(1))
        .take(batch)
        .map(|row| {
            let len = row.iter().take_while(|&&m| m != 0).count();
            row[len..].iter().all(|&m| m == 0).then_some(len as u32)
        })
        .collect()
}

impl Mask {
    /// transformers' eager mask `[B, 1, S, past + S]`: 0 where query i may attend key j (causal,
    /// key not padding), `f32::MIN` elsewhere.
    pub fn additive(&self, device: &Device) -> Tensor<4> {
        self.additive.get_or_init(|| self.build_additive(device)).clone()
    }

    fn build_additive(&self, device: &Device) -> Tensor<4> {
        let (batch, seq, past) = (self.batch, self.seq, self.past);
        let total = past + seq;
        let mut m = vec![0f32; batch * seq * total];
        for b in 0..batch {
            for i in 0..seq {
                for j in 0..total {
                    let causal_ok = j <= past + i;
                    let key_real = self.padding.as_ref().is_none_or(|p| p[b * total + j] != 0);
                    if !(causal_ok && key_real) {
                        m[(b * seq + i) * total + j] = f32::MIN;
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(m, [batch, 1, seq, total]), device)
    }

    /// Real keys per row when every row's padding is on the right (its real tokens a prefix), as
    /// training batches are (empty: no padding); `None` for other padding (left-padded prompts).
    pub fn key_lengths(&self) -> Option<Vec<u32>> {
        self.key_lengths.clone()
    }
}

/// `softmax(scale q k^T + alibi, mask) v` for `q [B, H, S, D]`, `k`/`v [B, Hk, past + S, D]`
/// (`H` a multiple of `Hk`); ALiBi adds `slope[h] * j` for key `j` when `alibi` is not empty.
/// `mask` `None`: every query sees every key.
pub fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<&Mask>, scale: f64, alibi: &[f32]) -> Tensor<4> {
    let causal = |m: &Mask| m.key_lengths().map(|lengths| (Some(m.past as u32), lengths));
    let fused = match mask {
        None => Some((None, Vec::new())),
        Some(m) => causal(m),
    };
    match fused {
        Some((causal_past, key_lengths)) if fused_pays(&q, &k) => {
            let spec = AttentionSpec { scale: scale as f32, causal_past, key_lengths, alibi_slopes: alibi.to_vec() };
            kernels::attention(q, k, v, &spec)
        }
        _ => eager(q, k, v, mask, scale, alibi),
    }
}

/// Whether the flash-style kernel is the better path on this device for these shapes.
fn fused_pays(q: &Tensor<4>, k: &Tensor<4>) -> bool {
    let [b, h, s, d] = q.dims();
    let t = k.dims()[2];
    let device = q.device();
    if !kernels::runs_wgsl(&device) {
        return true;
    }
    let scores = (b * h * s * t * 4) as u64;
    d <= kernels::ATTENTION_MAX_HEAD_DIM && crate::device::binding_limit(&device).is_some_and(|limit| scores > limit / 2)
}

/// transformers' eager attention with ALiBi's `[1, H, 1, T]` bias and the additive mask.
fn eager(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<&Mask>, scale: f64, alibi: &[f32]) -> Tensor<4> {
    let t = k.dims()[2];
    let device = q.device();
    let alibi = (!alibi.is_empty()).then(|| {
        let values: Vec<f32> = alibi.iter().flat_map(|&m| (0..t).map(move |j| m * j as f32)).collect();
        Tensor::<4>::from_data(TensorData::new(values, [1, alibi.len(), 1, t]), &device)
    });
    let bias = match (alibi, mask.map(|m| m.additive(&device))) {
        (Some(a), Some(m)) => Some(a + m),
        (a, m) => a.or(m),
    };
    kernels::eager_attention(q, k, v, scale, bias)
}

#[cfg(test)]
mod tests {
    use super::attention_mask;

    /// Right padding (training batches) becomes lengths for the kernel; left padding or a gap
    /// between real tokens keeps the additive mask.
    #[test]
    fn only_right_padding_becomes_key_lengths() {
        assert_eq!(attention_mask(Some(&[1, 1, 1, 0, 1, 1, 0, 0]), 2, 4, 0).key_lengths(), Some(vec![3, 2]));
        assert_eq!(attention_mask(Some(&[1, 1, 1, 1, 1]), 1, 2, 3).key_lengths(), Some(vec![5]));
        assert_eq!(attention_mask(Some(&[0, 1, 1, 1, 1, 1, 1, 1]), 2, 4, 0).key_lengths(), None);
        assert_eq!(attention_mask(Some(&[1, 0, 1, 0]), 1, 4, 0).key_lengths(), None);
        assert_eq!(attention_mask(None, 2, 4, 3).key_lengths(), Some(Vec::new()));
    }
}
