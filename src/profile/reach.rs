//! How deep GreenTrainer's backward pass can reach for a rho: the guidance shown where the user
//! chooses rho. The selection itself depends on importance, but no selection within rho can
//! train a tensor deeper than the deepest one that fits the budget alone, since training more on
//! the way only adds cost.

use super::Profile;
use crate::select::CostRule;

/// Measured (`bench accuracy`, SmolLM2-135M on DialogSum, 24 steps): rho 0.7, whose backward pass
/// could reach all 30 blocks, kept full fine-tuning's held-out ROUGE-L (35.3 against 34.0); rho 0.65,
/// able to reach 27 (90%), reached 28.5; rho 0.6 (22 blocks) 24.5 and rho 0.5 (14 blocks) 20.9, with
/// the base model at 13.4. A warning is shown below 95% of the blocks: above the deepest-reaching
/// rho that lost accuracy, and lenient enough that the default rho 0.7 at max_len 512 (29 of 30
/// blocks) passes.
const SHALLOW_SHARE: f64 = 0.95;

/// The deepest block a rho lets GreenTrainer train, among `blocks` transformer blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reach {
    pub rho: f64,
    /// The deepest block (0 = the first) holding a tensor trainable within rho; `None` when only
    /// tensors outside the blocks (the final norm, the head) fit.
    pub deepest_block: Option<usize>,
    pub blocks: usize,
    /// The smallest rho that is not shallow (None: no rho is, e.g. no blocks).
    pub rho_for_deep: Option<f64>,
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
        // Reaching `needed` blocks means training a tensor in block `blocks - needed` or deeper.
        let deep_from = blocks.saturating_sub(Self::needed(blocks));
        let rho_for_deep =
            (blocks > 0).then(|| cheapest[..=deep_from].iter().copied().fold(f64::INFINITY, f64::min)).filter(|c| c.is_finite());
        Reach { rho, deepest_block, blocks, rho_for_deep }
    }

    /// Blocks a selection must be able to reach not to be shallow.
    fn needed(blocks: usize) -> usize {
        (blocks as f64 * SHALLOW_SHARE).ceil() as usize
    }

    /// Blocks the backward pass can reach, from the deepest to the last.
    pub fn reachable_blocks(&self) -> usize {
        self.deepest_block.map_or(0, |b| self.blocks - b)
    }

    /// Less than 95% of the blocks can be trained: measured to lose part of the task on SmolLM2.
    pub fn shallow(&self) -> bool {
        self.reachable_blocks() < Self::needed(self.blocks)
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
            text += " - too shallow: in our measurements only a rho that can reach (nearly) every block kept full fine-tuning's accuracy";
            if let Some(r) = self.rho_for_deep {
                text += &format!("; rho >= {:.2} reaches {} of {}", (r * 100.0).ceil() / 100.0, Self::needed(self.blocks), self.blocks);
            }
        }
        text
    }
}
