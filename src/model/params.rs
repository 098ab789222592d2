//! Uniform access to a model's parameter tensors by their HF names, whatever their rank.

use burn::tensor::Tensor;

/// A parameter tensor borrowed for reading.
#[derive(Clone, Copy)]
pub enum ParamRef<'a> {
    Vector(&'a Tensor<1>),
    Matrix(&'a Tensor<2>),
}

/// A parameter tensor borrowed for replacing it (optimizer updates, loading, autodiff wrapping).
pub enum ParamMut<'a> {
    Vector(&'a mut Tensor<1>),
    Matrix(&'a mut Tensor<2>),
}

impl ParamRef<'_> {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Self::Vector(t) => t.dims().to_vec(),
            Self::Matrix(t) => t.dims().to_vec(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// Reads the values back to the host (row-major, HF layout).
    pub fn to_vec(&self) -> Vec<f32> {
        let values = match self {
            Self::Vector(t) => t.try_to_vec_as::<f32>(),
            Self::Matrix(t) => t.try_to_vec_as::<f32>(),
        };
        values.expect("parameters are f32 tensors")
    }
}

/// Models expose their parameters in a fixed order with HF names; loading, saving, selection,
/// optimizers and checkpoints all go through these two visitors.
pub trait Parameters {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_>));
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>));

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
/// gradient; the others stay plain tensors, so autodiff records nothing that only depends on them.
pub fn with_trainable<M: Parameters + Clone>(model: &M, trainable: impl Fn(&str) -> bool) -> M {
    let mut copy = model.clone();
    copy.visit_mut(&mut |name, p| {
        if trainable(name) {
            match p {
                ParamMut::Vector(t) => *t = t.clone().autodiff().require_grad(),
                ParamMut::Matrix(t) => *t = t.clone().autodiff().require_grad(),
            }
        }
    });
    copy
}

impl ParamRef<'_> {
    /// The tensor flattened to 1-D (a handle, not a copy of the values).
    pub fn flat(&self) -> Tensor<1> {
        match self {
            Self::Vector(t) => (*t).clone(),
            Self::Matrix(t) => {
                let n: usize = t.dims().iter().product();
                (*t).clone().reshape([n])
            }
        }
    }

    /// This parameter's gradient, flattened, when it was trained in the backward pass that made `grads`.
    pub fn grad_flat(&self, grads: &burn::tensor::Gradients) -> Option<Tensor<1>> {
        match self {
            Self::Vector(t) => t.grad(grads),
            Self::Matrix(t) => t.grad(grads).map(|g| {
                let n: usize = g.dims().iter().product();
                g.reshape([n])
            }),
        }
    }
}
