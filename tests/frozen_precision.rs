//! Frozen weights in f16/bf16 (`frozen_precision`): the frozen linear kernel against products
//! computed here from the rounded weights, on the CPU and on wgpu; the low-precision forward pass
//! against f32 on the fixtures; promotion and demotion at a re-selection; and short runs whose
//! loss curves stay beside the f32 run's.

mod common;

use std::collections::BTreeSet;

use burn::tensor::{DType, Int, Tensor, TensorData};
use greentrainer::device::ComputeDevice;
use greentrainer::io::load_model;
use greentrainer::kernels::frozen::{linear, linear_dx};
use greentrainer::model::precision::{store_frozen, stored_bytes};
use greentrainer::model::{FrozenPrecision, Model, ParamRef, Parameters, attention_mask};
use greentrainer::train::batch::DeviceBatch;
use greentrainer::train::optim::{AdamW, AdamWConfig};
use greentrainer::train::step::forward_backward;
use greentrainer::train::trainer::store_for_selection;
use greentrainer::train::{Event, RunControl, TrainConfig, Trainer};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// `v` rounded to the nearest value of `dtype`, as the storage holds it (computed by `half`).
fn rounded(v: f32, dtype: DType) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

/// `a [m, k] b [k, n]` in f64 with `sum |a b|` per element (the scale a rounding error is
/// measured against).
fn product(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), b_at: impl Fn(usize, usize) -> usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut scale) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = a[i * k + p] as f64 * b[b_at(p, j)] as f64;
                sum += t;
                scale += t.abs();
            }
            out.push((sum, scale));
        }
    }
    out
}

fn assert_close(what: &str, got: &[f32], want: &[(f64, f64)]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &(w, scale))) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= 1e-5 * scale + 1e-6, "{what}: element {i}: {g} vs {w}");
    }
}

/// Low-precision types a device computes in.
fn low_precisions(dev: &ComputeDevice) -> Vec<DType> {
    [DType::F16, DType::BF16].into_iter().filter(|&d| dev.device.supports_dtype(d)).collect()
}

#[test]
fn frozen_linear_and_its_input_gradient_equal_the_product_with_the_rounded_weight() {
    let mut rng = StdRng::seed_from_u64(19);
    for dev in common::devices() {
        let dtypes = low_precisions(&dev);
        assert!(dtypes.contains(&DType::F16), "{}: no f16", dev.name);
        // Odd sizes; 300 x 4096 spans two of the CPU's converted blocks, 4099 x 4097 two of wgpu's.
        for (n, d_out, d_in) in [(1, 1, 1), (7, 5, 3), (37, 71, 53), (3, 300, 4096), (2, 4099, 4097)] {
            let (x, w, dy) = (random(&mut rng, n * d_in), random(&mut rng, d_out * d_in), random(&mut rng, n * d_out));
            for &dtype in &dtypes {
                let what = format!("{} {dtype:?} n={n} out={d_out} in={d_in}", dev.name);
                let w_low = Tensor::<2>::from_data(TensorData::new(w.clone(), [d_out, d_in]), &dev.device).cast(dtype);
                assert_eq!(w_low.dtype(), dtype);
                let w_rounded: Vec<f32> = w.iter().map(|&v| rounded(v, dtype)).collect();
                let x_t = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, d_in]), &dev.device);
                let y = linear(x_t.clone(), w_low.clone());
                assert_eq!(y.dtype(), DType::F32, "{what}: output type");
                assert_close(&format!("{what}: x W^T"), &host(y), &product(&x, &w_rounded, (n, d_in, d_out), |p, j| j * d_in + p));
                let dy_t = Tensor::<2>::from_data(TensorData::new(dy.clone(), [n, d_out]), &dev.device);
                let want_dx = product(&dy, &w_rounded, (n, d_out, d_in), |p, j| p * d_in + j);
                assert_close(&format!("{what}: dy W"), &host(linear_dx(dy_t.clone(), w_low.clone())), &want_dx);
                // Autodiff: the input's gradient through the frozen product.
                let x_leaf = x_t.autodiff().require_grad();
                let grads = (linear(x_leaf.clone(), w_low.clone()) * dy_t).sum().backward();
                assert_close(&format!("{what}: autodiff dx"), &host(x_leaf.grad(&grads).unwrap()), &want_dx);
            }
        }
    }
}

/// The golden batch's logits from `model` (on the CPU).
fn logits(model: &Model, fixture: &str) -> Vec<f32> {
    let g = common::golden(fixture);
    let device = ComputeDevice::cpu().device;
    let ids = Tensor::<2, Int>::from_data(TensorData::new(g.ids.clone(), [g.batch, g.seq]), &device);
    let mask = attention_mask(Some(&g.padding()), g.batch, g.seq, 0);
    model.forward(ids, Some(&mask), None).unwrap().try_into_vec_as::<f32>().unwrap()
}

/// The tolerance (relative L2 of the logits) stated for each type: f16 keeps 11 significant bits,
/// bf16 8, so logits move by about 2^-11 and 2^-8 of their scale. Measured: f16 2.8e-4 to 4.3e-4,
/// bf16 2.2e-3 to 3.3e-3 on the tiny Llama, OPT and BLOOM and on SmolLM2-135M (its GGUF's weights).
fn logits_tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 1e-3,
        _ => 8e-3,
    }
}

#[test]
fn the_low_precision_forward_pass_matches_f32_on_the_fixtures() {
    let cpu = ComputeDevice::cpu();
    for fixture in ["tiny-llama", "tiny-opt", "tiny-bloom", "smollm2"] {
        let path = match fixture {
            "smollm2" => match common::smollm2_gguf() {
                Some(path) => path,
                None => continue,
            },
            _ => common::fixture(fixture),
        };
        let base = load_model(&path, &cpu.device).unwrap().model;
        // SmolLM2 has no golden batch of its own: the tiny Llama's ids are all in its vocabulary.
        let batch_of = if fixture == "smollm2" { "tiny-llama" } else { fixture };
        let want = logits(&base, batch_of);
        for dtype in [DType::F16, DType::BF16] {
            let mut low = base.clone();
            store_frozen(&mut low, dtype, &|_| false);
            let mut matrices = 0;
            low.visit(&mut |name, p| {
                if let ParamRef::Matrix(_) = p {
                    assert_eq!(p.dtype(), dtype, "{fixture}: {name}");
                    matrices += 1;
                }
            });
            assert!(matrices > 0);
            assert!(
                stored_bytes(&low) < stored_bytes(&base) * 6 / 10,
                "{fixture} {dtype:?}: {} of {} bytes",
                stored_bytes(&low),
                stored_bytes(&base)
            );
            let e = common::rel_l2(&logits(&low, batch_of), &want);
            eprintln!("{fixture} {dtype:?}: logits relative L2 {e:.2e}");
            assert!(e <= logits_tolerance(dtype), "{fixture} {dtype:?}: logits relative L2 {e} > {}", logits_tolerance(dtype));
        }
    }
}

/// Every matrix of `model` rounded to f16 and back: a model whose file held f16 values.
fn f16_valued(mut model: Model) -> Model {
    store_frozen(&mut model, DType::F16, &|_| false);
    store_frozen(&mut model, DType::F32, &|_| true);
    model
}

fn values(model: &Model, name: &str) -> (DType, Vec<f32>) {
    let mut out = None;
    model.visit(&mut |n, p| {
        if n == name {
            out = Some((p.dtype(), p.to_vec()));
        }
    });
    out.unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn a_reselection_promotes_exactly_and_keeps_what_trained_in_f32_with_its_moments() {
    let cpu = ComputeDevice::cpu();
    let loaded = load_model(&common::fixture("tiny-llama"), &cpu.device).unwrap();
    let base = f16_valued(loaded.model.clone());
    let (kept, left, joined, frozen) = (
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
    );
    let first = [kept, left];
    let second = [kept, joined];
    let batch = DeviceBatch::new(&greentrainer::bench::random_batch(&base, 2, 16), &base);
    let selection = |names: [&str; 2]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<String>>();
    let mut model = base.clone();
    let mut optimizer = AdamW::new(AdamWConfig::default());
    store_for_selection(&mut model, DType::F16, &selection(first), &optimizer);
    assert_eq!(values(&model, left).0, DType::F32);
    assert_eq!(values(&model, frozen).0, DType::F16);
    for _ in 0..2 {
        let pass = forward_backward(&model, &|n| first.contains(&n), &batch).unwrap();
        optimizer.step(&mut model, &pass.grads, 1e-3, 1.0);
    }
    let before = |name: &str| values(&model, name);
    let (kept_before, left_before) = (before(kept), before(left));
    assert_eq!((kept_before.0, left_before.0), (DType::F32, DType::F32));
    let moments: Vec<(String, Vec<f32>, Vec<f32>, u64)> = optimizer
        .state
        .iter()
        .map(|(k, s)| (k.clone(), s.m.try_to_vec_as::<f32>().unwrap(), s.v.try_to_vec_as::<f32>().unwrap(), s.step))
        .collect();

    // The re-selection, as the trainer stores it.
    store_for_selection(&mut model, DType::F16, &selection(second), &optimizer);
    assert_eq!(values(&model, kept), kept_before, "a tensor selected twice keeps its f32 weights bit for bit");
    let (dtype, promoted) = values(&model, joined);
    assert_eq!((dtype, promoted), (DType::F32, values(&base, joined).1), "promotion restores the file's f16 values exactly");
    assert_eq!(values(&model, left), left_before, "a tensor that trained keeps its f32 weights when it leaves");
    assert_ne!(left_before.1, values(&base, left).1);
    assert_eq!(values(&model, frozen), (DType::F16, values(&base, frozen).1), "a tensor never trained stays stored low");
    let after: Vec<(String, Vec<f32>, Vec<f32>, u64)> = optimizer
        .state
        .iter()
        .map(|(k, s)| (k.clone(), s.m.try_to_vec_as::<f32>().unwrap(), s.v.try_to_vec_as::<f32>().unwrap(), s.step))
        .collect();
    assert_eq!(after, moments, "the optimizer state is untouched by the re-selection");

    // The next step trains the new selection: the kept tensor's moments go on, the joined starts.
    let pass = forward_backward(&model, &|n| second.contains(&n), &batch).unwrap();
    optimizer.step(&mut model, &pass.grads, 1e-3, 1.0);
    assert_eq!(optimizer.state[kept].step, 3);
    assert_eq!(optimizer.state[joined].step, 1);
    assert_eq!(optimizer.state[left].step, 2);
}

/// A GreenTrainer run on the tiny Llama that re-selects every two steps, its losses.
fn losses(precision: FrozenPrecision, out: &std::path::Path) -> Vec<f64> {
    let config = TrainConfig {
        model: common::fixture("tiny-llama"),
        data: common::demo_train(),
        output: out.to_path_buf(),
        rho: 0.5,
        epochs: 0,
        max_steps: 6,
        batch_size: 2,
        max_len: 48,
        lr: 1e-3,
        reselect_every_steps: 2,
        save_model: false,
        frozen_precision: precision,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::prepare(config, ComputeDevice::cpu()).unwrap();
    let (mut selections, mut ever_selected) = (0, BTreeSet::new());
    let outcome = trainer
        .run(
            &mut |e: &Event| {
                if let Event::Selection { selected, .. } = e {
                    selections += 1;
                    ever_selected.extend(selected.iter().cloned());
                }
            },
            &RunControl::default(),
            false,
        )
        .unwrap();
    assert_eq!(selections, 3, "{precision:?}: re-selected every two steps");
    // The run stored what never trained in the low type, and only that.
    let low = precision.storage(&ComputeDevice::cpu().device);
    let mut stored_low = 0;
    trainer.loaded.model.visit(&mut |name, p| {
        if let ParamRef::Matrix(_) = p {
            let want = if ever_selected.contains(name) { DType::F32 } else { low };
            assert_eq!(p.dtype(), want, "{precision:?}: {name}");
            stored_low += usize::from(want != DType::F32);
        }
    });
    assert!(precision == FrozenPrecision::F32 || stored_low > 0, "{precision:?}: nothing stored low");
    outcome.losses
}

/// The band a low-precision run's loss stays in around the f32 run's, per step (absolute; the
/// losses are about 6.2): measured 1.1e-5 for f16 and 9.4e-5 for bf16 over six steps with two
/// re-selections.
const LOSS_BAND: f64 = 1e-3;

#[test]
fn runs_with_f16_or_bf16_frozen_weights_follow_the_f32_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let reference = losses(FrozenPrecision::F32, &dir.path().join("f32"));
    assert_eq!(reference.len(), 6);
    for precision in [FrozenPrecision::F16, FrozenPrecision::Bf16] {
        let got = losses(precision, &dir.path().join(precision.name()));
        let worst = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("{precision:?}: {got:?} vs f32 {reference:?}: worst {worst:.2e}");
        assert!(worst <= LOSS_BAND, "{precision:?}: losses {got:?} leave the band {LOSS_BAND} around f32's {reference:?}");
        assert!(got.iter().zip(&reference).any(|(a, b)| a != b), "{precision:?}: the frozen weights were not stored in low precision");
    }
}

/// A bf16 run re-selecting every step, cancelled after step 2 and resumed, against the same run
/// uninterrupted: the checkpoint holds the stored values (in f32, exactly), and resuming stores
/// them again as the selection says, so the losses are bit-identical.
#[test]
fn a_resumed_low_precision_run_equals_the_uninterrupted_one() {
    let config = |out: &std::path::Path| TrainConfig {
        model: common::fixture("tiny-llama"),
        data: common::demo_train(),
        output: out.to_path_buf(),
        rho: 0.5,
        epochs: 0,
        max_steps: 4,
        batch_size: 2,
        max_len: 48,
        lr: 1e-3,
        reselect_every_steps: 1,
        save_model: false,
        frozen_precision: FrozenPrecision::Bf16,
        ..TrainConfig::default()
    };
    let run = |out: &std::path::Path, resume: bool, stop_after: Option<usize>| {
        let mut trainer = Trainer::prepare(config(out), ComputeDevice::cpu()).unwrap();
        let control = RunControl::default();
        let sink = &mut |e: &Event| {
            if let (Event::Step { step, .. }, Some(stop)) = (e, stop_after)
                && *step == stop
            {
                control.request_cancel();
            }
        };
        trainer.run(sink, &control, resume).unwrap().losses
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(straight_dir.path(), false, None);
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), false, Some(2));
    assert_eq!(first.len(), 2);
    let rest = run(dir.path(), true, None);
    let resumed: Vec<f64> = first.into_iter().chain(rest).collect();
    assert_eq!(resumed, straight, "losses after resume must equal the uninterrupted run");
}
