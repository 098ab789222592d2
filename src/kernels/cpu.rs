//! The CPU (flex) side of the extensions: the masked gradient in backend tensor ops, AdamW as a
//! multi-threaded loop over the raw buffers.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use rayon::prelude::*;

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

/// `t` with its elements exactly filling its buffer in order (a view or a slice is copied out),
/// so the buffer can be read and written as a flat slice.
fn dense(t: FlexTensor) -> FlexTensor {
    let n = t.layout().num_elements();
    let exact = t.is_contiguous() && t.layout().start_offset() == 0 && t.bytes().len() == n * t.dtype().size();
    if exact { t } else { FlexTensor::from_data(t.into_data()) }
}
