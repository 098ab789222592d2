//! The desktop app: a thin egui client of the engine (full panels come with the app issue).

/// Opens the main window and blocks until it is closed.
pub fn run() -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default().with_title("GreenTrainer Studio").with_inner_size([960.0, 640.0]),
        ..Default::default()
    };
    eframe::run_native("GreenTrainer Studio", options, Box::new(|_cc| Ok(Box::new(StudioApp))))
        .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

struct StudioApp;

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut eframe::egui::Ui, _frame: &mut eframe::Frame) {
        eframe::egui::CentralPanel::default().show(ui, |ui| {
            ui.heading("GreenTrainer Studio");
            ui.label("Fine-tune an LLM within a FLOPs budget. The training panels are on their way;");
            ui.label("meanwhile the engine runs headless: greentrainer --help");
        });
    }
}
