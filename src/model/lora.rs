//! LoRA adapters (Hu et al. 2021) written as an explicit low-rank branch, `y = x W^T + s (x A^T) B^T`,
//! so the frozen `W` costs only its input gradient (burn's built-in LoRA composes a dense weight and
//! computes a dense weight gradient). Merged into `W` for export; savable as a PEFT adapter.

use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use super::graph::{OpKind, OpSpec, TensorRole};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Linear layers to adapt, by their last name part (q_proj, v_proj, query_key_value, ...).
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// The paper's baseline on `targets`: r 8, alpha 32, dropout 0.1.
    pub fn paper(targets: Vec<String>) -> Self {
        Self { rank: 8, alpha: 32.0, dropout: 0.1, targets }
    }
}

/// PEFT's default LoRA targets, read off a model's op graph: the attention's query and value
/// projections by the last part of their names (`q_proj`, `v_proj`; BLOOM's fused
/// `query_key_value`; T5's `q` and `v`, in self- and cross-attention alike).
pub fn default_targets(ops: &[OpSpec]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for op in ops {
        let query_or_value = matches!(op.role, TensorRole::Q | TensorRole::V | TensorRole::Qkv);
        if !query_or_value || !matches!(op.kind, OpKind::Linear { .. }) {
            continue;
        }
        let module = op.name.trim_end_matches(".weight").rsplit('.').next().unwrap_or_default();
        if !names.iter().any(|n| n == module) {
            names.push(module.to_string());
        }
    }
    names
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::default_targets;
    use crate::model::{bloom, llama, opt, t5};

    fn config(fixture: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture).join("config.json");
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn default_targets_are_pefts_query_and_value_projections() {
        let llama = llama::llama_ops(&crate::model::LlamaConfig::from_json_str(&config("tiny-llama"), "tiny-llama").unwrap());
        let opt = opt::opt_ops(&opt::OptConfig::from_json_str(&config("tiny-opt"), "tiny-opt").unwrap());
        let bloom = bloom::bloom_ops(&bloom::BloomConfig::from_json_str(&config("tiny-bloom"), "tiny-bloom").unwrap());
        let t5 = t5::t5_ops(&t5::T5Config::from_json_str(&config("tiny-t5"), "tiny-t5").unwrap());
        // PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING for these model types.
        assert_eq!(default_targets(&llama), ["q_proj", "v_proj"]);
        assert_eq!(default_targets(&opt), ["q_proj", "v_proj"]);
        assert_eq!(default_targets(&bloom), ["query_key_value"]);
        assert_eq!(default_targets(&t5), ["q", "v"]);
    }
}
