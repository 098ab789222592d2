//! FLOPs of one training step for a set of trainable tensors, from the profile: forward, activation
//! gradients down to the deepest trained tensor, and the weight gradients of the trained tensors.
//! LoRA adapters are not profile nodes: an adapted weight needs the backward pass to reach it but
//! no weight gradient of its own, and each adapter adds its small low-rank products.

use std::collections::BTreeSet;

use crate::model::{Model, ParamRef, Parameters};
use crate::profile::{Profile, UPDATE_MACS_PER_PARAM};
use crate::select::CostRule;

/// The share of full fine-tuning's modelled step time one step takes: its MACs plus the update
/// work of the parameters it trains ([`UPDATE_MACS_PER_PARAM`] each; for LoRA the adapters'),
/// against every MAC and every parameter's update. GreenTrainer's selection holds it within rho.
pub fn step_time_share(p: &Profile, model: &Model, trainable: &BTreeSet<String>) -> f64 {
    let mut trained = 0usize;
    model.visit(&mut |name, t| {
        if trainable.contains(name) {
            trained += t.numel();
        }
    });
    (step_macs(p, model, trainable) + UPDATE_MACS_PER_PARAM * trained as f64) / (p.t_full() + p.full_update())
}

/// Multiply-accumulates of one step (exact chain rule).
pub fn step_macs(p: &Profile, model: &Model, trainable: &BTreeSet<String>) -> f64 {
    let mut adapters: Vec<(String, usize, usize)> = Vec::new();
    model.visit(&mut |name, t| {
        if let (Some(base), ParamRef::Matrix(a)) = (name.strip_suffix(".lora_A.weight"), t)
            && trainable.contains(name)
        {
            let [rank, d_in] = a.dims();
            adapters.push((format!("{base}.weight"), rank, d_in));
        }
    });
    let mut selected = Vec::new();
    let mut dw_not_trained = 0.0;
    for (i, n) in p.nodes.iter().enumerate() {
        if !n.selectable {
            continue;
        }
        if trainable.contains(&n.name) {
            selected.push(i);
        } else if adapters.iter().any(|a| a.0 == n.name) {
            selected.push(i);
            dw_not_trained += n.t_dw;
        }
    }
    let base = p.selection_cost(&selected, CostRule::Exact).unwrap_or_else(|_| p.t_full());
    // Per adapter: forward (x A^T, then B), activation and weight gradients of both factors, on the
    // tokens of the stream its layer runs on.
    let adapter_macs: f64 = adapters
        .iter()
        .filter_map(|(name, rank, d_in)| {
            let node = p.nodes.iter().find(|n| &n.name == name)?;
            let tokens = p.shape.tokens_of(node.stream)? as f64;
            let d_out = node.t_fp / (tokens * *d_in as f64);
            Some(3.0 * tokens * *rank as f64 * (*d_in as f64 + d_out))
        })
        .sum();
    base - dw_not_trained + adapter_macs
}
