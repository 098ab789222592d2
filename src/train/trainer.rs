//! The training loop shared by every method: select what to train, step, account FLOPs, emit
//! events, checkpoint, cancel, resume.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use super::batch::{DeviceBatch, frozen_prefix};
use super::checkpoint::{self, RunState};
use super::config::{Granularity, MethodKind, TrainConfig};
use super::control::RunControl;
use super::cost::{step_macs, step_time_share};
use super::events::{Event, EventSink};
use super::optim::{AdamW, AdamWConfig, LinearSchedule, has_state};
use super::step::{forward_backward_rows, grad_norm};
use crate::data::{Batch, BatchPlan, Batcher, DataPosition, Example, LoadOptions, LoadReport, load_dataset};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::green::card::RunCard;
use crate::green::meter::{Efficiency, Energy, Meter};
use crate::green::{Footprint, RunTerms};
use crate::importance;
use crate::io::{
    LoadedModel,
    atomic::Existing,
    export::{save_hf_folder, save_peft_adapter},
    load_model,
};
use crate::model::lora::default_targets;
use crate::model::precision::{FrozenStore, store_frozen};
use crate::model::{Linears, Model, Parameters};
use crate::profile::blocks::{parse_block, split_rows};
use crate::profile::reach::Reach;
use crate::profile::{BatchShape, FLOPS_PER_MAC, OpKind, OpSpec, Profile, profile};
use crate::select::SelectConfig;

/// What a diverged run tells the user; resuming would repeat it, since a resume keeps the lr.
const DIVERGED: &str = "training diverged; start the run again with a lower lr or a clip_norm";

/// A loaded model and dataset, ready to train.
pub struct Trainer {
    pub config: TrainConfig,
    pub device: ComputeDevice,
    pub loaded: LoadedModel,
    pub examples: Vec<Example>,
    pub data_report: LoadReport,
    pad_id: u32,
    /// How frozen matrices are stored (`frozen_precision`).
    frozen: FrozenStore,
    /// With a frozen prompt prefix: the share of an epoch's tokens the backward pass covers, what
    /// GreenTrainer plans its selection on (batches vary around it); `None` otherwise.
    grad_share: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub steps: usize,
    pub losses: Vec<f64>,
    pub flops_spent: f64,
    pub flops_full: f64,
    pub cancelled: bool,
}

/// Where a (re)selection happens: the batch importance is scored on, its learning rate and step.
struct SelectionPoint<'a> {
    /// The batches importance is scored on (the step's first).
    batches: &'a [DeviceBatch],
    lr: f64,
    step: usize,
}

/// A run in progress: the weights and optimizer being trained, and where it stands.
struct Run {
    model: Model,
    optimizer: AdamW,
    state: RunState,
    selection: Option<Selection>,
    losses: Vec<f64>,
    /// The next batch to train on.
    position: DataPosition,
}

impl Run {
    fn outcome(&self, cancelled: bool) -> RunOutcome {
        let s = &self.state;
        RunOutcome { steps: s.step, losses: self.losses.clone(), flops_spent: s.flops_spent, flops_full: s.flops_full, cancelled }
    }
}

/// The tensors one step trains, and when they were chosen.
struct Selection {
    names: BTreeSet<String>,
    at_step: usize,
    at_epoch: u64,
}

impl Trainer {
    pub fn prepare(config: TrainConfig, device: ComputeDevice) -> Result<Self> {
        config.validate()?;
        let loaded = match config.method {
            MethodKind::Full => load_model(&config.model, &device.device)?,
            _ => crate::io::load_model_stored(&config.model, &device.device, config.frozen_precision)?,
        };
        Self::prepare_loaded(config, device, loaded)
    }

    /// [`Trainer::prepare`] on `loaded`, the model `config.model` names already in memory (the
    /// app's): its tensors are shared, not copied.
    pub fn prepare_loaded(mut config: TrainConfig, device: ComputeDevice, mut loaded: LoadedModel) -> Result<Self> {
        config.validate()?;
        let frozen = match config.method {
            MethodKind::Full => FrozenStore::float(burn::tensor::DType::F32),
            _ => crate::io::frozen_store(config.frozen_precision, &config.model, &loaded.model, &device.device)?,
        };
        if config.method != MethodKind::Full {
            // Nothing trains yet: every matrix frozen until the first selection promotes some.
            store_frozen(&mut loaded.model, &frozen, &|_| false);
        }
        if config.method == MethodKind::Lora {
            config.lora_targets = lora_targets(&config, &loaded.model)?;
        }
        if config.save_model
            && let (Ok(source), Ok(out)) = (config.model.canonicalize(), config.output.canonicalize())
            && source.starts_with(out.join("model"))
        {
            return Err(Error::invalid(
                &config.output,
                "its model folder is the model being trained, which saving would replace: choose another output folder",
            ));
        }
        if config.method == MethodKind::Greentrainer && config.budget.is_none() {
            // Refuse an infeasible rho now, not after loading data and scoring importance.
            let ops = loaded.model.op_graph();
            let p = profile(&ops, BatchShape::padded(&ops, config.batch_size, config.max_len), false)
                .map_err(|e| Error::Other(e.to_string()))?;
            if config.rho < p.min_rho() {
                return Err(Error::Other(format!(
                    "rho = {} is infeasible: the forward pass alone costs {:.4} of full fine-tuning; choose rho >= {:.4}",
                    config.rho,
                    p.min_rho(),
                    (p.min_rho() * 1e4).ceil() / 1e4
                )));
            }
        }
        if let Some(limit) = loaded.model.position_limit()
            && config.max_len > limit
        {
            return Err(Error::invalid(&config.model, format!("max_len {} is longer than the model's {limit} positions", config.max_len)));
        }
        let pad_id = loaded.model.info().pad_token_id.unwrap_or(loaded.eos_token_id()?);
        let opts = LoadOptions { mapping: config.mapping(), skip_bad_rows: config.skip_bad_rows, ..loaded.load_options(config.max_len)? };
        let dataset = load_dataset(&config.data, &loaded.tokenizer, &opts)?;
        if dataset.report.counts.skipped > 0 {
            tracing::warn!(
                "{}: skipped {} bad rows, e.g. {}",
                config.data.display(),
                dataset.report.counts.skipped,
                dataset.report.skip_messages.first().map(String::as_str).unwrap_or("-")
            );
        }
        dataset.require_targets()?;
        if dataset.examples.is_empty() {
            return Err(Error::invalid(&config.data, "no training examples"));
        }
        let mut trainer =
            Self { config, device, loaded, examples: dataset.examples, data_report: dataset.report, pad_id, frozen, grad_share: None };
        if trainer.freezes_prompt() {
            trainer.grad_share = Some(trainer.epoch_grad_share()?);
        }
        if let Some(budget) = trainer.config.budget {
            trainer.config.rho = super::plan::rho_for_budget(&trainer, budget)?;
        }
        let c = &trainer.config;
        if c.epochs > 0 && c.max_steps > trainer.total_steps() {
            tracing::warn!(
                "max_steps {} is more than {} epochs of {} steps: the run stops after {} steps (set epochs = 0 to run all the steps)",
                c.max_steps,
                c.epochs,
                trainer.steps_per_epoch(),
                trainer.total_steps()
            );
        }
        Ok(trainer)
    }

    fn freezes_prompt(&self) -> bool {
        self.config.method == MethodKind::Greentrainer && self.config.frozen_prompt && !self.loaded.model.is_encoder_decoder()
    }

    /// Over one epoch's batches, the share of tokens after each batch's frozen prefix.
    fn epoch_grad_share(&self) -> Result<f64> {
        let batcher = Batcher::new(&self.examples, self.plan(), self.pad_id)?;
        let (mut grad, mut all) = (0usize, 0usize);
        for (_, b) in batcher.batches_from(DataPosition { epoch: 0, batch: 0 }) {
            grad += b.batch * (b.seq - frozen_prefix(&b.labels, b.seq));
            all += b.batch * b.seq;
        }
        Ok(if all > 0 { grad as f64 / all as f64 } else { 1.0 })
    }

    /// A batch on the device, its shared prompt prefix frozen when GreenTrainer asked for it.
    fn device_batch(&self, batch: &Batch, model: &Model) -> DeviceBatch {
        let on_device = DeviceBatch::new(batch, model);
        match self.freezes_prompt() {
            true => on_device.freeze_prompt(),
            false => on_device,
        }
    }

    fn plan(&self) -> BatchPlan {
        BatchPlan {
            batch_size: self.config.batch_size,
            group_by_length: self.config.group_by_length,
            drop_last: false,
            seed: self.config.seed,
        }
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.examples.len().div_ceil(self.config.batch_size).div_ceil(self.config.grad_accum)
    }

    pub fn total_steps(&self) -> usize {
        let c = &self.config;
        let by_epochs = c.epochs * self.steps_per_epoch();
        match (c.epochs, c.max_steps) {
            (0, m) => m,
            (_, 0) => by_epochs,
            (_, m) => m.min(by_epochs),
        }
    }

    /// The token right-padded batches are filled with: the model's pad token, else its EOS.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Trains; with `resume`, continues from `<output>/checkpoint` (an error when there is none, or
    /// when it belongs to a run with other settings). A loss that stops being finite ends the run
    /// with `Error::Diverged`, leaving the last checkpoint as it was. `control` pauses it between
    /// steps and cancels it with a checkpoint.
    pub fn run(&mut self, sink: &mut dyn EventSink, control: &RunControl, resume: bool) -> Result<RunOutcome> {
        let started = Instant::now();
        let mut run = self.restore(resume)?;
        self.store_selected(&mut run);
        // Where the user will see it before the steps; `--dry-run` has it in its report instead.
        if let Some(reach) = self.reach()?
            && reach.shallow()
        {
            tracing::warn!("{}", self.guidance_for(&reach)?);
        }
        let mut meter = Meter::open(Path::new("/"), None, &self.device);
        let c = self.config.clone();
        let total_steps = self.total_steps();
        let schedule = LinearSchedule { peak_lr: c.lr, warmup_steps: c.warmup_steps, total_steps };
        let flops_before = run.state.flops_spent;
        let ops = run.model.op_graph();
        let full_shape = BatchShape::padded(&ops, c.batch_size, c.max_len);
        let full_profile = profile(&ops, full_shape, false).map_err(|e| Error::Other(e.to_string()))?;
        sink.emit(&Event::Started {
            method: method_label(&c),
            model: c.model.display().to_string(),
            device: self.device.name.clone(),
            parameters: run.model.num_params(),
            train_examples: self.examples.len(),
            total_steps,
            truncated_rows: self.examples.iter().filter(|e| e.source_truncated || e.target_truncated).count(),
            full_step_flops: full_profile.t_full() * FLOPS_PER_MAC,
            resumed_from_step: resume.then_some(run.state.step),
        });

        let batcher = Batcher::new(&self.examples, self.plan(), self.pad_id)?;
        let mut micro: Vec<(DataPosition, Batch)> = Vec::new();
        'epochs: while run.state.step < total_steps {
            let epoch_start = run.position;
            for (pos, batch) in batcher.batches_from(epoch_start) {
                micro.push((pos, batch));
                let epoch_done = pos.batch + 1 == batcher.batches_per_epoch();
                if micro.len() < c.grad_accum && !epoch_done {
                    continue;
                }
                let step_started = Instant::now();
                let batches: Vec<DeviceBatch> = micro.drain(..).map(|(_, b)| self.device_batch(&b, &run.model)).collect();
                let lr = schedule.lr(run.state.step);
                if self.reselect_due(&run.selection, run.state.step, pos.epoch) {
                    // The step's first batch, then the ones after it in this epoch (importance is
                    // GreenTrainer's alone: the other methods need none).
                    let ahead = batcher.batches_from(DataPosition { epoch: pos.epoch, batch: pos.batch + 1 });
                    let extra = if c.method == MethodKind::Greentrainer { c.importance_batches.saturating_sub(1) } else { 0 };
                    let scoring: Vec<DeviceBatch> =
                        batches[..1].iter().cloned().chain(ahead.take(extra).map(|(_, b)| self.device_batch(&b, &run.model))).collect();
                    let at = SelectionPoint { batches: &scoring, lr, step: run.state.step };
                    let (names, selection_flops) = match self.choose(&run.model, &run.optimizer, at, run.selection.as_ref(), sink, control)
                    {
                        // Cancelled while scoring: this step starts again on resume.
                        Err(Error::Cancelled) => return self.cancelled(&mut run, sink),
                        other => other?,
                    };
                    run.state.flops_spent += selection_flops;
                    run.state.flops_full += selection_flops;
                    run.selection = Some(Selection { names, at_step: run.state.step, at_epoch: pos.epoch });
                    self.store_selected(&mut run);
                }
                let loss = self.step(&mut run, &batches, lr)?;
                meter.sample();
                run.state.step += 1;
                run.losses.push(loss);
                run.position = match epoch_done {
                    true => DataPosition { epoch: pos.epoch + 1, batch: 0 },
                    false => DataPosition { epoch: pos.epoch, batch: pos.batch + 1 },
                };
                sink.emit(&Event::Step {
                    step: run.state.step,
                    epoch: pos.epoch,
                    loss,
                    lr,
                    tokens: batches.iter().map(|b| b.real_tokens).sum(),
                    step_time_s: step_started.elapsed().as_secs_f64(),
                    flops_spent: run.state.flops_spent,
                    flops_full: run.state.flops_full,
                });
                // Paused here, between steps, with everything in memory; a cancel ends the wait.
                control.wait_while_paused();
                if control.cancelled() {
                    return self.cancelled(&mut run, sink);
                }
                if c.checkpoint_every > 0 && run.state.step.is_multiple_of(c.checkpoint_every) {
                    self.checkpoint(&mut run)?;
                    sink.emit(&Event::Checkpoint { step: run.state.step, path: self.config.checkpoint_dir() });
                }
                if run.state.step >= total_steps {
                    break 'epochs;
                }
            }
            run.position = DataPosition { epoch: epoch_start.epoch + 1, batch: 0 };
        }
        // Estimates cover this session's FLOPs, as the meter covers only this session.
        let energy = meter.finish(run.state.flops_spent - flops_before, Efficiency::for_device(&self.device));
        self.finish(run, energy, started, sink)
    }

    /// The run to start or continue: the model (with LoRA's adapters), the optimizer, where the
    /// data stands and what is selected. Resuming also keeps the rho the checkpoint trained with.
    fn restore(&mut self, resume: bool) -> Result<Run> {
        let checkpoint_dir = self.config.checkpoint_dir();
        if resume {
            let saved = checkpoint::read_state(&checkpoint_dir)?;
            if let Some(then) = &saved.config {
                super::output::check_resumable(&checkpoint_dir, then, &self.config)?;
                // A budget's rho came from timings; the resumed run keeps the one it trained with.
                if let Some(rho) = then["rho"].as_f64() {
                    self.config.rho = rho;
                }
            }
        }
        let c = &self.config;
        let mut optimizer = AdamW::new(AdamWConfig { weight_decay: c.weight_decay, ..AdamWConfig::default() });
        let mut model = self.loaded.model.clone();
        if c.method == MethodKind::Lora {
            // Adapter initialisation is seeded so a resumed run rebuilds the same structure.
            self.device.device.seed(c.seed);
            model.attach_lora(&c.lora_config());
        }
        let mut state = RunState {
            step: 0,
            epoch: 0,
            batch: 0,
            selection: Vec::new(),
            selected_at: None,
            optimizer_steps: Default::default(),
            optimizer_rows: Default::default(),
            flops_spent: 0.0,
            flops_full: 0.0,
            config: serde_json::to_value(c).ok(),
        };
        if resume {
            state = checkpoint::load(&checkpoint_dir, &mut model, &mut optimizer)?;
            state.config = serde_json::to_value(c).ok();
        }
        let selection = state.selected_at.map(|at| Selection {
            names: state.selection.iter().cloned().collect(),
            at_step: at,
            at_epoch: (at / self.steps_per_epoch().max(1)) as u64,
        });
        let position = state.position();
        Ok(Run { model, optimizer, state, selection, losses: Vec::new(), position })
    }

    /// [`store_for_selection`] for the run's selection.
    fn store_selected(&self, run: &mut Run) {
        let Some(selection) = &run.selection else { return };
        store_for_selection(&mut run.model, &self.frozen, &selection.names, &run.optimizer);
    }

    /// One optimizer step over `batches` (its micro-batches) with the selected tensors: the mean
    /// loss, after counting the step's FLOPs, clipping and the update.
    fn step(&self, run: &mut Run, batches: &[DeviceBatch], lr: f64) -> Result<f64> {
        let c = &self.config;
        let trainable = &run.selection.as_ref().expect("selected before the first step").names;
        let (full, rows) = split_selection(trainable);
        let mut loss_sum = 0.0;
        let mut grads = BTreeMap::new();
        let mut row_grads = BTreeMap::new();
        for b in batches {
            let pass = forward_backward_rows(&run.model, &|n| full.contains(n), &rows, b)?;
            loss_sum += pass.loss;
            accumulate(&mut grads, pass.grads);
            accumulate(&mut row_grads, pass.row_grads);
            let p = self.profile_for(&run.model, b.shape)?;
            run.state.flops_spent += step_macs(&p, &run.model, trainable) * FLOPS_PER_MAC;
            run.state.flops_full += p.t_full() * FLOPS_PER_MAC;
        }
        let loss = loss_sum / batches.len() as f64;
        if !loss.is_finite() {
            return Err(self.diverged(run.state.step + 1, loss, lr));
        }
        // The mean over micro-batches and the clipping factor scale the gradients inside
        // the fused update rather than in passes of their own.
        let mut grad_scale = 1.0 / batches.len() as f64;
        if c.clip_norm > 0.0 {
            let norm = grad_norm(&grads, &row_grads) * grad_scale;
            if norm > c.clip_norm {
                grad_scale *= c.clip_norm / (norm + 1e-6);
            }
        }
        run.optimizer.step(&mut run.model, &grads, lr, grad_scale);
        run.optimizer.step_rows(&mut run.model, &row_grads, &rows, lr, grad_scale);
        Ok(loss)
    }

    /// The end of a run that trained all its steps: the fine-tuned model saved with its run card
    /// (or, when saving fails, a checkpoint that keeps the weights), then `Energy` and `Finished`.
    fn finish(&mut self, mut run: Run, energy: Energy, started: Instant, sink: &mut dyn EventSink) -> Result<RunOutcome> {
        let c = self.config.clone();
        let terms = RunTerms { grid_g_per_kwh: c.grid_g_per_kwh, budget: c.budget.map(|b| (b, c.rho)) };
        let footprint = Footprint::new(terms, energy, started.elapsed().as_secs_f64(), run.state.flops_spent);
        // The last update comes after the last loss was checked.
        if let Some(name) = first_non_finite(&run.model) {
            return Err(self.non_finite_weights(run.state.step, &name));
        }
        let output = if c.save_model {
            let out = c.model_dir();
            let finetuned = LoadedModel { model: run.model.clone(), ..self.loaded.clone() };
            let saved =
                save_hf_folder(&finetuned, &out, Existing::Replace, Some(run_metadata(&c, run.selection.as_ref()))).and_then(|()| {
                    if c.method != MethodKind::Lora {
                        return Ok(());
                    }
                    save_peft_adapter(
                        &run.model,
                        &c.lora_config(),
                        &c.model.display().to_string(),
                        &c.output.join("adapter"),
                        Existing::Replace,
                    )
                });
            if let Err(e) = saved {
                // The trained weights must outlive a failed save (a full disk, a removed folder).
                snapshot(&mut run);
                let kept = checkpoint::save(&c.checkpoint_dir(), &run.model, &run.optimizer, &run.state);
                return Err(Error::SaveFailed { error: Box::new(e), checkpoint: kept.is_ok().then(|| c.checkpoint_dir()) });
            }
            RunCard {
                model: c.model.display().to_string(),
                data: c.data.display().to_string(),
                method: method_label(&c),
                rho: (c.method == MethodKind::Greentrainer).then_some(c.rho),
                selection_size: run.selection.as_ref().map_or(0, |s| s.names.len()),
                steps: run.state.step,
                flops_spent: run.state.flops_spent,
                flops_full: run.state.flops_full,
                final_loss: run.losses.last().copied(),
                footprint: footprint.clone(),
                rouge: Vec::new(),
            }
            .write(&out)?;
            Some(out)
        } else {
            None
        };
        let outcome = run.outcome(false);
        sink.emit(&Event::Energy(footprint));
        sink.emit(&Event::Finished {
            steps: run.state.step,
            flops_spent: run.state.flops_spent,
            flops_full: run.state.flops_full,
            wall_time_s: started.elapsed().as_secs_f64(),
            final_loss: run.losses.last().copied(),
            optimizer_state_bytes: run.optimizer.state_bytes(),
            output,
        });
        self.loaded.model = run.model;
        Ok(outcome)
    }

    /// The error for a loss that stopped being finite at `step`.
    fn diverged(&self, step: usize, loss: f64, lr: f64) -> Error {
        let what = if step == 1 {
            format!("the loss of the first step is {loss}: the model's weights or config give non-finite values")
        } else {
            format!("the loss became {loss} (learning rate {lr:.3e}): {DIVERGED}")
        };
        Error::Diverged { step, what, checkpoint: self.last_checkpoint() }
    }

    /// The error for an update that left `tensor` with NaN or infinite values at `step`.
    fn non_finite_weights(&self, step: usize, tensor: &str) -> Error {
        let what =
            format!("the update left tensor {tensor} with NaN or infinite values (learning rate {:.3e}): {DIVERGED}", self.config.lr);
        Error::Diverged { step, what, checkpoint: self.last_checkpoint() }
    }

    /// The checkpoint a failed run leaves, when there is one.
    fn last_checkpoint(&self) -> Option<std::path::PathBuf> {
        let dir = self.config.checkpoint_dir();
        dir.join("state.json").exists().then_some(dir)
    }

    /// GreenTrainer: how deep the backward pass can reach at this rho, over the candidates it
    /// selects from (row blocks reach deeper than whole tensors for the same FLOPs).
    pub fn reach(&self) -> Result<Option<Reach>> {
        self.reach_with(self.grad_share)
    }

    /// [`Trainer::reach`] with the backward pass over `grad_share` of the tokens (`None`: all).
    fn reach_with(&self, grad_share: Option<f64>) -> Result<Option<Reach>> {
        if self.config.method != MethodKind::Greentrainer {
            return Ok(None);
        }
        let model = &self.loaded.model;
        // The head runs on target tokens only, so its share of the budget follows the data.
        let targets = self.examples.iter().map(|e| e.target_len()).sum::<usize>() as f64 / self.examples.len() as f64;
        let shape = BatchShape::padded(&model.op_graph(), self.config.batch_size, self.config.max_len).with_mean_targets(targets);
        let p = self.profile_for(model, with_share(shape, grad_share))?;
        Ok(Some(Reach::of(&p, self.config.rho)))
    }

    /// The depth line for the user choosing rho: [`Reach::describe`], and where this rho is too
    /// shallow and the prompt is not frozen yet, how deep freezing it would let the same rho reach.
    pub fn depth_guidance(&self) -> Result<Option<String>> {
        self.reach()?.map(|reach| self.guidance_for(&reach)).transpose()
    }

    /// [`Trainer::depth_guidance`] for this run's `reach`.
    fn guidance_for(&self, reach: &Reach) -> Result<String> {
        let mut text = reach.describe();
        if reach.shallow()
            && !self.freezes_prompt()
            && !self.loaded.model.is_encoder_decoder()
            && let Some(frozen) = self.reach_with(Some(self.epoch_grad_share()?))?
            && frozen.reachable_blocks() > reach.reachable_blocks()
        {
            text += &format!(
                "; or freeze the prompt prefix (frozen_prompt = true, --frozen-prompt true): the backward pass then covers the \
                 answers only and this rho can reach {} of {} blocks",
                frozen.reachable_blocks(),
                frozen.blocks
            );
        }
        Ok(text)
    }

    /// The profile GreenTrainer selects over: per tensor, or split into row blocks.
    fn profile_for(&self, model: &Model, shape: BatchShape) -> Result<Profile> {
        let ops = model.op_graph();
        let p = profile(&ops, shape, false).map_err(|e| Error::Other(e.to_string()))?;
        let c = &self.config;
        let rows = match (c.method, c.granularity) {
            (MethodKind::Greentrainer, Granularity::Head) => None,
            (MethodKind::Greentrainer, Granularity::Rows) => Some(c.block_rows),
            _ => return Ok(p),
        };
        let block = |op: &OpSpec| matches!(op.kind, OpKind::Linear { .. }).then(|| rows.unwrap_or_else(|| model.head_rows(op.role)));
        Ok(split_rows(&p, &ops, &block))
    }

    /// Saves the state to continue from where `run` stands. A checkpoint must be one: weights an
    /// update made non-finite end the run instead, with the previous checkpoint kept.
    fn checkpoint(&self, run: &mut Run) -> Result<()> {
        if let Some(name) = first_non_finite(&run.model) {
            return Err(self.non_finite_weights(run.state.step, &name));
        }
        snapshot(run);
        checkpoint::save(&self.config.checkpoint_dir(), &run.model, &run.optimizer, &run.state)
    }

    /// Ends the run as cancelled, with a checkpoint to resume from.
    fn cancelled(&self, run: &mut Run, sink: &mut dyn EventSink) -> Result<RunOutcome> {
        self.checkpoint(run)?;
        sink.emit(&Event::Cancelled { step: run.state.step, checkpoint: self.config.checkpoint_dir() });
        Ok(run.outcome(true))
    }

    fn reselect_due(&self, current: &Option<Selection>, step: usize, epoch: u64) -> bool {
        let Some(s) = current else { return true };
        let c = &self.config;
        if c.method != MethodKind::Greentrainer {
            return false;
        }
        (c.reselect_every_steps > 0 && step >= s.at_step + c.reselect_every_steps)
            || (c.reselect_every_epochs > 0 && step > s.at_step && epoch >= s.at_epoch + c.reselect_every_epochs as u64)
    }

    /// Picks the trainable tensors for the coming steps; returns them and the FLOPs spent choosing.
    fn choose(
        &self,
        model: &Model,
        optimizer: &AdamW,
        at: SelectionPoint<'_>,
        previous: Option<&Selection>,
        sink: &mut dyn EventSink,
        control: &RunControl,
    ) -> Result<(BTreeSet<String>, f64)> {
        let c = &self.config;
        let SelectionPoint { batches, lr, step } = at;
        let p = self.profile_for(model, with_share(batches[0].shape, self.grad_share))?;
        let (names, importance, flops, deepest) = match c.method {
            MethodKind::Full => (model.param_names().into_iter().collect(), Vec::new(), 0.0, None),
            MethodKind::TopK => (model.top_layers(c.top_k), Vec::new(), 0.0, None),
            MethodKind::Lora => (model.param_names().into_iter().filter(|n| n.contains(".lora_")).collect(), Vec::new(), 0.0, None),
            MethodKind::Greentrainer => {
                // With warmup the first lr is 0, which would make every importance 0.
                let scoring_lr = if lr > 0.0 { lr } else { c.lr };
                // Each pass can take minutes on a large model: say which, and stop between them
                // when cancelled.
                let mut before_pass = |pass: usize, passes: usize| {
                    sink.emit(&Event::Scoring { step, pass, passes });
                    !control.cancelled()
                };
                let imp = super::scoring::score_batches(model, optimizer, batches, scoring_lr, &|_| true, &mut before_pass)?;
                let per_node = node_importance(&p, &imp);
                let config = SelectConfig { rho: c.rho, capacity: c.dp_capacity, rule: c.cost_rule };
                let exec = p.select(&per_node, &config).map_err(|e| Error::Other(e.to_string()))?;
                let names: BTreeSet<String> = exec.iter().map(|&i| p.nodes[i].name.clone()).collect();
                let deepest = exec.iter().min().map(|&i| p.nodes[i].name.clone());
                // Two forward+backward passes over every tensor, per batch scored (over the tokens the
                // backward pass covers: a frozen prompt prefix has no gradient there either).
                let mut flops = 0.0;
                for b in batches {
                    let p = self.profile_for(model, b.shape)?;
                    let every = p.nodes.iter().filter(|n| n.selectable).map(|n| n.name.clone()).collect();
                    flops += 2.0 * step_macs(&p, model, &every) * FLOPS_PER_MAC;
                }
                (names, imp.scores.into_iter().collect(), flops, deepest)
            }
        };
        let before: BTreeSet<String> = previous.map(|s| s.names.clone()).unwrap_or_default();
        let realised = step_macs(&p, model, &names) / p.t_full();
        let time_rho = step_time_share(&p, model, &names);
        sink.emit(&Event::Selection {
            step,
            selected: names.iter().cloned().collect(),
            deepest: deepest.or_else(|| p.nodes.iter().find(|n| names.contains(&n.name)).map(|n| n.name.clone())),
            realised_rho: realised,
            time_rho,
            importance,
            importance_flops: flops,
            added: names.difference(&before).cloned().collect(),
            removed: before.difference(&names).cloned().collect(),
        });
        Ok((names, flops))
    }
}

/// `shape` with the backward pass over `share` of its tokens (a frozen prompt prefix), if any.
fn with_share(shape: BatchShape, share: Option<f64>) -> BatchShape {
    match share {
        Some(share) => shape.with_grad_share(share),
        None => shape,
    }
}

/// Per-node importance in execution order: a row block scores the sum of its rows' contributions;
/// everything is normalised by the largest magnitude.
fn node_importance(p: &Profile, imp: &importance::Importance) -> Vec<f64> {
    let raw: Vec<f64> = p
        .nodes
        .iter()
        .map(|n| match parse_block(&n.name) {
            Some((tensor, range)) => imp.rows.get(tensor).map(|r| r[range].iter().sum()).unwrap_or(0.0),
            None => imp.raw.get(&n.name).copied().unwrap_or(0.0),
        })
        .collect();
    let max = raw.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    raw.into_iter().map(|v| if max > 0.0 { v / max } else { 0.0 }).collect()
}

/// Records in `run.state` where the run is: the next batch, the selection and the optimizer's
/// steps.
fn snapshot(run: &mut Run) {
    let state = &mut run.state;
    state.epoch = run.position.epoch;
    state.batch = run.position.batch;
    state.selection = run.selection.as_ref().map(|s| s.names.iter().cloned().collect()).unwrap_or_default();
    state.selected_at = run.selection.as_ref().map(|s| s.at_step);
    state.optimizer_steps = run.optimizer.state.iter().map(|(k, m)| (k.clone(), m.step)).collect();
    state.optimizer_rows = run.optimizer.state.iter().filter_map(|(k, m)| Some((k.clone(), m.rows.clone()?))).collect();
}

/// The first parameter holding a NaN or an infinity. Multiplying by zero keeps exactly those
/// non-finite, so one sum per tensor on the device finds them without reading weights back. A
/// quantized weight is skipped: it never trained, and its values were checked at load.
fn first_non_finite(model: &Model) -> Option<String> {
    let mut found = None;
    model.visit(&mut |name, p| {
        if found.is_none() && !p.is_quantized() && !p.flat().mul_scalar(0.0).sum().into_scalar::<f32>().is_finite() {
            found = Some(name.to_string());
        }
    });
    found
}

/// Stores `model` for a run that trains `selection` (tensor names and row blocks) with `optimizer`:
/// the selected tensors and those that trained before (the optimizer holds their moments) in f32,
/// the others in `frozen` (`model::precision`). A tensor joining the selection is promoted; one
/// leaving it keeps its trained f32 weights; one never trained is stored in `frozen`.
pub fn store_for_selection(model: &mut Model, frozen: &FrozenStore, selection: &BTreeSet<String>, optimizer: &AdamW) {
    let (full, rows) = split_selection(selection);
    store_frozen(model, frozen, &|name| full.contains(name) || rows.contains_key(name) || has_state(&optimizer.state, name));
}

/// Whole tensors, and the trained rows of tensors selected by blocks.
fn split_selection(names: &BTreeSet<String>) -> (BTreeSet<String>, BTreeMap<String, Vec<u32>>) {
    let mut full = BTreeSet::new();
    let mut rows: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for name in names {
        match parse_block(name) {
            Some((tensor, range)) => rows.entry(tensor.to_string()).or_default().extend(range.map(|r| r as u32)),
            None => {
                full.insert(name.clone());
            }
        }
    }
    for r in rows.values_mut() {
        r.sort_unstable();
    }
    (full, rows)
}

fn accumulate<const D: usize>(into: &mut BTreeMap<String, burn::tensor::Tensor<D>>, grads: BTreeMap<String, burn::tensor::Tensor<D>>) {
    for (name, g) in grads {
        match into.remove(&name) {
            Some(acc) => into.insert(name, acc + g),
            None => into.insert(name, g),
        };
    }
}

/// FT-top-k: the last k blocks, the final norm and an untied head.
/// The configured LoRA targets, or the architecture's default; an error when none names a linear
/// layer of the model.
fn lora_targets(c: &TrainConfig, model: &Model) -> Result<Vec<String>> {
    let targets = if c.lora_targets.is_empty() { default_targets(&model.op_graph()) } else { c.lora_targets.clone() };
    let linears: BTreeSet<String> = model.linears().into_iter().filter_map(|l| l.name.rsplit('.').next().map(String::from)).collect();
    if targets.iter().any(|t| linears.contains(t)) {
        return Ok(targets);
    }
    Err(Error::invalid(
        &c.model,
        format!(
            "lora_targets {} name no linear layer of this model; its linear layers are {}",
            targets.join(", "),
            linears.into_iter().collect::<Vec<_>>().join(", ")
        ),
    ))
}

fn method_label(c: &TrainConfig) -> String {
    match c.method {
        MethodKind::Greentrainer => format!("GreenTrainer (rho {})", c.rho),
        MethodKind::Full => "full fine-tuning".into(),
        MethodKind::TopK => format!("FT-top-{}", c.top_k),
        MethodKind::Lora => format!("LoRA (r {}, alpha {}, on {})", c.lora_rank, c.lora_alpha, c.lora_targets.join(", ")),
    }
}

fn run_metadata(c: &TrainConfig, selection: Option<&Selection>) -> std::collections::HashMap<String, String> {
    let mut m = std::collections::HashMap::new();
    m.insert("greentrainer.method".into(), method_label(c));
    if let Some(s) = selection {
        m.insert("greentrainer.selection".into(), s.names.iter().cloned().collect::<Vec<_>>().join(","));
    }
    m
}
