//! Attention on the CPU (flex): per (batch row, head), blocks of [`QUERY_BLOCK`] queries against
//! the keys they see, the block's scores in a scratch buffer of the task's own (never the whole
//! `[B, H, S, T]`), and the products through `gemm` on one thread per task (rayon splits tasks).
//! The backward task owns one key/value head and the query heads that read it, so GQA's key and
//! value gradients add up without races.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape};
use rayon::prelude::*;

use super::attention::{AttentionOps, AttentionSpec};
use super::cpu::{cast, dense, tensor};

/// Queries per block: the scratch scores are `QUERY_BLOCK x T`.
const QUERY_BLOCK: usize = 64;

/// A row-major matrix view `rows x cols` into a slice, possibly transposed (`col_stride` 1 for
/// plain rows).
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Whether every element the view addresses lies inside its slice.
    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// `c = (accumulate ? c : 0) + alpha a b` for `c` row-major `a.rows x b.cols`.
fn matmul(c: &mut [f32], a: View<'_>, b: View<'_>, alpha: f32, accumulate: bool) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(a.in_bounds() && b.in_bounds() && b.rows == k && c.len() >= m * n, "attention: matmul views out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the assert above keeps every index `gemm` forms inside the three slices, and `c`
    // is borrowed mutably apart from `a` and `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Shapes of one call: `q [B, H, S, D]`, `k`/`v [B, Hk, T, D]`.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    hk: usize,
    s: usize,
    t: usize,
    d: usize,
}

impl Dims {
    fn of(q: &FlexTensor, k: &FlexTensor) -> Self {
        let (qs, ks) = (q.shape(), k.shape());
        Self { b: qs[0], h: qs[1], hk: ks[1], s: qs[2], t: ks[2], d: qs[3] }
    }

    fn group(&self) -> usize {
        self.h / self.hk
    }
}

/// `scale q k^T + bias` of a block of queries `q` against the keys `k` they see, into `scores`
/// (`q.rows x k.rows`); the keys a row does not see are left for the caller to mask.
fn block_scores(scores: &mut [f32], q: View<'_>, k: View<'_>, spec: &AttentionSpec, head: usize) {
    let keys = k.rows;
    matmul(scores, q, k.t(), spec.scale, false);
    for row in scores.chunks_mut(keys) {
        for (j, x) in row.iter_mut().enumerate() {
            *x += spec.bias(head, j);
        }
    }
}

/// The block's scaled, biased scores in `scores` (`rows x keys`) turned into probabilities with
/// each row's log-sum-exp: `exp(s - lse)`, 0 beyond the keys a query sees.
fn probabilities(scores: &mut [f32], keys: usize, visible: impl Fn(usize) -> usize, lse: impl Fn(usize) -> f32) {
    for (r, row) in scores.chunks_mut(keys).enumerate() {
        let (seen, l) = (visible(r), lse(r));
        for (j, p) in row.iter_mut().enumerate() {
            *p = if j < seen { (*p - l).exp() } else { 0.0 };
        }
    }
}

impl AttentionOps for Flex {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = q.dtype();
        let [q, k, v] = [q, k, v].map(|t| dense(cast(t, DType::F32)));
        let dims = Dims::of(&q, &k);
        let Dims { h, s, t, d, .. } = dims;
        let (qs, ks, vs) = (q.storage::<f32>(), k.storage::<f32>(), v.storage::<f32>());
        let mut out = vec![0.0f32; qs.len()];
        let mut lse = vec![0.0f32; dims.b * h * s];
        out.par_chunks_mut(s * d).zip(lse.par_chunks_mut(s)).enumerate().for_each(|(bh, (out, lse))| {
            let (row, head) = (bh / h, bh % h);
            let kv = (row * dims.hk + head / dims.group()) * t * d;
            let (k, v) = (&ks[kv..kv + t * d], &vs[kv..kv + t * d]);
            let q = &qs[bh * s * d..(bh + 1) * s * d];
            let mut scores = vec![0.0f32; QUERY_BLOCK * t];
            for q0 in (0..s).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(s - q0);
                // Queries see a prefix of the keys, longest for the block's last query.
                let keys = spec.visible(row, q0 + rows - 1, t);
                if keys == 0 {
                    // Nothing to attend to (an empty row): output 0, and no probability anywhere.
                    lse[q0..q0 + rows].fill(f32::INFINITY);
                    continue;
                }
                let sc = &mut scores[..rows * keys];
                block_scores(sc, View::rows(&q[q0 * d..(q0 + rows) * d], rows, d), View::rows(&k[..keys * d], keys, d), &spec, head);
                for (r, srow) in sc.chunks_mut(keys).enumerate() {
                    let seen = spec.visible(row, q0 + r, t);
                    let max = srow[..seen].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    let sum: f32 = srow[..seen]
                        .iter_mut()
                        .map(|x| {
                            *x = (*x - max).exp();
                            *x
                        })
                        .sum();
                    lse[q0 + r] = if seen == 0 { f32::INFINITY } else { max + sum.ln() };
                    for (j, x) in srow.iter_mut().enumerate() {
                        *x = if j < seen { *x / sum } else { 0.0 };
                    }
                }
                matmul(&mut out[q0 * d..(q0 + rows) * d], View::rows(sc, rows, keys), View::rows(&v[..keys * d], keys, d), 1.0, false);
            }
        });
        let shape = q.shape();
        (tensor(out, shape, dtype), tensor(lse, Shape::new([dims.b, h, s]), dtype))
    }

    fn flash_attention_backward(
        dout: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = q.dtype();
        let (q_shape, k_shape) = (q.shape(), k.shape());
        let [dout, q, k, v, out, lse] = [dout, q, k, v, out, lse].map(|t| dense(cast(t, DType::F32)));
        let dims = Dims::of(&q, &k);
        let Dims { h, s, t, d, .. } = dims;
        let group = dims.group();
        let (dos, qs, ks, vs, os, lses) =
            (dout.storage::<f32>(), q.storage::<f32>(), k.storage::<f32>(), v.storage::<f32>(), out.storage::<f32>(), lse.storage::<f32>());
        let mut dq = vec![0.0f32; qs.len()];
        let mut dk = vec![0.0f32; ks.len()];
        let mut dv = vec![0.0f32; vs.len()];
        // One task per (batch row, key/value head): its keys' gradients and its query heads'.
        dq.par_chunks_mut(group * s * d).zip(dk.par_chunks_mut(t * d).zip(dv.par_chunks_mut(t * d))).enumerate().for_each(
            |(bg, (dq, (dk, dv)))| {
                let row = bg / dims.hk;
                let (k, v) = (&ks[bg * t * d..(bg + 1) * t * d], &vs[bg * t * d..(bg + 1) * t * d]);
                let mut p = vec![0.0f32; QUERY_BLOCK * t];
                let mut ds = vec![0.0f32; QUERY_BLOCK * t];
                for g in 0..group {
                    let head = (bg % dims.hk) * group + g;
                    let bh = row * h + head;
                    let span = bh * s * d..(bh + 1) * s * d;
                    let (q, dout, o) = (&qs[span.clone()], &dos[span.clone()], &os[span]);
                    let lse = &lses[bh * s..(bh + 1) * s];
                    let dq = &mut dq[g * s * d..(g + 1) * s * d];
                    for q0 in (0..s).step_by(QUERY_BLOCK) {
                        let rows = QUERY_BLOCK.min(s - q0);
                        let keys = spec.visible(row, q0 + rows - 1, t);
                        if keys == 0 {
                            continue;
                        }
                        let (qb, dob) =
                            (View::rows(&q[q0 * d..(q0 + rows) * d], rows, d), View::rows(&dout[q0 * d..(q0 + rows) * d], rows, d));
                        let (kb, vb) = (View::rows(&k[..keys * d], keys, d), View::rows(&v[..keys * d], keys, d));
                        let pb = &mut p[..rows * keys];
                        block_scores(pb, qb, kb, &spec, head);
                        probabilities(pb, keys, |r| spec.visible(row, q0 + r, t), |r| lse[q0 + r]);
                        // dV += P^T dO, dP = dO V^T.
                        matmul(&mut dv[..keys * d], View::rows(pb, rows, keys).t(), dob, 1.0, true);
                        let dsb = &mut ds[..rows * keys];
                        matmul(dsb, dob, vb.t(), 1.0, false);
                        // dS = P (dP - rowsum(dO O)).
                        for (r, (dsrow, prow)) in dsb.chunks_mut(keys).zip(pb.chunks(keys)).enumerate() {
                            let i = q0 + r;
                            let delta: f32 = (0..d).map(|c| dout[i * d + c] * o[i * d + c]).sum();
                            for (x, p) in dsrow.iter_mut().zip(prow) {
                                *x = p * (*x - delta);
                            }
                        }
                        // dQ = scale dS K, dK += scale dS^T Q.
                        matmul(&mut dq[q0 * d..(q0 + rows) * d], View::rows(dsb, rows, keys), kb, spec.scale, false);
                        matmul(&mut dk[..keys * d], View::rows(dsb, rows, keys).t(), qb, spec.scale, true);
                    }
                }
            },
        );
        (tensor(dq, q_shape, dtype), tensor(dk, k_shape.clone(), dtype), tensor(dv, k_shape, dtype))
    }
}
