//! Finer candidates than whole tensors: a linear weight split into blocks of output rows (one
//! attention head, or N rows), each selectable on its own. Costs are split so totals are kept:
//! `t_fp` and `t_dw` in proportion to rows; the tensor's `t_dy` sits on its first block in
//! execution order (the deepest from the output), so a selection whose deepest candidate is any
//! block of the tensor does not pay that tensor's input gradient, and deeper ones do.

use super::{Node, OpKind, OpSpec, Profile};

const MARK: &str = "#rows";

/// `weight#rows{start}-{end}`.
pub fn block_name(tensor: &str, start: usize, end: usize) -> String {
    format!("{tensor}{MARK}{start}-{end}")
}

/// `weight#rows`: where the optimizer keeps the state of a weight's trained rows (whichever rows
/// the current blocks cover; the rows are kept with the state).
pub fn rows_state_name(tensor: &str) -> String {
    format!("{tensor}{MARK}")
}

/// The tensor and row range of a block name; `None` for a whole tensor.
pub fn parse_block(name: &str) -> Option<(&str, std::ops::Range<usize>)> {
    let (tensor, range) = name.split_once(MARK)?;
    let (a, b) = range.split_once('-')?;
    Some((tensor, a.parse().ok()?..b.parse().ok()?))
}

/// Splits each linear weight for which `rows_per_block` gives a size smaller than its row count.
pub fn split_rows(p: &Profile, ops: &[OpSpec], rows_per_block: &dyn Fn(&OpSpec) -> Option<usize>) -> Profile {
    let mut nodes = Vec::with_capacity(p.nodes.len());
    for (node, op) in p.nodes.iter().zip(ops) {
        let (OpKind::Linear { d_out, .. }, Some(block)) = (op.kind, rows_per_block(op)) else {
            nodes.push(node.clone());
            continue;
        };
        if block == 0 || block >= d_out {
            nodes.push(node.clone());
            continue;
        }
        for (i, start) in (0..d_out).step_by(block).enumerate() {
            let end = (start + block).min(d_out);
            let share = (end - start) as f64 / d_out as f64;
            nodes.push(Node {
                name: block_name(&node.name, start, end),
                t_fp: node.t_fp * share,
                t_dy: if i == 0 { node.t_dy } else { 0.0 },
                t_dw: node.t_dw * share,
                param_numel: node.param_numel / d_out * (end - start),
                ..node.clone()
            });
        }
    }
    Profile { nodes, ..p.clone() }
}
