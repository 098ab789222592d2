//! The CPU (flex) side of the extensions: the masked gradient in backend tensor ops; AdamW,
//! RMSNorm and SwiGLU as multi-threaded loops over the raw buffers.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape, TensorData};
use rayon::prelude::*;

use super::fused::{FusedOps, inv_rms, silu_and_slope};
use super::{AdamWHyper, AdamWOps, DwPath, MaskedGradOps, dense_linear, gather_matmul_dw};

impl MaskedGradOps for Flex {
    /// The CPU has one path: gather dY's selected columns, then matmul.
    fn masked_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, rows: Vec<u32>, _path: DwPath) -> FloatTensor<Self> {
        gather_matmul_dw::<Self>(dy, x, rows)
    }

    fn masked_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, _w_rows: FloatTensor<Self>, _rows: Vec<u32>) -> FloatTensor<Self> {
        dense_linear::<Self>(x, w)
    }
}

/// Elements per parallel task: large enough that scheduling costs nothing next to the update.
const ADAMW_CHUNK: usize = 1 << 14;

impl AdamWOps for Flex {
    /// One pass over the four buffers, split across threads: w, m and v are updated in place
    /// when this tensor holds them alone (flex copies a shared buffer before writing).
    fn adamw(
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hp: AdamWHyper,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (mut w, grad, mut m, mut v) = (dense(w), dense(grad), dense(m), dense(v));
        let g: &[f32] = grad.storage();
        let (ws, ms, vs) = (w.storage_mut::<f32>(), m.storage_mut::<f32>(), v.storage_mut::<f32>());
        ws.par_chunks_mut(ADAMW_CHUNK)
            .zip(ms.par_chunks_mut(ADAMW_CHUNK))
            .zip(vs.par_chunks_mut(ADAMW_CHUNK))
            .zip(g.par_chunks(ADAMW_CHUNK))
            .for_each(|(((w, m), v), g)| {
                for i in 0..w.len() {
                    (w[i], m[i], v[i]) = hp.update(w[i], g[i], m[i], v[i]);
                }
            });
        (w, m, v)
    }
}

/// Rows per parallel task of the row-wise kernels (RMSNorm): a few hundred KiB of work each.
const ROW_CHUNK: usize = 64;
/// Elements per parallel task of the element-wise kernels (SwiGLU).
const ELEMENT_CHUNK: usize = 1 << 14;

impl FusedOps for Flex {
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        in_f32(&[x, w], |[x, w]| {
            let d = w.len();
            let mut y = vec![0.0f32; x.len()];
            y.par_chunks_mut(d * ROW_CHUNK).zip(x.par_chunks(d * ROW_CHUNK)).for_each(|(y, x)| {
                for (y, x) in y.chunks_mut(d).zip(x.chunks(d)) {
                    let r = inv_rms(x, eps);
                    for j in 0..d {
                        y[j] = x[j] * r * w[j];
                    }
                }
            });
            y
        })
    }

    fn rms_norm_dx(dy: FloatTensor<Self>, x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        in_f32(&[dy, x, w], |[dy, x, w]| {
            let d = w.len();
            let mut dx = vec![0.0f32; x.len()];
            dx.par_chunks_mut(d * ROW_CHUNK).zip(x.par_chunks(d * ROW_CHUNK)).zip(dy.par_chunks(d * ROW_CHUNK)).for_each(
                |((dx, x), dy)| {
                    for ((dx, x), dy) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)) {
                        let r = inv_rms(x, eps);
                        let dot: f32 = (0..d).map(|j| dy[j] * w[j] * x[j]).sum();
                        let c = dot * r * r * r / d as f32;
                        for j in 0..d {
                            dx[j] = r * dy[j] * w[j] - x[j] * c;
                        }
                    }
                },
            );
            dx
        })
    }

    fn rms_norm_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let d = x.shape()[1];
        in_f32_shaped(&[dy, x], Shape::new([d]), |[dy, x]| {
            // Each task sums its rows into a vector of its own; the vectors are added at the end.
            x.par_chunks(d * ROW_CHUNK)
                .zip(dy.par_chunks(d * ROW_CHUNK))
                .map(|(x, dy)| {
                    let mut dw = vec![0.0f32; d];
                    for (x, dy) in x.chunks(d).zip(dy.chunks(d)) {
                        let r = inv_rms(x, eps);
                        for j in 0..d {
                            dw[j] += dy[j] * x[j] * r;
                        }
                    }
                    dw
                })
                .reduce(|| vec![0.0f32; d], |a, b| a.iter().zip(&b).map(|(a, b)| a + b).collect())
        })
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        in_f32(&[gate, up], |[g, u]| {
            let mut y = vec![0.0f32; g.len()];
            y.par_chunks_mut(ELEMENT_CHUNK).zip(g.par_chunks(ELEMENT_CHUNK)).zip(u.par_chunks(ELEMENT_CHUNK)).for_each(|((y, g), u)| {
                for i in 0..y.len() {
                    y[i] = silu_and_slope(g[i]).0 * u[i];
                }
            });
            y
        })
    }

    fn swiglu_backward(dy: FloatTensor<Self>, gate: FloatTensor<Self>, up: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (shape, dtype) = (gate.shape(), gate.dtype());
        let [dy, g, u] = [dy, gate, up].map(|t| dense(cast(t, DType::F32)));
        let (dy, g, u) = (dy.storage::<f32>(), g.storage::<f32>(), u.storage::<f32>());
        let (mut dg, mut du) = (vec![0.0f32; g.len()], vec![0.0f32; g.len()]);
        dg.par_chunks_mut(ELEMENT_CHUNK)
            .zip(du.par_chunks_mut(ELEMENT_CHUNK))
            .zip(g.par_chunks(ELEMENT_CHUNK).zip(u.par_chunks(ELEMENT_CHUNK)).zip(dy.par_chunks(ELEMENT_CHUNK)))
            .for_each(|((dg, du), ((g, u), dy))| {
                for i in 0..dg.len() {
                    let (silu, slope) = silu_and_slope(g[i]);
                    du[i] = dy[i] * silu;
                    dg[i] = dy[i] * u[i] * slope;
                }
            });
        (tensor(dg, shape.clone(), dtype), tensor(du, shape, dtype))
    }
}

/// Runs `kernel` on the inputs as flat f32 slices (other float types are converted there and
/// back); the output has the first input's shape.
fn in_f32<const N: usize>(inputs: &[FlexTensor; N], kernel: impl FnOnce([&[f32]; N]) -> Vec<f32>) -> FlexTensor {
    let shape = inputs[0].shape();
    in_f32_shaped(inputs, shape, kernel)
}

fn in_f32_shaped<const N: usize>(inputs: &[FlexTensor; N], shape: Shape, kernel: impl FnOnce([&[f32]; N]) -> Vec<f32>) -> FlexTensor {
    let dtype = inputs[0].dtype();
    let dense: [FlexTensor; N] = std::array::from_fn(|i| dense(cast(inputs[i].clone(), DType::F32)));
    tensor(kernel(std::array::from_fn(|i| dense[i].storage::<f32>())), shape, dtype)
}

pub(super) fn cast(t: FlexTensor, dtype: DType) -> FlexTensor {
    if t.dtype() == dtype { t } else { Flex::float_cast(t, dtype.into()) }
}

/// A `dtype` tensor of `shape` holding the f32 `values`.
pub(super) fn tensor(values: Vec<f32>, shape: Shape, dtype: DType) -> FlexTensor {
    cast(FlexTensor::from_data(TensorData::new(values, shape)), dtype)
}

/// `t` with its elements exactly filling its buffer in order (a view or a slice is copied out),
/// so the buffer can be read and written as a flat slice.
pub(super) fn dense(t: FlexTensor) -> FlexTensor {
    let n = t.layout().num_elements();
    let exact = t.is_contiguous() && t.layout().start_offset() == 0 && t.bytes().len() == n * t.dtype().size();
    if exact { t } else { FlexTensor::from_data(t.into_data()) }
}
