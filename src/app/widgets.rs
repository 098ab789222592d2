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

impl Pick {
    /// The files this field takes: the dialog's filter and the completions' (folders always).
    fn files(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Pick::Model { file: true } | Pick::NewGguf => Some(("GGUF model", &["gguf"])),
            Pick::Data => Some(("Data", &["jsonl", "json", "csv", "parquet"])),
            Pick::Log => Some(("Run events", &["jsonl"])),
            Pick::Model { file: false } | Pick::Folder => None,
        }
    }
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
        // The folder is read again only when the text changes, not on every repaint.
        let cache = ui.scope_id().with(("completions", label));
        let options = match ui.data(|d| d.get_temp::<(String, Vec<(std::path::PathBuf, bool)>)>(cache)) {
            Some((seen, options)) if seen == typed => options,
            _ => {
                let options = completions(typed, pick);
                ui.data_mut(|d| d.insert_temp(cache, (typed.to_string(), options.clone())));
                options
            }
        };
        ui.horizontal_wrapped(|ui| {
            ui.colored_label(ui.visuals().warn_fg_color, "Nothing exists at this path yet.");
            if !options.is_empty() {
                ui.label("Did you mean:");
            }
            for (option, is_dir) in options {
                let shown = option.file_name().map_or_else(|| option.display().to_string(), |n| n.to_string_lossy().into_owned());
                let shown = if is_dir { format!("{shown}/") } else { shown };
                if ui.button(shown).on_hover_text(option.display().to_string()).clicked() {
                    *path = option.display().to_string();
                    // A folder is a step on the way (unless a model folder is what is asked for).
                    if is_dir && !matches!(pick, Pick::Model { file: false }) {
                        path.push(std::path::MAIN_SEPARATOR);
                    }
                }
            }
        });
    }
    if ui.data(|d| d.get_temp::<bool>(no_dialog).unwrap_or(false)) {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            "No file dialog opened: this desktop offers none (no xdg desktop portal, no zenity). Type or paste the path above.",
        );
    }
    go && action.is_some() && enabled && !path.trim().is_empty()
}

/// Completions shown under a path that does not exist: up to this many entries.
const COMPLETIONS: usize = 8;

/// Entries of the typed path's folder whose names start with its last part (ignoring case),
/// folders first, then the files `pick` can use, each group sorted; each with whether it is a
/// folder.
fn completions(typed: &str, pick: Pick) -> Vec<(std::path::PathBuf, bool)> {
    let typed = std::path::Path::new(typed);
    let (dir, prefix) = if typed.as_os_str().to_string_lossy().ends_with(std::path::MAIN_SEPARATOR) {
        (typed, String::new())
    } else {
        let prefix = typed.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        (typed.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")), prefix)
    };
    let extensions = pick.files().map_or(&[][..], |(_, extensions)| extensions);
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(bool, std::path::PathBuf)> = entries
        .flatten()
        // A folder with many thousands of entries must not stall the frame.
        .take(2000)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().to_lowercase().starts_with(&prefix)))
        .map(|p| (!p.is_dir(), p))
        .filter(|(file, p)| !file || p.extension().is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x))))
        .collect();
    found.sort();
    found.into_iter().take(COMPLETIONS).map(|(file, p)| (p, !file)).collect()
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
    let picked = match (pick, pick.files()) {
        (Pick::NewGguf, Some((name, extensions))) => dialog.add_filter(name, extensions).save_file(),
        (_, Some((name, extensions))) => dialog.add_filter(name, extensions).pick_file(),
        (_, None) => dialog.pick_folder(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_list_folders_then_usable_files_starting_with_the_typed_name() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["train.jsonl", "Test.csv", "notes.txt", "tiny.gguf"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("tables")).unwrap();
        let names = |typed: &str, pick| -> Vec<String> {
            completions(typed, pick).iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
        };
        let at = |rest: &str| dir.path().join(rest).display().to_string();
        assert_eq!(names(&at("t"), Pick::Data), ["tables", "Test.csv", "train.jsonl"]);
        assert_eq!(names(&at("t"), Pick::Model { file: true }), ["tables", "tiny.gguf"]);
        assert_eq!(names(&at("t"), Pick::Model { file: false }), ["tables"]);
        assert_eq!(names(&at("n"), Pick::Data), Vec::<String>::new(), "notes.txt is no data file");
        let inside = format!("{}{}", dir.path().display(), std::path::MAIN_SEPARATOR);
        assert_eq!(names(&inside, Pick::Log), ["tables", "train.jsonl"]);
        assert!(completions(&at("missing/x"), Pick::Data).is_empty());
    }
}
