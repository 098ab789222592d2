//! How deep GreenTrainer's backward pass can reach for a rho: the guidance shown where the user
//! chooses rho. The selection itself depends on importance, but no selection within rho can
//! train a tensor deeper than the deepest one that fits the budget alone, since training more on
//! the way only adds cost.

use super::Profile;
use crate::select::CostRule;

/// Measured (bench accuracy and issue #14, SmolLM2-135M on DialogSum): a selection confined to the
/// top fifth of the blocks learned nothing (held-out ROUGE-L 13.4 against full fine-tuning's 30.7),
/// while one reaching 19 of 30 blocks matched full fine-tuning. Below half the blocks a warning is
/// shown.
const SHALLOW_SHARE: f64 = 0.5;

/// The deepest block a rho lets GreenTrainer train, among `blocks` transformer blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reach {
    pub rho: f64,
    /// The deepest block (0 = the first) holding a tensor trainable within rho; `None` when only
    /// tensors outside the blocks (the final norm, the head) fit.
    pub deepest_block: Option<usize>,
    pub blocks: usize,
    /// The smallest rho that reaches half the blocks (None: no rho does, e.g. no blocks).
    pub rho_for_half: Option<f64>,
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
        // Reaching half the blocks means training a tensor in block `half` or deeper.
        let half = blocks - (blocks as f64 * SHALLOW_SHARE).ceil() as usize;
        let rho_for_half = (blocks > 0).then(|| cheapest[..=half].iter().copied().fold(f64::INFINITY, f64::min)).filter(|c| c.is_finite());
        Reach { rho, deepest_block, blocks, rho_for_half }
    }

    /// Blocks the backward pass can reach, from the deepest to the last.
    pub fn reachable_blocks(&self) -> usize {
        self.deepest_block.map_or(0, |b| self.blocks - b)
    }

    /// Less than half the blocks can be trained: measured to lose the task on SmolLM2.
    pub fn shallow(&self) -> bool {
        (self.reachable_blocks() as f64) < self.blocks as f64 * SHALLOW_SHARE
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
            text += " - too shallow: selections confined to the top blocks did not learn the task in our measurements";
            if let Some(r) = self.rho_for_half {
                text += &format!("; rho >= {:.2} can reach half the blocks", (r * 100.0).ceil() / 100.0);
            }
        }
        text
    }
}
