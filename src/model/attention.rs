//! Attention as every architecture calls it (Llama, OPT, BLOOM, and T5's encoder, decoder and
//! cross-attention), and the mask it is given. One entry, [`attend`], picks the computation:
//! - the flash-style kernel ([`crate::kernels::attention`]) wherever the mask is causal order (or
//!   none) and right padding (training batches, generation) and it pays: always on the CPU, where
//!   it skips the masked half of the scores and the `[B, H, S, T]` buffers; on wgpu when the full
//!   scores would not fit half a storage binding (long sequences on laptop GPUs, which bind 128 MiB);
//! - otherwise transformers' eager attention in tensor ops (K/V repeated per query head, an
//!   additive mask), which the GPU's tuned matmuls run faster at short lengths.

use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels::{self, AttentionSpec};

/// Which keys each query may see: in causal order, keys up to its own position after `past` cached
/// ones; and real keys, not padding.
#[derive(Clone, Debug)]
pub struct Mask {
    pub batch: usize,
    pub seq: usize,
    pub past: usize,
    /// Keys: `past + seq` in causal order, any number otherwise.
    keys: usize,
    /// Causal order; otherwise every query sees every real key.
    causal: bool,
    /// `[B, keys]`, 1 = a real token; `None`: nothing is padded.
    pub padding: Option<Vec<u32>>,
    /// The padding as lengths when it is all on the right (see [`Mask::key_lengths`]), found once.
    key_lengths: Option<Vec<u32>>,
    /// The additive form, built once for every layer that needs it.
    additive: OnceLock<Tensor<4>>,
}

/// The causal mask of `batch` rows of `seq` new tokens after `past` cached ones; `padding` is
/// `[B, past + S]`, 1 = real token.
pub fn attention_mask(padding: Option<&[u32]>, batch: usize, seq: usize, past: usize) -> Mask {
    Mask::new(padding, batch, seq, past, past + seq, true)
}

/// The mask of `batch` rows whose queries, however many, see every real one of `keys` (`padding`
/// `[B, keys]`, 1 = real token): an encoder's self-attention, cross-attention.
pub fn padding_mask(padding: &[u32], batch: usize, keys: usize) -> Mask {
    // One query row stands for all: its additive form broadcasts over the queries.
    Mask::new(Some(padding), batch, 1, 0, keys, false)
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
    fn new(padding: Option<&[u32]>, batch: usize, seq: usize, past: usize, keys: usize, causal: bool) -> Self {
        let key_lengths = match padding {
            None => Some(Vec::new()),
            Some(p) => right_padded_lengths(p, batch, keys),
        };
        Mask { batch, seq, past, keys, causal, padding: padding.map(<[u32]>::to_vec), key_lengths, additive: OnceLock::new() }
    }

    /// transformers' eager mask `[B, 1, S, keys]`: 0 where query i may attend key j (in causal
    /// order if the mask has it, key not padding), `f32::MIN` elsewhere.
    pub fn additive(&self, device: &Device) -> Tensor<4> {
        self.additive.get_or_init(|| self.build_additive(device)).clone()
    }

    fn build_additive(&self, device: &Device) -> Tensor<4> {
        let (batch, seq, past, total) = (self.batch, self.seq, self.past, self.keys);
        let mut m = vec![0f32; batch * seq * total];
        for b in 0..batch {
            for i in 0..seq {
                for j in 0..total {
                    let causal_ok = !self.causal || j <= past + i;
                    let key_real = self.padding.as_ref().is_none_or(|p| p[b * total + j] != 0);
                    if !(causal_ok && key_real) {
                        m[(b * seq + i) * total + j] = f32::MIN;
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(m, [batch, 1, seq, total]), device)
    }

    /// The mask of the given batch rows, in their order (beam search's hypotheses).
    pub fn select_rows(&self, rows: &[usize]) -> Mask {
        let padding =
            self.padding.as_ref().map(|p| rows.iter().flat_map(|&r| p[r * self.keys..][..self.keys].iter().copied()).collect::<Vec<_>>());
        Mask::new(padding.as_deref(), rows.len(), self.seq, self.past, self.keys, self.causal)
    }

    /// Real keys per row when every row's padding is on the right (its real tokens a prefix), as
    /// training batches are (empty: no padding); `None` for other padding (left-padded prompts).
    pub fn key_lengths(&self) -> Option<Vec<u32>> {
        self.key_lengths.clone()
    }
}

/// What is added to the scores besides the mask.
#[derive(Clone, Copy)]
pub enum Bias<'a> {
    None,
    /// BLOOM's ALiBi: `slope[h] * j` for key `j` of query head `h`.
    Alibi(&'a [f32]),
    /// A dense `[1 or B, H, S, T]` bias, trainable (T5's relative position bias).
    Dense(&'a Tensor<4>),
}

/// `softmax(scale q k^T + bias, mask) v` for `q [B, H, S, D]`, `k`/`v [B, Hk, T, D]` (`T` the mask's keys)
/// (`H` a multiple of `Hk`); `mask` `None`: every query sees every key.
pub fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<&Mask>, scale: f64, bias: Bias<'_>) -> Tensor<4> {
    let lengths = |m: &Mask| m.key_lengths().map(|lengths| (m.causal.then_some(m.past as u32), lengths));
    let fused = match mask {
        None => Some((None, Vec::new())),
        Some(m) => lengths(m),
    };
    match fused {
        Some((causal_past, key_lengths)) if fused_pays(&q, &k) => {
            let (alibi_slopes, dense) = match bias {
                Bias::None => (Vec::new(), None),
                Bias::Alibi(slopes) => (slopes.to_vec(), None),
                Bias::Dense(dense) => (Vec::new(), Some(dense.clone())),
            };
            let spec = AttentionSpec { scale: scale as f32, causal_past, key_lengths, alibi_slopes, dense_bias: dense.is_some() };
            kernels::attention(q, k, v, dense, &spec)
        }
        _ => eager(q, k, v, mask, scale, bias),
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

/// transformers' eager attention with the bias (ALiBi's as `[1, H, 1, T]`) and the additive mask.
fn eager(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<&Mask>, scale: f64, bias: Bias<'_>) -> Tensor<4> {
    let t = k.dims()[2];
    let device = q.device();
    let bias = match bias {
        Bias::None => None,
        Bias::Alibi(slopes) => {
            let values: Vec<f32> = slopes.iter().flat_map(|&m| (0..t).map(move |j| m * j as f32)).collect();
            Some(Tensor::<4>::from_data(TensorData::new(values, [1, slopes.len(), 1, t]), &device))
        }
        Bias::Dense(dense) => Some(dense.clone()),
    };
    let bias = match (bias, mask.map(|m| m.additive(&device))) {
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
