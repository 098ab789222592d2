//! Small widgets the panels share.

use eframe::egui;

/// What a "Browse…" button asks the system dialog for.
#[derive(Clone, Copy)]
pub enum Pick {
    /// A model: an HF folder, or a file (.gguf) when `file` is set.
    Model { file: bool },
    /// A data file.
    Data,
    /// A folder to write into.
    Folder,
    /// A run's events.jsonl.
    Log,
    /// A .gguf file to write.
    NewGguf,
}

/// A labelled path field with Browse… and, when `action` is given, a button for it. Typing a path
/// works as well as the dialog (and is what tests do). Returns true when the action was asked for:
/// the button, Enter in the field, or a path picked in the dialog.
pub fn path_row(ui: &mut egui::Ui, label: &str, path: &mut String, pick: Pick, action: Option<&str>, enabled: bool) -> bool {
    let mut go = false;
    let no_dialog = ui.scope_id().with(("no file dialog", label));
    ui.horizontal(|ui| {
        let name = ui.label(label);
        let field = ui.add(egui::TextEdit::singleline(path).desired_width(ui.available_width() - 190.0)).labelled_by(name.id);
        go |= field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.button("Browse…").clicked() {
            match browse(pick) {
                Browsed::Picked(p) => {
                    *path = p.display().to_string();
                    go = true;
                }
                Browsed::Unavailable => {
                    ui.data_mut(|d| d.insert_temp(no_dialog, true));
                }
                Browsed::Cancelled => {}
            }
        }
        if let Some(action) = action {
            go |= ui.add_enabled(enabled, egui::Button::new(action)).clicked();
        }
    });
    // What is read must exist; a folder or file to write need not yet.
    let typed = path.trim();
    if !matches!(pick, Pick::Folder | Pick::NewGguf) && !typed.is_empty() && !std::path::Path::new(typed).exists() {
        ui.colored_label(ui.visuals().warn_fg_color, "Nothing exists at this path yet.");
    }
    if ui.data(|d| d.get_temp::<bool>(no_dialog).unwrap_or(false)) {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            "No file dialog opened: this desktop offers none (no xdg desktop portal, no zenity). Type or paste the path above.",
        );
    }
    go && action.is_some() && enabled && !path.trim().is_empty()
}

/// What the system file dialog gave.
enum Browsed {
    Picked(std::path::PathBuf),
    Cancelled,
    /// It closed before anyone could have used it: rfd found no dialog to show (on Linux, no
    /// desktop portal and no zenity) and only logs that.
    Unavailable,
}

/// A person cannot cancel a dialog faster than this; rfd failing returns at once.
const FASTEST_CANCEL: std::time::Duration = std::time::Duration::from_millis(400);

fn browse(pick: Pick) -> Browsed {
    let dialog = rfd::FileDialog::new();
    let opened = std::time::Instant::now();
    let picked = match pick {
        Pick::Model { file: false } | Pick::Folder => dialog.pick_folder(),
        Pick::Model { file: true } => dialog.add_filter("GGUF model", &["gguf"]).pick_file(),
        Pick::Data => dialog.add_filter("Data", &["jsonl", "json", "csv", "parquet"]).pick_file(),
        Pick::Log => dialog.add_filter("Run events", &["jsonl"]).pick_file(),
        Pick::NewGguf => dialog.add_filter("GGUF model", &["gguf"]).save_file(),
    };
    match picked {
        Some(p) => Browsed::Picked(p),
        None if opened.elapsed() < FASTEST_CANCEL => Browsed::Unavailable,
        None => Browsed::Cancelled,
    }
}

/// A label and a drag value named by it (so screen readers and tests can find it).
pub fn number<N: egui::emath::Numeric>(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut N,
    range: std::ops::RangeInclusive<N>,
    speed: f64,
) -> egui::Response {
    let name = ui.label(label);
    ui.add(egui::DragValue::new(value).range(range).speed(speed)).labelled_by(name.id)
}

/// "1.23 TFLOPs" and the like.
pub fn flops(v: f64) -> String {
    let (scale, unit) = flops_unit(v);
    format!("{:.2} {unit}", v / scale)
}

/// The scale and name of the largest FLOPs unit not above `v`.
pub fn flops_unit(v: f64) -> (f64, &'static str) {
    [(1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs")].into_iter().find(|(s, _)| v >= *s).unwrap_or((1.0, "FLOPs"))
}

/// "12.3 MiB" and the like.
pub fn bytes(v: f64) -> String {
    let (scale, unit) =
        [(1024f64.powi(3), "GiB"), (1024f64.powi(2), "MiB"), (1024.0, "KiB")].into_iter().find(|(s, _)| v >= *s).unwrap_or((1.0, "B"));
    format!("{:.1} {unit}", v / scale)
}

/// "850 ms", "12.3 s", "4m05s", "2h10m".
pub fn seconds(v: f64) -> String {
    let s = v.max(0.0);
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", s as u64 / 60, s as u64 % 60)
    } else {
        format!("{}h{:02}m", s as u64 / 3600, s as u64 / 60 % 60)
    }
}

/// Model output for a label: a byte-level tokenizer decodes a cut multi-byte character as U+FFFD,
/// which the UI font has no glyph for.
pub fn displayable(text: &str) -> String {
    text.replace('\u{FFFD}', "?")
}
