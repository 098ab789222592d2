//! The desktop app: a thin egui client of the engine. `worker` owns the engine on its own
//! thread; each panel file draws one tab and turns clicks into worker commands.

mod chat;
mod data;
mod evaluate;
mod first_run;
mod method;
mod model;
mod save;
mod state;
mod tensors;
mod train;
mod widgets;
mod worker;

use eframe::egui;

pub use state::Settings;
use worker::{Output, Reply, Worker};

/// Opens the main window and blocks until it is closed.
pub fn run() -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_title("GreenTrainer Studio").with_inner_size([1180.0, 760.0]),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "GreenTrainer Studio",
        options,
        Box::new(|cc| {
            let mut settings = cc.storage.and_then(|s| eframe::get_value(s, eframe::APP_KEY)).unwrap_or_default();
            let cwd = std::env::current_dir().unwrap_or_default();
            let app_dir = eframe::storage_dir("GreenTrainer Studio");
            let note = first_run::resolve_defaults(&mut settings, &cwd, first_run::exe_dir().as_deref(), app_dir.as_deref());
            let mut app = StudioApp::new(cc.egui_ctx.clone(), settings);
            app.error = note;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tab {
    Model,
    Data,
    Method,
    Train,
    Tensors,
    Evaluate,
    Chat,
    Save,
}

impl Tab {
    const ALL: [Tab; 8] = [Tab::Model, Tab::Data, Tab::Method, Tab::Train, Tab::Tensors, Tab::Evaluate, Tab::Chat, Tab::Save];
}

pub struct StudioApp {
    settings: Settings,
    tab: Tab,
    worker: Worker,
    model: model::ModelView,
    data: data::DataView,
    method: method::MethodView,
    run: train::RunView,
    eval: evaluate::EvalView,
    chat: chat::ChatView,
    save: save::SaveView,
    /// The last failure, shown until dismissed.
    error: Option<String>,
}

impl StudioApp {
    /// Starts the engine thread; `settings` are the persisted ones, or a test's.
    pub fn new(ctx: egui::Context, settings: Settings) -> Self {
        Self {
            settings,
            tab: Tab::Model,
            worker: Worker::spawn(ctx),
            model: Default::default(),
            data: Default::default(),
            method: Default::default(),
            run: Default::default(),
            eval: Default::default(),
            chat: Default::default(),
            save: Default::default(),
            error: None,
        }
    }

    pub fn tab(&self) -> Tab {
        self.tab
    }

    /// Whether the engine thread has work in hand (tests wait on this).
    pub fn busy(&self) -> bool {
        self.worker.busy().is_some()
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// What the user chose (persisted between sessions).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The Method tab's last comparison of methods, the base model first.
    pub fn comparison(&self) -> Option<&[crate::bench::accuracy::Row]> {
        self.method.comparison.as_deref()
    }

    /// The last evaluation of the Evaluate tab (the fine-tuned model's, or the loaded one's).
    pub fn evaluation(&self) -> Option<&crate::eval::runner::Evaluation> {
        self.eval.result.as_ref().map(|(tuned, _)| tuned)
    }

    fn handle(&mut self, reply: Reply) {
        match reply {
            Reply::TrainEvent(event) => self.run.on_event(event),
            Reply::EvalProgress { done, total } => self.eval.progress = Some((done, total)),
            Reply::CompareProgress(what) => self.method.comparing = Some(what),
            Reply::ChatText { side, text } => self.chat.on_text(side, text),
            Reply::Done { task, result: Err(e) } => {
                self.error = Some(format!("{task} failed: {e}"));
                if task == worker::TRAINING {
                    self.run.running = false;
                }
                if task == worker::COMPARING {
                    self.method.comparing = None;
                }
            }
            Reply::Done { result: Ok(output), .. } => match output {
                Output::Model { path, summary, ops, source_bytes, device, note } => {
                    // Only paths that loaded join the recent list.
                    state::remember(&mut self.settings.recent_models, &path.display().to_string());
                    self.model.loaded(summary, ops, device, note);
                    self.model.source_bytes = source_bytes;
                    self.chat.clear();
                    // Timings belong to the previous model and device.
                    self.method.calibration = None;
                }
                Output::Preview(p) => {
                    state::remember(&mut self.settings.recent_data, &p.info.path.display().to_string());
                    self.data.loaded(p)
                }
                Output::Trained(outcome) => self.run.finished(outcome),
                Output::Evaluated { tuned, base } => self.eval.result = Some((tuned, base)),
                Output::Chatted { tuned, base } => self.chat.finished(tuned, base),
                Output::Saved { dir, delta } => self.save.saved = Some((dir, delta)),
                Output::ExportedGguf(done) => self.save.exported = Some(done),
                Output::Run { log, events } => self.run.reopened(log, events),
                Output::Calibrated(c) => self.method.calibration = Some(c),
                Output::Compared(rows) => {
                    self.method.comparing = None;
                    self.method.comparison = Some(rows);
                }
                Output::Cancelled => {
                    self.method.comparing = None;
                    self.eval.progress = None;
                }
            },
        }
    }

    fn tabs(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("GreenTrainer Studio");
            ui.separator();
            for tab in Tab::ALL {
                ui.selectable_value(&mut self.tab, tab, format!("{tab:?}"));
            }
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            match self.worker.busy() {
                Some(task) => {
                    ui.spinner();
                    ui.label(format!("Engine: {task}…"));
                }
                None => {
                    ui.label("Engine: idle");
                }
            }
            ui.separator();
            ui.label(self.model.status());
        });
        if let Some(e) = self.error.clone() {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
                if ui.button("Dismiss").clicked() {
                    self.error = None;
                }
            });
        }
    }
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        for reply in self.worker.poll() {
            self.handle(reply);
        }
        egui::Panel::top("tabs").show(ui, |ui| self.tabs(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().auto_shrink(false).show(ui, |ui| match self.tab {
                Tab::Model => model::show(self, ui),
                Tab::Data => data::show(self, ui),
                Tab::Method => method::show(self, ui),
                Tab::Train => train::show(self, ui),
                Tab::Tensors => tensors::show(self, ui),
                Tab::Evaluate => evaluate::show(self, ui),
                Tab::Chat => chat::show(self, ui),
                Tab::Save => save::show(self, ui),
            });
        });
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
    }
}
