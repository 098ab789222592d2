//! Writes that never leave a half-written file or folder behind and never replace a folder the
//! caller did not say it may replace: build beside the target, then rename.
//!
//! The temporary siblings are named `.NAME.partial-PID` (and `.NAME.old-PID` for a folder being
//! swapped out), so a later write can tell those of a killed process from those of a running one
//! and clean them up.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What `write_dir` does when the target folder exists and holds anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Leave it untouched and fail with `Error::Exists`: the folder is the user's.
    Refuse,
    /// Swap it out for the new one: the caller owns it (a checkpoint, a run's own model folder)
    /// or the user asked for it to be replaced.
    Replace,
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    clean_stale_siblings(path);
    let tmp = sibling(path, PARTIAL, std::process::id());
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))
}

/// Fills a temporary sibling folder with `fill`, then puts it in place of `dir`. An existing `dir`
/// that holds anything is replaced only with `Existing::Replace`; a file at `dir` is never replaced.
pub fn write_dir(dir: &Path, existing: Existing, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    clean_stale_siblings(dir);
    let occupied = match fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() && !fs::metadata(dir).is_ok_and(|m| m.is_dir()) => {
            return Err(Error::invalid(dir, "exists and is not a folder; nothing was written"));
        }
        Ok(_) => fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.next().is_some(),
        Err(_) => false,
    };
    if occupied && existing == Existing::Refuse {
        return Err(Error::Exists { path: dir.to_path_buf() });
    }
    let tmp = sibling(dir, PARTIAL, std::process::id());
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = sibling(dir, OLD, std::process::id());
    if dir.exists()
        && let Err(e) = fs::rename(dir, &old)
    {
        let _ = fs::remove_dir_all(&tmp);
        return Err(Error::io(dir, e));
    }
    if let Err(e) = fs::rename(&tmp, dir) {
        // Put the previous folder back rather than leave the user with neither.
        let _ = fs::rename(&old, dir);
        let _ = fs::remove_dir_all(&tmp);
        return Err(Error::io(dir, e));
    }
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

const PARTIAL: &str = "partial";
const OLD: &str = "old";

fn sibling(path: &Path, tag: &str, pid: u32) -> PathBuf {
    path.with_file_name(format!(".{}.{tag}-{pid}", file_name(path)))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Removes what killed processes left beside `path`: half-written `.partial-PID` files and
/// folders, and `.old-PID` folders whose replacement is in place. An `.old-PID` folder whose
/// replacement never arrived is the user's previous folder, so it is moved back instead.
fn clean_stale_siblings(path: &Path) {
    let Some(parent) = path.parent() else { return };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let Ok(entries) = fs::read_dir(parent) else { return };
    let prefix = format!(".{}.", file_name(path));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((tag, pid)) = name.strip_prefix(&prefix).and_then(|rest| rest.rsplit_once('-')) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if process_alive(pid, &entry.path()) {
            continue;
        }
        let stale = entry.path();
        match tag {
            PARTIAL => remove_any(&stale),
            OLD if path.exists() => remove_any(&stale),
            OLD => match fs::rename(&stale, path) {
                Ok(()) => tracing::warn!("{}: restored the previous folder that an interrupted save had moved aside", path.display()),
                Err(e) => tracing::warn!("{}: cannot restore it from {}: {e}", path.display(), stale.display()),
            },
            _ => {}
        }
    }
}

fn remove_any(path: &Path) {
    let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match removed {
        Ok(()) => tracing::info!("removed {}, left by an interrupted save", path.display()),
        Err(e) => tracing::warn!("cannot remove {}, left by an interrupted save: {e}", path.display()),
    }
}

/// Whether the process that named a temporary sibling may still be writing it.
#[cfg(unix)]
fn process_alive(pid: u32, _path: &Path) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // Signal 0 checks existence only; EPERM means it exists under another user.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

/// Without a cheap process check, a sibling untouched for a day is taken to be abandoned.
#[cfg(not(unix))]
fn process_alive(pid: u32, path: &Path) -> bool {
    use std::time::{Duration, SystemTime};
    const ABANDONED: Duration = Duration::from_secs(24 * 3600);
    pid == std::process::id()
        || fs::metadata(path)
            .and_then(|m| m.modified())
            .map_or(true, |t| SystemTime::now().duration_since(t).unwrap_or_default() < ABANDONED)
}
