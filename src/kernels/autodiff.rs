//! The custom backwards: `masked_linear`'s dX = dY W for the tracked input and, for the compact
//! weight leaf, only `masked_dw(dY, X, rows)` (nothing for unselected rows); RMSNorm's and
//! SwiGLU's and attention's fused gradients, each registered only for the inputs that need one.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};

use super::attention::{AttentionOps, AttentionSpec};
use super::frozen::{FrozenLinearOps, QuantFormat};
use super::fused::FusedOps;
use super::{DwPath, MaskedGradOps};

#[derive(Debug)]
struct MaskedLinearBackward;

#[derive(Debug)]
struct NotDifferentiated;

impl<B: burn::backend::Backend, const N: usize> Backward<B, N> for NotDifferentiated {
    type State = ();

    fn backward(self, _ops: Ops<Self::State, N>, _grads: &mut Gradients, _checkpointer: &mut Checkpointer) {}
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

#[derive(Debug)]
struct RmsNormBackward;

impl<B: FusedOps> Backward<B, 2> for RmsNormBackward {
    /// (x, w, eps)
    type State = (FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let (x, w, eps) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = w_node {
            grads.register::<B>(node.id, B::rms_norm_dw(dy.clone(), x.clone(), eps));
        }
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::rms_norm_dx(dy, x, w, eps));
        }
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: FusedOps> Backward<B, 2> for SwigluBackward {
    /// (gate, up)
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [gate_node, up_node] = ops.parents;
        let (gate, up) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let (d_gate, d_up) = B::swiglu_backward(dy, gate, up);
        if let Some(node) = gate_node {
            grads.register::<B>(node.id, d_gate);
        }
        if let Some(node) = up_node {
            grads.register::<B>(node.id, d_up);
        }
    }
}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let prep = RmsNormBackward.prepare::<C>([x.node(), w.node()]).compute_bound().stateful();
        let (x, w) = (x.into_primitive(), w.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x.clone(), w.clone(), eps), B::rms_norm(x, w, eps)),
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x, w, eps)),
        }
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SwigluBackward.prepare::<C>([gate.node(), up.node()]).compute_bound().stateful();
        let (gate, up) = (gate.into_primitive(), up.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => prep.finish((gate.clone(), up.clone()), B::swiglu(gate, up)),
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(gate, up)),
        }
    }

    // The gradients themselves are never differentiated further: constants in the graph.
    fn rms_norm_dx(dy: FloatTensor<Self>, x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let prep = NotDifferentiated.prepare::<C>([dy.node(), x.node(), w.node()]).compute_bound();
        prep.stateless(B::rms_norm_dx(dy.into_primitive(), x.into_primitive(), w.into_primitive(), eps))
    }

    fn rms_norm_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let prep = NotDifferentiated.prepare::<C>([dy.node(), x.node()]).compute_bound();
        prep.stateless(B::rms_norm_dw(dy.into_primitive(), x.into_primitive(), eps))
    }

    fn swiglu_backward(dy: FloatTensor<Self>, gate: FloatTensor<Self>, up: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let prep = || NotDifferentiated.prepare::<C>([dy.node(), gate.node(), up.node()]).compute_bound();
        let (prep_gate, prep_up) = (prep(), prep());
        let (d_gate, d_up) = B::swiglu_backward(dy.primitive().clone(), gate.primitive().clone(), up.primitive().clone());
        (prep_gate.stateless(d_gate), prep_up.stateless(d_up))
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: AttentionOps> Backward<B, 4> for AttentionBackward {
    /// (q, k, v, bias, output, log-sum-exp, spec)
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, AttentionSpec);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (q, k, v, bias, out, lse, spec) = ops.state;
        let dout = grads.consume::<B>(&ops.node);
        let [q_node, k_node, v_node, bias_node] = ops.parents;
        // The bias's gradient is its own pass, run only for a trained bias.
        if let Some(node) = bias_node.filter(|_| spec.dense_bias) {
            let dbias = B::flash_attention_bias_backward(
                dout.clone(),
                q.clone(),
                k.clone(),
                v.clone(),
                bias.clone(),
                out.clone(),
                lse.clone(),
                spec.clone(),
            );
            grads.register::<B>(node.id, dbias);
        }
        if q_node.is_none() && k_node.is_none() && v_node.is_none() {
            return;
        }
        let (dq, dk, dv) = B::flash_attention_backward(dout, q, k, v, bias, out, lse, spec);
        for (node, grad) in [q_node, k_node, v_node].into_iter().zip([dq, dk, dv]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: AttentionOps, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // The log-sum-exp is saved for the backward pass, not differentiated.
        let nodes = || [q.node(), k.node(), v.node(), bias.node()];
        let lse_prep = NotDifferentiated.prepare::<C>(nodes()).compute_bound();
        let prep = AttentionBackward.prepare::<C>(nodes()).compute_bound().stateful();
        let [q, k, v, bias] = [q, k, v, bias].map(|t| t.into_primitive());
        let (out, lse) = B::flash_attention(q.clone(), k.clone(), v.clone(), bias.clone(), spec.clone());
        let out = match prep {
            OpsKind::Tracked(prep) => prep.finish((q, k, v, bias, out.clone(), lse.clone(), spec), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (out, lse_prep.stateless(lse))
    }

    // The gradients themselves are never differentiated further: constants in the graph.
    fn flash_attention_backward(
        dout: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let inputs = [dout, q, k, v, bias, out, lse];
        let prep = || NotDifferentiated.prepare::<C>(inputs.each_ref().map(|t| t.node())).compute_bound();
        let preps = [prep(), prep(), prep()];
        let [dout, q, k, v, bias, out, lse] = inputs.map(|t| t.into_primitive());
        let (dq, dk, dv) = B::flash_attention_backward(dout, q, k, v, bias, out, lse, spec);
        let [pq, pk, pv] = preps;
        (pq.stateless(dq), pk.stateless(dk), pv.stateless(dv))
    }

    fn flash_attention_bias_backward(
        dout: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> FloatTensor<Self> {
        let inputs = [dout, q, k, v, bias, out, lse];
        let prep = NotDifferentiated.prepare::<C>(inputs.each_ref().map(|t| t.node())).compute_bound();
        let [dout, q, k, v, bias, out, lse] = inputs.map(|t| t.into_primitive());
        prep.stateless(B::flash_attention_bias_backward(dout, q, k, v, bias, out, lse, spec))
    }
}

#[derive(Debug)]
struct FrozenLinearBackward;

impl<B: FrozenLinearOps> Backward<B, 1> for FrozenLinearBackward {
    /// The frozen weight (which the model holds anyway: keeping it costs nothing).
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::frozen_linear_dx(dy, ops.state));
        }
    }
}

#[derive(Debug)]
struct QuantizedLinearBackward;

impl<B: FrozenLinearOps> Backward<B, 1> for QuantizedLinearBackward {
    /// The quantized weight (held by the model anyway) and its format.
    type State = (IntTensor<B>, QuantFormat);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = x_node {
            let (blocks, format) = ops.state;
            grads.register::<B>(node.id, B::quantized_linear_dx(dy, blocks, format));
        }
    }
}

impl<B: FrozenLinearOps, C: CheckpointStrategy> FrozenLinearOps for Autodiff<B, C> {
    /// Differentiated in `x` alone: the weight is frozen (`kernels::frozen::linear` never passes a
    /// tracked one).
    fn frozen_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = FrozenLinearBackward.prepare::<C>([x.node()]).compute_bound().stateful();
        let (x, w) = (x.into_primitive(), w.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => prep.finish(w.clone(), B::frozen_linear(x, w)),
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_linear(x, w)),
        }
    }

    fn frozen_linear_dx(dy: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = NotDifferentiated.prepare::<C>([dy.node(), w.node()]).compute_bound();
        prep.stateless(B::frozen_linear_dx(dy.into_primitive(), w.into_primitive()))
    }

    /// Differentiated in `x` alone, like [`FrozenLinearOps::frozen_linear`].
    fn quantized_linear(x: FloatTensor<Self>, blocks: IntTensor<Self>, format: QuantFormat) -> FloatTensor<Self> {
        let prep = QuantizedLinearBackward.prepare::<C>([x.node()]).compute_bound().stateful();
        let x = x.into_primitive();
        match prep {
            OpsKind::Tracked(prep) => prep.finish((blocks.clone(), format), B::quantized_linear(x, blocks, format)),
            OpsKind::UnTracked(prep) => prep.finish(B::quantized_linear(x, blocks, format)),
        }
    }

    fn quantized_linear_dx(dy: FloatTensor<Self>, blocks: IntTensor<Self>, format: QuantFormat) -> FloatTensor<Self> {
        let prep = NotDifferentiated.prepare::<C>([dy.node()]).compute_bound();
        prep.stateless(B::quantized_linear_dx(dy.into_primitive(), blocks, format))
    }
}
