//! What the binary does with the user's files and settings when something is off: nothing the
//! user owns is replaced without `--overwrite`, a stopped or failed run keeps its weights, bad
//! settings are refused by name, and errors read cleanly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn greentrainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_greentrainer"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tiny_llama() -> PathBuf {
    common::fixture("tiny-llama")
}

/// `train` on tiny-llama for `steps` steps into `out`, with extra flags.
fn train(out: &Path, steps: &str, extra: &[&str]) -> Output {
    let model = tiny_llama();
    let mut args = vec![
        "train",
        "--device",
        "cpu",
        "--model",
        s(&model),
        "--output",
        s(out),
        "--max-steps",
        steps,
        "--batch-size",
        "2",
        "--max-len",
        "48",
    ];
    args.extend_from_slice(extra);
    greentrainer(&args)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn export_replaces_nothing_without_overwrite_and_never_the_source_model() {
    let dir = tempfile::tempdir().unwrap();
    let holder = dir.path().join("m");
    let source = holder.join("llama");
    copy_dir(&tiny_llama(), &source);
    std::fs::write(holder.join("README.txt"), "mine").unwrap();

    // The reported data loss: --out is the folder that holds the source model.
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["export", "--device", "cpu", "--model", s(&source), "--out", s(&holder)];
        args.extend_from_slice(extra);
        let out = greentrainer(&args);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(holder.join("README.txt").exists() && source.join("model.safetensors").exists(), "{}", text(&out));
        assert!(text(&out).contains("holds the model being saved") && text(&out).contains(s(&holder)), "{}", text(&out));
    }

    let target = dir.path().join("hf");
    let first = greentrainer(&["export", "--device", "cpu", "--model", s(&source), "--out", s(&target)]);
    assert!(first.status.success(), "{}", text(&first));
    std::fs::write(target.join("notes.txt"), "mine").unwrap();
    let again = greentrainer(&["export", "--device", "cpu", "--model", s(&source), "--out", s(&target)]);
    assert!(!again.status.success() && text(&again).contains("exists and is not empty"), "{}", text(&again));
    assert!(target.join("notes.txt").exists());
    let replaced = greentrainer(&["export", "--device", "cpu", "--model", s(&source), "--out", s(&target), "--overwrite"]);
    assert!(replaced.status.success(), "{}", text(&replaced));
    assert!(!target.join("notes.txt").exists() && target.join("model.safetensors").exists());

    // --overwrite replaces a model folder, never a folder of other files (a typo'd --out ~/Documents).
    let documents = dir.path().join("documents");
    std::fs::create_dir_all(&documents).unwrap();
    std::fs::write(documents.join("letter.txt"), "mine").unwrap();
    let out = greentrainer(&["export", "--device", "cpu", "--model", s(&source), "--out", s(&documents), "--overwrite"]);
    assert!(!out.status.success() && text(&out).contains("not a model folder"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(documents.join("letter.txt")).unwrap(), "mine");

    // A file is never replaced by a folder, and is not moved aside either.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let out = greentrainer(&["export", "--device", "cpu", "--model", s(&source), "--out", s(&file), "--overwrite"]);
    assert!(!out.status.success() && text(&out).contains("not a folder"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let litter: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(litter.is_empty(), "left behind: {litter:?}");
}

#[cfg(unix)]
#[test]
fn saved_weights_get_the_permissions_of_the_files_beside_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    let o = greentrainer(&["export", "--device", "cpu", "--model", s(&tiny_llama()), "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    let mode = |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("model.safetensors"), mode("config.json"));
    assert_ne!(mode("model.safetensors"), 0o600, "the umask here gives plain files more than owner access");
}

#[test]
fn an_interrupted_save_is_cleaned_up_and_a_moved_aside_folder_restored() {
    let dir = tempfile::tempdir().unwrap();
    // No process has this id (above Linux's largest pid_max), so these were left by a killed one.
    let dead = 4_999_999;
    let partial = dir.path().join(format!(".hf.partial-{dead}.7"));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), vec![0u8; 4096]).unwrap();
    // This test process is running: what it names is never taken for litter.
    let live = dir.path().join(format!(".hf.partial-{}.7", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    let target = dir.path().join("hf");
    let out = greentrainer(&["export", "--device", "cpu", "--model", s(&tiny_llama()), "--out", s(&target)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!partial.exists(), "a dead process's partial folder is removed");
    assert!(live.exists(), "a running process's partial folder is left alone");

    // Killed between moving the old folder aside and moving the new one in: the old one comes
    // back, and, being the user's, is not replaced.
    let kept = dir.path().join("kept");
    let aside = dir.path().join(format!(".kept.old-{dead}.7"));
    std::fs::create_dir_all(&aside).unwrap();
    std::fs::write(aside.join("README.txt"), "mine").unwrap();
    let out = greentrainer(&["export", "--device", "cpu", "--model", s(&tiny_llama()), "--out", s(&kept)]);
    assert!(!out.status.success() && text(&out).contains("exists and is not empty"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(kept.join("README.txt")).unwrap(), "mine");
    assert!(!aside.exists());
}

#[test]
fn a_new_run_never_replaces_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let first = train(&run, "2", &[]);
    assert!(first.status.success(), "{}", text(&first));
    let events = std::fs::read(run.join("events.jsonl")).unwrap();
    let weights = std::fs::read(run.join("model/model.safetensors")).unwrap();

    let again = train(&run, "1", &[]);
    assert!(!again.status.success(), "{}", text(&again));
    let t = text(&again);
    assert!(t.contains("holds an earlier run (events.jsonl, model)") && t.contains("--overwrite"), "{t}");
    assert_eq!(std::fs::read(run.join("events.jsonl")).unwrap(), events, "the event log is untouched");
    assert_eq!(std::fs::read(run.join("model/model.safetensors")).unwrap(), weights);

    let replaced = train(&run, "1", &["--overwrite"]);
    assert!(replaced.status.success(), "{}", text(&replaced));
    let log = greentrainer::train::events::read_log(&run.join("events.jsonl")).unwrap();
    assert!(matches!(log.last(), Some(greentrainer::train::Event::Finished { steps: 1, .. })), "{log:?}");
    assert_eq!(log.iter().filter(|e| matches!(e, greentrainer::train::Event::Started { .. })).count(), 1);
}

#[test]
fn resume_needs_a_checkpoint_of_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let none = train(&run, "2", &["--resume"]);
    assert!(!none.status.success() && text(&none).contains("no checkpoint to resume from"), "{}", text(&none));

    let first = train(&run, "2", &["--checkpoint-every", "1", "--save-model", "false"]);
    assert!(first.status.success(), "{}", text(&first));
    let other = train(&run, "3", &["--resume", "--method", "full"]);
    assert!(!other.status.success(), "{}", text(&other));
    let t = text(&other);
    assert!(t.contains("belongs to a run with other settings") && t.contains("method \"greentrainer\" (now \"full\")"), "{t}");
    let other_data = train(&run, "3", &["--resume", "--data", "assets/demo/dialogsum.test.jsonl"]);
    assert!(!other_data.status.success() && text(&other_data).contains("data \""), "{}", text(&other_data));

    let resumed = train(&run, "3", &["--resume", "--checkpoint-every", "1", "--save-model", "false"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let log = greentrainer::train::events::read_log(&run.join("events.jsonl")).unwrap();
    assert!(log.iter().any(|e| matches!(e, greentrainer::train::Event::Started { resumed_from_step: Some(2), .. })), "{log:?}");
    assert!(matches!(log.last(), Some(greentrainer::train::Event::Finished { steps: 3, .. })));
}

/// SIGINT, SIGTERM (a laptop shutting down) and SIGHUP (a closed terminal) each stop the run
/// after its current step with a checkpoint, and the process exits 130.
#[cfg(unix)]
#[test]
fn termination_signals_checkpoint_and_exit_non_zero() {
    for signal in ["INT", "TERM", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let model = tiny_llama();
        let child = Command::new(env!("CARGO_BIN_EXE_greentrainer"))
            .args(["train", "--device", "cpu", "--model", s(&model), "--output", s(&run), "--max-steps", "100000", "--max-len", "48"])
            .args(["--batch-size", "2", "--method", "full"])
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(run.join("events.jsonl")).unwrap_or_default().contains("\"step\"") {
            assert!(started.elapsed().as_secs() < 120, "no step within 2 minutes");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let killed = Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "SIG{signal}: {}", text(&out));
        assert!(text(&out).contains("cancelled at step") && text(&out).contains("--resume"), "SIG{signal}: {}", text(&out));
        let state = greentrainer::train::checkpoint::read_state(&run.join("checkpoint")).unwrap();
        assert!(state.step >= 1, "SIG{signal}");
    }
}

#[test]
fn a_diverging_run_stops_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = train(&run, "6", &["--lr", "1e30", "--method", "full"]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("training diverged") || t.contains("NaN or infinite values"), "{t}");
    assert!(t.contains("nothing was saved"), "{t}");
    assert!(!run.join("model").exists(), "no model is saved from NaN weights");

    // An update beyond f32's range makes the weights infinite at once: the checkpoint due after
    // that step is not written from them.
    let run = dir.path().join("overflow");
    let out = train(&run, "3", &["--lr", "1e39", "--method", "full", "--checkpoint-every", "1"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("step 1: the update left tensor") && text(&out).contains("NaN or infinite values"), "{}", text(&out));
    assert!(!run.join("checkpoint").exists(), "no checkpoint holds non-finite weights");
}

#[test]
fn a_failed_final_save_keeps_the_weights_in_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // A file where the model folder goes: the save at the end fails.
    std::fs::write(run.join("model"), "in the way").unwrap();
    let out = train(&run, "2", &["--overwrite"]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("saving the fine-tuned model failed") && t.contains("kept in the checkpoint"), "{t}");
    let state = greentrainer::train::checkpoint::read_state(&run.join("checkpoint")).unwrap();
    assert_eq!(state.step, 2);

    // With the obstacle gone, resuming saves the same trained weights without training more.
    std::fs::remove_file(run.join("model")).unwrap();
    let resumed = train(&run, "2", &["--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let saved = greentrainer::io::load_model(&run.join("model"), &greentrainer::device::ComputeDevice::cpu().device).unwrap();
    let checkpoint = greentrainer::io::safetensors_file::SafetensorsFiles::open_files(&[run.join("checkpoint/model.safetensors")]).unwrap();
    let snapshot = common::param_snapshot(&saved.model);
    for (name, values) in &snapshot {
        assert_eq!(&checkpoint.read_f32(name).unwrap().1, values, "{name}");
    }
}

#[test]
fn settings_that_are_not_numbers_or_out_of_range_are_refused_by_name() {
    let model = tiny_llama();
    let m = s(&model);
    for (flags, expected) in [
        (vec!["train", "--rho", "NaN"], "--rho"),
        (vec!["train", "--rho", "inf"], "not a finite number"),
        (vec!["train", "--lr", "inf"], "--lr"),
        (vec!["train", "--weight-decay", "NaN"], "--weight-decay"),
        (vec!["train", "--clip-norm=-1"], "clip_norm must be a non-negative number"),
        (vec!["train", "--rho", "0.5", "--budget", "2wh"], "--rho and --budget exclude each other"),
        (vec!["generate", "--model", m, "--prompt", "Hi", "--beams", "0"], "must be at least 1"),
        (vec!["generate", "--model", m, "--prompt", "Hi", "--repetition-penalty=-1"], "must be a number above 0"),
        (vec!["generate", "--model", m, "--prompt", "Hi", "--repetition-penalty", "NaN"], "must be a number above 0"),
        (vec!["generate", "--model", m, "--prompt", "Hi", "--top-p", "2"], "must be in (0, 1]"),
        (vec!["generate", "--model", m, "--prompt", "Hi", "--temperature", "0"], "must be a number above 0"),
        (vec!["eval", "--model", m, "--data", "assets/demo/dialogsum.test.jsonl", "--beams", "0"], "must be at least 1"),
    ] {
        let mut args = flags.clone();
        args.extend(["--device", "cpu"]);
        let out = greentrainer(&args);
        assert!(!out.status.success(), "{flags:?} was accepted: {}", text(&out));
        assert!(text(&out).contains(expected), "{flags:?}: {}", text(&out));
    }
    // A benchmark's prompt share leaves some tokens to learn from.
    for share in ["1", "-0.1", "NaN"] {
        let flag = format!("--frozen-prompt={share}");
        let out = greentrainer(&["bench", "train", &flag]);
        assert!(!out.status.success() && text(&out).contains("must be in [0, 1)"), "{flag}: {}", text(&out));
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "rho = nan\n").unwrap();
    let out = greentrainer(&["train", "--device", "cpu", "--config", s(&config)]);
    assert!(!out.status.success());
    assert!(text(&out).contains(s(&config)) && text(&out).contains("rho must be in (0, 1], not NaN"), "{}", text(&out));
    std::fs::write(&config, "rho = 0.5\nbudget = { energy_wh = 2.0 }\n").unwrap();
    let out = greentrainer(&["train", "--device", "cpu", "--config", s(&config)]);
    assert!(!out.status.success() && text(&out).contains("sets both rho and budget"), "{}", text(&out));
}

#[test]
fn max_steps_alone_runs_that_many_steps() {
    use greentrainer::cli::overrides::TrainOverrides;
    let steps = TrainOverrides { max_steps: Some(3000), ..Default::default() }.resolve(None).unwrap();
    assert_eq!((steps.max_steps, steps.epochs), (3000, 0), "the default epochs no longer cap an explicit step count");
    let both = TrainOverrides { max_steps: Some(3000), epochs: Some(2), ..Default::default() }.resolve(None).unwrap();
    assert_eq!((both.max_steps, both.epochs), (3000, 2));
    let zero = TrainOverrides { max_steps: Some(0), ..Default::default() }.resolve(None).unwrap();
    assert_eq!((zero.max_steps, zero.epochs), (0, greentrainer::train::TrainConfig::default().epochs), "0 steps means all epochs");
    let default = TrainOverrides::default().resolve(None).unwrap();
    assert_eq!(default, greentrainer::train::TrainConfig::default());
}

#[test]
fn eval_without_references_or_rows_reports_no_rouge() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&tiny_llama(), &model);
    let data = dir.path().join("prompts.jsonl");
    std::fs::write(&data, "{\"dialogue\": \"#Person1#: Hello there.\"}\n").unwrap();
    let out = greentrainer(&["eval", "--device", "cpu", "--model", s(&model), "--data", s(&data), "--max-new-tokens", "2"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("prompts.jsonl") && !text(&out).contains("ROUGE-1"), "{}", text(&out));
    let out =
        greentrainer(&["eval", "--device", "cpu", "--model", s(&model), "--data", "assets/demo/dialogsum.test.jsonl", "--max-rows", "0"]);
    assert!(!out.status.success() && text(&out).contains("must be at least 1"), "{}", text(&out));
    assert!(!model.join("run_card.json").exists(), "no score was written into a run card");
}

#[test]
fn the_models_context_bounds_training_and_generation() {
    let model = tiny_llama();
    let out = greentrainer(&[
        "train",
        "--device",
        "cpu",
        "--model",
        s(&model),
        "--method",
        "full",
        "--max-len",
        "1000000000",
        "--max-steps",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("max_len 1000000000 is longer than the model's 256 positions"), "{}", text(&out));
    let prompt = "hello ".repeat(300);
    let out = greentrainer(&["generate", "--device", "cpu", "--model", s(&model), "--prompt", &prompt]);
    assert!(!out.status.success());
    assert!(text(&out).contains("the model's context holds 256"), "{}", text(&out));
}

#[test]
fn errors_and_warnings_read_cleanly_in_a_log() {
    let out = greentrainer(&["train", "--device", "cpu", "--config", "no/such/run.toml"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert_eq!(t.matches("os error 2").count(), 1, "the OS error is said once: {t}");
    assert!(t.contains("no/such/run.toml"), "{t}");

    // Headless, with no desktop session: no "XDG_RUNTIME_DIR is invalid" lines from the GPU probe.
    let model = tiny_llama();
    let out = Command::new(env!("CARGO_BIN_EXE_greentrainer"))
        .args(["inspect", "--device", "wgpu", "--model", s(&model)])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(out.status.success() && !text(&out).contains("XDG_RUNTIME_DIR"), "{}", text(&out));

    // A warning (skipped rows) written to a pipe carries no terminal colour codes.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.jsonl");
    let good = "{\"dialogue\": \"#Person1#: Hello there.\", \"summary\": \"A greeting.\"}\n";
    std::fs::write(&data, format!("{good}{{not json\n{good}")).unwrap();
    let out = train(&dir.path().join("run"), "1", &["--data", s(&data), "--skip-bad-rows", "true", "--save-model", "false"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("skipped 1 bad rows") && !text(&out).contains('\u{1b}'), "{:?}", text(&out));
}
