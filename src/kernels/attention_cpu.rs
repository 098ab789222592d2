//! Attention on the CPU (flex): per (batch row, head), blocks of [`QUERY_BLOCK`] queries against
//! the keys they see, the block's scores in a scratch buffer of the task's own (never the whole
//! `[B, H, S, T]`), and the products through `gemm` on one thread per task (rayon splits tasks).
//! The backward task owns one key/value head and the query heads that read it, so GQA's key and
//! value gradients add up without races; the dense bias's gradient task owns one `[S, T]` slab of
//! it and adds the batch rows that read it in order.

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

/// One (batch row, head)'s dense bias `[S, T]`, when the spec has one; `bias` is `[1 or B, H, S, T]`.
fn dense_slab<'a>(bias: &'a [f32], spec: &AttentionSpec, dims: Dims, row: usize, head: usize) -> Option<&'a [f32]> {
    let slab = dims.s * dims.t;
    spec.dense_bias.then(|| {
        let row = if bias.len() == dims.h * slab { 0 } else { row };
        &bias[(row * dims.h + head) * slab..][..slab]
    })
}

/// A block of queries `q0..q0 + q.rows` of one (batch row, head) against the keys `k` they see.
#[derive(Clone, Copy)]
struct Block<'a> {
    q0: usize,
    q: View<'a>,
    k: View<'a>,
    head: usize,
    /// The head's dense bias `[S, T]`, if any.
    dense: Option<&'a [f32]>,
    t: usize,
}

impl Block<'_> {
    /// `scale q k^T + bias` into `scores` (`q.rows x k.rows`); the keys a row does not see are left
    /// for the caller to mask.
    fn scores(&self, scores: &mut [f32], spec: &AttentionSpec) {
        let keys = self.k.rows;
        matmul(scores, self.q, self.k.t(), spec.scale, false);
        // Most models add nothing: no second pass over the scores for them.
        if spec.alibi_slopes.is_empty() && self.dense.is_none() {
            return;
        }
        for (r, row) in scores.chunks_mut(keys).enumerate() {
            let dense = self.dense.map(|d| &d[(self.q0 + r) * self.t..][..keys]);
            for (j, x) in row.iter_mut().enumerate() {
                *x += spec.alibi(self.head, j) + dense.map_or(0.0, |d| d[j]);
            }
        }
    }

    /// The probabilities `p` (`exp(s - lse)`, 0 beyond the keys a query sees) and the score
    /// gradients `ds = p (dout v^T - rowsum(dout o))` of the block, both `rows x keys`; `dout`,
    /// `o` and `lse` are the block's rows.
    #[allow(clippy::too_many_arguments)]
    fn gradients(
        &self,
        p: &mut [f32],
        ds: &mut [f32],
        v: View<'_>,
        dout: View<'_>,
        o: &[f32],
        lse: &[f32],
        visible: impl Fn(usize) -> usize,
        spec: &AttentionSpec,
    ) {
        let (keys, d) = (self.k.rows, self.q.cols);
        self.scores(p, spec);
        for (r, row) in p.chunks_mut(keys).enumerate() {
            let (seen, l) = (visible(r), lse[r]);
            for (j, x) in row.iter_mut().enumerate() {
                *x = if j < seen { (*x - l).exp() } else { 0.0 };
            }
        }
        matmul(ds, dout, v.t(), 1.0, false);
        for (r, (dsrow, prow)) in ds.chunks_mut(keys).zip(p.chunks(keys)).enumerate() {
            let delta: f32 = (0..d).map(|c| dout.data[r * d + c] * o[r * d + c]).sum();
            for (x, p) in dsrow.iter_mut().zip(prow) {
                *x = p * (*x - delta);
            }
        }
    }
}

/// The blocks of [`QUERY_BLOCK`] queries of `0..s` and the keys each sees at most (its last
/// query's), skipping blocks that see none.
fn query_blocks(s: usize, t: usize, row: usize, spec: &AttentionSpec) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    (0..s).step_by(QUERY_BLOCK).map(move |q0| {
        let rows = QUERY_BLOCK.min(s - q0);
        (q0, rows, spec.visible(row, q0 + rows - 1, t))
    })
}

impl AttentionOps for Flex {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = q.dtype();
        let [q, k, v, bias] = [q, k, v, bias].map(|t| dense(cast(t, DType::F32)));
        let dims = Dims::of(&q, &k);
        let Dims { h, s, t, d, .. } = dims;
        let (qs, ks, vs, biases) = (q.storage::<f32>(), k.storage::<f32>(), v.storage::<f32>(), bias.storage::<f32>());
        let mut out = vec![0.0f32; qs.len()];
        let mut lse = vec![0.0f32; dims.b * h * s];
        out.par_chunks_mut(s * d).zip(lse.par_chunks_mut(s)).enumerate().for_each(|(bh, (out, lse))| {
            let (row, head) = (bh / h, bh % h);
            let kv = (row * dims.hk + head / dims.group()) * t * d;
            let (k, v) = (&ks[kv..kv + t * d], &vs[kv..kv + t * d]);
            let q = &qs[bh * s * d..(bh + 1) * s * d];
            let dense = dense_slab(biases, &spec, dims, row, head);
            let mut scores = vec![0.0f32; QUERY_BLOCK * t];
            for (q0, rows, keys) in query_blocks(s, t, row, &spec) {
                if keys == 0 {
                    // Nothing to attend to (an empty row): output 0, and no probability anywhere.
                    lse[q0..q0 + rows].fill(f32::INFINITY);
                    continue;
                }
                let sc = &mut scores[..rows * keys];
                let block = Block {
                    q0,
                    q: View::rows(&q[q0 * d..(q0 + rows) * d], rows, d),
                    k: View::rows(&k[..keys * d], keys, d),
                    head,
                    dense,
                    t,
                };
                block.scores(sc, &spec);
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
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = q.dtype();
        let (q_shape, k_shape) = (q.shape(), k.shape());
        let inputs = Inputs::new([dout, q, k, v, bias, out, lse]);
        let dims = inputs.dims;
        let Dims { s, t, d, .. } = dims;
        let group = dims.group();
        let mut dq = vec![0.0f32; inputs.q().len()];
        let mut dk = vec![0.0f32; inputs.k().len()];
        let mut dv = vec![0.0f32; inputs.v().len()];
        // One task per (batch row, key/value head): its keys' gradients and its query heads'.
        dq.par_chunks_mut(group * s * d).zip(dk.par_chunks_mut(t * d).zip(dv.par_chunks_mut(t * d))).enumerate().for_each(
            |(bg, (dq, (dk, dv)))| {
                let row = bg / dims.hk;
                let mut p = vec![0.0f32; QUERY_BLOCK * t];
                let mut ds = vec![0.0f32; QUERY_BLOCK * t];
                for g in 0..group {
                    let head = (bg % dims.hk) * group + g;
                    let dq = &mut dq[g * s * d..(g + 1) * s * d];
                    for (q0, rows, keys) in query_blocks(s, t, row, &spec) {
                        if keys == 0 {
                            continue;
                        }
                        let (pb, dsb) = (&mut p[..rows * keys], &mut ds[..rows * keys]);
                        let block = inputs.gradients(pb, dsb, &spec, row, head, q0, rows, keys);
                        // dV += P^T dO, dQ = scale dS K, dK += scale dS^T Q.
                        let (kb, dob) = (block.k, inputs.rows(inputs.dout(), row, head, q0, rows));
                        matmul(&mut dv[..keys * d], View::rows(pb, rows, keys).t(), dob, 1.0, true);
                        matmul(&mut dq[q0 * d..(q0 + rows) * d], View::rows(dsb, rows, keys), kb, spec.scale, false);
                        matmul(&mut dk[..keys * d], View::rows(dsb, rows, keys).t(), block.q, spec.scale, true);
                    }
                }
            },
        );
        (tensor(dq, q_shape, dtype), tensor(dk, k_shape.clone(), dtype), tensor(dv, k_shape, dtype))
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
        let dtype = q.dtype();
        let bias_shape = bias.shape();
        let inputs = Inputs::new([dout, q, k, v, bias, out, lse]);
        let dims = inputs.dims;
        let Dims { h, s, t, .. } = dims;
        let mut dbias = vec![0.0f32; inputs.bias().len()];
        let shared = dbias.len() == h * s * t;
        // One task per (bias row, head) slab: the batch rows it serves add up in order, no races.
        dbias.par_chunks_mut(s * t).enumerate().for_each(|(bh, slab)| {
            let head = bh % h;
            let rows = if shared { 0..dims.b } else { bh / h..bh / h + 1 };
            let mut p = vec![0.0f32; QUERY_BLOCK * t];
            let mut ds = vec![0.0f32; QUERY_BLOCK * t];
            for row in rows {
                for (q0, n, keys) in query_blocks(s, t, row, &spec) {
                    if keys == 0 {
                        continue;
                    }
                    let (pb, dsb) = (&mut p[..n * keys], &mut ds[..n * keys]);
                    inputs.gradients(pb, dsb, &spec, row, head, q0, n, keys);
                    for (r, dsrow) in dsb.chunks(keys).enumerate() {
                        for (acc, x) in slab[(q0 + r) * t..][..keys].iter_mut().zip(dsrow) {
                            *acc += x;
                        }
                    }
                }
            }
        });
        tensor(dbias, bias_shape, dtype)
    }
}

/// The backward passes' inputs as dense f32 tensors.
struct Inputs {
    /// dout, q, k, v, bias, out, lse
    tensors: [FlexTensor; 7],
    dims: Dims,
}

impl Inputs {
    fn new(tensors: [FloatTensor<Flex>; 7]) -> Self {
        let tensors = tensors.map(|t| dense(cast(t, DType::F32)));
        let dims = Dims::of(&tensors[1], &tensors[2]);
        Self { tensors, dims }
    }

    fn dout(&self) -> &[f32] {
        self.tensors[0].storage::<f32>()
    }

    fn q(&self) -> &[f32] {
        self.tensors[1].storage::<f32>()
    }

    fn k(&self) -> &[f32] {
        self.tensors[2].storage::<f32>()
    }

    fn v(&self) -> &[f32] {
        self.tensors[3].storage::<f32>()
    }

    fn bias(&self) -> &[f32] {
        self.tensors[4].storage::<f32>()
    }

    fn out(&self) -> &[f32] {
        self.tensors[5].storage::<f32>()
    }

    fn lse(&self) -> &[f32] {
        self.tensors[6].storage::<f32>()
    }

    /// Rows `q0..q0 + rows` of query head `head` of batch row `row` in `x` (`[B, H, S, D]`).
    fn rows<'a>(&self, x: &'a [f32], row: usize, head: usize, q0: usize, rows: usize) -> View<'a> {
        let Dims { h, s, d, .. } = self.dims;
        View::rows(&x[((row * h + head) * s + q0) * d..][..rows * d], rows, d)
    }

    /// The probabilities and score gradients (see [`Block::gradients`]) of queries
    /// `q0..q0 + rows` of (batch row, head) against their first `keys` keys; returns the block.
    #[allow(clippy::too_many_arguments)]
    fn gradients(
        &self,
        p: &mut [f32],
        ds: &mut [f32],
        spec: &AttentionSpec,
        row: usize,
        head: usize,
        q0: usize,
        rows: usize,
        keys: usize,
    ) -> Block<'_> {
        let Dims { h, hk, s, t, d, .. } = self.dims;
        let kv = (row * hk + head / self.dims.group()) * t * d;
        let (k, v) = (View::rows(&self.k()[kv..][..keys * d], keys, d), View::rows(&self.v()[kv..][..keys * d], keys, d));
        let block = Block {
            q0,
            q: self.rows(self.q(), row, head, q0, rows),
            k,
            head,
            dense: dense_slab(self.bias(), spec, self.dims, row, head),
            t,
        };
        let (dout, o) = (self.rows(self.dout(), row, head, q0, rows), self.rows(self.out(), row, head, q0, rows));
        let lse = &self.lse()[(row * h + head) * s + q0..][..rows];
        block.gradients(p, ds, v, dout, o.data, lse, |r| spec.visible(row, q0 + r, t), spec);
        block
    }
}
