//! The headless face of the engine: `greentrainer <command>`.

pub mod overrides;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::data::ChatMessage;
use crate::device::{ComputeDevice, DeviceChoice};
use crate::error::Error;
use crate::eval::chat::Sampling;
use crate::eval::generate::{GenerateOptions, Strategy, generate};
use crate::eval::runner::EvalSettings;
use crate::io::discover::{FoundModel, Stores, Trainable, discover};
use crate::io::summary::ModelSummary;
use crate::io::{atomic::Existing, export::save_hf_folder, load_model};
use crate::model::FrozenPrecision;
use crate::train::config::DEFAULT_MODEL;
use crate::train::output::OutputMode;
use crate::train::progress::ProgressPrinter;
use crate::train::{Granularity, RunControl, TrainConfig, Trainer};
use overrides::TrainOverrides;

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
    #[arg(long, value_parser = choice(&DeviceChoice::ALL), default_value = "wgpu", global = true)]
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
    /// List the models already on this computer (Ollama, LM Studio, the Hugging Face cache) and
    /// whether each can be trained; OLLAMA_MODELS, HF_HUB_CACHE and HF_HOME move the stores.
    Models,
    /// Continue a prompt.
    Generate(GenerateArgs),
    /// Talk to a model through its chat template: each line read from standard input is a
    /// message, each reply is printed as it is generated (the app's Chat tab, headless).
    Chat(ChatArgs),
    /// Save a model as an HF folder that transformers loads, or (--out NAME.gguf) as one GGUF
    /// file for llama.cpp, Ollama and LM Studio with an Ollama Modelfile beside it.
    Export {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        /// A folder (HF), or a file ending in .gguf.
        #[arg(long)]
        out: PathBuf,
        /// hf or gguf; by default gguf when --out ends in .gguf, else hf.
        #[arg(long, value_parser = ["hf", "gguf"])]
        format: Option<String>,
        /// The GGUF file's tensor format: f32, f16, q8_0 or q4_k_m (1-D tensors stay f32).
        #[arg(long, default_value = "f16")]
        quant: crate::io::gguf::Precision,
        /// Replace --out when it exists and holds files (never when it holds the model itself).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Fine-tune a model (GreenTrainer, full, FT-top-k) from a config file and/or flags.
    Train {
        /// TOML file with any TrainConfig fields; flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Continue from <output>/checkpoint (with the settings of the run that wrote it).
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Replace the earlier run in the output folder (its events.jsonl, checkpoint and model).
        #[arg(long)]
        overwrite: bool,
        /// Load the model and data, print the planned FLOPs, time, energy and CO2 (this rho, full
        /// fine-tuning, LoRA) and exit without training.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        settings: TrainOverrides,
    },
    /// The main job on a built-in default: GreenTrainer at rho 0.7 on SmolLM2-135M and the bundled
    /// DialogSum sample, a few minutes on the best device; saves the fine-tuned folder (in
    /// <output>-2, -3, ... when <output> holds an earlier run).
    Demo {
        #[arg(long, default_value = "runs/demo")]
        output: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Generate summaries for a dataset split and score them with ROUGE (greedy by default, as the
    /// app's Evaluate tab; the paper's setting is --beams 4 --repetition-penalty 2.5); writes the
    /// predictions as JSONL.
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
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub max_new_tokens: usize,
    /// Sample with this temperature (> 0) instead of greedy decoding.
    #[arg(long, value_parser = positive)]
    pub temperature: Option<f32>,
    /// Sample from the smallest set of tokens whose probability reaches this, in (0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = probability)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Beam search with this many beams.
    #[arg(long, value_parser = at_least_one)]
    pub beams: Option<usize>,
    /// Divide the scores of tokens already generated by this (> 0; 1: off).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub repetition_penalty: f32,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args)]
pub struct ChatArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// A system message that opens the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// 0: greedy decoding.
    #[arg(long, default_value_t = Sampling::default().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = Sampling::default().top_p, value_parser = probability)]
    pub top_p: f32,
    #[arg(long, default_value_t = Sampling::default().repetition_penalty, value_parser = positive)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = Sampling::default().max_new_tokens, value_parser = at_least_one)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    #[arg(long, value_parser = at_least_one)]
    pub max_rows: Option<usize>,
    /// Beam search with this many beams (1: greedy).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub beams: usize,
    /// New tokens at most (default as the paper: 64 for SciTLDR, 128 otherwise).
    #[arg(long, value_parser = at_least_one)]
    pub max_new_tokens: Option<usize>,
    /// Divide the scores of tokens already generated by this (> 0; 1: off).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub repetition_penalty: f32,
    /// Longest prompt + answer: each prompt's source is cut to leave --max-new-tokens for the
    /// answer; an encoder-decoder model's source is capped at it alone.
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

/// `greentrainer bench accuracy`'s flags (see `bench::accuracy::Settings`).
#[derive(Args)]
pub struct AccuracyArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    #[arg(long, default_value = "assets/demo/dialogsum.train.jsonl")]
    pub train: PathBuf,
    #[arg(long, default_value = "assets/demo/dialogsum.test.jsonl")]
    pub held_out: PathBuf,
    /// GreenTrainer's rho values (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.7")]
    pub rho: Vec<f64>,
    /// Training rows (the file's first).
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    pub rows: usize,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop each run after this many steps (0: all epochs).
    #[arg(long, default_value_t = 0)]
    pub max_steps: usize,
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// LoRA's learning rate as a multiple of --lr.
    #[arg(long, default_value_t = crate::bench::accuracy::LORA_LR_SCALE)]
    pub lora_lr_scale: f64,
    /// Held-out rows scored (the file's first).
    #[arg(long, default_value_t = 50, value_parser = at_least_one)]
    pub eval_rows: usize,
    /// Tokens generated per held-out row (greedy), and left for the answer in its prompt.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub new_tokens: usize,
    /// GreenTrainer's selection unit.
    #[arg(long, value_parser = choice(&Granularity::ALL), default_value = "tensor")]
    pub granularity: Granularity,
    /// GreenTrainer runs each batch's shared prompt prefix without gradient.
    #[arg(long)]
    pub frozen_prompt: bool,
    /// GreenTrainer re-scores importance and re-selects every N steps (0: once, at the start).
    #[arg(long, default_value_t = 0)]
    pub reselect_every_steps: usize,
    /// Batches GreenTrainer scores importance on at each selection (the paper: 1).
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub importance_batches: usize,
    /// Run only the base model and GreenTrainer (to compare variants with baselines measured before).
    #[arg(long)]
    pub no_baselines: bool,
    /// How frozen weights are stored: GreenTrainer runs at each rho once per entry; FT-top-k and
    /// LoRA use the first.
    #[arg(long, value_delimiter = ',', value_parser = choice(&FrozenPrecision::ALL), default_values = ["f32"])]
    pub frozen_precision: Vec<FrozenPrecision>,
    #[arg(long, default_value = "runs/bench-accuracy.json")]
    pub json: PathBuf,
    #[arg(long, default_value = "runs/bench-accuracy.svg")]
    pub svg: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Which model a speed benchmark runs, where, and what it is compared with.
#[derive(Args, Clone)]
pub struct BenchModelArgs {
    /// An HF folder or GGUF file; with --random-init, a config.json or a folder holding one.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Build the model from --model's config.json alone with random weights: speed and memory do
    /// not depend on trained weights (see assets/configs for the architectures users fine-tune).
    #[arg(long)]
    pub random_init: bool,
    /// Where to run: the CPU, the GPU adapter, or both.
    #[arg(long, value_enum, default_value_t = BenchOn::Both)]
    pub on: BenchOn,
    /// The PyTorch eager reference measured in the same run (CPU for the CPU, CUDA for a GPU);
    /// skipped with a note when the script, python, torch or transformers is missing.
    #[arg(long, default_value = "scripts/torch_reference.py")]
    pub torch_reference: PathBuf,
    /// The python that runs --torch-reference.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

impl BenchModelArgs {
    fn load(&self, dev: &ComputeDevice) -> Result<crate::model::Model> {
        Ok(match self.random_init {
            true => crate::io::random::random_model(&self.model, &dev.device, 0)?,
            false => load_model(&self.model, &dev.device)?.model,
        })
    }

    fn torch(&self) -> crate::bench::torch_reference::TorchReference<'_> {
        crate::bench::torch_reference::TorchReference { script: &self.torch_reference, python: &self.python }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOn {
    Cpu,
    Wgpu,
    Both,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Tokens/s of forward and forward+backward on each available backend.
    Forward {
        #[command(flatten)]
        model: BenchModelArgs,
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
        #[command(flatten)]
        model: BenchModelArgs,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        seq: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Only full fine-tuning (beside PyTorch's): the quick speed check.
        #[arg(long)]
        full_only: bool,
        /// This share of each row is a prompt without targets, which GreenTrainer runs without
        /// gradient (`frozen_prompt`); the other methods differentiate every token as they do in
        /// training. 0: every token is a target.
        #[arg(long, default_value_t = 0.0, value_parser = prompt_share)]
        frozen_prompt: f64,
        /// Where to write the JSON rows.
        #[arg(long, default_value = "runs/bench-train.json")]
        json: PathBuf,
    },
    /// The memory pre-flight's estimate of a forward+backward pass against its measured peak, for
    /// GreenTrainer at each rho, batch size and sequence length (one pass each).
    Memory {
        #[command(flatten)]
        model: BenchModelArgs,
        #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.7, 1.0])]
        rho: Vec<f64>,
        #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
        batch: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_values_t = [128, 256])]
        seq: Vec<usize>,
        /// Whole training steps of GreenTrainer at each --rho, LoRA and full fine-tuning, at each
        /// --frozen-precision, at the first --batch and --seq (see `bench::memory::run_steps`).
        #[arg(long)]
        whole_step: bool,
        /// With --whole-step: the frozen_precision settings to measure.
        #[arg(long, value_delimiter = ',', value_parser = choice(&FrozenPrecision::ALL), default_values = ["f32", "f16", "bf16"])]
        frozen_precision: Vec<FrozenPrecision>,
        /// With --whole-step: the estimates alone (models too large or slow to step here).
        #[arg(long)]
        estimate_only: bool,
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
        /// Where to run: the CPU, the GPU adapter, or both.
        #[arg(long, value_enum, default_value_t = BenchOn::Both)]
        on: BenchOn,
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
    /// Held-out quality next to cost: the base model, full fine-tuning, GreenTrainer at each rho,
    /// FT-top-k at the FLOPs of each rho and LoRA, from one start on the same rows. Prints a table,
    /// writes the rows as JSON and ROUGE-L vs FLOPs as SVG.
    Accuracy(AccuracyArgs),
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
        Command::Models => {
            let stores = Stores::from_env();
            println!("{}", models_table(&discover(&stores), &stores));
        }
        Command::Generate(args) => {
            let dev = args.device.open();
            let loaded = load_model(&args.model, &dev.device)?;
            let prompt = loaded.prompt_ids(&args.prompt)?;
            if let Some(limit) = loaded.model.position_limit().filter(|&n| prompt.len() >= n) {
                anyhow::bail!("the prompt has {} tokens; the model's context holds {limit}, so there is no room to generate", prompt.len());
            }
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
        Command::Chat(args) => chat(args)?,
        Command::Export { model, out, format, quant, overwrite, device } => {
            let named_gguf = crate::io::gguf::has_gguf_name(&out);
            let gguf = match format.as_deref() {
                Some("gguf") if !named_gguf => anyhow::bail!("--format gguf writes one file: give --out a name ending in .gguf"),
                Some("hf") if named_gguf => anyhow::bail!("--format hf writes a folder: give --out a folder name, not {}", out.display()),
                _ => named_gguf,
            };
            let dev = device.open();
            let loaded = load_model(&model, &dev.device)?;
            let existing = if overwrite { Existing::Replace } else { Existing::Refuse };
            let refused = |e: Error| match e {
                Error::Exists { .. } => anyhow::anyhow!("{e}; pass --overwrite to replace it"),
                e => e.into(),
            };
            if gguf {
                let done = crate::io::gguf::export::save_gguf(&loaded, &out, quant, existing).map_err(refused)?;
                crate::io::load_gguf(&out, &dev.device).with_context(|| format!("self-check: reloading {}", out.display()))?;
                println!(
                    "saved {} ({} tensors, {:.1} MiB; reloaded as a check) and {}: `ollama create NAME -f {}` adds it to Ollama",
                    out.display(),
                    done.tensors,
                    done.bytes as f64 / (1024.0 * 1024.0),
                    done.modelfile.display(),
                    done.modelfile.display()
                );
            } else {
                save_hf_folder(&loaded, &out, existing, None).map_err(refused)?;
                crate::io::hf::load_folder(&out, &dev.device).with_context(|| format!("self-check: reloading {}", out.display()))?;
                println!("saved {} (reloaded as a check)", out.display());
            }
        }
        Command::Train { config, resume, overwrite, dry_run, settings } => {
            let config = settings.resolve(config.as_deref())?;
            if dry_run {
                let dev = DeviceArgs { device: config.device }.open();
                print!("{}", crate::train::plan::dry_run_report(&Trainer::prepare(config, dev)?)?);
            } else {
                let mode = match (resume, overwrite) {
                    (true, _) => OutputMode::Resume,
                    (false, true) => OutputMode::Overwrite,
                    (false, false) => OutputMode::New,
                };
                train(config, mode, Some("greentrainer train --resume")).map_err(|e| match e.downcast::<Error>() {
                    Ok(e @ Error::EarlierRun { .. }) => anyhow::anyhow!("{e} (--resume continues it, --overwrite replaces it)"),
                    Ok(e) => e.into(),
                    Err(e) => e,
                })?;
            }
        }
        Command::Demo { output, device } => {
            let probe = ComputeDevice::open(device.device);
            let on_gpu = probe.backend == crate::device::BackendKind::Wgpu && !probe.software;
            if !on_gpu {
                eprintln!("no hardware GPU ({}): the demo runs on the CPU and is kept short (12 steps)", probe.name);
            }
            let free = crate::train::output::next_free(&output);
            if free != output {
                eprintln!("{} holds an earlier run: this one goes to {}", output.display(), free.display());
            }
            let config = TrainConfig {
                output: free,
                device: if on_gpu { device.device } else { DeviceChoice::Cpu },
                max_steps: if on_gpu { 150 } else { 12 },
                ..TrainConfig::quick()
            };
            train(config, OutputMode::New, None)?;
        }
        Command::Eval(args) => eval(args)?,
        Command::Bench(BenchCommand::Forward { model, batch, seq, iters }) => {
            let mut rows = Vec::new();
            for dev in bench_devices(model.on) {
                eprintln!("benchmarking on {} ...", dev.name);
                let m = model.load(&dev)?;
                rows.push(crate::bench::forward::run(&m, &dev, batch, seq, iters));
                match model.torch().measure(&m, dev.backend, batch, seq, iters) {
                    Ok(t) => rows.push(crate::bench::forward::torch_row(&dev.name, &t, batch, seq)),
                    Err(e) => eprintln!("PyTorch reference skipped: {e}"),
                }
            }
            println!("{}", crate::bench::forward::table(&rows, batch, seq));
        }
        Command::Bench(BenchCommand::Train { model, batch, seq, steps, full_only, frozen_prompt, json }) => {
            let mut rows = Vec::new();
            for dev in bench_devices(model.on) {
                eprintln!("benchmarking training on {} ...", dev.name);
                let m = model.load(&dev)?;
                // The reference runs even where the engine cannot (a tensor past the adapter's
                // binding limit): its row says what this device should reach.
                let mut r = crate::bench::train::run(&m, &dev, crate::bench::train::Shape { batch, seq, frozen_prompt }, steps, full_only)
                    .unwrap_or_else(|e| {
                        eprintln!("{}: {e}", dev.name);
                        Vec::new()
                    });
                match model.torch().measure(&m, dev.backend, batch, seq, steps) {
                    Ok(t) => crate::bench::train::add_torch(&mut r, &dev.name, &t, batch, seq),
                    Err(e) => eprintln!("PyTorch reference skipped: {e}"),
                }
                eprintln!("{}", crate::bench::train::table(&r, batch, seq));
                rows.extend(r);
            }
            println!("{}", crate::bench::train::table(&rows, batch, seq));
            let text = serde_json::to_string_pretty(&rows)?;
            if let Some(parent) = json.parent() {
                std::fs::create_dir_all(parent)?;
            }
            crate::io::atomic::write_file(&json, text.as_bytes())?;
            eprintln!("rows written to {}", json.display());
        }
        Command::Bench(BenchCommand::Memory { model, rho, batch, seq, whole_step: true, frozen_precision, estimate_only }) => {
            let shape = (batch.first().copied().unwrap_or(4), seq.first().copied().unwrap_or(512));
            for dev in bench_devices(model.on) {
                eprintln!("measuring whole steps on {} ...", dev.name);
                let build = || model.load(&dev).map_err(|e| e.to_string());
                // A config alone gives the graph without building a model too large for this machine.
                let ops = match model.random_init {
                    true => {
                        let path = if model.model.is_dir() { model.model.join("config.json") } else { model.model.clone() };
                        crate::model::arch::config_ops(crate::io::hf::read_json(&path)?, &path.display().to_string())?
                    }
                    false => model.load(&dev)?.op_graph(),
                };
                // The device's memory less a margin for the system (unknown for most GPUs on wgpu).
                let available = if estimate_only { Some(0) } else { crate::green::device_memory(&dev).map(|total| total / 10 * 9) };
                let rows = crate::bench::memory::run_steps(&ops, &build, &dev, &rho, shape, &frozen_precision, available)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dev.name))?;
                println!("{}", crate::bench::memory::step_table(&rows, &model.model.display().to_string(), &dev.name, shape));
            }
        }
        Command::Bench(BenchCommand::Memory { model, rho, batch, seq, whole_step: false, .. }) => {
            for dev in bench_devices(model.on) {
                eprintln!("measuring memory on {} ...", dev.name);
                let m = model.load(&dev)?;
                let rows = crate::bench::memory::run(&m, &dev, &rho, &batch, &seq).map_err(|e| anyhow::anyhow!("{}: {e}", dev.name))?;
                println!("{}", crate::bench::memory::table(&rows, &dev.name));
            }
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
        Command::Bench(BenchCommand::MaskedDw { tokens, iters, on }) => {
            for dev in bench_devices(on) {
                eprintln!("benchmarking masked dW on {} ...", dev.name);
                println!("{}", crate::bench::masked::run(&dev, tokens, iters));
            }
        }
        Command::Bench(BenchCommand::Granularity { model, rho, steps, max_len }) => {
            let (train, held_out) = crate::bench::granularity::demo_files();
            let rows = crate::bench::granularity::run(&model, &train, &held_out, &ComputeDevice::cpu(), rho, steps, max_len)?;
            println!("{}", crate::bench::granularity::table(&rows, rho, steps));
        }
        Command::Bench(BenchCommand::Accuracy(a)) => {
            use crate::bench::accuracy;
            let settings = accuracy::Settings {
                model: a.model,
                train: a.train,
                held_out: a.held_out,
                rhos: a.rho,
                train_rows: a.rows,
                epochs: a.epochs,
                max_steps: a.max_steps,
                batch_size: a.batch_size,
                max_len: a.max_len,
                lr: a.lr,
                lora_lr_scale: a.lora_lr_scale,
                eval_rows: a.eval_rows,
                answer_tokens: a.new_tokens,
                granularity: a.granularity,
                frozen_prompt: a.frozen_prompt,
                reselect_every_steps: a.reselect_every_steps,
                importance_batches: a.importance_batches,
                baselines: !a.no_baselines,
                frozen_precisions: a.frozen_precision,
            };
            let dev = a.device.open();
            let rows = accuracy::run(&settings, &dev, &mut |what| eprintln!("{what} ..."), &RunControl::default())?;
            println!("{}", accuracy::table(&rows, &settings));
            accuracy::write(&rows, &a.json, &a.svg)?;
            eprintln!("rows: {}, plot: {}", a.json.display(), a.svg.display());
        }
        Command::Bench(BenchCommand::Select { tensors, capacity }) => {
            println!("{}", crate::bench::select::run(tensors, capacity));
        }
    }
    Ok(())
}

/// The found models as aligned columns, then why each untrainable one cannot be trained; with
/// none found, the folders that were searched.
fn models_table(found: &[FoundModel], stores: &Stores) -> String {
    if found.is_empty() {
        let searched: Vec<String> =
            [&stores.ollama, &stores.lm_studio, &stores.hf_cache].into_iter().flatten().map(|p| p.display().to_string()).collect();
        return format!("No models found in: {}", searched.join(", "));
    }
    let unknown = || "-".to_string();
    let mut rows = vec![["NAME", "SOURCE", "ARCHITECTURE", "SIZE", "QUANTIZATION", "TRAINABLE", "PATH"].map(String::from)];
    rows.extend(found.iter().map(|m| {
        [
            m.name.clone(),
            m.source.to_string(),
            m.architecture.clone().unwrap_or_else(unknown),
            size(m.size),
            m.quantization.clone().unwrap_or_else(unknown),
            if m.trainable.is_yes() { "yes" } else { "no" }.to_string(),
            m.path.display().to_string(),
        ]
    }));
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string())
        .collect();
    let why_not: Vec<String> = found
        .iter()
        .filter_map(|m| match &m.trainable {
            Trainable::No(why) => Some(format!("  {}: {why}", m.name)),
            Trainable::Yes => None,
        })
        .collect();
    if !why_not.is_empty() {
        out.push(String::new());
        out.push("Not trainable:".into());
        out.extend(why_not);
    }
    out.join("\n")
}

/// "88.2 MiB", "4.37 GiB".
fn size(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    match bytes as f64 / MIB {
        mib if mib >= 1024.0 => format!("{:.2} GiB", mib / 1024.0),
        mib => format!("{mib:.1} MiB"),
    }
}

/// A run the user stopped: a checkpoint continues it, but it did not finish, so the process
/// exits with `CANCELLED_EXIT` as shells expect of an interrupted command.
#[derive(Debug, thiserror::Error)]
#[error("cancelled at step {step}; checkpoint: {}{}", checkpoint.display(), resume_hint(*resume_with))]
pub struct Cancelled {
    pub step: usize,
    pub checkpoint: PathBuf,
    /// The command that continues the run, where there is one (the demo has none).
    pub resume_with: Option<&'static str>,
}

fn resume_hint(command: Option<&str>) -> String {
    command.map(|c| format!(" (`{c}` with the same settings continues it)")).unwrap_or_default()
}

/// 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C.
pub const CANCELLED_EXIT: u8 = 130;

/// Runs one training job with a progress bar and the JSONL event log in its output folder.
/// Ctrl-C, SIGTERM (shutdown) and SIGHUP (a closed terminal) cancel with a checkpoint; the same
/// signal again ends the process at once. On Unix SIGUSR1 pauses between steps with everything in
/// memory (unlike Ctrl-Z, the step in flight finishes and the progress says so) and SIGUSR2 resumes.
fn train(config: TrainConfig, mode: OutputMode, resume_with: Option<&'static str>) -> Result<()> {
    // Before minutes of loading: a forgotten --resume is said at once.
    crate::train::output::check(&config, mode)?;
    let dev = DeviceArgs { device: config.device }.open();
    let mut trainer = Trainer::prepare(config, dev)?;
    let events_path = trainer.config.events_path();
    let mut log = crate::train::output::open(&trainer.config, mode)?;
    let mut progress = ProgressPrinter::default();
    let mut sink = |e: &crate::train::Event| {
        crate::train::EventSink::emit(&mut log, e);
        crate::train::EventSink::emit(&mut progress, e);
    };
    let control = RunControl::default();
    let cancel = &control.cancel;
    #[cfg(unix)]
    let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP];
    #[cfg(not(unix))]
    let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    for signal in signals {
        // The order matters: a signal that finds the flag already set exits before setting it.
        let registered = signal_hook::flag::register_conditional_shutdown(signal, i32::from(CANCELLED_EXIT), cancel.clone())
            .and_then(|_| signal_hook::flag::register(signal, cancel.clone()));
        if let Err(e) = registered {
            eprintln!("note: signal {signal} will not checkpoint ({e})");
        }
    }
    #[cfg(unix)]
    pause_on_signals(&control);
    let outcome = trainer.run(&mut sink, &control, mode == OutputMode::Resume)?;
    eprintln!("events: {}", events_path.display());
    if outcome.cancelled {
        return Err(Cancelled { step: outcome.steps, checkpoint: trainer.config.checkpoint_dir(), resume_with }.into());
    }
    Ok(())
}

/// SIGUSR1 pauses `control`'s run, SIGUSR2 resumes it, for the rest of the process.
#[cfg(unix)]
fn pause_on_signals(control: &RunControl) {
    use signal_hook::consts::{SIGUSR1, SIGUSR2};
    let mut signals = match signal_hook::iterator::Signals::new([SIGUSR1, SIGUSR2]) {
        Ok(signals) => signals,
        Err(e) => return eprintln!("note: SIGUSR1/SIGUSR2 will not pause and resume ({e})"),
    };
    let control = control.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let paused = signal == SIGUSR1;
            control.set_paused(paused);
            eprintln!("{}", if paused { "pausing after this step (SIGUSR2 resumes)" } else { "resuming" });
        }
    });
}

/// `greentrainer chat`: a line is a message; the reply streams to standard output, and joins the
/// history the next message is answered with.
fn chat(args: ChatArgs) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let dev = args.device.open();
    let loaded = load_model(&args.model, &dev.device)?;
    if crate::eval::chat::prompt_kind(&loaded) == crate::eval::chat::PromptKind::LastMessage {
        eprintln!("note: {} has no chat template: each message goes to it alone", args.model.display());
    }
    let sampling = Sampling {
        temperature: args.temperature,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
    };
    let mut history: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let interactive = std::io::stdin().is_terminal();
    let prompt = || {
        if interactive {
            eprint!("> ");
        }
    };
    prompt();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() {
            prompt();
            continue;
        }
        history.push(ChatMessage::new("user", line.trim()));
        let mut shown = String::new();
        let mut out = std::io::stdout().lock();
        let reply = crate::eval::chat::reply(&loaded, &history, &sampling, &mut |text| {
            // A character cut between tokens decodes as U+FFFD until its last byte comes.
            let text = text.trim_end_matches('\u{FFFD}');
            if let Some(new) = text.strip_prefix(shown.as_str()) {
                let _ = write!(out, "{new}");
                let _ = out.flush();
                shown = text.to_string();
            }
            true
        })?;
        writeln!(out, "{}", reply.strip_prefix(shown.as_str()).unwrap_or_default())?;
        history.push(ChatMessage::new("assistant", &reply));
        prompt();
    }
    Ok(())
}

/// Parses an engine enum by its serde name (the spelling config files use), and lists those
/// names in --help; the engine's types stay free of the CLI library.
fn choice<T: serde::Serialize + Clone + Send + Sync + 'static>(all: &'static [T]) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    let name = |v: &T| serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let names: Vec<String> = all.iter().map(name).collect();
    clap::builder::PossibleValuesParser::new(names).map(move |picked| {
        // The parser accepted only these names, so one matches.
        all.iter().find(|v| name(v) == picked).cloned().expect("a listed name")
    })
}

/// A flag's number, refused with `rule` (what it must be) unless `ok`.
fn checked<T: std::str::FromStr>(text: &str, ok: impl Fn(&T) -> bool, rule: &str) -> std::result::Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match text.trim().parse::<T>() {
        Ok(v) if ok(&v) => Ok(v),
        Ok(_) => Err(format!("`{text}`: {rule}")),
        Err(e) => Err(format!("`{text}`: {e}")),
    }
}

/// A count flag that must be at least 1.
fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    checked(text, |&n| n >= 1, "must be at least 1")
}

/// A number flag that must be finite and above zero.
fn positive(text: &str) -> std::result::Result<f32, String> {
    checked(text, |&v: &f32| v.is_finite() && v > 0.0, "must be a number above 0")
}

/// A probability in (0, 1].
fn probability(text: &str) -> std::result::Result<f32, String> {
    checked(text, |&p| p > 0.0 && p <= 1.0, "must be in (0, 1]")
}

/// A share of each row that is prompt: at least 0, and below 1 so that some tokens are targets.
fn prompt_share(text: &str) -> std::result::Result<f64, String> {
    checked(text, |p| (0.0..1.0).contains(p), "must be in [0, 1)")
}

/// The CPU and/or wgpu as asked, wgpu only when an adapter exists.
fn bench_devices(on: BenchOn) -> Vec<ComputeDevice> {
    let mut out = Vec::new();
    if on != BenchOn::Wgpu {
        out.push(ComputeDevice::cpu());
    }
    if on != BenchOn::Cpu {
        let gpu = ComputeDevice::open(DeviceChoice::Wgpu);
        match &gpu.fallback_reason {
            Some(reason) => eprintln!("wgpu: {reason}"),
            None => out.push(gpu),
        }
    }
    out
}

fn eval(args: EvalArgs) -> Result<()> {
    let dev = args.device.open();
    let loaded = load_model(&args.model, &dev.device)?;
    let base = crate::data::LoadOptions { skip_bad_rows: args.skip_bad_rows, ..loaded.load_options(args.max_len)? };
    // The paper's lengths: 64 new tokens for SciTLDR's one-sentence summaries, 128 otherwise.
    let max_new_tokens = args.max_new_tokens.unwrap_or(match crate::data::RowStream::open(&args.data, &base)?.info().preset {
        crate::data::Preset::SciTldr => 64,
        _ => 128,
    });
    let settings = EvalSettings {
        beams: args.beams,
        repetition_penalty: args.repetition_penalty,
        max_new_tokens,
        max_len: args.max_len,
        stemmer: args.stemmer,
    };
    let opts = crate::data::LoadOptions { skip_bad_rows: args.skip_bad_rows, ..settings.load_options(&loaded)? };
    let mut data = crate::data::load_dataset(&args.data, &loaded.tokenizer, &opts)?;
    if data.report.counts.skipped > 0 {
        eprintln!(
            "skipped {} bad rows, e.g. {}",
            data.report.counts.skipped,
            data.report.skip_messages.first().map(String::as_str).unwrap_or("-")
        );
    }
    // Scores against no reference would read as a real ROUGE of 0.
    data.require_targets()?;
    data.examples.truncate(args.max_rows.unwrap_or(usize::MAX));
    if data.examples.is_empty() {
        anyhow::bail!("{}: no rows to evaluate", args.data.display());
    }
    let bar = indicatif::ProgressBar::new(data.examples.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} rows  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result =
        crate::eval::runner::evaluate(&loaded, &data.examples, &settings.generation(&loaded), &settings.rouge(), &mut |done, _| {
            bar.set_position(done as u64);
            true
        })?;
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
