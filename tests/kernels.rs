//! The masked weight-gradient extension against dense references, on the CPU and on wgpu (the raw
//! WGSL kernels run on lavapipe in CI): random shapes, odd sizes, unselected rows untouched.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use greentrainer::kernels::{
    AdamWHyper, AttentionSpec, DwPath, adamw, adamw_reference, attention, attention_reference, masked_adamw, masked_dw, masked_linear,
    rms_norm, rms_norm_reference, runs_wgsl, swiglu, swiglu_reference,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn random(rng: &mut StdRng, shape: [usize; 2], device: &burn::tensor::Device) -> (Vec<f32>, Tensor<2>) {
    let v: Vec<f32> = (0..shape[0] * shape[1]).map(|_| rng.random_range(-1.0..1.0)).collect();
    (v.clone(), Tensor::from_data(TensorData::new(v, shape), device))
}

fn rows_subset(rng: &mut StdRng, d_out: usize) -> Vec<u32> {
    let mut rows: Vec<u32> = (0..d_out as u32).filter(|_| rng.random_bool(0.4)).collect();
    if rows.is_empty() {
        rows.push(rng.random_range(0..d_out as u32));
    }
    rows
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

#[test]
fn masked_dw_equals_the_dense_gradient_on_selected_rows() {
    let mut rng = StdRng::seed_from_u64(3);
    for dev in common::devices() {
        for (n, d_out, d_in) in [(1, 1, 1), (7, 5, 3), (33, 17, 29), (64, 48, 40), (100, 70, 131)] {
            let (dy_v, dy) = random(&mut rng, [n, d_out], &dev.device);
            let (x_v, x) = random(&mut rng, [n, d_in], &dev.device);
            // Scattered rows (a gather), a run of consecutive rows and all rows (slices).
            let (start, len) = (d_out / 3, (d_out / 2).max(1));
            let cases = [rows_subset(&mut rng, d_out), (start as u32..(start + len) as u32).collect(), (0..d_out as u32).collect()];
            let paths = DwPath::CANDIDATES.into_iter().chain([DwPath::Auto]);
            for (rows, path) in cases.iter().flat_map(|r| paths.clone().map(move |p| (r, p))) {
                let got = host(masked_dw(dy.clone(), x.clone(), rows, path));
                assert_eq!(got.len(), rows.len() * d_in);
                for (ri, &r) in rows.iter().enumerate() {
                    for c in 0..d_in {
                        let want: f32 = (0..n).map(|t| dy_v[t * d_out + r as usize] * x_v[t * d_in + c]).sum();
                        let g = got[ri * d_in + c];
                        assert!(
                            (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{} {path:?} n={n} out={d_out} in={d_in} row {r} col {c}: {g} vs {want}",
                            dev.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn masked_linear_backward_gives_dense_input_grad_and_only_selected_weight_rows() {
    let mut rng = StdRng::seed_from_u64(5);
    for dev in common::devices() {
        let device = dev.device.clone().autodiff();
        let (n, d_out, d_in) = (19, 23, 13);
        let (_, x) = random(&mut rng, [n, d_in], &device);
        let (_, w) = random(&mut rng, [d_out, d_in], &device);
        let rows = rows_subset(&mut rng, d_out);
        let idx = Tensor::<1, Int>::from_data(TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]), &device);
        let (_, probe) = random(&mut rng, [n, d_out], &device);

        // Dense reference: every row of W trainable.
        let x_ref = x.clone().require_grad();
        let w_ref = w.clone().require_grad();
        let y_ref = x_ref.clone().matmul(w_ref.clone().transpose());
        let g_ref = (y_ref.clone() * probe.clone()).sum().backward();
        let dx_ref = host(x_ref.grad(&g_ref).unwrap());
        let dw_ref = host(w_ref.grad(&g_ref).unwrap().select(0, idx.clone().inner()));

        // Masked: W frozen, its selected rows a compact leaf.
        let x_m = x.clone().require_grad();
        let w_rows = w.clone().inner().select(0, idx.inner()).autodiff().require_grad();
        let y = masked_linear(x_m.clone(), w.clone().inner(), w_rows.clone(), &rows);
        assert!(common::max_abs_diff(&host(y.clone().inner()), &host(y_ref.inner())) < 1e-5, "{}: forward", dev.name);
        let g = (y * probe).sum().backward();
        assert!(common::max_abs_diff(&host(x_m.grad(&g).unwrap()), &dx_ref) < 1e-4, "{}: input gradient", dev.name);
        let dw = host(w_rows.grad(&g).expect("compact weight gradient"));
        assert!(common::max_abs_diff(&dw, &dw_ref) < 1e-4, "{}: weight-row gradient", dev.name);
    }
}

#[test]
fn fused_masked_adamw_equals_the_reference_update_and_leaves_other_rows() {
    let mut rng = StdRng::seed_from_u64(9);
    let devices: Vec<_> = common::devices().into_iter().filter(|d| runs_wgsl(&d.device)).collect();
    if devices.is_empty() {
        eprintln!("!!! no wgpu device: the fused AdamW kernel is not exercised here");
    }
    for dev in devices {
        let (d_out, d_in) = (37, 41);
        let (w_v, w) = random(&mut rng, [d_out, d_in], &dev.device);
        let rows = rows_subset(&mut rng, d_out);
        let r = rows.len();
        let (g_v, g) = random(&mut rng, [r, d_in], &dev.device);
        let (m_v, m) = random(&mut rng, [r, d_in], &dev.device);
        let v_v: Vec<f32> = (0..r * d_in).map(|_| rng.random_range(0.0..1.0)).collect();
        let v = Tensor::<2>::from_data(TensorData::new(v_v.clone(), [r, d_in]), &dev.device);
        let hp = hyper(1e-2, 3, 1.0);
        let (w2, m2, v2) = masked_adamw(w, g, m, v, &rows, hp);
        let (w2, m2, v2) = (host(w2), host(m2), host(v2));
        for (ri, &row) in rows.iter().enumerate() {
            for c in 0..d_in {
                let k = ri * d_in + c;
                let m1 = hp.beta1 * m_v[k] + (1.0 - hp.beta1) * g_v[k];
                let v1 = hp.beta2 * v_v[k] + (1.0 - hp.beta2) * g_v[k] * g_v[k];
                let wi = row as usize * d_in + c;
                let w1 = w_v[wi] * (1.0 - hp.lr * hp.weight_decay)
                    - hp.lr * (m1 / hp.bias_correction1) / ((v1 / hp.bias_correction2).sqrt() + hp.eps);
                assert!((m2[k] - m1).abs() < 1e-6 && (v2[k] - v1).abs() < 1e-6, "{}: moments", dev.name);
                assert!((w2[wi] - w1).abs() < 1e-5, "{}: weight row {row} col {c}: {} vs {w1}", dev.name, w2[wi]);
            }
        }
        for row in (0..d_out).filter(|r| !rows.contains(&(*r as u32))) {
            assert_eq!(&w2[row * d_in..(row + 1) * d_in], &w_v[row * d_in..(row + 1) * d_in], "{}: unselected row {row} changed", dev.name);
        }
    }
}

#[test]
fn fused_adamw_equals_the_plain_tensor_reference_and_never_writes_a_shared_buffer() {
    let mut rng = StdRng::seed_from_u64(11);
    for dev in common::devices() {
        // Odd sizes around the CPU's parallel chunk (16384) and the shader's workgroup (256).
        for n in [1usize, 7, 255, 257, 16_385, 70_001] {
            let vec = |rng: &mut StdRng, lo: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..1.0)).collect() };
            let tensor = |v: &Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [n]), &dev.device);
            let (w_v, g_v, m_v, v_v) = (vec(&mut rng, -1.0), vec(&mut rng, -1.0), vec(&mut rng, -1.0), vec(&mut rng, 0.0));
            // w as a view into a larger buffer: the kernel must read it through its offset.
            let padded: Vec<f32> = [0.5f32; 3].iter().copied().chain(w_v.iter().copied()).collect();
            let w = Tensor::<1>::from_data(TensorData::new(padded, [n + 3]), &dev.device).narrow(0, 3, n);
            let (m, v) = (tensor(&m_v), tensor(&v_v));
            let hp = hyper(3e-2, 4, 0.37);
            let (w_ref, m_ref, v_ref) = adamw_reference(tensor(&w_v), tensor(&g_v), tensor(&m_v), tensor(&v_v), hp);
            // `m` stays alive: its buffer is shared, so the kernel must write a copy.
            let (w2, m2, v2) = adamw(w, tensor(&g_v), m.clone(), v, hp);
            let what = |name: &str| format!("{} n={n}: {name}", dev.name);
            assert!(common::max_abs_diff(&host1(w2), &host1(w_ref)) < 1e-6, "{}", what("weights"));
            assert!(common::max_abs_diff(&host1(m2), &host1(m_ref)) < 1e-6, "{}", what("first moment"));
            assert!(common::max_abs_diff(&host1(v2), &host1(v_ref)) < 1e-6, "{}", what("second moment"));
            assert_eq!(host1(m), m_v, "{}", what("a shared input changed"));
        }
    }
}

fn host1(t: Tensor<1>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

/// AdamW's settings at the `step`-th update (betas 0.9/0.999, eps 1e-8, weight decay 0.01).
fn hyper(lr: f32, step: i32, grad_scale: f32) -> AdamWHyper {
    AdamWHyper {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        bias_correction1: 1.0 - 0.9f32.powi(step),
        bias_correction2: 1.0 - 0.999f32.powi(step),
        grad_scale,
    }
}

/// Gradients of `sum(f(a, b) * probe)` with respect to `a` and `b`, each tracked only when asked.
fn grads_of(
    f: &impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
    a: &Tensor<2>,
    b: &Tensor<2>,
    probe: &Tensor<2>,
    track: (bool, bool),
) -> (Vec<f32>, Option<Vec<f32>>, Option<Vec<f32>>) {
    let leaf = |t: &Tensor<2>, on: bool| if on { t.clone().require_grad() } else { t.clone() };
    let (a, b) = (leaf(a, track.0), leaf(b, track.1));
    let y = f(a.clone(), b.clone());
    let out = host(y.clone().inner());
    let g = (y * probe.clone()).sum().backward();
    (out, a.grad(&g).map(host), b.grad(&g).map(host))
}

/// `fused` against `reference` on inputs `(a, b)`: the output within 1e-5 and, with both, either
/// or the other input tracked, gradients for exactly the tracked ones, within `grad_tol` (relative
/// to the largest value).
fn assert_fused_matches(
    fused: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
    reference: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
    (a, b): (&Tensor<2>, &Tensor<2>),
    probe: &Tensor<2>,
    grad_tol: f32,
    case: &str,
) {
    for track in [(true, true), (true, false), (false, true)] {
        let what = |part: &str| format!("{case} {track:?}: {part}");
        let (y, da, db) = grads_of(&fused, a, b, probe, track);
        let (y_ref, da_ref, db_ref) = grads_of(&reference, a, b, probe, track);
        assert_close(&y, &y_ref, 1e-5, &what("output"));
        assert_eq!((da.is_some(), db.is_some()), track, "{}", what("gradients exactly for the tracked inputs"));
        for (name, got, want) in [("first input's gradient", da, da_ref), ("second input's gradient", db, db_ref)] {
            if let (Some(got), Some(want)) = (got, want) {
                assert_close(&got, &want, grad_tol, &what(name));
            }
        }
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = common::max_abs_diff(got, want);
    assert!(diff <= tol * scale, "{what}: max difference {diff} (scale {scale})");
}

/// The fused RMSNorm against the tensor-op reference on odd shapes, on the CPU and on wgpu: the
/// output, and each gradient whether the other input is tracked or not. 4097 rows cross the
/// shaders' grid row (4096 workgroups); widths below, at and past the workgroup (128 threads).
#[test]
fn fused_rms_norm_and_its_gradients_equal_the_reference() {
    let mut rng = StdRng::seed_from_u64(13);
    for dev in common::devices() {
        let device = dev.device.clone().autodiff();
        for (n, d) in [(1, 1), (3, 5), (7, 128), (33, 129), (4097, 3), (5, 577)] {
            let (_, x) = random(&mut rng, [n, d], &device);
            // A weight around 1 as trained norms have; stored as [1, d] so both inputs are 2-D.
            let w =
                Tensor::<2>::from_data(TensorData::new((0..d).map(|_| rng.random_range(0.5..1.5f32)).collect::<Vec<_>>(), [1, d]), &device);
            let (_, probe) = random(&mut rng, [n, d], &device);
            let eps = 1e-5;
            let fused = |x: Tensor<2>, w: Tensor<2>| rms_norm(x, w.reshape([d]), eps);
            let reference = |x: Tensor<2>, w: Tensor<2>| rms_norm_reference(x, w.reshape([d]), eps);
            assert_fused_matches(fused, reference, (&x, &w), &probe, 1e-4, &format!("{} n={n} d={d}", dev.name));
        }
    }
}

/// The fused SwiGLU gating against `silu(gate) * up` on odd sizes; 1025 x 1024 elements cross
/// the shaders' grid row (4096 workgroups of 256). Large gates check the sigmoid's tails.
#[test]
fn fused_swiglu_and_its_gradients_equal_the_reference() {
    let mut rng = StdRng::seed_from_u64(17);
    for dev in common::devices() {
        let device = dev.device.clone().autodiff();
        for (n, d) in [(1, 1), (3, 7), (31, 257), (1025, 1024)] {
            let gate = Tensor::<2>::from_data(
                TensorData::new((0..n * d).map(|_| rng.random_range(-30.0..30.0f32)).collect::<Vec<_>>(), [n, d]),
                &device,
            );
            let (_, up) = random(&mut rng, [n, d], &device);
            let (_, probe) = random(&mut rng, [n, d], &device);
            assert_fused_matches(swiglu, swiglu_reference, (&gate, &up), &probe, 1e-5, &format!("{} n={n} d={d}", dev.name));
        }
    }
}

fn random4(rng: &mut StdRng, shape: [usize; 4], device: &burn::tensor::Device) -> Tensor<4> {
    let v: Vec<f32> = (0..shape.iter().product()).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// The flash-style attention against transformers' eager attention in tensor ops, output and the
/// q, k, v gradients, on the CPU and on wgpu: grouped-query heads, causal order after cached keys,
/// right padding as lengths, ALiBi slopes, no mask at all, and a dense bias (T5's relative
/// positions) shared by the batch or one per row, whose gradient is checked too; odd head widths,
/// and query counts across the CPU's 64-query blocks.
#[test]
fn flash_attention_and_its_gradients_equal_eager_attention() {
    let mut rng = StdRng::seed_from_u64(19);
    let spec = |scale: f32, causal_past: Option<u32>, key_lengths: Vec<u32>, alibi_slopes: Vec<f32>| AttentionSpec {
        scale,
        causal_past,
        key_lengths,
        alibi_slopes,
        dense_bias: false,
    };
    // (batch, heads, kv heads, queries, keys, head dim, spec, dense bias rows)
    let cases = [
        (1, 1, 1, 1, 1, 1, spec(1.0, Some(0), vec![], vec![]), None),
        (2, 6, 2, 70, 70, 8, spec(0.35, Some(0), vec![70, 33], vec![]), None),
        (2, 4, 4, 5, 12, 5, spec(0.5, Some(7), vec![], vec![]), None),
        (1, 3, 1, 9, 9, 16, spec(0.25, None, vec![], vec![]), None),
        (2, 4, 4, 13, 13, 7, spec(0.4, Some(0), vec![13, 6], vec![0.5, 0.25, 0.125, 0.0625]), None),
        (3, 2, 1, 1, 17, 64, spec(0.125, None, vec![17, 9, 1], vec![]), None),
        // T5: the encoder (no causal order, padded keys), the decoder (causal, a cached past), both
        // unscaled, with the position bias of one row; a bias per row, across query blocks.
        (3, 4, 4, 11, 11, 6, spec(1.0, None, vec![11, 4, 8], vec![]), Some(1)),
        (2, 3, 3, 4, 9, 5, spec(1.0, Some(5), vec![], vec![]), Some(1)),
        (2, 4, 2, 67, 67, 3, spec(0.5, Some(0), vec![67, 40], vec![]), Some(2)),
    ];
    for dev in common::devices() {
        let device = dev.device.clone().autodiff();
        for (b, h, hk, s, t, d, spec, bias_rows) in &cases {
            let (q, k, v) = (
                random4(&mut rng, [*b, *h, *s, *d], &device),
                random4(&mut rng, [*b, *hk, *t, *d], &device),
                random4(&mut rng, [*b, *hk, *t, *d], &device),
            );
            let bias = bias_rows.map(|rows| random4(&mut rng, [rows, *h, *s, *t], &device).mul_scalar(3.0));
            let probe = random4(&mut rng, [*b, *h, *s, *d], &device);
            type Attention<'a> = &'a dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>, Option<Tensor<4>>) -> Tensor<4>;
            let run = |f: Attention<'_>| {
                let (q, k, v) = (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad());
                let bias = bias.clone().map(Tensor::require_grad);
                let y = f(q.clone(), k.clone(), v.clone(), bias.clone());
                let out = y.clone().inner().try_into_vec_as::<f32>().unwrap();
                let g = (y * probe.clone()).sum().backward();
                let grad = |t: &Tensor<4>| t.grad(&g).expect("gradient").try_into_vec_as::<f32>().unwrap();
                (out, grad(&q), grad(&k), grad(&v), bias.as_ref().map(grad))
            };
            let fused = run(&|q, k, v, bias| attention(q, k, v, bias, spec));
            let eager = run(&|q, k, v, bias| attention_reference(q, k, v, bias, spec));
            let what = |part: &str| format!("{} b={b} h={h} hk={hk} s={s} t={t} d={d} {spec:?} bias {bias_rows:?}: {part}", dev.name);
            assert_close(&fused.0, &eager.0, 1e-5, &what("output"));
            assert_close(&fused.1, &eager.1, 1e-4, &what("query gradient"));
            assert_close(&fused.2, &eager.2, 1e-4, &what("key gradient"));
            assert_close(&fused.3, &eager.3, 1e-4, &what("value gradient"));
            assert_eq!(fused.4.is_some(), bias_rows.is_some(), "{}", what("a bias gradient exactly with a bias"));
            if let (Some(got), Some(want)) = (&fused.4, &eager.4) {
                assert_close(got, want, 1e-4, &what("bias gradient"));
            }
        }
    }
}
