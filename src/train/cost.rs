//! FLOPs of one training step for a set of trainable tensors, from the profile: forward, activation
//! gradients down to the deepest trained tensor, and the weight gradients of the trained tensors.
//! LoRA adapters are not profile nodes: an adapted weight needs the backward pass to reach it but
//! no weight gradient of its own, and each adapter adds its small low-rank products.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Model, ParamRef, Parameters};
use crate::profile::{Profile, UPDATE_MACS_PER_PARAM};
use crate::select::CostRule;

/// The share of full fine-tuning's modelled step time one step takes: its MACs plus the update
/// work of the parameters it trains ([`UPDATE_MACS_PER_PARAM`] each; for LoRA the adapters'),
/// against every MAC and every parameter's update. GreenTrainer's selection holds it within rho.
pub fn step_time_share(p: &Profile, model: &Model, trainable: &BTreeSet<String>) -> f64 {
    let t = Trained::of(p, model, trainable);
    // Profile nodes count row blocks and a tied weight once, as the selection does.
    let params = t.nodes.iter().map(|&i| p.nodes[i].param_numel).sum::<usize>() + t.adapter_params;
    (t.macs(p) + UPDATE_MACS_PER_PARAM * params as f64) / (p.t_full() + p.full_update())
}

/// Multiply-accumulates of one step (exact chain rule).
pub fn step_macs(p: &Profile, model: &Model, trainable: &BTreeSet<String>) -> f64 {
    Trained::of(p, model, trainable).macs(p)
}

/// What a step trains, located in the profile: whole nodes (tensors or row blocks) and adapters.
struct Trained {
    nodes: Vec<usize>,
    adapters: Vec<Adapter>,
    /// Parameters of the adapters (both factors).
    adapter_params: usize,
}

impl Trained {
    fn of(p: &Profile, model: &Model, trainable: &BTreeSet<String>) -> Self {
        let mut adapted_weights = BTreeMap::new();
        let mut adapter_params = 0;
        model.visit(&mut |name, t| {
            if !trainable.contains(name) || !(name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")) {
                return;
            }
            adapter_params += t.numel();
            if let (Some(base), ParamRef::Matrix(a)) = (name.strip_suffix(".lora_A.weight"), t) {
                adapted_weights.insert(format!("{base}.weight"), a.dims());
            }
        });
        let (mut nodes, mut adapters) = (Vec::new(), Vec::new());
        for (i, n) in p.nodes.iter().enumerate().filter(|(_, n)| n.selectable) {
            if trainable.contains(&n.name) {
                nodes.push(i);
            }
            if let Some(&[rank, d_in]) = adapted_weights.get(&n.name) {
                adapters.push(Adapter { node: i, rank, d_in });
            }
        }
        Self { nodes, adapters, adapter_params }
    }

    fn macs(&self, p: &Profile) -> f64 {
        macs_with_adapters(p, &self.nodes, &self.adapters)
    }
}

/// A LoRA adapter of `rank` on the linear weight at profile node `node` (`d_in` inputs).
pub struct Adapter {
    pub node: usize,
    pub rank: usize,
    pub d_in: usize,
}

/// MACs of a step that trains the nodes `trained` whole and `adapted`'s weights through their
/// adapters: the backward pass down to the deepest of either, the weight gradients of the trained
/// nodes alone, and per adapter its low-rank products (forward `x A^T` then `B`, activation and
/// weight gradients of both factors) on the tokens of the stream its layer runs on.
pub fn macs_with_adapters(p: &Profile, trained: &[usize], adapted: &[Adapter]) -> f64 {
    let mut nodes: Vec<usize> = trained.iter().copied().chain(adapted.iter().map(|a| a.node)).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let base = p.selection_cost(&nodes, CostRule::Exact).unwrap_or_else(|_| p.t_full());
    let frozen_under_adapter: f64 = adapted.iter().filter(|a| !trained.contains(&a.node)).map(|a| p.nodes[a.node].t_dw).sum();
    let products: f64 = adapted
        .iter()
        .filter_map(|a| {
            let node = &p.nodes[a.node];
            let tokens = p.shape.tokens_of(node.stream)? as f64;
            let d_out = node.t_fp / (tokens * a.d_in as f64);
            Some(3.0 * tokens * a.rank as f64 * (a.d_in as f64 + d_out))
        })
        .sum();
    base - frozen_under_adapter + products
}
