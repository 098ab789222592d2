//! Frozen low-precision and block-quantized linear layers on the CPU (flex): each block of weight
//! rows is converted to f32 into one scratch buffer (in parallel), then `gemm` (on all threads)
//! multiplies it straight into its columns of the output, or adds its share of the input gradient.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::cpu::{cast, dense, tensor};
use super::frozen::{FrozenLinearOps, QuantFormat, row_blocks};
use crate::io::gguf::dequantize;

/// Elements of a block of weight rows converted to f32 at a time: 4 MiB, large enough for `gemm`
/// to run at full speed, small next to any weight worth storing in low precision.
const BLOCK_ELEMENTS: usize = 1 << 20;
/// Elements per parallel task of the conversion.
const CONVERT_CHUNK: usize = 1 << 14;

/// `w` dense, in f16, bf16 or f32 (another float type is converted to f32 whole).
fn dense_weight(w: FlexTensor) -> FlexTensor {
    match w.dtype() {
        DType::F16 | DType::BF16 | DType::F32 => dense(w),
        _ => dense(cast(w, DType::F32)),
    }
}

/// Writes rows `start..` of the [`dense_weight`] `w` (`d_in` wide) as f32 into `out`.
fn rows_as_f32(w: &FlexTensor, d_in: usize, start: usize, out: &mut [f32]) {
    let range = start * d_in..start * d_in + out.len();
    match w.dtype() {
        DType::F16 => out
            .par_chunks_mut(CONVERT_CHUNK)
            .zip(w.storage::<half::f16>()[range].par_chunks(CONVERT_CHUNK))
            .for_each(|(o, s)| s.convert_to_f32_slice(o)),
        DType::BF16 => out
            .par_chunks_mut(CONVERT_CHUNK)
            .zip(w.storage::<half::bf16>()[range].par_chunks(CONVERT_CHUNK))
            .for_each(|(o, s)| s.convert_to_f32_slice(o)),
        _ => out.copy_from_slice(&w.storage::<f32>()[range]),
    }
}

/// `c (m x n, row stride ldc) = [c +] a (m x k) b (k x n)`, every operand given by its strides.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
) {
    let ((a, a_rs, a_cs), (b, b_rs, b_cs)) = (a, b);
    // Output rows must not overlap: gemm's threads write them in parallel.
    assert!(m <= 1 || n <= ldc, "output rows overlap");
    assert!(m == 0 || n == 0 || (m - 1) * ldc + n <= c.len(), "output block out of bounds");
    assert!(m == 0 || k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len(), "left operand out of bounds");
    assert!(k == 0 || n == 0 || (k - 1) * b_rs + (n - 1) * b_cs < b.len(), "right operand out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every index `gemm` forms inside the three slices, and `c` is
    // borrowed mutably apart from `a` and `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

/// Writes rows `start..` of the matrix `format` stores in `words` as f32 into `out`, a row per
/// parallel task.
fn quantized_rows_as_f32(words: &[u32], format: &QuantFormat, start: usize, out: &mut [f32]) {
    let row_bytes = format.row_bytes();
    let bytes: &[u8] = bytemuck::cast_slice(words);
    let bytes = &bytes[start * row_bytes..];
    out.par_chunks_mut(format.cols).zip(bytes.par_chunks(row_bytes)).for_each(|(o, row)| dequantize(format.ty, row, o));
}

/// Calls `f(start, rows, block)` for each block of rows of a `[d_out, d_in]` weight, in order,
/// `fill(start, block)` having converted them to f32 into one scratch buffer.
fn each_block([d_out, d_in]: [usize; 2], fill: impl Fn(usize, &mut [f32]), mut f: impl FnMut(usize, usize, &[f32])) {
    // Sized by the first block, the largest.
    let mut scratch = vec![0.0f32; row_blocks(d_out, d_in, BLOCK_ELEMENTS).next().map_or(0, |(_, rows)| rows * d_in)];
    for (start, rows) in row_blocks(d_out, d_in, BLOCK_ELEMENTS) {
        let block = &mut scratch[..rows * d_in];
        fill(start, block);
        f(start, rows, block);
    }
}

/// `x W^T` for `x [n, d_in]`, `W [d_out, d_in]` converted a block of rows at a time by `fill`.
fn blocked_linear(x: FlexTensor, [d_out, d_in]: [usize; 2], fill: impl Fn(usize, &mut [f32])) -> FlexTensor {
    let x = dense(cast(x, DType::F32));
    let n = x.shape()[0];
    assert_eq!(x.shape()[1], d_in, "frozen linear: x [n, {}] against a weight [{d_out}, {d_in}]", x.shape()[1]);
    let xs = x.storage::<f32>();
    let mut y = vec![0.0f32; n * d_out];
    // y[:, start..start + rows] = x block^T: the block read transposed through its strides.
    each_block([d_out, d_in], fill, |start, rows, block| {
        gemm_into(n, rows, d_in, &mut y[start..], d_out, false, (xs, d_in, 1), (block, 1, d_in))
    });
    tensor(y, Shape::new([n, d_out]), DType::F32)
}

/// `dy W` for `dy [n, d_out]`, `W [d_out, d_in]` converted a block of rows at a time by `fill`.
fn blocked_linear_dx(dy: FlexTensor, [d_out, d_in]: [usize; 2], fill: impl Fn(usize, &mut [f32])) -> FlexTensor {
    let dy = dense(cast(dy, DType::F32));
    let n = dy.shape()[0];
    assert_eq!(dy.shape()[1], d_out, "frozen linear dx: dy [n, {}] against a weight [{d_out}, {d_in}]", dy.shape()[1]);
    let dys = dy.storage::<f32>();
    let mut dx = vec![0.0f32; n * d_in];
    // dx += dy[:, start..start + rows] block.
    each_block([d_out, d_in], fill, |start, rows, block| {
        gemm_into(n, d_in, rows, &mut dx, d_in, start > 0, (&dys[start..], d_out, 1), (block, d_in, 1))
    });
    tensor(dx, Shape::new([n, d_in]), DType::F32)
}

/// `blocks` checked against `format`, as dense u32 words.
fn quantized_words(blocks: IntTensor<Flex>, format: &QuantFormat) -> FlexTensor {
    let blocks = dense(blocks);
    assert_eq!(blocks.dtype(), DType::U32, "quantized blocks are u32 words");
    assert_eq!(blocks.shape().num_elements(), format.words(), "quantized blocks: {} words for a {format:?}", blocks.shape().num_elements());
    blocks
}

impl FrozenLinearOps for Flex {
    fn frozen_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let w = dense_weight(w);
        let shape = [w.shape()[0], w.shape()[1]];
        blocked_linear(x, shape, |start, block| rows_as_f32(&w, shape[1], start, block))
    }

    fn frozen_linear_dx(dy: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let w = dense_weight(w);
        let shape = [w.shape()[0], w.shape()[1]];
        blocked_linear_dx(dy, shape, |start, block| rows_as_f32(&w, shape[1], start, block))
    }

    fn quantized_linear(x: FloatTensor<Self>, blocks: IntTensor<Self>, format: QuantFormat) -> FloatTensor<Self> {
        let blocks = quantized_words(blocks, &format);
        let words = blocks.storage::<u32>();
        blocked_linear(x, [format.rows, format.cols], |start, block| quantized_rows_as_f32(words, &format, start, block))
    }

    fn quantized_linear_dx(dy: FloatTensor<Self>, blocks: IntTensor<Self>, format: QuantFormat) -> FloatTensor<Self> {
        let blocks = quantized_words(blocks, &format);
        let words = blocks.storage::<u32>();
        blocked_linear_dx(dy, [format.rows, format.cols], |start, block| quantized_rows_as_f32(words, &format, start, block))
    }
}
