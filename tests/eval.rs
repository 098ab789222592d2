//! `eval` end to end on the tiny model: generation for a few rows, ROUGE, predictions written.

mod common;

use greentrainer::data::{LoadOptions, load_dataset};
use greentrainer::device::ComputeDevice;
use greentrainer::eval::generate::{GenerateOptions, Strategy};
use greentrainer::eval::rouge::{RougeOptions, score_multi};
use greentrainer::eval::runner::{evaluate, write_predictions};
use greentrainer::io::load_model;

#[test]
fn eval_runs_end_to_end_on_the_tiny_model() {
    let dev = ComputeDevice::cpu();
    let loaded = load_model(&common::fixture("tiny-llama"), &dev.device).unwrap();
    let data_path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.test.jsonl");
    let mut data = load_dataset(&data_path, &loaded.tokenizer, &LoadOptions::new(96, 0)).unwrap();
    data.examples.truncate(3);
    let mut calls = Vec::new();
    for strategy in [Strategy::Greedy, Strategy::Beam { num_beams: 3, length_penalty: 1.0 }] {
        let generation = GenerateOptions { strategy, max_new_tokens: 6, repetition_penalty: 2.5, eos_token_ids: vec![0], use_cache: true };
        let result = evaluate(&loaded, &data.examples, &generation, &RougeOptions::default(), &mut |done, total| {
            calls.push((done, total));
            true
        })
        .unwrap();
        assert_eq!(result.predictions.len(), 3);
        assert_eq!(result.rouge.count, 3);
        for p in &result.predictions {
            assert_eq!(p.references.len(), 3, "DialogSum test rows carry summary1..3");
            let s = score_multi(&p.prediction, &p.references, &RougeOptions::default());
            assert_eq!(s.rouge1.fmeasure, p.rouge1);
        }
        let mean = result.predictions.iter().map(|p| p.rouge1).sum::<f64>() / 3.0;
        assert!((result.rouge.rouge1 - mean).abs() < 1e-12);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("predictions.jsonl");
        write_predictions(&out, &result.predictions).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
    }
    assert_eq!(calls.last(), Some(&(3, 3)));

    // Stopped from the progress callback after the first row: a cancel, not a shorter result.
    let generation = GenerateOptions::greedy(6);
    let mut rows_done = 0;
    let stopped = evaluate(&loaded, &data.examples, &generation, &RougeOptions::default(), &mut |done, _| {
        rows_done = done;
        false
    });
    assert!(matches!(stopped, Err(greentrainer::error::Error::Cancelled)), "{:?}", stopped.map(|r| r.predictions.len()));
    assert_eq!(rows_done, 1);
}
