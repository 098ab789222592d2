//! The app driven through its widgets, rendered with wgpu (lavapipe without a GPU): it starts,
//! loads the tiny Llama and the bundled DialogSum sample, checks rho, trains a few steps on the
//! CPU, shows the tensor map, evaluates, chats, saves a folder that reloads, and reopens the run's log;
//! the tiny T5 goes through the same tabs.
//!
//! Each tab is snapshotted under tests/snapshots/. Paths, timings and fonts differ between
//! machines, so the comparison tolerates 0.5% of the pixels (about 4700) differing: it catches a
//! broken layout, not a changed number. Refresh the images with UPDATE_SNAPSHOTS=force.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::{Harness, SnapshotOptions};
use greentrainer::app::{Settings, StudioApp};
use greentrainer::device::DeviceChoice;
use greentrainer::io::discover::Stores;
use greentrainer::model::FrozenPrecision;

const SIZE: egui::Vec2 = egui::vec2(1180.0, 800.0);

/// The app on `settings`, with no model stores to list (the machine's own would change the
/// Model tab from one machine to the next).
fn harness(settings: Settings) -> Harness<'static, StudioApp> {
    harness_with_stores(settings, Stores::default())
}

fn harness_with_stores(settings: Settings, stores: Stores) -> Harness<'static, StudioApp> {
    Harness::builder().with_size(SIZE).wgpu().build_eframe(move |cc| {
        let mut app = StudioApp::new(cc.egui_ctx.clone(), settings);
        app.look_for_models_in(stores);
        app
    })
}

/// Empty paths (the test types them) and a run small enough for the CPU in seconds.
fn settings(dir: &Path) -> Settings {
    Settings {
        model_path: String::new(),
        data_path: String::new(),
        output_dir: dir.join("run").display().to_string(),
        save_dir: String::new(),
        run_log: String::new(),
        device: DeviceChoice::Cpu,
        max_len: 48,
        batch_size: 2,
        epochs: 0,
        max_steps: 3,
        lr: 1e-3,
        eval_rows: 2,
        max_new_tokens: 8,
        ..Settings::default()
    }
}

/// Steps the UI until a label containing `text` shows, failing on an error or after a minute.
fn wait_for(harness: &mut Harness<'_, StudioApp>, text: &str) {
    let start = Instant::now();
    loop {
        harness.step();
        if harness.query_by_label_contains(text).is_some() && !harness.state().busy() {
            break;
        }
        if let Some(e) = harness.state().error() {
            panic!("waiting for {text:?}: {e}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.run_ok();
}

fn type_into(harness: &mut Harness<'_, StudioApp>, field: &str, text: &str) {
    harness.get_by_role_and_label(Role::TextInput, field).set_text_value_accesskit(text);
    harness.run_ok();
}

fn click(harness: &mut Harness<'_, StudioApp>, label: &str) {
    harness.get_by_label(label).click();
    harness.run_ok();
}

/// Sends `message` in the Chat tab and waits for the replies.
fn say(harness: &mut Harness<'_, StudioApp>, message: &str) {
    harness.get_by_role_and_label(Role::MultilineTextInput, "Message").set_text_value_accesskit(message);
    harness.run_ok();
    let before = harness.query_all_by_label_contains("Assistant:").count();
    click(harness, "Send");
    let start = Instant::now();
    while harness.state().busy() || harness.query_all_by_label_contains("Assistant:").count() == before {
        harness.step();
        if let Some(e) = harness.state().error() {
            panic!("chatting: {e}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no reply");
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.run_ok();
}

/// Tolerates 0.5% of the pixels differing (see the module comment).
fn snapshot(harness: &mut Harness<'_, StudioApp>, name: &str) {
    let options = SnapshotOptions::new().threshold(2.0).max_failed_pixels((SIZE.x * SIZE.y * 0.005) as usize);
    harness.snapshot_options(name, &options);
}

#[test]
fn app_starts_on_the_model_tab() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(settings(dir.path()));
    harness.get_by_label("No model loaded yet.");
    harness.get_by_label("Load model");
    for tab in ["Model", "Data", "Method", "Train", "Tensors", "Evaluate", "Save"] {
        harness.get_by_label(tab);
    }
    snapshot(&mut harness, "start");
}

#[test]
fn a_bad_model_path_is_an_error_in_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(settings(dir.path()));
    type_into(&mut harness, "Model path", "/no/such/model");
    harness.get_by_label("Nothing exists at this path yet.");
    click(&mut harness, "Load model");
    let start = Instant::now();
    while harness.state().error().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "no error shown");
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.run_ok();
    harness.get_by_label_contains("loading the model failed");
    harness.get_by_label("No model loaded yet.");
    assert!(harness.state().settings().recent_models.is_empty(), "a path that did not load is not remembered");

    type_into(&mut harness, "Model path", &common::fixture("tiny-llama").display().to_string());
    click(&mut harness, "Load model");
    wait_for(&mut harness, "Model loaded");
    assert_eq!(harness.state().settings().recent_models, [common::fixture("tiny-llama").display().to_string()]);
}

#[test]
fn load_train_inspect_evaluate_save_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(settings(dir.path()));

    type_into(&mut harness, "Model path", &common::fixture("tiny-llama").display().to_string());
    click(&mut harness, "Load model");
    wait_for(&mut harness, "Model loaded");
    harness.get_by_label_contains("architecture");
    snapshot(&mut harness, "model");

    click(&mut harness, "Data");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.train.jsonl");
    type_into(&mut harness, "Data file", &data.display().to_string());
    click(&mut harness, "Preview data");
    wait_for(&mut harness, "for training");
    harness.get_by_label_contains("DialogSum");
    snapshot(&mut harness, "data");

    click(&mut harness, "Method");
    let rho = "rho (share of full fine-tuning FLOPs)";
    harness.get_by_role_and_label(Role::Slider, rho).set_value_accesskit(0.1);
    harness.run_ok();
    harness.get_by_label_contains("is infeasible");
    harness.get_by_role_and_label(Role::Slider, rho).set_value_accesskit(0.6);
    harness.run_ok();
    assert!(harness.query_by_label_contains("is infeasible").is_none());
    harness.get_by_label_contains("Saving vs full");
    click(&mut harness, "Calibrate");
    wait_for(&mut harness, "Time per step (estimated)");
    harness.get_by_label("Memory (peak, estimated)");
    harness.get_by_label_contains("the estimated");
    snapshot(&mut harness, "method");
    // The frozen prompt is a GreenTrainer setting the run takes from the tab.
    click(&mut harness, "Freeze the shared prompt prefix");
    assert!(harness.state().settings().frozen_prompt && harness.state().settings().train_config().frozen_prompt);
    click(&mut harness, "Freeze the shared prompt prefix");
    assert!(!harness.state().settings().frozen_prompt);
    // Frozen weights in f16: the run takes it and the estimate's weights shrink.
    let memory =
        |harness: &Harness<'_, StudioApp>| harness.get_by_label_contains("AdamW state").accesskit_node().value().unwrap_or_default();
    let in_f32 = memory(&harness);
    assert!(in_f32.contains("weights"), "{in_f32}");
    click(&mut harness, "f16");
    assert_eq!(harness.state().settings().train_config().frozen_precision, FrozenPrecision::F16);
    assert_ne!(memory(&harness), in_f32, "the memory estimate ignores the frozen precision");
    click(&mut harness, "f32");
    assert_eq!(memory(&harness), in_f32);
    // The run below stores its frozen weights in f16, sharing the base model's (see the worker).
    click(&mut harness, "f16");

    click(&mut harness, "Train");
    click(&mut harness, "Start training");
    // Paused before its first step ends, the run waits after step 1 until Continue.
    click(&mut harness, "Pause");
    let paused_at = Instant::now();
    while paused_at.elapsed() < Duration::from_millis(1500) {
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.get_by_label("Paused");
    assert!(harness.state().busy(), "a paused run is still running");
    assert!(harness.query_by_label_contains("Training finished").is_none(), "the run went on while paused");
    click(&mut harness, "Continue");
    wait_for(&mut harness, "Training finished: 3 steps");
    harness.get_by_label_contains("step 3 of 3");
    snapshot(&mut harness, "train");

    click(&mut harness, "Tensors");
    harness.get_by_label_contains("realised rho");
    snapshot(&mut harness, "tensors");

    click(&mut harness, "Evaluate");
    click(&mut harness, "Run evaluation");
    wait_for(&mut harness, "Fine-tuned: ROUGE-1");
    // After training, the base model's predictions stand beside the fine-tuned ones.
    harness.get_by_label("Prediction (base)");
    harness.get_by_label_contains("Base (as loaded)");
    snapshot(&mut harness, "evaluate");

    // The fine-tuned model and the base model answer the same message side by side.
    click(&mut harness, "Chat");
    harness.get_by_label_contains("no chat template: each message goes to it alone");
    harness.get_by_role_and_label(Role::Slider, "Temperature").set_value_accesskit(0.0);
    say(&mut harness, "Summarize: hello");
    assert_eq!(harness.query_all_by_label_contains("Assistant:").count(), 2, "one reply per model");
    harness.get_by_label("Fine-tuned");
    harness.get_by_label("Base (as loaded)");
    harness.get_by_label("You: Summarize: hello");
    say(&mut harness, "And again?");
    assert_eq!(harness.query_all_by_label_contains("Assistant:").count(), 4);
    assert_eq!(harness.state().settings().chat.temperature, 0.0, "the sampling settings are kept");
    snapshot(&mut harness, "chat");
    click(&mut harness, "Clear conversation");
    assert!(harness.query_by_label_contains("Assistant:").is_none());

    click(&mut harness, "Save");
    let saved = dir.path().join("saved");
    type_into(&mut harness, "Save folder", &saved.display().to_string());
    harness.get_by_label_contains("Also write delta.safetensors").click();
    harness.run_ok();
    click(&mut harness, "Save model");
    wait_for(&mut harness, "reloaded it as a check");
    greentrainer::io::load_model(&saved, &greentrainer::device::ComputeDevice::cpu().device).expect("the saved folder loads");
    harness.get_by_label_contains("changed tensors in");
    let model = std::fs::read(saved.join("model.safetensors")).unwrap();
    let delta = std::fs::read(dir.path().join("delta.safetensors")).expect("the delta is written beside the folder");
    let delta_names = safetensors::SafeTensors::deserialize(&delta).unwrap().names().len();
    assert!(
        delta_names > 0 && delta_names < safetensors::SafeTensors::deserialize(&model).unwrap().names().len(),
        "{delta_names} tensors in the delta"
    );
    let (_, header) = safetensors::SafeTensors::read_metadata(&delta).unwrap();
    let metadata = header.metadata().clone().expect("the delta has metadata");
    assert_eq!(metadata["method"], "greentrainer");
    assert_eq!(metadata["rho"], "0.6");
    assert!(metadata["selection"].starts_with('['), "{metadata:?}");
    snapshot(&mut harness, "save");

    // The folder now holds a model: saving there again replaces it only when the user ticks it.
    click(&mut harness, "Save model");
    let start = Instant::now();
    while harness.state().error().is_none() || harness.state().busy() {
        harness.step();
        assert!(start.elapsed() < Duration::from_secs(60), "saving over a folder was not refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = harness.state().error().unwrap().to_string();
    assert!(refused.contains("exists and is not empty") && refused.contains("Replace the model folder"), "{refused}");
    click(&mut harness, "Replace the model folder if one is there (a folder of other files is never replaced)");
    click(&mut harness, "Save model");
    wait_for(&mut harness, "reloaded it as a check");

    // The same model as one GGUF file for llama.cpp and Ollama.
    let gguf = dir.path().join("tiny.gguf");
    type_into(&mut harness, "GGUF file", &gguf.display().to_string());
    click(&mut harness, "Export GGUF");
    wait_for(&mut harness, "In Ollama: ollama create my-model -f");
    let exported = greentrainer::io::load_model(&gguf, &greentrainer::device::ComputeDevice::cpu().device).expect("the GGUF loads");
    assert_eq!(exported.model.info().layers, 2);
    assert!(dir.path().join("tiny.Modelfile").exists());

    click(&mut harness, "Train");
    let log = dir.path().join("run/events.jsonl");
    type_into(&mut harness, "Past run log", &log.display().to_string());
    click(&mut harness, "Open run");
    wait_for(&mut harness, "Showing the past run");
    harness.get_by_label_contains("step 3 of 3");
}

/// T5 (encoder-decoder) through every tab: its cost estimate and calibration, a run, the tensor
/// map, evaluation and generation, and a saved folder that reloads.
#[test]
fn a_t5_folder_loads_trains_evaluates_and_saves() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(settings(dir.path()));
    type_into(&mut harness, "Model path", &common::fixture("tiny-t5").display().to_string());
    click(&mut harness, "Load model");
    wait_for(&mut harness, "Model loaded");
    harness.get_by_label_contains("Model: t5");

    click(&mut harness, "Data");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.train.jsonl");
    type_into(&mut harness, "Data file", &data.display().to_string());
    click(&mut harness, "Preview data");
    wait_for(&mut harness, "for training");

    click(&mut harness, "Method");
    harness.get_by_role_and_label(Role::Slider, "rho (share of full fine-tuning FLOPs)").set_value_accesskit(0.6);
    harness.run_ok();
    harness.get_by_label_contains("Saving vs full");
    click(&mut harness, "Calibrate");
    wait_for(&mut harness, "Time per step (estimated)");

    click(&mut harness, "Train");
    click(&mut harness, "Start training");
    wait_for(&mut harness, "Training finished: 3 steps");
    click(&mut harness, "Tensors");
    harness.get_by_label_contains("realised rho");

    click(&mut harness, "Evaluate");
    click(&mut harness, "Run evaluation");
    wait_for(&mut harness, "Fine-tuned: ROUGE-1");
    click(&mut harness, "Chat");
    // T5 reads the message through its encoder and answers it.
    harness.get_by_label_contains("no chat template");
    say(&mut harness, "Summarize: hello");
    assert_eq!(harness.query_all_by_label_contains("Assistant:").count(), 2);
    assert!(harness.query_by_label_contains("Assistant: Summarize").is_none(), "T5 answers the message, it does not continue it");

    click(&mut harness, "Save");
    let saved = dir.path().join("saved");
    type_into(&mut harness, "Save folder", &saved.display().to_string());
    click(&mut harness, "Save model");
    wait_for(&mut harness, "reloaded it as a check");
    let reloaded = greentrainer::io::load_model(&saved, &greentrainer::device::ComputeDevice::cpu().device).unwrap();
    assert_eq!(reloaded.model.info().model_type, "t5");
}

#[test]
fn a_budget_typed_in_the_method_tab_replaces_rho_in_the_run() {
    use greentrainer::green::budget::Budget;
    let mut s = Settings { budget: " 30g ".into(), ..Settings::default() };
    assert_eq!(s.train_config().budget, Some(Budget::Co2G(30.0)));
    s.budget = "30 parsecs".into();
    assert!(matches!(s.budget_choice(), Some(Err(e)) if e.contains("unknown unit")));
    assert_eq!(s.train_config().budget, None);
    s.budget.clear();
    assert!(s.budget_choice().is_none());
    s.budget = "2.5wh".into();
    s.method = greentrainer::train::MethodKind::Full;
    assert_eq!(s.train_config().budget, None, "a budget only applies to GreenTrainer");
}

/// The Evaluate tab and `greentrainer eval` score the same model on the same rows alike (SmolLM2,
/// whose summaries depend on the prompt, unlike a tiny random model's).
#[test]
fn the_evaluate_tab_and_the_eval_command_agree() {
    let Some(model) = common::smollm2_gguf() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.test.jsonl");
    let s = Settings { eval_rows: 3, max_new_tokens: 16, max_len: 160, ..settings(dir.path()) };
    let (max_len, new_tokens) = (s.max_len, s.max_new_tokens);
    let (validation_fraction, eval_rows) = (s.validation_fraction, s.eval_rows);
    let mut harness = harness(s);
    type_into(&mut harness, "Model path", &model.display().to_string());
    click(&mut harness, "Load model");
    wait_for(&mut harness, "Model loaded");
    click(&mut harness, "Data");
    type_into(&mut harness, "Data file", &data.display().to_string());
    click(&mut harness, "Preview data");
    wait_for(&mut harness, "for training");
    click(&mut harness, "Evaluate");
    click(&mut harness, "Run evaluation");
    wait_for(&mut harness, "F1 x 100)");
    let app = harness.state().evaluation().expect("an evaluation").clone();
    assert_eq!(app.predictions.len(), eval_rows);

    // The same rows, written out: the first validation rows of the app's seeded split.
    let lines: Vec<&str> = std::fs::read_to_string(&data).unwrap().leak().lines().collect();
    let seed = greentrainer::train::TrainConfig::default().seed;
    let (_, validation) = greentrainer::data::split_by_ratio(lines, validation_fraction, seed).unwrap();
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(&rows, validation[..eval_rows].join("\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_greentrainer"))
        .args(["eval", "--device", "cpu", "--model", model.to_str().unwrap(), "--data", rows.to_str().unwrap()])
        .args(["--max-len", &max_len.to_string(), "--max-new-tokens", &new_tokens.to_string()])
        .args(["--out", dir.path().join("predictions.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    let r = &app.rouge;
    assert!(r.rouge1 > 0.0, "SmolLM2's summaries share words with the references: {:?}", app.predictions);
    let expected = format!("ROUGE-1 {:.2}  ROUGE-2 {:.2}  ROUGE-L {:.2}", 100.0 * r.rouge1, 100.0 * r.rouge2, 100.0 * r.rouge_l);
    assert!(printed.contains(&expected), "app: {expected}\ncommand: {printed}");
    let command: Vec<String> = std::fs::read_to_string(dir.path().join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prediction"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(command, app.predictions.iter().map(|p| p.prediction.clone()).collect::<Vec<_>>());
}

/// The Method tab's comparison trains each method on the data file's first rows and scores it on
/// its last ones: the base model, full fine-tuning, GreenTrainer at the tab's rho within its FLOPs,
/// FT-top-k and LoRA, each a row of real numbers; a cancelled comparison leaves no error.
#[test]
fn the_method_tab_compares_methods_on_held_out_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings { rho: 0.6, compare_rows: 4, compare_held_out: 2, ..settings(dir.path()) };
    let mut harness = harness(s);
    type_into(&mut harness, "Model path", &common::fixture("tiny-llama").display().to_string());
    click(&mut harness, "Load model");
    wait_for(&mut harness, "Model loaded");
    click(&mut harness, "Data");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.train.jsonl");
    type_into(&mut harness, "Data file", &data.display().to_string());
    click(&mut harness, "Method");

    click(&mut harness, "Compare methods");
    click(&mut harness, "Cancel comparison");
    let start = Instant::now();
    while harness.state().busy() {
        harness.step();
        assert!(start.elapsed() < Duration::from_secs(120), "the comparison did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(harness.state().error(), None, "cancelling is not an error");
    assert!(harness.state().comparison().is_none());

    click(&mut harness, "Compare methods");
    wait_for(&mut harness, "Held-out loss");
    let rows = harness.state().comparison().expect("the comparison's rows");
    let methods: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods.len(), 5, "{methods:?}");
    assert_eq!((methods[0], methods[1], methods[4]), ("base model", "full", "LoRA"), "{methods:?}");
    assert!(methods[2].starts_with("GreenTrainer rho 0.6") && methods[3].starts_with("FT-top-"), "{methods:?}");
    let (base, full, green) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!((base.flops_ratio, full.flops_ratio), (0.0, 1.0));
    // Its importance scoring is charged to it too, a large share of a two-step run.
    assert!(green.flops_ratio > 0.3 && green.flops_ratio < 0.9, "GreenTrainer spent {} of full", green.flops_ratio);
    // Training at lr 1e-3 moves the held-out loss off the base model's.
    for r in &rows[1..] {
        assert!(r.held_out_loss.is_finite() && (r.held_out_loss - base.held_out_loss).abs() > 1e-6, "{r:?}");
        assert!((0.0..=100.0).contains(&r.rouge_l), "{r:?}");
    }
}

/// Where the system offers no file dialog (no desktop portal, no zenity: this CI image), Browse…
/// says so in the window instead of failing silently. Skipped where a dialog could open and wait.
#[test]
fn browse_without_a_file_dialog_says_so() {
    let zenity = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("zenity").exists()));
    if zenity || std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        eprintln!("!!! skipped: this desktop may open a real file dialog");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(settings(dir.path()));
    assert!(harness.query_by_label_contains("No file dialog opened").is_none());
    harness.get_all_by_label("Browse…").next().expect("a Browse button").click();
    harness.run_ok();
    harness.get_by_label_contains("No file dialog opened");
}

/// A rho too shallow for the model is flagged in the Method tab with a button that sets the
/// smallest rho reaching (nearly) every block, which clears the warning.
#[test]
fn the_depth_warning_offers_the_rho_that_reaches_every_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(Settings { rho: 0.36, ..settings(dir.path()) });
    type_into(&mut harness, "Model path", &common::fixture("tiny-llama").display().to_string());
    click(&mut harness, "Load model");
    wait_for(&mut harness, "Model loaded");
    click(&mut harness, "Method");
    harness.get_by_label_contains("too shallow");
    let button = harness.get_by_label_contains("Use rho");
    let offered: f64 =
        button.accesskit_node().label().unwrap_or_default().trim_start_matches("Use rho ").parse().expect("a rho on the button");
    button.click();
    harness.run_ok();
    assert_eq!(harness.state().settings().rho, offered);
    assert!(offered > 0.36 && offered <= 1.0, "{offered}");
    assert!(harness.query_by_label_contains("too shallow").is_none(), "rho {offered} still warns");
}

/// A path typed in part offers the entries it could mean; one click completes it.
#[test]
fn a_partial_path_offers_completions() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = harness(settings(dir.path()));
    let fixtures = common::fixture("tiny-llama").parent().unwrap().to_path_buf();
    type_into(&mut harness, "Model path", &fixtures.join("tiny-ll").display().to_string());
    harness.get_by_label_contains("Nothing exists at this path yet.");
    harness.get_by_label("Did you mean:");
    click(&mut harness, "tiny-llama/");
    assert_eq!(harness.state().settings().model_path, fixtures.join("tiny-llama").display().to_string());
    assert!(harness.query_by_label("Did you mean:").is_none());
}

#[test]
fn models_on_this_computer_are_listed_and_a_click_loads_one() {
    use common::stores::{hf_snapshot, ollama_model, tiny_llama_files};
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let snapshot = hf_snapshot(&hub, "test-org/tiny-llama", "abc", &tiny_llama_files());
    let ollama = dir.path().join("ollama");
    ollama_model(&ollama, "registry.ollama.ai/library/mamba", "latest", 1, &common::gguf_writer::Gguf::new("mamba").bytes());
    let stores = Stores { ollama: vec![ollama], hf_cache: vec![hub], ..Stores::default() };
    let mut harness = harness_with_stores(settings(dir.path()), stores);
    wait_for(&mut harness, "Models on this computer (2)");
    click(&mut harness, "Models on this computer (2)");
    harness.get_by_label("mamba:latest");
    harness.get_by_label_contains("no: architecture 'mamba' is not supported");
    harness.get_by_label("HF cache");
    harness.get_by_label("float32");

    click(&mut harness, "test-org/tiny-llama");
    wait_for(&mut harness, "Model loaded");
    assert_eq!(harness.state().settings().model_path, snapshot.display().to_string());
    assert_eq!(harness.state().settings().recent_models, [snapshot.display().to_string()]);
}
