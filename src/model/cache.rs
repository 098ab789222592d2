//! Keys and values of the positions seen so far, per layer, for incremental decoding.

use burn::tensor::{Int, Tensor};

/// One layer's cached keys and values, `[B, heads, past, head_dim]` each.
pub type LayerCache = Option<(Tensor<4>, Tensor<4>)>;

/// The keys and values attention should use: the new ones after any cached ones; the slot, when
/// there is one, then holds them all for the next step.
pub fn extend(slot: Option<&mut LayerCache>, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    let Some(slot) = slot else { return (k, v) };
    let (k, v) = match slot.take() {
        Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        None => (k, v),
    };
    *slot = Some((k.clone(), v.clone()));
    (k, v)
}

#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers] }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map(|(k, _)| k.dims()[2]).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Layer `i`'s slot, for a model of `n_layers` layers (a cache made for another depth is reset).
    pub fn layer(&mut self, i: usize, n_layers: usize) -> &mut LayerCache {
        if self.layers.len() != n_layers {
            self.layers = vec![None; n_layers];
        }
        &mut self.layers[i]
    }

    /// Keeps only the given batch rows (beam search reorders hypotheses between steps).
    pub fn select_rows(&mut self, rows: Tensor<1, Int>) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.clone().select(0, rows.clone());
            *v = v.clone().select(0, rows.clone());
        }
    }
}
