//! The headless face of the engine: `greentrainer <command>`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::device::{ComputeDevice, DeviceChoice};
use crate::eval::generate::{GenerateOptions, Strategy, generate};
use crate::io::{export::save_hf_folder, load_model};
use crate::model::summary::ModelSummary;
use crate::train::overrides::TrainOverrides;
use crate::train::progress::ProgressPrinter;
use crate::train::{JsonlLog, TrainConfig, Trainer};

/// The default model: SmolLM2-135M-Instruct as fetched by scripts/fetch-model.sh.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Parser)]
#[command(
    name = "greentrainer",
    version,
    about = "GreenTrainer Studio: fine-tune LLMs within a FLOPs budget. Run without arguments for the app."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// Where to compute: wgpu (Vulkan/Metal/DX12; falls back to the CPU when no adapter) or cpu.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Wgpu, global = true)]
    pub device: DeviceChoice,
}

impl DeviceArgs {
    pub fn open(&self) -> ComputeDevice {
        let dev = ComputeDevice::open(self.device);
        if let Some(reason) = &dev.fallback_reason {
            eprintln!("note: {reason}");
        }
        eprintln!("device: {}", dev.name);
        dev
    }
}

// Parsed once per process, so the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Describe a model (HF folder or GGUF file).
    Inspect {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Continue a prompt.
    Generate(GenerateArgs),
    /// Save a model (e.g. a GGUF file) as an HF folder that transformers loads.
    Export {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Fine-tune a model (GreenTrainer, full, FT-top-k) from a config file and/or flags.
    Train {
        /// TOML file with any TrainConfig fields; flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Continue from <output>/checkpoint.
        #[arg(long)]
        resume: bool,
        /// Load the model and data, print the planned FLOPs, time, energy and CO2 (this rho, full
        /// fine-tuning, LoRA) and exit without training.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        settings: TrainOverrides,
    },
    /// The main job on a built-in default: GreenTrainer at rho 0.5 on SmolLM2-135M and the bundled
    /// DialogSum sample, a few minutes on the best device; saves the fine-tuned folder.
    Demo {
        #[arg(long, default_value = "runs/demo")]
        output: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Generate summaries for a dataset split and score them with ROUGE (the paper's beam search by
    /// default); writes the predictions as JSONL.
    Eval(EvalArgs),
    /// Benchmarks (print markdown tables).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Sample with this temperature instead of greedy decoding.
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Beam search with this many beams.
    #[arg(long)]
    pub beams: Option<usize>,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// A dataset file (its references: every target column, e.g. DialogSum test's summary1..3).
    #[arg(long)]
    pub data: PathBuf,
    /// Evaluate only the first N rows.
    #[arg(long)]
    pub max_rows: Option<usize>,
    #[arg(long, default_value_t = 4)]
    pub beams: usize,
    /// New tokens at most (default as the paper: 64 for SciTLDR, 128 otherwise).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 2.5)]
    pub repetition_penalty: f32,
    /// Longest prompt + target, as in training (the source is cut to fit); an encoder-decoder
    /// model's source and target are capped at it each.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Stem words with the Porter stemmer before scoring.
    #[arg(long)]
    pub stemmer: bool,
    /// Step over (and count) rows that cannot be read instead of stopping.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Predictions file (default: beside the model, predictions-<data file>.jsonl).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Tokens/s of forward and forward+backward on each available backend.
    Forward {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        seq: usize,
        #[arg(long, default_value_t = 3)]
        iters: usize,
    },
    /// GreenTrainer at rho 0.4/0.5/0.7, FT-top-2 and full fine-tuning: step time, FLOPs and time
    /// ratios, memory. Writes the rows as JSON too.
    Train {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        seq: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Where to write the JSON rows.
        #[arg(long, default_value = "runs/bench-train.json")]
        json: PathBuf,
    },
    /// Greedy decoding speed with and without the KV cache.
    Generate {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// The masked weight-gradient kernel at 12.5/25/50/100% of row blocks vs the dense gradient.
    MaskedDw {
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
    },
    /// GreenTrainer with whole-tensor vs head-block selection at the same rho: FLOPs and losses.
    Granularity {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        #[arg(long, default_value_t = 0.5)]
        rho: f64,
        #[arg(long, default_value_t = 8)]
        steps: usize,
        #[arg(long, default_value_t = 128)]
        max_len: usize,
    },
    /// The selection DP on random instances (N tensors, C capacity units).
    Select {
        #[arg(long, default_value_t = 1000)]
        tensors: usize,
        #[arg(long, default_value_t = 8192)]
        capacity: usize,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, device } => {
            let dev = device.open();
            let loaded = load_model(&model, &dev.device)?;
            println!("{}", ModelSummary::of(&loaded));
        }
        Command::Generate(args) => {
            let dev = args.device.open();
            let loaded = load_model(&args.model, &dev.device)?;
            let prompt = loaded.prompt_ids(&args.prompt)?;
            let strategy = match (args.beams, args.temperature) {
                (Some(num_beams), _) => Strategy::Beam { num_beams, length_penalty: 1.0 },
                (None, Some(temperature)) => Strategy::Sample { temperature, top_p: args.top_p, seed: args.seed },
                (None, None) => Strategy::Greedy,
            };
            let opts = GenerateOptions {
                strategy,
                max_new_tokens: args.max_new_tokens,
                repetition_penalty: args.repetition_penalty,
                eos_token_ids: loaded.eos_token_ids(),
                use_cache: true,
            };
            let out = generate(&loaded.model, &prompt, &opts);
            let text = loaded.tokenizer.decode(&out, true).map_err(|e| anyhow::anyhow!("cannot decode: {e}"))?;
            // A decoder-only model continues the prompt; an encoder-decoder model answers it.
            let shown = if loaded.model.is_encoder_decoder() { "" } else { args.prompt.as_str() };
            println!("{shown}{text}");
        }
        Command::Export { model, out, device } => {
            let dev = device.open();
            let loaded = load_model(&model, &dev.device)?;
            save_hf_folder(&loaded, &out, None)?;
            crate::io::hf::load_folder(&out, &dev.device).with_context(|| format!("self-check: reloading {}", out.display()))?;
            println!("saved {} (reloaded as a check)", out.display());
        }
        Command::Train { config, resume, dry_run, settings } => {
            let base = match &config {
                Some(path) => TrainConfig::from_toml_file(path)?,
                None => TrainConfig::default(),
            };
            let config = settings.apply(base)?;
            if dry_run {
                let dev = DeviceArgs { device: config.device }.open();
                print!("{}", crate::green::dry_run_report(&Trainer::prepare(config, dev)?)?);
            } else {
                train(config, resume)?;
            }
        }
        Command::Demo { output, device } => {
            let probe = ComputeDevice::open(device.device);
            let on_gpu = probe.backend == crate::device::BackendKind::Wgpu && !probe.software;
            if !on_gpu {
                eprintln!("no hardware GPU ({}): the demo runs on the CPU and is kept short (12 steps)", probe.name);
            }
            let config = TrainConfig {
                output,
                device: if on_gpu { device.device } else { DeviceChoice::Cpu },
                epochs: 1,
                max_steps: if on_gpu { 150 } else { 12 },
                max_len: 256,
                lr: 1e-4,
                reselect_every_epochs: 0,
                ..TrainConfig::default()
            };
            train(config, false)?;
        }
        Command::Eval(args) => eval(args)?,
        Command::Bench(BenchCommand::Forward { model, batch, seq, iters }) => {
            let mut rows = Vec::new();
            for dev in bench_devices() {
                eprintln!("benchmarking on {} ...", dev.name);
                let loaded = load_model(&model, &dev.device)?;
                rows.push(crate::bench::forward::run(&loaded.model, &dev, batch, seq, iters));
            }
            println!("{}", crate::bench::forward::table(&rows, batch, seq));
        }
        Command::Bench(BenchCommand::Train { model, batch, seq, steps, json }) => {
            let mut rows = Vec::new();
            for dev in bench_devices() {
                eprintln!("benchmarking training on {} ...", dev.name);
                let loaded = load_model(&model, &dev.device)?;
                match crate::bench::train::run(&loaded.model, &dev, batch, seq, steps) {
                    Ok(r) => {
                        eprintln!("{}", crate::bench::train::table(&r, batch, seq));
                        rows.extend(r);
                    }
                    Err(e) => eprintln!("{}: {e}", dev.name),
                }
            }
            println!("{}", crate::bench::train::table(&rows, batch, seq));
            let text = serde_json::to_string_pretty(&rows)?;
            if let Some(parent) = json.parent() {
                std::fs::create_dir_all(parent)?;
            }
            crate::io::atomic::write_file(&json, text.as_bytes())?;
            eprintln!("rows written to {}", json.display());
        }
        Command::Bench(BenchCommand::Generate { model, new_tokens, device }) => {
            let dev = device.open();
            let loaded = load_model(&model, &dev.device)?;
            // A real prompt: the first bundled DialogSum dialogue with the summary cue.
            let first = crate::data::DEMO_TEST_JSONL.lines().next().unwrap_or_default();
            let dialogue = serde_json::from_str::<serde_json::Value>(first)?["dialogue"].as_str().unwrap_or_default().to_string();
            let prompt = loaded.tokenizer.encode(format!("{dialogue} TL;DR:"), false).map_err(|e| anyhow::anyhow!("{e}"))?;
            let rows = crate::bench::generate::run(&loaded.model, prompt.get_ids(), new_tokens);
            println!("{}", crate::bench::generate::table(&dev.name, prompt.get_ids().len(), &rows));
        }
        Command::Bench(BenchCommand::MaskedDw { tokens, iters }) => {
            for dev in bench_devices() {
                eprintln!("benchmarking masked dW on {} ...", dev.name);
                println!("{}", crate::bench::masked::run(&dev, tokens, iters));
            }
        }
        Command::Bench(BenchCommand::Granularity { model, rho, steps, max_len }) => {
            let (train, held_out) = crate::bench::granularity::demo_files();
            let rows = crate::bench::granularity::run(&model, &train, &held_out, &ComputeDevice::cpu(), rho, steps, max_len)?;
            println!("{}", crate::bench::granularity::table(&rows, rho, steps));
        }
        Command::Bench(BenchCommand::Select { tensors, capacity }) => {
            println!("{}", crate::bench::select::run(tensors, capacity));
        }
    }
    Ok(())
}

/// Runs one training job with a progress bar and the JSONL event log in its output folder;
/// Ctrl-C cancels with a checkpoint.
fn train(config: TrainConfig, resume: bool) -> Result<()> {
    let dev = DeviceArgs { device: config.device }.open();
    let mut trainer = Trainer::prepare(config, dev)?;
    let events_path = trainer.config.events_path();
    if !resume {
        let _ = std::fs::remove_file(&events_path);
    }
    let mut log = JsonlLog::append(&events_path)?;
    let mut progress = ProgressPrinter::default();
    let mut sink = |e: &crate::train::Event| {
        crate::train::EventSink::emit(&mut log, e);
        crate::train::EventSink::emit(&mut progress, e);
    };
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone()) {
        eprintln!("note: Ctrl-C will not checkpoint ({e})");
    }
    trainer.run(&mut sink, &cancel, resume)?;
    eprintln!("events: {}", events_path.display());
    Ok(())
}

/// The CPU, and wgpu when an adapter exists.
fn bench_devices() -> Vec<ComputeDevice> {
    let mut out = vec![ComputeDevice::cpu()];
    let gpu = ComputeDevice::open(DeviceChoice::Wgpu);
    match &gpu.fallback_reason {
        Some(reason) => eprintln!("wgpu: {reason}"),
        None => out.push(gpu),
    }
    out
}

fn eval(args: EvalArgs) -> Result<()> {
    use crate::eval::generate::Strategy;
    let dev = args.device.open();
    let loaded = load_model(&args.model, &dev.device)?;
    let eos = loaded.eos_token_ids();
    let opts = crate::data::LoadOptions { skip_bad_rows: args.skip_bad_rows, ..loaded.load_options(args.max_len)? };
    let mut data = crate::data::load_dataset(&args.data, &loaded.tokenizer, &opts)?;
    if data.report.counts.skipped > 0 {
        eprintln!(
            "skipped {} bad rows, e.g. {}",
            data.report.counts.skipped,
            data.report.skip_messages.first().map(String::as_str).unwrap_or("-")
        );
    }
    data.examples.truncate(args.max_rows.unwrap_or(usize::MAX));
    let generation = GenerateOptions {
        strategy: if args.beams > 1 { Strategy::Beam { num_beams: args.beams, length_penalty: 1.0 } } else { Strategy::Greedy },
        max_new_tokens: args.max_new_tokens.unwrap_or(match data.report.info.preset {
            crate::data::Preset::SciTldr => 64,
            _ => 128,
        }),
        repetition_penalty: args.repetition_penalty,
        eos_token_ids: eos,
        use_cache: true,
    };
    let bar = indicatif::ProgressBar::new(data.examples.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} rows  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let rouge_opts = crate::eval::rouge::RougeOptions { use_stemmer: args.stemmer };
    let result =
        crate::eval::runner::evaluate(&loaded, &data.examples, &generation, &rouge_opts, &mut |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let out = args.out.unwrap_or_else(|| {
        let stem = args.data.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        let name = format!("predictions-{stem}.jsonl");
        if args.model.is_dir() { args.model.join(name) } else { args.model.with_file_name(name) }
    });
    crate::eval::runner::write_predictions(&out, &result.predictions)?;
    let r = &result.rouge;
    println!(
        "ROUGE-1 {:.2}  ROUGE-2 {:.2}  ROUGE-L {:.2}  ROUGE-Lsum {:.2}  ({} rows; F1 x 100)",
        100.0 * r.rouge1,
        100.0 * r.rouge2,
        100.0 * r.rouge_l,
        100.0 * r.rouge_lsum,
        r.count
    );
    println!("predictions: {}", out.display());
    if args.model.is_dir() && crate::green::card::RunCard::record_rouge(&args.model, &args.data.display().to_string(), result.rouge)? {
        println!("run card: {}", args.model.join("run_card.md").display());
    }
    Ok(())
}
