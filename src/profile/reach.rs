//! How deep GreenTrainer's backward pass can reach for a rho: the guidance shown where the user
//! chooses rho. The selection itself depends on importance, but no selection within rho can
//! train a tensor deeper than the deepest one that fits the budget alone, since training more on
//! the way only adds cost.

use super::Profile;
use crate::select::CostRule;

/// Measured (`bench accuracy`, SmolLM2-135M on DialogSum, 24 steps): only a rho whose backward
/// pass can reach every block kept full fine-tuning's held-out ROUGE-L (rho 0.7: 35.3 against
/// 34.0). rho 0.6, able to reach 22 of 30 blocks, reached 24.5, and rho 0.5 (14 blocks) 20.9, with
/// the base model at 13.4. So a warning is shown whenever some block is out of reach.
/// The deepest block a rho lets GreenTrainer train, among `blocks` transformer blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reach {
    pub rho: f64,
    /// The deepest block (0 = the first) holding a tensor trainable within rho; `None` when only
    /// tensors outside the blocks (the final norm, the head) fit.
    pub deepest_block: Option<usize>,
    pub blocks: usize,
    /// The smallest rho that reaches every block (None: no rho does, e.g. no blocks).
    pub rho_for_all: Option<f64>,
}

impl Reach {
    pub fn of(p: &Profile, rho: f64) -> Reach {
        let blocks = p.nodes.iter().filter_map(|n| n.layer).max().map_or(0, |l| l + 1);
        // Per block, the cheapest single tensor in it (a fraction of full fine-tuning).
        let mut cheapest = vec![f64::INFINITY; blocks];
        for (i, node) in p.nodes.iter().enumerate() {
            if let (true, Some(layer)) = (node.selectable, node.layer)
                && let Ok(cost) = p.selection_cost(&[i], CostRule::Exact)
            {
                cheapest[layer] = cheapest[layer].min(cost / p.t_full());
            }
        }
        let deepest_block = (0..blocks).find(|&b| cheapest[b] <= rho);
        // Reaching every block means training a tensor in the first.
        let rho_for_all = cheapest.first().copied().filter(|c| c.is_finite());
        Reach { rho, deepest_block, blocks, rho_for_all }
    }

    /// Blocks the backward pass can reach, from the deepest to the last.
    pub fn reachable_blocks(&self) -> usize {
        self.deepest_block.map_or(0, |b| self.blocks - b)
    }

    /// Some block cannot be trained: measured to lose part of the task on SmolLM2.
    pub fn shallow(&self) -> bool {
        self.reachable_blocks() < self.blocks
    }

    /// One line for the user choosing rho.
    pub fn describe(&self) -> String {
        let mut text = match self.deepest_block {
            Some(b) => format!(
                "rho {:.2}: the backward pass can reach block {} of {} at the deepest (blocks {}-{} trainable)",
                self.rho,
                b + 1,
                self.blocks,
                b + 1,
                self.blocks
            ),
            None => {
                format!("rho {:.2}: the backward pass reaches none of the {} blocks (only the final norm and head)", self.rho, self.blocks)
            }
        };
        if self.shallow() {
            text += " - too shallow: in our measurements only a rho that can reach every block kept full fine-tuning's accuracy";
            if let Some(r) = self.rho_for_all {
                text += &format!("; rho >= {:.2} can", (r * 100.0).ceil() / 100.0);
            }
        }
        text
    }
}
