//! Uniform access to a model's parameter tensors by their HF names, whatever their rank.
//!
//! Each module that holds parameters ([`Linear`], [`RmsNorm`], [`LayerNorm`], [`Table`]) carries
//! its HF name, given once when the architecture declares it (`model::loader`). An architecture
//! then writes a single traversal, [`Parameters::modules_mut`], and every visitor, LoRA's targets
//! and the row-block leaves are derived from it.

use burn::tensor::Tensor;

use super::linear::Linear;
use super::norm::{LayerNorm, RmsNorm};
use super::weight::Weight;

/// A parameter tensor borrowed for reading.
#[derive(Clone, Copy)]
pub enum ParamRef<'a> {
    Vector(&'a Tensor<1>),
    Matrix(&'a Tensor<2>),
    /// A linear layer's weight, which may be stored quantized.
    Weight(&'a Weight),
}

/// A parameter tensor borrowed for replacing it (optimizer updates, loading, autodiff wrapping).
pub enum ParamMut<'a> {
    Vector(&'a mut Tensor<1>),
    Matrix(&'a mut Tensor<2>),
    /// A linear layer's weight, which may be stored quantized.
    Weight(&'a mut Weight),
}

impl ParamMut<'_> {
    /// The same tensor, borrowed for reading.
    pub fn as_ref(&self) -> ParamRef<'_> {
        match self {
            Self::Vector(t) => ParamRef::Vector(t),
            Self::Matrix(t) => ParamRef::Matrix(t),
            Self::Weight(w) => ParamRef::Weight(w),
        }
    }
}

impl ParamRef<'_> {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Self::Vector(t) => t.dims().to_vec(),
            Self::Matrix(t) => t.dims().to_vec(),
            Self::Weight(w) => w.dims().to_vec(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// The float type its values are read in: the stored type (f32, or f16/bf16 for a frozen
    /// matrix: `model::precision`), f32 for a quantized one (decoded).
    pub fn dtype(&self) -> burn::tensor::DType {
        match *self {
            Self::Vector(t) => t.dtype(),
            Self::Matrix(t) | Self::Weight(Weight::Float(t)) => t.dtype(),
            Self::Weight(Weight::Quantized(_)) => burn::tensor::DType::F32,
        }
    }

    /// Bytes as stored.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Weight(w) => w.bytes(),
            _ => self.numel() * self.dtype().size(),
        }
    }

    /// Whether it is a linear layer's weight still in its file's quantization (`model::precision`:
    /// frozen, never trained).
    pub fn is_quantized(&self) -> bool {
        matches!(self, Self::Weight(Weight::Quantized(_)))
    }

    /// Whether it is a weight matrix (a linear layer's, an adapter's or a table), not a vector.
    pub fn is_matrix(&self) -> bool {
        !matches!(self, Self::Vector(_))
    }

    /// Reads the values back to the host (row-major, HF layout).
    pub fn to_vec(&self) -> Vec<f32> {
        let values = match *self {
            Self::Vector(t) => t.try_to_vec_as::<f32>(),
            Self::Matrix(t) | Self::Weight(Weight::Float(t)) => t.try_to_vec_as::<f32>(),
            Self::Weight(Weight::Quantized(q)) => return q.to_vec(),
        };
        values.expect("parameters are f32 tensors")
    }

    /// The tensor flattened to 1-D (a handle, not a copy of the values; a quantized weight is
    /// decoded to f32).
    pub fn flat(&self) -> Tensor<1> {
        let matrix = match self {
            Self::Vector(t) => return (*t).clone(),
            Self::Matrix(t) => (*t).clone(),
            Self::Weight(w) => w.to_float(),
        };
        let n: usize = matrix.dims().iter().product();
        matrix.reshape([n])
    }

    /// A handle to the values as stored (no copy; a quantized weight stays quantized): a linear
    /// layer's weight as it is, any other parameter flat, as one row. Decode it
    /// ([`Weight::to_float`]) one tensor at a time.
    pub fn stored(&self) -> Weight {
        match *self {
            Self::Weight(w) => w.clone(),
            p => Weight::Float(p.flat().unsqueeze::<2>()),
        }
    }

    /// This parameter's gradient, flattened, when it was trained in the backward pass that made `grads`.
    pub fn grad_flat(&self, grads: &burn::tensor::Gradients) -> Option<Tensor<1>> {
        let matrix = match *self {
            Self::Vector(t) => return t.grad(grads),
            Self::Matrix(t) | Self::Weight(Weight::Float(t)) => t,
            Self::Weight(Weight::Quantized(_)) => return None,
        };
        matrix.grad(grads).map(|g| {
            let n: usize = g.dims().iter().product();
            g.reshape([n])
        })
    }
}

/// A parameter matrix read whole or by rows rather than as a linear layer: a token, position or
/// relative-bias table, or an untied LM head.
#[derive(Clone, Debug)]
pub struct Table {
    /// The HF name (`model.embed_tokens.weight`).
    pub name: String,
    pub weight: Tensor<2>,
}

impl Table {
    /// The rows `ids [B, S]` pick, `[B, S, dim]` in f32 whatever the table is stored in.
    pub fn lookup(&self, ids: Tensor<2, burn::tensor::Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.weight.clone(), ids).cast(burn::tensor::DType::F32)
    }
}

/// A module holding parameters, borrowed for replacing them; each knows its HF names. A
/// [`Table`] is one parameter and carries its full name (`model.embed_tokens.weight`); the others
/// carry the prefix of theirs (`model.norm` for `model.norm.weight`).
pub enum ModuleMut<'a> {
    Linear(&'a mut Linear),
    RmsNorm(&'a mut RmsNorm),
    LayerNorm(&'a mut LayerNorm),
    Table(&'a mut Table),
}

impl ModuleMut<'_> {
    fn visit_mut(self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        match self {
            Self::Linear(l) => l.visit_mut(f),
            Self::RmsNorm(n) => n.visit_mut(f),
            Self::LayerNorm(n) => n.visit_mut(f),
            Self::Table(t) => f(&t.name, ParamMut::Matrix(&mut t.weight)),
        }
    }
}

/// Models expose their parameters in execution order with HF names; loading, saving, selection,
/// optimizers and checkpoints all go through these visitors.
pub trait Parameters: Clone {
    /// Every module holding parameters, in the order the architecture declares them (its
    /// execution order): the one traversal an architecture writes.
    fn modules_mut(&mut self) -> Vec<ModuleMut<'_>>;

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        for module in self.modules_mut() {
            module.visit_mut(f);
        }
    }

    /// [`Parameters::visit_mut`] on a copy, whose tensors are handles to the same values: the copy
    /// costs no tensor data and spares each architecture a second, borrowing traversal.
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        self.clone().visit_mut(&mut |name, p| f(name, p.as_ref()));
    }

    fn param_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.visit(&mut |n, _| names.push(n.to_string()));
        names
    }

    fn num_params(&self) -> usize {
        let mut total = 0;
        self.visit(&mut |_, p| total += p.numel());
        total
    }
}

/// A copy of `model` whose parameters named by `trainable` are autodiff leaves that keep their
/// gradient, in f32 (a low-precision or quantized frozen matrix is promoted in the copy: importance
/// scoring differentiates tensors that training keeps frozen); the others stay as stored, so
/// autodiff records nothing that only depends on them.
pub fn with_trainable<M: Parameters>(model: &M, trainable: impl Fn(&str) -> bool) -> M {
    let f32 = burn::tensor::DType::F32;
    let mut copy = model.clone();
    copy.visit_mut(&mut |name, p| {
        if trainable(name) {
            match p {
                ParamMut::Vector(t) => *t = t.clone().cast(f32).autodiff().require_grad(),
                ParamMut::Matrix(t) => *t = t.clone().cast(f32).autodiff().require_grad(),
                ParamMut::Weight(w) => *w = Weight::Float(w.to_float().cast(f32).autodiff().require_grad()),
            }
        }
    });
    copy
}
