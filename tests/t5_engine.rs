//! T5 (tiny-t5 fixture) through the whole engine, as tests/architectures.rs takes OPT and BLOOM:
//! loaded from its HF folder by `model_type`, its examples split into encoder and decoder inputs,
//! trained with GreenTrainer, full fine-tuning, FT-top-k and LoRA (frozen tensors bit-identical,
//! selected ones changed, FLOPs charged at the batch's encoder and decoder lengths), generated
//! from (greedy and beam against an uncached argmax loop), saved and reloaded with the same logits.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use greentrainer::data::{BatchPlan, Batcher, IGNORE_INDEX, Seq2Seq, load_dataset, pad_batch};
use greentrainer::device::ComputeDevice;
use greentrainer::eval::generate::{GenerateOptions, Strategy, generate};
use greentrainer::io::load_model;
use greentrainer::io::safetensors_file::SafetensorsFiles;
use greentrainer::model::t5::T5;
use greentrainer::model::{BatchInput, Linears, Model, Parameters};
use greentrainer::profile::blocks::parse_block;
use greentrainer::profile::{OpKind, Stream, profile};
use greentrainer::select::CostRule;
use greentrainer::train::batch::DeviceBatch;
use greentrainer::train::{Event, MethodKind, RunControl, TrainConfig, Trainer};

fn t5(model: &Model) -> &T5 {
    match model {
        Model::T5(m) => m,
        other => panic!("not T5: {}", other.info().model_type),
    }
}

fn int_tensor(values: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Teacher-forced logits of a fixed two-row source (one padded) and target.
fn logits(model: &Model) -> Vec<f32> {
    let device = model.device();
    let ids = int_tensor(vec![5, 9, 42, 7, 300, 11, 17, 23, 99, 1, 1, 1], [2, 6], &device);
    let padding = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0];
    let decoder_ids = int_tensor(vec![1, 60, 61, 62, 1, 70, 71, 72], [2, 4], &device);
    t5(model).forward(ids, Some(&padding), decoder_ids).try_into_vec_as::<f32>().unwrap()
}

struct Run {
    trainer: Trainer,
    selected: Vec<String>,
    realised_rho: f64,
    losses: Vec<f64>,
    /// Per step: FLOPs spent on it (scoring included) and what full fine-tuning would have spent.
    step_flops: Vec<(f64, f64)>,
    selection_flops: f64,
}

fn train(config: TrainConfig, device: ComputeDevice) -> Run {
    let mut trainer = Trainer::prepare(config, device).unwrap();
    let (mut selected, mut realised_rho, mut selection_flops) = (None, 1.0, 0.0);
    let (mut step_flops, mut last) = (Vec::new(), (0.0, 0.0));
    let outcome = trainer
        .run(
            &mut |e: &Event| match e {
                Event::Selection { selected: s, realised_rho: r, importance_flops, .. } => {
                    selected.get_or_insert_with(|| s.clone());
                    realised_rho = *r;
                    selection_flops += importance_flops;
                }
                Event::Step { flops_spent, flops_full, .. } => {
                    step_flops.push((flops_spent - last.0, flops_full - last.1));
                    last = (*flops_spent, *flops_full);
                }
                _ => {}
            },
            &RunControl::default(),
            false,
        )
        .unwrap();
    Run { trainer, selected: selected.unwrap_or_default(), realised_rho, losses: outcome.losses, step_flops, selection_flops }
}

#[test]
fn the_folder_loads_by_model_type_and_by_architecture() {
    let loaded = load_model(&common::fixture("tiny-t5"), &ComputeDevice::cpu().device).unwrap();
    let info = loaded.model.info();
    assert_eq!(info.model_type, "t5");
    assert_eq!((info.layers, info.hidden_size, info.heads, info.head_dim, info.vocab_size), (4, 64, 4, 16, 512));
    assert_eq!((info.context_length, info.bos_token_id, info.eos_token_ids.clone(), info.pad_token_id), (None, None, vec![0], Some(1)));
    assert!(info.tied_embeddings && loaded.model.is_encoder_decoder());
    assert_eq!(loaded.eos_token_ids(), vec![0]);
    let summary = greentrainer::io::summary::ModelSummary::of(&loaded).to_string();
    assert!(summary.contains("t5"), "{summary}");

    // The decoder-only forward pass is refused with an error, not a panic.
    let ids = int_tensor(vec![5, 9], [1, 2], &ComputeDevice::cpu().device);
    let err = loaded.model.forward(ids, None, None).unwrap_err().to_string();
    assert!(err.contains("encoder-decoder"), "{err}");

    // A config.json naming only the architecture (older files) loads as T5 too.
    let dir = tempfile::tempdir().unwrap();
    let fixture = common::fixture("tiny-t5");
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    let mut raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
    raw.as_object_mut().unwrap().remove("model_type");
    std::fs::write(dir.path().join("config.json"), raw.to_string()).unwrap();
    let by_arch = load_model(dir.path(), &ComputeDevice::cpu().device).unwrap();
    assert_eq!(common::max_abs_diff(&logits(&by_arch.model), &logits(&loaded.model)), 0.0);

    // A checkpoint that keeps the shared table only as the encoder's embed_tokens loads the same.
    let files = SafetensorsFiles::open_dir(&fixture).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = files
        .names()
        .map(|n| {
            let (shape, values) = files.read_f32(n).unwrap();
            (if n == "shared.weight" { "encoder.embed_tokens.weight".to_string() } else { n.to_string() }, shape, values)
        })
        .collect();
    greentrainer::io::safetensors_file::write_f32(&dir.path().join("model.safetensors"), &tensors, None).unwrap();
    let aliased = load_model(dir.path(), &ComputeDevice::cpu().device).unwrap();
    assert_eq!(common::max_abs_diff(&logits(&aliased.model), &logits(&loaded.model)), 0.0);
}

#[test]
fn examples_split_into_encoder_and_decoder_inputs() {
    let loaded = load_model(&common::fixture("tiny-t5"), &ComputeDevice::cpu().device).unwrap();
    // The fixture's tokenizer (byte-level BPE post-processor) adds no special tokens, so neither do
    // its encoder inputs; a T5 template ($A </s>) puts its EOS after every source.
    assert_eq!(Seq2Seq::from_tokenizer(&loaded.tokenizer).unwrap(), Seq2Seq::default());
    let mut tokenizer: serde_json::Value = serde_json::from_str(&loaded.tokenizer.to_string(false).unwrap()).unwrap();
    tokenizer["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}
    });
    let mut with_eos = loaded.clone();
    with_eos.tokenizer = tokenizers::Tokenizer::from_bytes(tokenizer.to_string().as_bytes()).unwrap();
    assert_eq!(Seq2Seq::from_tokenizer(&with_eos.tokenizer).unwrap(), Seq2Seq { source_prefix: vec![], source_suffix: vec![0] });
    // Typed prompts get the same special tokens as training sources, as `tokenizer(text)` does.
    assert_eq!(with_eos.prompt_ids("hello there").unwrap(), with_eos.tokenizer.encode("hello there", true).unwrap().get_ids());
    assert_eq!(with_eos.prompt_ids("hello there").unwrap().last(), Some(&0));

    // max_len caps the source and the target each, not their sum.
    let max_len = 48;
    let data = load_dataset(&common::demo_train(), &with_eos.tokenizer, &with_eos.load_options(max_len).unwrap()).unwrap();
    let plain = load_dataset(&common::demo_train(), &loaded.tokenizer, &greentrainer::data::LoadOptions::new(max_len, 0)).unwrap();
    assert!(data.examples.iter().all(|e| e.prompt_len <= max_len && e.seq_len() - e.prompt_len <= max_len));
    assert!(data.examples.iter().any(|e| e.seq_len() > max_len), "no example uses both budgets");
    assert!(plain.examples.iter().all(|e| e.seq_len() <= max_len));
    for e in &data.examples {
        assert_eq!(e.prompt_ids().last(), Some(&0), "{}: the source ends with the tokenizer's EOS", e.at);
        assert_eq!(e.input_ids.last() == Some(&0), !e.target_truncated, "{}: the target ends with EOS unless cut", e.at);
    }

    // A device batch: the prompt to the encoder, the target to the decoder, each padded to its own length.
    let rows: Vec<_> = data.examples.iter().filter(|e| !e.target_truncated).take(3).collect();
    let host = pad_batch(&rows, 1);
    let batch = DeviceBatch::new(&host, &with_eos.model);
    let enc_len = rows.iter().map(|e| e.prompt_len).max().unwrap();
    let dec_len = rows.iter().map(|e| e.seq_len() - e.prompt_len).max().unwrap();
    assert_ne!(enc_len, dec_len, "pick rows whose lengths tell the two apart");
    assert_eq!((batch.shape.batch, batch.shape.seq, batch.shape.decoder_seq), (3, enc_len, Some(dec_len)));
    let BatchInput::Seq2Seq { ids, padding, decoder_ids } = &batch.input else { panic!("T5 got a causal batch") };
    let ids: Vec<i64> = ids.clone().try_into_vec_as::<i64>().unwrap();
    let decoder_ids: Vec<i64> = decoder_ids.clone().try_into_vec_as::<i64>().unwrap();
    for (r, e) in rows.iter().enumerate() {
        let (prompt, target) = e.input_ids.split_at(e.prompt_len);
        let as_i64 = |v: &[u32]| v.iter().map(|&t| t as i64).collect::<Vec<_>>();
        let (enc, dec) = (r * enc_len..(r + 1) * enc_len, r * dec_len..(r + 1) * dec_len);
        assert_eq!(ids[enc.clone()][..prompt.len()], as_i64(prompt)[..]);
        assert!(ids[enc.clone()][prompt.len()..].iter().all(|&t| t == 1), "encoder padding is the pad id");
        assert_eq!(padding[enc].iter().sum::<u32>() as usize, prompt.len());
        let labels = &batch.labels[dec.clone()];
        assert_eq!(labels[..target.len()], as_i64(target)[..]);
        assert!(labels[target.len()..].iter().all(|&l| l == IGNORE_INDEX));
        // shift_right: decoder_start_token_id (1), then the labels with -100 as pad (1).
        let want: Vec<i64> =
            std::iter::once(1).chain(labels[..dec_len - 1].iter().map(|&l| if l == IGNORE_INDEX { 1 } else { l })).collect();
        assert_eq!(decoder_ids[dec], want[..]);
    }
    // The batch's loss is transformers' over the target: position t's logits predict label t (not t+1).
    let (loss, count) = with_eos.model.train_loss(&batch.input, &batch.labels).unwrap();
    assert_eq!(count, rows.iter().map(|e| e.seq_len() - e.prompt_len).sum::<usize>());
    let logits: Vec<f32> = with_eos.model.train_logits(&batch.input).unwrap().try_into_vec_as::<f32>().unwrap();
    let vocab = 512;
    let mut want = 0.0f64;
    for (row, &label) in logits.chunks(vocab).zip(&batch.labels).filter(|(_, l)| **l != IGNORE_INDEX) {
        let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        want += lse - row[label as usize] as f64;
    }
    want /= count as f64;
    let loss: f32 = loss.into_scalar();
    assert!((loss as f64 - want).abs() < 1e-4 * want, "loss {loss} vs {want} computed on the host");
}

#[test]
fn every_method_trains_what_it_selects_and_saves_a_reloadable_folder() {
    for dev in common::devices() {
        for method in [MethodKind::Greentrainer, MethodKind::Full, MethodKind::TopK, MethodKind::Lora] {
            let label = format!("{} {method:?}", dev.name);
            let dir = tempfile::tempdir().unwrap();
            let cfg = common::short_run("tiny-t5", method, dir.path());
            let before = common::param_snapshot(&Trainer::prepare(cfg.clone(), dev.clone()).unwrap().loaded.model);
            let run = train(cfg, dev.clone());
            assert_eq!(run.losses.len(), 3, "{label}");
            assert!(run.losses.iter().all(|l| l.is_finite() && *l > 0.0), "{label}: {:?}", run.losses);
            let after = common::param_snapshot(&run.trainer.loaded.model);
            match method {
                MethodKind::Lora => {
                    for (name, values) in &before {
                        assert_eq!(after[name], *values, "{label}: base weight {name} changed under LoRA");
                    }
                    // PEFT's t5 targets q and v, in self- and cross-attention of both stacks.
                    let adapted: Vec<&String> = after.keys().filter(|n| n.ends_with(".lora_B.weight")).collect();
                    assert_eq!(adapted.len(), 2 * 2 + 2 * 2 * 2, "{label}: {adapted:?}");
                    for module in ["encoder.block.0.layer.0.SelfAttention.q", "decoder.block.1.layer.1.EncDecAttention.v"] {
                        let b = &after[&format!("{module}.lora_B.weight")];
                        assert!(b.iter().any(|v| *v != 0.0), "{label}: {module}'s adapter did not train");
                    }
                }
                _ => {
                    assert!(!run.selected.is_empty(), "{label} selected nothing");
                    for (name, values) in &before {
                        let unchanged = after[name] == *values;
                        assert_eq!(unchanged, !run.selected.contains(name), "{label}: {name}");
                    }
                }
            }
            match method {
                MethodKind::Greentrainer => {
                    assert!(
                        run.realised_rho <= 0.6 && run.realised_rho > 0.4,
                        "{label}: selection at rho 0.6 costs {:.3}",
                        run.realised_rho
                    )
                }
                // FT-top-1: the decoder's last block (with its cross-attention keys/values) and final norm;
                // the head is tied to `shared`, which is not trained.
                MethodKind::TopK => {
                    let model = &run.trainer.loaded.model;
                    let want: Vec<String> = model
                        .param_names()
                        .into_iter()
                        .filter(|n| n.starts_with("decoder.block.1.") || n == "decoder.final_layer_norm.weight")
                        .collect();
                    let mut got = run.selected.clone();
                    got.sort();
                    let mut want = want;
                    want.sort();
                    assert_eq!(got, want, "{label}");
                }
                _ => {}
            }
            common::assert_hf_layout(&dir.path().join("model"), "tiny-t5");
            let exported = load_model(&dir.path().join("model"), &dev.device).unwrap();
            assert!(exported.model.param_names().iter().all(|n| !n.contains("lora")));
            let err = common::max_abs_diff(&logits(&run.trainer.loaded.model), &logits(&exported.model));
            assert!(err < 1e-4, "{label}: reloaded logits differ by {err}");
            let moved =
                common::max_abs_diff(&logits(&run.trainer.loaded.model), &logits(&load_model(&cfg_model(), &dev.device).unwrap().model));
            assert!(moved > 1e-4, "{label}: training left the logits unchanged ({moved})");
            eprintln!(
                "{label}: losses {:?}, {} tensors selected, realised rho {:.3}, reloaded logits max abs diff {err:.1e} (moved {moved:.2e} from the base)",
                run.losses,
                run.selected.len(),
                run.realised_rho
            );
        }
    }
}

fn cfg_model() -> std::path::PathBuf {
    common::fixture("tiny-t5")
}

#[test]
fn head_blocks_train_whole_heads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        granularity: greentrainer::train::Granularity::Head,
        ..common::short_run("tiny-t5", MethodKind::Greentrainer, dir.path())
    };
    let before = common::param_snapshot(&Trainer::prepare(cfg.clone(), ComputeDevice::cpu()).unwrap().loaded.model);
    let run = train(cfg, ComputeDevice::cpu());
    assert!(run.realised_rho <= 0.6, "{}", run.realised_rho);
    let after = common::param_snapshot(&run.trainer.loaded.model);
    let blocks: Vec<(&str, std::ops::Range<usize>)> = run.selected.iter().filter_map(|n| parse_block(n)).collect();
    assert!(!blocks.is_empty(), "head granularity selected no row block: {:?}", run.selected);
    for (tensor, rows) in &blocks {
        assert!(rows.start % 16 == 0 && rows.len() % 16 == 0, "{tensor} rows {rows:?} are not whole heads of d_kv 16");
    }
    // Every selected block trains; rows of a weight no block selected stay bit-identical.
    let ops = run.trainer.loaded.model.op_graph();
    let mut partial = 0;
    for tensor in blocks.iter().map(|(t, _)| *t).collect::<std::collections::BTreeSet<_>>() {
        let Some(OpKind::Linear { d_in, d_out }) = ops.iter().find(|o| o.name == tensor).map(|o| o.kind) else {
            panic!("{tensor} is no linear")
        };
        let picked: Vec<usize> = blocks.iter().filter(|(t, _)| *t == tensor).flat_map(|(_, r)| r.clone()).collect();
        let changed = |r: usize| before[tensor][r * d_in..(r + 1) * d_in] != after[tensor][r * d_in..(r + 1) * d_in];
        assert!(picked.iter().any(|&r| changed(r)), "{tensor}: selected rows did not train");
        if picked.len() < d_out && !run.selected.iter().any(|n| n == tensor) {
            partial += 1;
            assert!((0..d_out).filter(|r| !picked.contains(r)).all(|r| !changed(r)), "{tensor}: unselected rows changed");
        }
    }
    assert!(partial > 0, "no weight was selected in part: {blocks:?}");
}

#[test]
fn each_step_is_charged_the_profile_of_its_encoder_and_decoder_lengths() {
    for method in [MethodKind::Full, MethodKind::Greentrainer, MethodKind::Lora] {
        let dir = tempfile::tempdir().unwrap();
        // Long enough that the targets (26 to 130 tokens in the demo data) are not cut to the sources' length.
        let cfg = TrainConfig { save_model: false, max_len: 160, ..common::short_run("tiny-t5", method, dir.path()) };
        let run = train(cfg.clone(), ComputeDevice::cpu());
        let trainer = &run.trainer;
        // The batches the trainer saw, rebuilt with its plan.
        let plan = BatchPlan { batch_size: cfg.batch_size, group_by_length: cfg.group_by_length, drop_last: false, seed: cfg.seed };
        let batcher = Batcher::new(&trainer.examples, plan, 1).unwrap();
        let batches: Vec<_> = batcher.batches_from(Default::default()).take(3).map(|(_, b)| b).collect();
        let mut model = trainer.loaded.model.clone();
        let trainable: std::collections::BTreeSet<String> = match method {
            MethodKind::Lora => model.attach_lora(&trainer.config.lora_config()).into_iter().collect(),
            MethodKind::Full => model.param_names().into_iter().collect(),
            _ => run.selected.iter().cloned().collect(),
        };
        let ops = model.op_graph();
        for (i, (host, &(spent, full))) in batches.iter().zip(&run.step_flops).enumerate() {
            let shape = DeviceBatch::new(host, &model).shape;
            let dec = shape.decoder_seq.unwrap();
            assert!(shape.seq <= cfg.max_len && dec < shape.seq, "step {i}: {shape:?}: the decoder length must differ from the encoder's");
            let p = profile(&ops, shape, false).unwrap();
            let want_full = 2.0 * p.t_full();
            // Importance scoring (first step, GreenTrainer) counts in both totals.
            let scoring = if i == 0 { run.selection_flops } else { 0.0 };
            assert!((full - scoring - want_full).abs() <= 1e-9 * want_full, "{method:?} step {i}: full {full} vs profile {want_full}");
            let want = 2.0 * greentrainer::train::cost::step_macs(&p, &model, &trainable) + scoring;
            assert!((spent - want).abs() <= 1e-9 * want, "{method:?} step {i}: spent {spent} vs profile {want}");
            eprintln!("{method:?} step {i}: {shape:?}: spent {spent:.4e} FLOPs (scoring {scoring:.4e}), full {full:.4e}");
            match method {
                MethodKind::Full => assert!((spent - want_full).abs() <= 1e-9 * want_full),
                _ => assert!(spent - scoring < want_full, "{method:?} step {i}: {spent} is not below full {want_full}"),
            }
        }
    }
}

#[test]
fn a_decoder_selection_is_not_charged_the_encoders_backward() {
    let loaded = load_model(&common::fixture("tiny-t5"), &ComputeDevice::cpu().device).unwrap();
    let ops = loaded.model.op_graph();
    let shape = greentrainer::profile::BatchShape { batch: 2, seq: 30, decoder_seq: Some(9), head_tokens: None, grad_tokens: None };
    let p = profile(&ops, shape, false).unwrap();
    let index = |name: &str| p.nodes.iter().position(|n| n.name == name).unwrap();
    let decoder = [index("decoder.block.0.layer.2.DenseReluDense.wo.weight"), index("decoder.final_layer_norm.weight")];
    let cross = [index("decoder.block.1.layer.1.EncDecAttention.k.weight")];
    let encoder = [index("encoder.block.1.layer.0.SelfAttention.v.weight")];
    // Make the encoder's activation gradients enormous: only selections that reach into it may change.
    let mut heavy = p.clone();
    for n in heavy.nodes.iter_mut().filter(|n| n.stream == Stream::Input && n.name.starts_with("encoder.")) {
        n.t_dy *= 1e6;
    }
    let cost = |p: &greentrainer::profile::Profile, sel: &[usize]| p.selection_cost(sel, CostRule::Exact).unwrap();
    assert_eq!(cost(&p, &decoder), cost(&heavy, &decoder), "a decoder selection pays encoder backward");
    assert_eq!(cost(&p, &cross), cost(&heavy, &cross), "the cross keys/values read the encoder output, not its gradient");
    assert!(cost(&heavy, &encoder) > 1e3 * cost(&p, &encoder), "an encoder selection must pay the encoder's backward");
    // The decoder selection pays the forward pass, the decoder's backward down to block 0's wo, and the two weight gradients.
    let deepest = decoder[0];
    let want =
        p.t_fp() + p.nodes[deepest + 1..].iter().map(|n| n.t_dy).sum::<f64>() + decoder.iter().map(|&i| p.nodes[i].t_dw).sum::<f64>();
    assert!((cost(&p, &decoder) - want).abs() <= 1e-9 * want, "{} vs {want}", cost(&p, &decoder));

    // A LoRA adapter on a decoder layer costs its low-rank products on the decoder's tokens.
    let mut adapted = loaded.model.clone();
    let lora = greentrainer::model::lora::LoraConfig::paper(vec!["q".into()]);
    let names: std::collections::BTreeSet<String> =
        adapted.attach_lora(&lora).into_iter().filter(|n| n.starts_with("decoder.block.0.layer.0.")).collect();
    let q = index("decoder.block.0.layer.0.SelfAttention.q.weight");
    let adapter = greentrainer::train::cost::step_macs(&p, &adapted, &names) - (cost(&p, &[q]) - p.nodes[q].t_dw);
    let (d, inner) = (64.0, 64.0);
    let want = 3.0 * (2.0 * 9.0) * lora.rank as f64 * (d + inner);
    assert!((adapter - want).abs() <= 1e-9 * want, "adapter MACs {adapter} vs {want} on 2 x 9 decoder tokens");
}

/// transformers' repetition penalty over the decoder's ids (start token included).
fn penalised_argmax(logits: &[f32], seen: &[u32], penalty: f32) -> u32 {
    let score = |i: usize| {
        let x = logits[i];
        if !seen.contains(&(i as u32)) {
            x
        } else if x < 0.0 {
            x * penalty
        } else {
            x / penalty
        }
    };
    (0..logits.len()).fold((0, f32::MIN), |b, i| if score(i) > b.1 { (i, score(i)) } else { b }).0 as u32
}

#[test]
fn generation_encodes_once_and_decodes_what_an_uncached_argmax_loop_decodes() {
    const SOFT: f64 = 0.1;
    // A random tiny model repeats one token; the repetition penalty makes it walk the vocabulary.
    let source: Vec<u32> = vec![300, 301, 302, 17, 230];
    let penalty = 3.0;
    for dev in common::devices() {
        let loaded = load_model(&common::fixture("tiny-t5"), &dev.device).unwrap();
        let model = &loaded.model;
        let n = 6;
        // The independent reference: the whole decoder prefix through T5::forward at every step.
        let mut want = vec![1u32];
        for _ in 0..n {
            let len = want.len();
            let ids = int_tensor(source.iter().map(|&t| t as i64).collect(), [1, source.len()], &dev.device);
            let dec = int_tensor(want.iter().map(|&t| t as i64).collect(), [1, len], &dev.device);
            let logits: Vec<f32> = t5(model).forward(ids, None, dec).narrow(1, len - 1, 1).try_into_vec_as::<f32>().unwrap();
            want.push(penalised_argmax(&logits, &want, penalty));
        }
        let want = want[1..].to_vec();
        assert!(want[2] != want[0] && want[2] != want[1], "{}: {want:?} cannot test stopping at EOS", dev.name);
        let greedy_opts = GenerateOptions { repetition_penalty: penalty, ..GenerateOptions::greedy(n) };
        let greedy = generate(model, &source, &greedy_opts);
        assert_eq!(greedy, want, "{}: cached greedy vs uncached argmax", dev.name);
        let uncached = generate(model, &source, &GenerateOptions { use_cache: false, ..greedy_opts.clone() });
        assert_eq!(uncached, want, "{}", dev.name);
        let one_beam = GenerateOptions { strategy: Strategy::Beam { num_beams: 1, length_penalty: 1.0 }, ..greedy_opts.clone() };
        assert_eq!(generate(model, &source, &one_beam), want, "{}: one beam is greedy", dev.name);
        // The encoder output matters: another source decodes differently.
        assert_ne!(generate(model, &[40, 17, 230, 5, 99, 301, 12], &greedy_opts), want, "{}", dev.name);

        // Beams reorder the cache (self- and cross-attention): cached and uncached search agree. The
        // random model's logits are so peaked that its beams agree; scaled down they compete.
        let mut soft = model.clone();
        soft.visit_mut(&mut |name, p| {
            if let ("decoder.final_layer_norm.weight", greentrainer::model::ParamMut::Vector(w)) = (name, p) {
                *w = w.clone().mul_scalar(SOFT);
            }
        });
        let beams = GenerateOptions { strategy: Strategy::Beam { num_beams: 3, length_penalty: 1.0 }, ..greedy_opts.clone() };
        let cached = generate(&soft, &source, &beams);
        assert_eq!(cached.len(), n, "{}", dev.name);
        assert!(cached.iter().collect::<std::collections::BTreeSet<_>>().len() > 2, "{}: {cached:?}", dev.name);
        assert_eq!(cached, generate(&soft, &source, &GenerateOptions { use_cache: false, ..beams.clone() }), "{}", dev.name);
        let soft_greedy = generate(&soft, &source, &greedy_opts);
        assert_ne!(cached, soft_greedy, "{}: the beams never left the greedy path", dev.name);
        eprintln!("{}: scaled model: greedy {soft_greedy:?}, 3 beams {cached:?}", dev.name);

        // Generation stops at EOS and returns only target tokens.
        let stop = GenerateOptions { eos_token_ids: vec![want[2]], ..greedy_opts };
        assert_eq!(generate(model, &source, &stop), want[..2].to_vec(), "{}", dev.name);
    }
}

#[test]
fn the_cli_inspects_trains_generates_and_evaluates_t5() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_greentrainer"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let dir = tempfile::tempdir().unwrap();
    let model = common::fixture("tiny-t5");
    let model = model.to_str().unwrap();
    let t = run(&["inspect", "--device", "cpu", "--model", model]);
    assert!(t.contains("architecture t5") && t.contains("layers       4"), "{t}");

    let out = dir.path().join("run");
    let data = dir.path().join("rows.jsonl");
    let row = "{\"dialogue\": \"#Person1#: Hello there. #Person2#: Hi, how are you?\", \"summary\": \"Two people greet.\"}\n";
    std::fs::write(&data, row.repeat(4)).unwrap();
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let t = run(&[
        "train",
        "--device",
        "cpu",
        "--model",
        model,
        "--data",
        data,
        "--output",
        out,
        "--max-steps",
        "2",
        "--epochs",
        "0",
        "--batch-size",
        "2",
        "--max-len",
        "32",
    ]);
    assert!(t.contains("saved"), "{t}");
    let trained = dir.path().join("run/model");
    let trained = trained.to_str().unwrap();

    // A T5 answers the prompt: the output is the generated text alone.
    let t = run(&["generate", "--device", "cpu", "--model", trained, "--prompt", "Hello there", "--max-new-tokens", "4", "--beams", "2"]);
    assert!(!t.contains("Hello there"), "{t}");
    let t =
        run(&["eval", "--device", "cpu", "--model", trained, "--data", data, "--max-rows", "2", "--max-new-tokens", "4", "--beams", "2"]);
    assert!(t.contains("ROUGE-1") && t.contains("(2 rows"), "{t}");
    let predictions = std::fs::read_to_string(dir.path().join("run/model/predictions-rows.jsonl")).unwrap();
    assert_eq!(predictions.lines().count(), 2);
}
