//! The wgpu side: raw WGSL kernels from shaders/ launched on burn's cubecl runtime.

use burn::backend::Backend;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous, kernel_source};
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim, prelude::KernelId};
use burn::tensor::{DType, Shape};
use derive_new::new;

use super::tune::{self, DwKey, DwPath};
use super::{AdamWHyper, AdamWOps, MaskedAdamWOps, MaskedGradOps, dense_linear, gather_matmul_dw, swapped_gather_matmul_dw};

kernel_source!(MaskedDwSource, "../../shaders/masked_dw.wgsl");
kernel_source!(MaskedAdamWSource, "../../shaders/masked_adamw.wgsl");
kernel_source!(AdamWSource, "../../shaders/adamw.wgsl");

/// The masked dW kernel's workgroup: 8 x 8 threads computing a 64 x 64 output block.
const DW_THREADS: u32 = 8;
const DW_BLOCK: u32 = 64;
const ADAMW_WORKGROUP: u32 = 256;
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

/// The element-wise AdamW shaders (whole tensors, selected rows): one thread per element in
/// workgroups of [`ADAMW_WORKGROUP`], `shader` naming which in the kernel's id.
struct AdamWKernel {
    dtype: DType,
    shader: &'static str,
    template: fn() -> SourceTemplate,
}

impl AdamWKernel {
    fn whole(dtype: DType) -> Self {
        Self { dtype, shader: "adamw", template: || AdamWSource::new().source() }
    }

    fn masked(dtype: DType) -> Self {
        Self { dtype, shader: "masked_adamw", template: || MaskedAdamWSource::new().source() }
    }
}

impl KernelSource for AdamWKernel {
    fn source(&self) -> SourceTemplate {
        (self.template)().register("workgroup", ADAMW_WORKGROUP.to_string()).register("elem", self.dtype.name())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.shader, ADAMW_WORKGROUP, self.dtype.name()))
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
        let (gx, gy) = elementwise_grid(total);
        let info = u32_buffer(&w, &[d_in as u32, rows.len() as u32, gx * ADAMW_WORKGROUP]);
        w.client.launch(
            Box::new(SourceKernel::new(AdamWKernel::masked(w.dtype), CubeDim::new_1d(ADAMW_WORKGROUP))),
            CubeCount::Static(gx, gy, 1),
            KernelArguments::new().with_buffers(vec![
                w.handle.clone().binding(),
                grad.handle.binding(),
                m.handle.clone().binding(),
                v.handle.clone().binding(),
                rows_buf.binding(),
                params.binding(),
                info.binding(),
            ]),
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
        let (gx, gy) = elementwise_grid(total);
        let info = u32_buffer(&w, &[total, gx * ADAMW_WORKGROUP]);
        w.client.launch(
            Box::new(SourceKernel::new(AdamWKernel::whole(w.dtype), CubeDim::new_1d(ADAMW_WORKGROUP))),
            CubeCount::Static(gx, gy, 1),
            KernelArguments::new().with_buffers(vec![
                w.handle.clone().binding(),
                grad.handle.binding(),
                m.handle.clone().binding(),
                v.handle.clone().binding(),
                params.binding(),
                info.binding(),
            ]),
        );
        (w, m, v)
    }
}

/// Workgroups (x, y) covering `total` elements, one thread each, in rows of [`GRID_ROW`].
fn elementwise_grid(total: u32) -> (u32, u32) {
    let groups = total.div_ceil(ADAMW_WORKGROUP);
    (groups.min(GRID_ROW), groups.div_ceil(GRID_ROW))
}

/// shaders/masked_dw.wgsl over the selected rows.
fn tiled_dw(dy: CubeTensor, x: CubeTensor, rows: &[u32]) -> CubeTensor {
    let (dy, x) = (into_contiguous(dy), into_contiguous(x));
    let (n, d_out) = (dy.meta.shape()[0], dy.meta.shape()[1]);
    let d_in = x.meta.shape()[1];
    let r = rows.len();
    let shape = Shape::new([r, d_in]);
    let out =
        CubeTensor::new_contiguous(x.client.clone(), x.device.clone(), shape, x.client.empty((r * d_in).max(1) * x.dtype.size()), x.dtype);
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
