//! LoRA adapters (Hu et al. 2021) written as an explicit low-rank branch, `y = x W^T + s (x A^T) B^T`,
//! so the frozen `W` costs only its input gradient (burn's built-in LoRA composes a dense weight and
//! computes a dense weight gradient). Merged into `W` for export; savable as a PEFT adapter.

use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Linear layers to adapt, by their last name part (q_proj, v_proj, query_key_value, ...).
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    /// The paper's baseline: r 8, alpha 32, dropout 0.1, on the q and v projections.
    fn default() -> Self {
        Self { rank: 8, alpha: 32.0, dropout: 0.1, targets: default_targets("llama") }
    }
}

/// PEFT's default LoRA targets per `model_type`: the attention's query and value projections
/// (BLOOM fuses them into query_key_value; T5 names them q and v, in self- and cross-attention).
pub fn default_targets(model_type: &str) -> Vec<String> {
    let names: &[&str] = match model_type {
        "bloom" => &["query_key_value"],
        "t5" => &["q", "v"],
        _ => &["q_proj", "v_proj"],
    };
    names.iter().map(|n| n.to_string()).collect()
}

#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// `[rank, in]`
    pub a: Tensor<2>,
    /// `[out, rank]`
    pub b: Tensor<2>,
    pub scale: f64,
    pub dropout: f64,
}

impl LoraAdapter {
    /// A as PEFT initialises it (kaiming-uniform: U(-1/sqrt(in), 1/sqrt(in))), B zero, so the
    /// adapted layer starts equal to the base layer.
    pub fn new(d_in: usize, d_out: usize, config: &LoraConfig, device: &burn::tensor::Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        Self {
            a: Tensor::random([config.rank, d_in], Distribution::Uniform(-bound, bound), device),
            b: Tensor::zeros([d_out, config.rank], device),
            scale: config.alpha / config.rank as f64,
            dropout: config.dropout,
        }
    }

    /// The low-rank branch for `x [N, in]`. Dropout applies only while the adapter is being
    /// trained (its tensors track gradients), never at evaluation or generation.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = if self.dropout > 0.0 && self.a.is_require_grad() {
            let keep = 1.0 - self.dropout;
            let mask = x.random_like(Distribution::Bernoulli(keep));
            x * mask.div_scalar(keep)
        } else {
            x
        };
        x.matmul(self.a.clone().transpose()).matmul(self.b.clone().transpose()).mul_scalar(self.scale)
    }

    /// `scale * B A`, the update merging adds to `W`.
    pub fn delta(&self) -> Tensor<2> {
        self.b.clone().matmul(self.a.clone()).mul_scalar(self.scale)
    }
}
