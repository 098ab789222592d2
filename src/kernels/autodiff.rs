//! The custom backward of `masked_linear`: dX = dY W for the tracked input, and for the compact
//! weight leaf only `masked_dw(dY, X, rows)`; nothing is computed for unselected rows.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;

use super::{DwPath, MaskedGradOps};

#[derive(Debug)]
struct MaskedLinearBackward;

#[derive(Debug)]
struct NotDifferentiated;

impl<B: MaskedGradOps> Backward<B, 2> for NotDifferentiated {
    type State = ();

    fn backward(self, _ops: Ops<Self::State, 2>, _grads: &mut Gradients, _checkpointer: &mut Checkpointer) {}
}

impl<B: MaskedGradOps> Backward<B, 2> for MaskedLinearBackward {
    /// (x if the weight rows are trained, W if x needs a gradient, rows)
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>, Vec<u32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node, w_rows_node] = ops.parents;
        let (x, w, rows) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        if let (Some(node), Some(w)) = (x_node, w) {
            grads.register::<B>(node.id, B::float_matmul(dy.clone(), w));
        }
        if let (Some(node), Some(x)) = (w_rows_node, x) {
            grads.register::<B>(node.id, B::masked_dw(dy, x, rows, DwPath::Auto));
        }
    }
}

impl<B: MaskedGradOps, C: CheckpointStrategy> MaskedGradOps for Autodiff<B, C> {
    fn masked_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, rows: Vec<u32>, path: DwPath) -> FloatTensor<Self> {
        // A gradient computation itself: recorded as a constant, never differentiated further.
        let prep = NotDifferentiated.prepare::<C>([dy.node(), x.node()]).compute_bound();
        prep.stateless(B::masked_dw(dy.into_primitive(), x.into_primitive(), rows, path))
    }

    fn masked_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, w_rows: FloatTensor<Self>, rows: Vec<u32>) -> FloatTensor<Self> {
        let x_tracked = x.is_tracked();
        let rows_tracked = w_rows.is_tracked();
        let prep = MaskedLinearBackward.prepare::<C>([x.node(), w_rows.node()]).compute_bound().stateful();
        let (x, w) = (x.into_primitive(), w.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let state = (rows_tracked.then(|| x.clone()), x_tracked.then(|| w.clone()), rows.clone());
                prep.finish(state, B::masked_linear(x, w, w_rows.into_primitive(), rows))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::masked_linear(x, w, w_rows.into_primitive(), rows)),
        }
    }
}
