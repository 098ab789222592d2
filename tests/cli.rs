//! The `greentrainer` binary as a user runs it: commands succeed with useful output, and bad
//! input ends with a non-zero exit and a message naming the problem.

mod common;

use std::process::{Command, Output};

fn greentrainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_greentrainer"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn inspect_describes_a_model() {
    let model = common::fixture("tiny-llama");
    let out = greentrainer(&["inspect", "--device", "cpu", "--model", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("architecture llama") && t.contains("layers       2") && t.contains("vocabulary   512"), "{t}");
}

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let out = greentrainer(&["inspect", "--device", "cpu", "--model", "no/such/model"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no/such/model") && text(&out).contains("no such file"), "{}", text(&out));

    let model = common::fixture("tiny-llama");
    let out = greentrainer(&["train", "--device", "cpu", "--model", model.to_str().unwrap(), "--rho", "0.2", "--max-steps", "1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("rho = 0.2 is infeasible") && text(&out).contains("choose rho >= 0.3334"), "{}", text(&out));

    let out = greentrainer(&["train", "--device", "cpu", "--rho", "1.5"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("rho must be in (0, 1]"), "{}", text(&out));
}

#[test]
fn train_runs_headless_and_writes_its_event_log_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::fixture("tiny-llama");
    let out = greentrainer(&[
        "train",
        "--device",
        "cpu",
        "--model",
        model.to_str().unwrap(),
        "--output",
        dir.path().to_str().unwrap(),
        "--max-steps",
        "2",
        "--epochs",
        "0",
        "--batch-size",
        "2",
        "--max-len",
        "48",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("FLOPs") && text(&out).contains("saved"), "{}", text(&out));
    let events = greentrainer::train::events::read_log(&dir.path().join("events.jsonl")).unwrap();
    assert!(matches!(events.first(), Some(greentrainer::train::Event::Started { .. })));
    assert!(matches!(events.last(), Some(greentrainer::train::Event::Finished { steps: 2, .. })));
    assert!(dir.path().join("model/model.safetensors").exists());
    assert!(dir.path().join("model/run_card.json").exists());
}

#[test]
fn a_bad_row_stops_training_unless_the_user_asks_to_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.jsonl");
    let good = "{\"dialogue\": \"#Person1#: Hello there.\", \"summary\": \"A greeting.\"}\n";
    std::fs::write(&data, format!("{good}{good}{{not json\n{good}")).unwrap();
    let model = common::fixture("tiny-llama");
    let base = [
        "train",
        "--device",
        "cpu",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "1",
        "--epochs",
        "0",
        "--save-model",
        "false",
        "--max-len",
        "64",
    ];
    let out_dir = dir.path().join("run");
    let mut args = base.to_vec();
    args.extend(["--output", out_dir.to_str().unwrap()]);
    let out = greentrainer(&args);
    assert!(!out.status.success());
    assert!(text(&out).contains("rows.jsonl") && text(&out).contains("line 3"), "{}", text(&out));
    args.extend(["--skip-bad-rows", "true"]);
    let out = greentrainer(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("skipped 1 bad rows"), "{}", text(&out));
}

#[test]
fn chat_answers_each_line_with_the_conversation_so_far() {
    let Some(model) = common::smollm2_gguf() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_greentrainer"))
        .args(["chat", "--device", "cpu", "--temperature", "0", "--max-new-tokens", "24", "--model", model.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    // The second question only makes sense with the first in the history.
    child.stdin.take().unwrap().write_all(b"What is the capital of France?\n\nAnd of Italy?\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<&str> = stdout.lines().collect();
    assert_eq!(replies.len(), 2, "one line per message, the empty one skipped: {stdout}");
    assert!(replies[0].contains("Paris") && replies[1].contains("Rome"), "{stdout}");
}

/// `greentrainer models` with the stores moved to temporary folders by the variables each
/// program reads (and the rest of the environment's stores cleared).
fn models_in(home: &std::path::Path, vars: &[(&str, &std::path::Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_greentrainer"));
    cmd.arg("models").env("HOME", home);
    for var in ["OLLAMA_MODELS", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME", "USERPROFILE"] {
        cmd.env_remove(var);
    }
    for (var, value) in vars {
        cmd.env(var, value);
    }
    cmd.output().expect("the binary runs")
}

#[test]
fn models_lists_what_each_store_holds() {
    use common::gguf_writer::Gguf;
    use common::stores::{hf_snapshot, ollama_model, tiny_llama_files, tiny_llama_gguf, write};
    let dir = tempfile::tempdir().unwrap();
    let (home, ollama, hf_home) = (dir.path().join("home"), dir.path().join("ollama"), dir.path().join("hf"));
    let blob = ollama_model(&ollama, "registry.ollama.ai/library/smollm2", "135m", 1, &tiny_llama_gguf(Some(15)).bytes());
    let snapshot = hf_snapshot(&hf_home.join("hub"), "test-org/tiny-llama", "abc", &tiny_llama_files());
    write(&home.join(".lmstudio/models/someone/mamba/mamba.gguf"), &Gguf::new("mamba").bytes());

    let out = models_in(&home, &[("OLLAMA_MODELS", &ollama), ("HF_HOME", &hf_home)]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let row = |name: &str| t.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no row for {name}:\n{t}"));
    let words = |line: &str| line.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(words(t.lines().next().unwrap()), ["NAME", "SOURCE", "ARCHITECTURE", "SIZE", "QUANTIZATION", "TRAINABLE", "PATH"]);
    assert_eq!(words(row("smollm2:135m")), ["smollm2:135m", "Ollama", "llama", "0.0", "MiB", "Q4_K_M", "yes", &blob.display().to_string()]);
    assert_eq!(words(row("someone/mamba/mamba.gguf"))[1..4], ["LM", "Studio", "mamba"]);
    assert!(row("someone/mamba/mamba.gguf").contains(" no "), "{t}");
    let hf = words(row("test-org/tiny-llama"));
    assert_eq!(hf[1..4], ["HF", "cache", "llama"]);
    // config.json, model.safetensors and tokenizer.json: 500285 bytes.
    assert_eq!(hf[4..], ["0.5", "MiB", "float32", "yes", &snapshot.display().to_string()]);
    assert!(t.contains("Not trainable:\n  someone/mamba/mamba.gguf: architecture 'mamba' is not supported"), "{t}");

    let empty = dir.path().join("empty-home");
    let out = models_in(&empty, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("No models found in: {}", empty.join(".ollama/models").display())), "{}", text(&out));
}
