//! A first start wherever the binary is. The default model and the demo data are named relative to
//! the project folder, which a double-clicked binary does not start in: the app then looks for the
//! model beside the executable, and writes the demo data embedded in the binary into its own
//! folder, so the first run has a dataset without the user fetching one.

use std::path::{Path, PathBuf};

use super::state::Settings;
use crate::data::write_demo_files;

/// Points the default model and data paths of `settings` at files that exist, when they are the
/// defaults and do not resolve from the working directory `cwd`; a path the user chose is left
/// alone. `exe_dir` is the executable's folder, `app_dir` where the app may write its own files.
/// Returns why the demo data could not be written, if it could not.
pub fn resolve_defaults(settings: &mut Settings, cwd: &Path, exe_dir: Option<&Path>, app_dir: Option<&Path>) -> Option<String> {
    let defaults = Settings::default();
    let missing = |path: &str| !cwd.join(path).exists();
    let beside_exe = |path: &str| exe_dir.map(|dir| dir.join(path)).filter(|p| p.exists());
    if settings.model_path == defaults.model_path
        && missing(&settings.model_path)
        && let Some(found) = beside_exe(&defaults.model_path)
    {
        settings.model_path = found.display().to_string();
    }
    if settings.data_path != defaults.data_path || !missing(&settings.data_path) {
        return None;
    }
    if let Some(found) = beside_exe(&defaults.data_path) {
        settings.data_path = found.display().to_string();
        return None;
    }
    let dir = app_dir?.join("demo");
    match write_demo_files(&dir) {
        Ok(files) => {
            settings.data_path = files.train.display().to_string();
            None
        }
        Err(e) => Some(format!("the demo data could not be written: {e}")),
    }
}

/// The running executable's folder.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_defaults_resolve_beside_the_executable_or_to_the_embedded_demo() {
        let (elsewhere, exe, app) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let defaults = Settings::default();
        let model = exe.path().join(&defaults.model_path);
        std::fs::create_dir_all(model.parent().unwrap()).unwrap();
        std::fs::write(&model, b"GGUF").unwrap();

        // Started elsewhere: the model beside the executable, the demo data written out.
        let mut s = defaults.clone();
        assert_eq!(resolve_defaults(&mut s, elsewhere.path(), Some(exe.path()), Some(app.path())), None);
        assert_eq!(PathBuf::from(&s.model_path), model);
        assert_eq!(PathBuf::from(&s.data_path), app.path().join("demo/dialogsum.train.jsonl"));
        assert_eq!(std::fs::read_to_string(&s.data_path).unwrap(), crate::data::DEMO_TRAIN_JSONL);

        // Started in the project folder: the defaults resolve and stay.
        let mut s = defaults.clone();
        resolve_defaults(&mut s, Path::new(env!("CARGO_MANIFEST_DIR")), Some(exe.path()), Some(app.path()));
        assert_eq!(s.data_path, defaults.data_path);

        // A user's own path is never replaced, even when it is missing.
        let mut own = Settings { data_path: "nowhere/mine.jsonl".into(), model_path: "nowhere/model.gguf".into(), ..defaults.clone() };
        assert_eq!(resolve_defaults(&mut own, elsewhere.path(), Some(exe.path()), Some(app.path())), None);
        assert_eq!((own.data_path.as_str(), own.model_path.as_str()), ("nowhere/mine.jsonl", "nowhere/model.gguf"));

        // Nowhere to write the demo: said, and the path left as it was.
        let mut s = defaults.clone();
        let file = app.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let why = resolve_defaults(&mut s, elsewhere.path(), None, Some(&file)).expect("the failure is said");
        assert!(why.contains("demo data"), "{why}");
        assert_eq!(s.data_path, defaults.data_path);
    }
}
