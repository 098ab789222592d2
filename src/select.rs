//! Exact GreenTrainer tensor selection (spec sections 3, 4 and 6).
//!
//! This module knows only numbers: per-candidate costs and importances, ordered from the output
//! (index 0 = nearest the loss). Chain nodes (weightless ops such as the attention core) take part
//! as non-selectable candidates because their `t_dy` is paid whenever the backward pass crosses them.
//!
//! Cost of a selection `m` with deepest member `j*` (spec section 3):
//! `bp(m) = A(j*) + sum_{j in m} t_dw_j`, where `A(j)` sums `t_dy` over every candidate strictly
//! nearer the output than `j`. The exact chain rule needs no input-gradient of the deepest selected
//! op; [`CostRule::Reference`] also charges it, as the reference implementation did.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default capacity resolution: costs are rounded up to units of `backward_budget / 8192`.
pub const DEFAULT_CAPACITY: usize = 8192;

/// Largest accepted capacity resolution; bounds the DP's memory (`N * C` bits plus `C` floats).
pub const MAX_CAPACITY: usize = 1 << 20;

/// Infeasibility tolerance relative to full fine-tuning cost, so that passing exactly the reported
/// smallest feasible rho is accepted despite floating-point rounding.
const RHO_TOLERANCE: f64 = 1e-12;

/// How the backward pass of a selection is charged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CostRule {
    /// Exact chain rule: the deepest selected op's input-gradient is not computed.
    #[default]
    Exact,
    /// The reference implementation's rule: also charges the deepest selected tensor's own `t_dy`.
    Reference,
}

impl CostRule {
    pub const ALL: [Self; 2] = [Self::Exact, Self::Reference];
}

/// One node of the backward chain, ordered from the output.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Cost of propagating the activation gradient through this node.
    pub t_dy: f64,
    /// Cost of this node's weight gradient (0 for chain nodes).
    pub t_dw: f64,
    /// Estimated loss reduction from training this tensor; ignored for chain nodes.
    pub importance: f64,
    /// False for weightless chain nodes.
    pub selectable: bool,
    /// Memory-bound work of updating this tensor each step, which its MACs leave out (its gradient
    /// written out and read back, the optimizer's pass), in MAC-equivalents; 0 for chain nodes.
    #[serde(default)]
    pub t_update: f64,
}

/// Budget and resolution of one selection.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectConfig {
    /// Fraction of full fine-tuning's per-step cost (forward included) allowed, in (0, 1].
    pub rho: f64,
    /// Capacity resolution C of the knapsack grid.
    pub capacity: usize,
    pub rule: CostRule,
}

impl SelectConfig {
    /// `rho` with the default resolution and the exact cost rule.
    pub fn new(rho: f64) -> Self {
        Self { rho, capacity: DEFAULT_CAPACITY, rule: CostRule::Exact }
    }
}

/// The discretisation of the backward budget: `capacity` units of size `unit`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostGrid {
    pub unit: f64,
    pub capacity: usize,
}

impl CostGrid {
    pub fn new(backward_budget: f64, capacity: usize) -> Self {
        Self { unit: backward_budget / capacity as f64, capacity }
    }

    /// Units covering `cost`, rounded up so that any set of costs whose units fit in `capacity`
    /// also fits in the unrounded budget. Saturates at `capacity + 1` (never fits).
    pub fn units(&self, cost: f64) -> usize {
        let never = self.capacity + 1;
        if cost <= 0.0 {
            return 0;
        }
        if self.unit <= 0.0 {
            return never;
        }
        let ratio = (cost / self.unit).ceil();
        if ratio >= never as f64 {
            return never;
        }
        let units = ratio as usize;
        // The division may round down across an integer; never let a unit count undercover its cost.
        if (units as f64) * self.unit < cost { (units + 1).min(never) } else { units }
    }
}

/// The chosen tensors and what they cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Indices into the candidate order (from the output), ascending.
    pub selected: Vec<usize>,
    /// The deepest selected candidate: the backward pass stops there. `None` when nothing is trained.
    pub deepest: Option<usize>,
    /// Unrounded `bp(m)` under the configured rule.
    pub backward_cost: f64,
    /// `t_fp + backward_cost`.
    pub total_cost: f64,
    /// `total_cost / t_full`, from unrounded costs.
    pub realised_rho: f64,
    /// Summed `t_update` of the selected tensors.
    pub update_cost: f64,
    /// `(total_cost + update_cost) / (t_full + every t_update)`: the share of full fine-tuning's
    /// modelled step time, which is held within rho as well.
    pub time_rho: f64,
    /// Summed importance of the selected tensors.
    pub importance: f64,
    /// `rho * t_full`: the allowed per-step cost.
    pub budget: f64,
    /// The grid the backward budget was discretised on.
    pub grid: CostGrid,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.selected.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Error)]
pub enum SelectError {
    #[error(
        "rho = {rho} is infeasible: the forward pass alone costs {min_rho} of full fine-tuning; \
         the smallest feasible rho is {}",
        round_up_4(*.min_rho)
    )]
    InfeasibleRho { rho: f64, min_rho: f64 },
    #[error("rho must be in (0, 1], got {rho}")]
    RhoOutOfRange { rho: f64 },
    #[error("capacity resolution must be at least 1")]
    ZeroCapacity,
    #[error("capacity resolution {capacity} exceeds the maximum {max}")]
    CapacityTooLarge { capacity: usize, max: usize },
    #[error("forward cost must be finite and non-negative, got {value}")]
    InvalidForwardCost { value: f64 },
    #[error("{field} of candidate {index} must be finite and non-negative, got {value}")]
    InvalidCost { index: usize, field: &'static str, value: f64 },
    #[error("importance of candidate {index} must be finite, got {value}")]
    InvalidImportance { index: usize, value: f64 },
    #[error("full fine-tuning cost must be finite and positive, got {value}")]
    InvalidTotalCost { value: f64 },
    #[error("candidate index {index} is out of range for {len} candidates")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("candidate {index} is a chain node and cannot be selected")]
    NotSelectable { index: usize },
}

/// Rounds up to 4 decimals so that the printed smallest rho is itself feasible.
fn round_up_4(x: f64) -> f64 {
    (x * 1e4).ceil() / 1e4
}

/// `t_fp + sum_j (t_dy_j + t_dw_j)`: the per-step cost of full fine-tuning.
pub fn full_cost(candidates: &[Candidate], t_fp: f64) -> f64 {
    t_fp + candidates.iter().map(|c| c.t_dy + c.t_dw).sum::<f64>()
}

/// Total per-step cost `t_fp + bp(m)` of training exactly the candidates in `selected`
/// (a set: order and duplicates do not matter).
pub fn selection_cost(candidates: &[Candidate], t_fp: f64, selected: &[usize], rule: CostRule) -> Result<f64, SelectError> {
    validate_costs(candidates, t_fp)?;
    let mut set = selected.to_vec();
    set.sort_unstable();
    set.dedup();
    for &index in &set {
        match candidates.get(index) {
            None => {
                return Err(SelectError::IndexOutOfRange { index, len: candidates.len() });
            }
            Some(c) if !c.selectable => return Err(SelectError::NotSelectable { index }),
            Some(_) => {}
        }
    }
    Ok(t_fp + backward_cost(candidates, &set, rule))
}

/// Unrounded `bp(m)` for a validated, sorted, duplicate-free set.
fn backward_cost(candidates: &[Candidate], sorted_set: &[usize], rule: CostRule) -> f64 {
    let Some(&deepest) = sorted_set.last() else {
        return 0.0;
    };
    let chain: f64 = candidates[..deepest].iter().map(|c| c.t_dy).sum();
    let weights: f64 = sorted_set.iter().map(|&j| candidates[j].t_dw).sum();
    chain + own_dy(&candidates[deepest], rule) + weights
}

fn own_dy(candidate: &Candidate, rule: CostRule) -> f64 {
    match rule {
        CostRule::Exact => 0.0,
        CostRule::Reference => candidate.t_dy,
    }
}

/// Maximises summed importance subject to `t_fp + bp(m) <= rho * t_full`, and to the same bound
/// on modelled time (MACs plus each trained tensor's `t_update`, against full fine-tuning's).
///
/// Exact on the grid: for every deepest candidate `j*` (swept from the output downward) the rest is a
/// 0/1 knapsack over the shallower candidates with capacity `C - units(A(j*) + t_dw(j*))`; one table
/// grown over the prefix answers all of them in O(N * C). Costs are rounded up, so the returned set
/// never exceeds the budget. Candidates with importance <= 0 are never selected: dropping one never
/// lowers the objective and never raises the cost (a shallower deepest needs less chain), so an
/// optimum without them always exists. An empty selection is returned when nothing fits.
///
/// The time bound binds where a selection trains many parameters over few differentiated tokens
/// (a frozen prompt prefix): there the update work rivals the gradient's MACs. Then the knapsack
/// is solved on MACs plus update, and, should that overrun the MACs budget, on a shrinking share
/// of the time budget until both hold.
pub fn select(candidates: &[Candidate], t_fp: f64, config: &SelectConfig) -> Result<Selection, SelectError> {
    select_within(candidates, t_fp, full_cost(candidates, t_fp), config)
}

/// [`select`] against a given full fine-tuning cost `t_full`: where the candidates' costs are
/// those of a cheaper backward pass than full fine-tuning's (a frozen prompt prefix), rho stays a
/// fraction of the real thing.
pub fn select_within(candidates: &[Candidate], t_fp: f64, t_full: f64, config: &SelectConfig) -> Result<Selection, SelectError> {
    validate_config(config)?;
    validate_costs(candidates, t_fp)?;
    if let Some((index, c)) = candidates.iter().enumerate().find(|(_, c)| !c.importance.is_finite()) {
        return Err(SelectError::InvalidImportance { index, value: c.importance });
    }
    if !(t_full.is_finite() && t_full > 0.0) {
        return Err(SelectError::InvalidTotalCost { value: t_full });
    }
    let budget = config.rho * t_full;
    let backward_budget = budget - t_fp;
    if backward_budget < -RHO_TOLERANCE * t_full {
        return Err(SelectError::InfeasibleRho { rho: config.rho, min_rho: t_fp / t_full });
    }
    let update_full: f64 = candidates.iter().map(|c| c.t_update).sum();
    let time_budget = config.rho * (t_full + update_full);
    let tolerance = RHO_TOLERANCE * (t_full + update_full);
    let macs = |set: &[usize]| t_fp + backward_cost(candidates, set, config.rule);
    let time = |set: &[usize]| macs(set) + set.iter().map(|&j| candidates[j].t_update).sum::<f64>();
    let grid = CostGrid::new(backward_budget.max(0.0), config.capacity);

    let mut selected = sweep(candidates, &grid, config.rule);
    if time(&selected) > time_budget + tolerance {
        let with_update: Vec<Candidate> = candidates.iter().map(|c| Candidate { t_dw: c.t_dw + c.t_update, t_update: 0.0, ..*c }).collect();
        let within_macs = |share: f64| {
            let set = sweep(&with_update, &CostGrid::new(share * (time_budget - t_fp).max(0.0), config.capacity), config.rule);
            (macs(&set) <= budget + tolerance).then_some(set)
        };
        selected = match within_macs(1.0) {
            Some(set) => set,
            None => shrink_until(within_macs, &|set: &[usize]| set.iter().map(|&j| candidates[j].importance).sum()),
        };
    }
    selected.sort_unstable();
    let backward = backward_cost(candidates, &selected, config.rule);
    let total = t_fp + backward;
    let update_cost = selected.iter().map(|&j| candidates[j].t_update).sum::<f64>();
    Ok(Selection {
        deepest: selected.last().copied(),
        importance: selected.iter().map(|&j| candidates[j].importance).sum(),
        selected,
        backward_cost: backward,
        total_cost: total,
        realised_rho: total / t_full,
        update_cost,
        time_rho: (total + update_cost) / (t_full + update_full),
        budget,
        grid,
    })
}

/// The most important answer of `within` (a selection for a share of the time budget, `None` where
/// it overruns the MACs budget) found by bisecting the share: the answers need not shrink in step
/// with it, so each feasible one is kept. Share 0 selects nothing, which always fits.
fn shrink_until(within: impl Fn(f64) -> Option<Vec<usize>>, importance: &dyn Fn(&[usize]) -> f64) -> Vec<usize> {
    const HALVINGS: usize = 24;
    let (mut fits, mut overruns) = (0.0, 1.0);
    let mut best: Vec<usize> = Vec::new();
    for _ in 0..HALVINGS {
        let share = (fits + overruns) / 2.0;
        match within(share) {
            Some(set) => {
                if importance(&set) > importance(&best) {
                    best = set;
                }
                fits = share;
            }
            None => overruns = share,
        }
    }
    best
}

/// The best answer seen so far while sweeping the deepest candidate.
struct Best {
    value: f64,
    deepest: usize,
    /// Grid units left for the shallower tensors.
    room: usize,
    /// Knapsack items added before `deepest` was evaluated.
    items_before: usize,
}

fn sweep(candidates: &[Candidate], grid: &CostGrid, rule: CostRule) -> Vec<usize> {
    let mut table = Knapsack::new(grid.capacity);
    let mut best: Option<Best> = None;
    // A(j): activation-gradient cost of every node strictly nearer the output than j.
    let mut chain_dy = 0.0;
    for (j, c) in candidates.iter().enumerate() {
        let chain_units = grid.units(chain_dy);
        if chain_units > grid.capacity {
            break; // A only grows deeper down: nothing below can be reached either.
        }
        if c.selectable && c.importance > 0.0 {
            let fixed = grid.units(chain_dy + own_dy(c, rule) + c.t_dw);
            if fixed <= grid.capacity {
                let room = grid.capacity - fixed;
                let value = c.importance + table.best_within(room);
                if best.as_ref().is_none_or(|b| value > b.value) {
                    best = Some(Best { value, deepest: j, room, items_before: table.len() });
                }
            }
            // Deeper answers pay at least A(j+1), so the table never needs more room than this.
            let reach = grid.capacity.saturating_sub(grid.units(chain_dy + c.t_dy));
            table.shrink_to(reach);
            table.add(j, grid.units(c.t_dw), c.importance);
        }
        chain_dy += c.t_dy;
    }
    match best {
        None => Vec::new(),
        Some(b) => {
            let mut chosen = table.reconstruct(b.items_before, b.room);
            chosen.push(b.deepest);
            chosen
        }
    }
}

/// A 0/1 knapsack table over a growing prefix of items, with one decision bit per (item, capacity)
/// so the chosen set can be rebuilt for any earlier prefix.
struct Knapsack {
    /// `values[c]`: best importance with at most `c` units, for capacities `0..=reach`.
    values: Vec<f64>,
    /// Highest capacity still maintained; only shrinks.
    reach: usize,
    items: Vec<Item>,
    /// Decision words of all items, back to back.
    decisions: Vec<u64>,
}

struct Item {
    candidate: usize,
    units: usize,
    /// Offset of this item's decision words in `decisions`.
    offset: usize,
    /// `reach` when the item was added: its decision bits cover `0..=reach`.
    reach: usize,
}

impl Knapsack {
    fn new(capacity: usize) -> Self {
        Self { values: vec![0.0; capacity + 1], reach: capacity, items: Vec::new(), decisions: Vec::new() }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn best_within(&self, room: usize) -> f64 {
        self.values[room.min(self.reach)]
    }

    fn shrink_to(&mut self, reach: usize) {
        self.reach = self.reach.min(reach);
    }

    fn add(&mut self, candidate: usize, units: usize, importance: f64) {
        if units > self.reach {
            return; // Can never fit in any remaining answer.
        }
        let reach = self.reach;
        let offset = self.decisions.len();
        self.decisions.resize(offset + reach / 64 + 1, 0);
        let words = &mut self.decisions[offset..];
        // Downward so that values[c - units] still excludes this item (0/1, not unbounded).
        for c in (units..=reach).rev() {
            let with = self.values[c - units] + importance;
            let take = with > self.values[c];
            if take {
                self.values[c] = with;
            }
            words[c / 64] |= (take as u64) << (c % 64);
        }
        self.items.push(Item { candidate, units, offset, reach });
    }

    /// The items of the first `prefix` additions that make up `values[room]` as it stood then.
    fn reconstruct(&self, prefix: usize, mut room: usize) -> Vec<usize> {
        let mut chosen = Vec::new();
        for item in self.items[..prefix].iter().rev() {
            if room > item.reach || room < item.units {
                continue;
            }
            let word = self.decisions[item.offset + room / 64];
            if word >> (room % 64) & 1 == 1 {
                chosen.push(item.candidate);
                room -= item.units;
            }
        }
        chosen
    }
}

fn validate_config(config: &SelectConfig) -> Result<(), SelectError> {
    if !(config.rho > 0.0 && config.rho <= 1.0) {
        return Err(SelectError::RhoOutOfRange { rho: config.rho });
    }
    if config.capacity == 0 {
        return Err(SelectError::ZeroCapacity);
    }
    if config.capacity > MAX_CAPACITY {
        return Err(SelectError::CapacityTooLarge { capacity: config.capacity, max: MAX_CAPACITY });
    }
    Ok(())
}

fn validate_costs(candidates: &[Candidate], t_fp: f64) -> Result<(), SelectError> {
    let valid = |x: f64| x.is_finite() && x >= 0.0;
    if !valid(t_fp) {
        return Err(SelectError::InvalidForwardCost { value: t_fp });
    }
    for (index, c) in candidates.iter().enumerate() {
        for (field, value) in [("t_dy", c.t_dy), ("t_dw", c.t_dw), ("t_update", c.t_update)] {
            if !valid(value) {
                return Err(SelectError::InvalidCost { index, field, value });
            }
        }
    }
    Ok(())
}
