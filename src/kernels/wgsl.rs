//! The wgpu side: raw WGSL kernels from shaders/ launched on burn's cubecl runtime.

use burn::backend::Backend;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous, kernel_source};
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim, prelude::KernelId};
use burn::tensor::{DType, Shape};
use derive_new::new;

use super::attention::{ATTENTION_MAX_HEAD_DIM, AttentionOps, AttentionSpec};
use super::frozen::{FrozenLinearOps, QuantFormat, row_blocks};
use super::fused::{FusedOps, rms_norm_dw_ops};
use super::tune::{self, DwKey, DwPath};
use super::{AdamWHyper, AdamWOps, MaskedAdamWOps, MaskedGradOps, dense_linear, gather_matmul_dw, swapped_gather_matmul_dw};

kernel_source!(MaskedDwSource, "../../shaders/masked_dw.wgsl");
kernel_source!(MaskedAdamWSource, "../../shaders/masked_adamw.wgsl");
kernel_source!(AdamWSource, "../../shaders/adamw.wgsl");
kernel_source!(RmsNormSource, "../../shaders/rms_norm.wgsl");
kernel_source!(SwigluSource, "../../shaders/swiglu.wgsl");
kernel_source!(AttentionSource, "../../shaders/attention.wgsl");
kernel_source!(DequantizeSource, "../../shaders/dequantize.wgsl");

/// The entries of shaders/attention.wgsl.
#[derive(Clone, Copy)]
enum AttentionPass {
    Forward = 0,
    QueryGrad = 1,
    KeyValueGrad = 2,
    BiasGrad = 3,
}

/// The masked dW kernel's workgroup: 8 x 8 threads computing a 64 x 64 output block.
const DW_THREADS: u32 = 8;
const DW_BLOCK: u32 = 64;
/// Threads per workgroup of the element-wise shaders (one element each).
const ELEMENTWISE_WORKGROUP: u32 = 256;
/// Threads per workgroup of the row-wise shaders (one row per workgroup; rows are a few hundred
/// to a few thousand wide).
const ROW_WORKGROUP: u32 = 128;
/// Workgroups per grid row for element-wise kernels (each grid dimension is capped at 65535).
const GRID_ROW: u32 = 4096;

struct MaskedDw {
    dtype: DType,
}

impl KernelSource for MaskedDw {
    fn source(&self) -> SourceTemplate {
        MaskedDwSource::new().source().register("elem", self.dtype.name())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.dtype.name())
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// One of the raw shaders in workgroups of `workgroup` threads, `shader` naming it in the kernel's
/// id (the source is the same for every size and type, so both are in the id too); `pass` picks
/// an entry of a shader that has several (a forward and its gradients).
struct Shader {
    dtype: DType,
    shader: &'static str,
    workgroup: u32,
    pass: u32,
    template: fn() -> SourceTemplate,
}

impl Shader {
    fn adamw(dtype: DType) -> Self {
        Self { dtype, shader: "adamw", workgroup: ELEMENTWISE_WORKGROUP, pass: 0, template: || AdamWSource::new().source() }
    }

    fn masked_adamw(dtype: DType) -> Self {
        Self { dtype, shader: "masked_adamw", workgroup: ELEMENTWISE_WORKGROUP, pass: 0, template: || MaskedAdamWSource::new().source() }
    }

    /// shaders/rms_norm.wgsl: pass 0 the forward, 1 the input gradient.
    fn rms_norm(dtype: DType, pass: u32) -> Self {
        Self { dtype, shader: "rms_norm", workgroup: ROW_WORKGROUP, pass, template: || RmsNormSource::new().source() }
    }

    /// shaders/swiglu.wgsl: pass 0 the forward, 1 both gradients.
    fn swiglu(dtype: DType, pass: u32) -> Self {
        Self { dtype, shader: "swiglu", workgroup: ELEMENTWISE_WORKGROUP, pass, template: || SwigluSource::new().source() }
    }

    /// shaders/dequantize.wgsl for the ggml type `ty` (its pass is the type's number).
    fn dequantize(ty: crate::io::gguf::GgmlType) -> Self {
        Self {
            dtype: DType::F32,
            shader: "dequantize",
            workgroup: ELEMENTWISE_WORKGROUP,
            pass: ty.id(),
            template: || DequantizeSource::new().source(),
        }
    }

    fn attention(dtype: DType, pass: AttentionPass) -> Self {
        Self {
            dtype,
            shader: "attention",
            workgroup: ELEMENTWISE_WORKGROUP,
            pass: pass as u32,
            template: || AttentionSource::new().source(),
        }
    }

    /// Launches the shader on a grid of `groups` workgroups (see [`grid`]) over `buffers`.
    fn launch(self, on: &CubeTensor, groups: (u32, u32), buffers: Vec<burn::cubecl::server::BufferBinding>) {
        let cube_dim = CubeDim::new_1d(self.workgroup);
        on.client.launch(
            Box::new(SourceKernel::new(self, cube_dim)),
            CubeCount::Static(groups.0, groups.1, 1),
            KernelArguments::new().with_buffers(buffers),
        );
    }
}

impl KernelSource for Shader {
    fn source(&self) -> SourceTemplate {
        (self.template)()
            .register("workgroup", self.workgroup.to_string())
            .register("elem", self.dtype.name())
            .register("pass", self.pass.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.shader, self.workgroup, self.pass, self.dtype.name()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

fn u32_buffer(like: &CubeTensor, values: &[u32]) -> burn::cubecl::server::Handle {
    like.client.create_from_slice(bytemuck::cast_slice(values))
}

/// A tensor this kernel may write into: the same buffer when nobody else holds it, else a copy.
fn writable(t: CubeTensor) -> CubeTensor {
    let t = into_contiguous(t);
    if t.can_mut() { t } else { into_contiguous(CubeBackend::float_add_scalar(t, 0.0.into())) }
}

impl MaskedGradOps for CubeBackend {
    fn masked_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, rows: Vec<u32>, path: DwPath) -> FloatTensor<Self> {
        match path {
            DwPath::Tiled => tiled_dw(dy, x, &rows),
            DwPath::GatherMatmul => gather_matmul_dw::<Self>(dy, x, rows),
            // Contiguous, so the caller (AdamW, the gradient sum) pays no strided reads.
            DwPath::SwappedGatherMatmul => into_contiguous(swapped_gather_matmul_dw::<Self>(dy, x, rows)),
            DwPath::Auto => {
                let key = DwKey::new(format!("{:?}", x.device), x.meta.shape()[0], dy.meta.shape()[1], x.meta.shape()[1], rows.len());
                let device = x.device.clone();
                let chosen = tune::pick(key, |p| {
                    let run = || drop(Self::masked_dw(dy.clone(), x.clone(), rows.clone(), p));
                    tune::timed(run, || Self::sync(&device).expect("wgpu device lost while tuning masked dW"))
                });
                Self::masked_dw(dy, x, rows, chosen)
            }
        }
    }

    fn masked_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, _w_rows: FloatTensor<Self>, _rows: Vec<u32>) -> FloatTensor<Self> {
        dense_linear::<Self>(x, w)
    }
}

impl MaskedAdamWOps for CubeBackend {
    fn masked_adamw(
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        rows: Vec<u32>,
        hp: AdamWHyper,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (w, m, v, grad) = (writable(w), writable(m), writable(v), into_contiguous(grad));
        let d_in = w.meta.shape()[1];
        let total = (rows.len() * d_in) as u32;
        if total == 0 {
            return (w, m, v);
        }
        let rows_buf = u32_buffer(&w, &rows);
        let params = w.client.create_from_slice(bytemuck::cast_slice(&hp.as_array()));
        let groups = grid(total.div_ceil(ELEMENTWISE_WORKGROUP));
        let info = u32_buffer(&w, &[d_in as u32, rows.len() as u32, groups.0 * ELEMENTWISE_WORKGROUP]);
        Shader::masked_adamw(w.dtype).launch(
            &w,
            groups,
            vec![
                w.handle.clone().binding(),
                grad.handle.binding(),
                m.handle.clone().binding(),
                v.handle.clone().binding(),
                rows_buf.binding(),
                params.binding(),
                info.binding(),
            ],
        );
        (w, m, v)
    }
}

impl AdamWOps for CubeBackend {
    fn adamw(
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hp: AdamWHyper,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (w, m, v, grad) = (writable(w), writable(m), writable(v), into_contiguous(grad));
        let total = w.meta.shape().num_elements() as u32;
        if total == 0 {
            return (w, m, v);
        }
        let params = w.client.create_from_slice(bytemuck::cast_slice(&hp.as_array()));
        let groups = grid(total.div_ceil(ELEMENTWISE_WORKGROUP));
        let info = u32_buffer(&w, &[total, groups.0 * ELEMENTWISE_WORKGROUP]);
        Shader::adamw(w.dtype).launch(
            &w,
            groups,
            vec![
                w.handle.clone().binding(),
                grad.handle.binding(),
                m.handle.clone().binding(),
                v.handle.clone().binding(),
                params.binding(),
                info.binding(),
            ],
        );
        (w, m, v)
    }
}

impl FusedOps for CubeBackend {
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let (x, w) = (into_contiguous(x), into_contiguous(w));
        let y = empty(&x, x.meta.shape().clone());
        if let Some((groups, info)) = row_grid(&x, eps) {
            Shader::rms_norm(x.dtype, 0).launch(
                &x,
                groups,
                vec![
                    placeholder(&x).handle.binding(),
                    x.handle.clone().binding(),
                    w.handle.binding(),
                    y.handle.clone().binding(),
                    info.binding(),
                ],
            );
        }
        y
    }

    fn rms_norm_dx(dy: FloatTensor<Self>, x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let (dy, x, w) = (into_contiguous(dy), into_contiguous(x), into_contiguous(w));
        let dx = empty(&x, x.meta.shape().clone());
        if let Some((groups, info)) = row_grid(&x, eps) {
            Shader::rms_norm(x.dtype, 1).launch(
                &x,
                groups,
                vec![dy.handle.binding(), x.handle.clone().binding(), w.handle.binding(), dx.handle.clone().binding(), info.binding()],
            );
        }
        dx
    }

    fn rms_norm_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        rms_norm_dw_ops::<Self>(dy, x, eps)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (gate, up) = (into_contiguous(gate), into_contiguous(up));
        let y = empty(&gate, gate.meta.shape().clone());
        if let Some((groups, info)) = element_grid(&gate) {
            Shader::swiglu(gate.dtype, 0).launch(
                &gate,
                groups,
                vec![
                    placeholder(&gate).handle.binding(),
                    gate.handle.clone().binding(),
                    up.handle.binding(),
                    y.handle.clone().binding(),
                    placeholder(&gate).handle.binding(),
                    info.binding(),
                ],
            );
        }
        y
    }

    fn swiglu_backward(dy: FloatTensor<Self>, gate: FloatTensor<Self>, up: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dy, gate, up) = (into_contiguous(dy), into_contiguous(gate), into_contiguous(up));
        let (d_gate, d_up) = (empty(&gate, gate.meta.shape().clone()), empty(&gate, gate.meta.shape().clone()));
        if let Some((groups, info)) = element_grid(&gate) {
            Shader::swiglu(gate.dtype, 1).launch(
                &gate,
                groups,
                vec![
                    dy.handle.binding(),
                    gate.handle.clone().binding(),
                    up.handle.binding(),
                    d_gate.handle.clone().binding(),
                    d_up.handle.clone().binding(),
                    info.binding(),
                ],
            );
        }
        (d_gate, d_up)
    }
}

impl AttentionOps for CubeBackend {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [q, k, v, bias] = [q, k, v, bias].map(into_contiguous);
        let [b, h, s, _] = dims4(&q);
        let out = empty(&q, q.meta.shape().clone());
        let lse = empty(&q, Shape::new([b, h, s]));
        let call = AttentionCall::new(&q, &k, &bias, &spec);
        call.launch(
            AttentionPass::Forward,
            [
                q.handle.clone(),
                k.handle.clone(),
                v.handle.clone(),
                lse.handle.clone(),
                placeholder(&q).handle,
                placeholder(&q).handle,
                out.handle.clone(),
                placeholder(&q).handle,
            ],
        );
        (out, lse)
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
        let grads = AttentionGrads::new([dout, q, k, v, bias, out, lse], &spec);
        let (q, k, v) = (&grads.inputs[1], &grads.inputs[2], &grads.inputs[3]);
        let (dq, dk, dv) = (empty(q, q.meta.shape().clone()), empty(k, k.meta.shape().clone()), empty(v, v.meta.shape().clone()));
        grads.launch(AttentionPass::QueryGrad, dq.handle.clone(), placeholder(q).handle);
        grads.launch(AttentionPass::KeyValueGrad, dk.handle.clone(), dv.handle.clone());
        (dq, dk, dv)
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
        let grads = AttentionGrads::new([dout, q, k, v, bias, out, lse], &spec);
        let bias = &grads.inputs[4];
        let dbias = empty(bias, bias.meta.shape().clone());
        grads.launch(AttentionPass::BiasGrad, dbias.handle.clone(), placeholder(bias).handle);
        dbias
    }
}

fn dims4(t: &CubeTensor) -> [usize; 4] {
    let s = t.meta.shape();
    [s[0], s[1], s[2], s[3]]
}

/// What every gradient pass of shaders/attention.wgsl reads: the inputs, contiguous, and
/// `rowsum(dout * out)` per query.
struct AttentionGrads {
    /// dout, q, k, v, bias, out, lse
    inputs: [CubeTensor; 7],
    delta: CubeTensor,
    call: AttentionCall,
}

impl AttentionGrads {
    fn new(inputs: [CubeTensor; 7], spec: &AttentionSpec) -> Self {
        let inputs = inputs.map(into_contiguous);
        let [dout, q, k, _, bias, out, _] = &inputs;
        let delta = into_contiguous(CubeBackend::float_sum_dim(CubeBackend::float_mul(dout.clone(), out.clone()), 3));
        let call = AttentionCall::new(q, k, bias, spec);
        Self { inputs, delta, call }
    }

    /// Launches gradient `pass` writing `out_a` and `out_b`.
    fn launch(&self, pass: AttentionPass, out_a: burn::cubecl::server::Handle, out_b: burn::cubecl::server::Handle) {
        let [dout, q, k, v, _, _, lse] = &self.inputs;
        let tensors = [&q.handle, &k.handle, &v.handle, &lse.handle, &dout.handle, &self.delta.handle].map(Clone::clone);
        let [a, b, c, d, e, f] = tensors;
        self.call.launch(pass, [a, b, c, d, e, f, out_a, out_b]);
    }
}

/// One attention call's sizes and masks as shaders/attention.wgsl reads them.
struct AttentionCall {
    on: CubeTensor,
    dims: [usize; 6],
    /// Batch rows of the dense bias (1 or B).
    bias_rows: usize,
    lengths: burn::cubecl::server::Handle,
    slopes: burn::cubecl::server::Handle,
    bias: burn::cubecl::server::Handle,
    spec: AttentionSpec,
}

impl AttentionCall {
    fn new(q: &CubeTensor, k: &CubeTensor, bias: &CubeTensor, spec: &AttentionSpec) -> Self {
        let ([b, h, s, d], [_, hk, t, _]) = (dims4(q), dims4(k));
        assert!(d <= ATTENTION_MAX_HEAD_DIM, "attention: head_dim {d} is above the shader's {ATTENTION_MAX_HEAD_DIM}");
        // Placeholders keep the binding layout when there is nothing to read.
        let lengths = if spec.key_lengths.is_empty() { vec![0] } else { spec.key_lengths.clone() };
        let slopes = if spec.alibi_slopes.is_empty() { vec![0.0] } else { spec.alibi_slopes.clone() };
        Self {
            on: q.clone(),
            dims: [b, h, hk, s, t, d],
            bias_rows: if spec.dense_bias { dims4(bias)[0] } else { 1 },
            lengths: u32_buffer(q, &lengths),
            slopes: q.client.create_from_slice(bytemuck::cast_slice(&slopes)),
            bias: bias.handle.clone(),
            spec: spec.clone(),
        }
    }

    /// Launches `pass` over its rows (queries, keys for the dk/dv pass, bias elements for the bias
    /// gradient) with the tensor buffers in binding order 0-7.
    fn launch(&self, pass: AttentionPass, tensors: [burn::cubecl::server::Handle; 8]) {
        let [b, h, hk, s, t, d] = self.dims;
        let rows = match pass {
            AttentionPass::KeyValueGrad => b * hk * t,
            AttentionPass::BiasGrad => self.bias_rows * h * s * t,
            _ => b * h * s,
        } as u32;
        if rows == 0 {
            return;
        }
        let groups = grid(rows.div_ceil(ELEMENTWISE_WORKGROUP));
        let sp = &self.spec;
        let info = [
            b as u32,
            h as u32,
            hk as u32,
            s as u32,
            t as u32,
            d as u32,
            sp.scale.to_bits(),
            sp.causal_past.is_some() as u32,
            sp.causal_past.unwrap_or(0),
            !sp.key_lengths.is_empty() as u32,
            !sp.alibi_slopes.is_empty() as u32,
            groups.0 * ELEMENTWISE_WORKGROUP,
            sp.dense_bias as u32,
            self.bias_rows as u32,
        ];
        let mut buffers: Vec<_> = tensors.into_iter().map(|t| t.binding()).collect();
        buffers.extend([
            self.lengths.clone().binding(),
            self.slopes.clone().binding(),
            u32_buffer(&self.on, &info).binding(),
            self.bias.clone().binding(),
        ]);
        Shader::attention(self.on.dtype, pass).launch(&self.on, groups, buffers);
    }
}

/// Workgroups (x, y) for `groups` workgroups in rows of [`GRID_ROW`] (each grid dimension is
/// capped at 65535).
fn grid(groups: u32) -> (u32, u32) {
    (groups.min(GRID_ROW), groups.div_ceil(GRID_ROW))
}

/// One workgroup per row of `x [n, d]`, and the shaders' info `[n, d, eps bits, grid row]`;
/// `None` for no rows.
fn row_grid(x: &CubeTensor, eps: f32) -> Option<((u32, u32), burn::cubecl::server::Handle)> {
    let (n, d) = (x.meta.shape()[0] as u32, x.meta.shape()[1] as u32);
    let groups = grid(n);
    (n > 0).then(|| (groups, u32_buffer(x, &[n, d, eps.to_bits(), groups.0])))
}

/// One thread per element of `t`, and the shaders' info `[n, threads per grid row]`; `None` for
/// no elements.
fn element_grid(t: &CubeTensor) -> Option<((u32, u32), burn::cubecl::server::Handle)> {
    let n = t.meta.shape().num_elements() as u32;
    let groups = grid(n.div_ceil(ELEMENTWISE_WORKGROUP));
    (n > 0).then(|| (groups, u32_buffer(t, &[n, groups.0 * ELEMENTWISE_WORKGROUP])))
}

/// A one-element buffer for a binding the launched pass does not use (a shader with several
/// passes binds one layout for all).
fn placeholder(like: &CubeTensor) -> CubeTensor {
    empty(like, Shape::new([1]))
}

/// An uninitialised contiguous tensor of `shape` on `like`'s device, in its type.
fn empty(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let bytes = shape.num_elements().max(1) * like.dtype.size();
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), shape, like.client.empty(bytes), like.dtype)
}

/// shaders/masked_dw.wgsl over the selected rows.
fn tiled_dw(dy: CubeTensor, x: CubeTensor, rows: &[u32]) -> CubeTensor {
    let (dy, x) = (into_contiguous(dy), into_contiguous(x));
    let (n, d_out) = (dy.meta.shape()[0], dy.meta.shape()[1]);
    let d_in = x.meta.shape()[1];
    let r = rows.len();
    let out = empty(&x, Shape::new([r, d_in]));
    if r == 0 {
        return out;
    }
    let rows_buf = u32_buffer(&x, rows);
    let info = u32_buffer(&x, &[n as u32, d_out as u32, d_in as u32, r as u32]);
    let cube_dim = CubeDim::new_2d(DW_THREADS, DW_THREADS);
    let count = CubeCount::Static((d_in as u32).div_ceil(DW_BLOCK), (r as u32).div_ceil(DW_BLOCK), 1);
    x.client.launch(
        Box::new(SourceKernel::new(MaskedDw { dtype: x.dtype }, cube_dim)),
        count,
        KernelArguments::new().with_buffers(vec![
            dy.handle.binding(),
            x.handle.clone().binding(),
            rows_buf.binding(),
            out.handle.clone().binding(),
            info.binding(),
        ]),
    );
    out
}

/// Elements of a block of frozen weight rows converted to f32 at a time on the GPU: 64 MiB, half
/// of the smallest binding limit the app meets (lavapipe, egui's defaults).
const FROZEN_BLOCK_ELEMENTS: usize = 1 << 24;

/// Rows `start..start + rows` of `w` converted to f32.
fn frozen_block(w: &FloatTensor<CubeBackend>, start: usize, rows: usize) -> FloatTensor<CubeBackend> {
    let block = CubeBackend::float_slice(w.clone(), &[burn::tensor::Slice::from(start..start + rows), burn::tensor::Slice::from(..)]);
    CubeBackend::float_cast(block, burn::tensor::FloatDType::F32)
}

/// Rows `start..start + rows` of the matrix `format` stores in `blocks`, decoded to f32 by
/// shaders/dequantize.wgsl.
fn quantized_block(blocks: &IntTensor<CubeBackend>, format: &QuantFormat, start: usize, rows: usize) -> FloatTensor<CubeBackend> {
    let out = CubeBackend::float_empty(Shape::new([rows, format.cols]), &blocks.device, burn::tensor::FloatDType::F32);
    let groups = grid(((rows * format.cols) as u32).div_ceil(ELEMENTWISE_WORKGROUP));
    let info = [start, rows, format.cols, format.row_bytes()].map(|v| v as u32);
    let info = u32_buffer(blocks, &[info[0], info[1], info[2], info[3], groups.0 * ELEMENTWISE_WORKGROUP]);
    Shader::dequantize(format.ty).launch(
        blocks,
        groups,
        vec![blocks.handle.clone().binding(), out.handle.clone().binding(), info.binding()],
    );
    out
}

/// `x W^T` for a `[d_out, d_in]` weight `block(start, rows)` gives a block of rows at a time in
/// f32. Each block's product is written into its columns of one output as soon as it exists, so
/// no more than one block's product lives beside the output (a concatenation would hold two
/// copies of an LM head's logits).
fn blocked_linear(
    x: FloatTensor<CubeBackend>,
    [d_out, d_in]: [usize; 2],
    block: impl Fn(usize, usize) -> FloatTensor<CubeBackend>,
) -> FloatTensor<CubeBackend> {
    type B = CubeBackend;
    let product = |start, rows| B::float_matmul(x.clone(), B::float_transpose(block(start, rows)));
    let blocks: Vec<_> = row_blocks(d_out, d_in, FROZEN_BLOCK_ELEMENTS).collect();
    if let [(start, rows)] = blocks[..] {
        return product(start, rows);
    }
    let shape = Shape::new([x.meta.shape()[0], d_out]);
    let out = B::float_empty(shape, &x.device, burn::tensor::FloatDType::F32);
    blocks.into_iter().fold(out, |out, (start, rows)| {
        let columns = [burn::tensor::Slice::from(..), burn::tensor::Slice::from(start..start + rows)];
        B::float_slice_assign(out, &columns, product(start, rows))
    })
}

/// `dy W` for a `[d_out, d_in]` weight given a block of rows at a time (see [`blocked_linear`]).
fn blocked_linear_dx(
    dy: FloatTensor<CubeBackend>,
    [d_out, d_in]: [usize; 2],
    block: impl Fn(usize, usize) -> FloatTensor<CubeBackend>,
) -> FloatTensor<CubeBackend> {
    type B = CubeBackend;
    row_blocks(d_out, d_in, FROZEN_BLOCK_ELEMENTS)
        .map(|(start, rows)| {
            let dy_cols = B::float_slice(dy.clone(), &[burn::tensor::Slice::from(..), burn::tensor::Slice::from(start..start + rows)]);
            B::float_matmul(dy_cols, block(start, rows))
        })
        .reduce(B::float_add)
        .expect("a weight has at least one row")
}

/// The frozen products in burn's own matmul, one block of converted rows at a time (a block's f32
/// copy lives only for its product).
impl FrozenLinearOps for CubeBackend {
    fn frozen_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = [w.meta.shape()[0], w.meta.shape()[1]];
        blocked_linear(x, shape, |start, rows| frozen_block(&w, start, rows))
    }

    fn frozen_linear_dx(dy: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = [w.meta.shape()[0], w.meta.shape()[1]];
        blocked_linear_dx(dy, shape, |start, rows| frozen_block(&w, start, rows))
    }

    fn quantized_linear(x: FloatTensor<Self>, blocks: IntTensor<Self>, format: QuantFormat) -> FloatTensor<Self> {
        let blocks = quantized_words(blocks, &format);
        blocked_linear(x, [format.rows, format.cols], |start, rows| quantized_block(&blocks, &format, start, rows))
    }

    fn quantized_linear_dx(dy: FloatTensor<Self>, blocks: IntTensor<Self>, format: QuantFormat) -> FloatTensor<Self> {
        let blocks = quantized_words(blocks, &format);
        blocked_linear_dx(dy, [format.rows, format.cols], |start, rows| quantized_block(&blocks, &format, start, rows))
    }
}

/// `blocks` checked against `format`, contiguous.
fn quantized_words(blocks: IntTensor<CubeBackend>, format: &QuantFormat) -> IntTensor<CubeBackend> {
    assert_eq!(blocks.dtype, DType::U32, "quantized blocks are u32 words");
    assert_eq!(
        blocks.meta.shape().num_elements(),
        format.words(),
        "quantized blocks: {} words for a {format:?}",
        blocks.meta.shape().num_elements()
    );
    // The shader's byte offsets are u32 (a linear layer of 4 GiB is far beyond any model here).
    assert!(format.bytes() <= u32::MAX as usize, "{format:?} is too large for the dequantize shader");
    into_contiguous(blocks)
}
