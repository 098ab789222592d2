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
