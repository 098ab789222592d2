//! Writes that never leave a half-written file or folder behind and never replace a folder the
//! caller did not say it may replace: build beside the target, then rename.
//!
//! The temporary siblings are named `.NAME.partial-PID.TOKEN` (and `.NAME.old-PID.TOKEN` for a
//! folder being swapped out), TOKEN being drawn once per process, so a later write can tell those
//! of a killed process (even one that had the same PID, as in containers) from those of a running
//! one, and clean them up or restore them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    write_file_with(path, |f| f.write_all(bytes))
}

/// [`write_file`] for content written piece by piece by `fill` (buffered), too large to hold
/// whole in memory.
pub fn write_file_with(path: &Path, fill: impl FnOnce(&mut std::io::BufWriter<fs::File>) -> std::io::Result<()>) -> Result<()> {
    recover(path);
    let tmp = sibling(path, PARTIAL, Owner::this());
    let result = (|| {
        let mut f = std::io::BufWriter::new(fs::File::create(&tmp)?);
        fill(&mut f)?;
        let f = f.into_inner().map_err(std::io::IntoInnerError::into_error)?;
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
    recover(dir);
    if fs::symlink_metadata(dir).is_ok() && !dir.is_dir() {
        return Err(Error::invalid(dir, "exists and is not a folder; nothing was written"));
    }
    // Checked now to fail before any work; checked again by the rename itself, since `fill` may
    // take minutes and someone may fill the folder meanwhile.
    if existing == Existing::Refuse && occupied(dir) {
        return Err(Error::Exists { path: dir.to_path_buf() });
    }
    let tmp = sibling(dir, PARTIAL, Owner::this());
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let placed = match existing {
        Existing::Refuse => place_refusing(&tmp, dir),
        Existing::Replace => place_replacing(&tmp, dir),
    };
    if placed.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    placed
}

/// Renames `tmp` to `dir` only while `dir` is absent or empty: renaming over a folder that holds
/// anything fails, so nothing that arrived meanwhile is replaced.
fn place_refusing(tmp: &Path, dir: &Path) -> Result<()> {
    // An empty folder is removed first, since Windows renames onto no existing folder at all;
    // removing a folder that holds files fails, which the rename then reports.
    let _ = fs::remove_dir(dir);
    fs::rename(tmp, dir).map_err(|e| if occupied(dir) { Error::Exists { path: dir.to_path_buf() } } else { Error::io(dir, e) })
}

/// Moves `dir` aside, renames `tmp` in, then deletes what this call moved aside (only that).
fn place_replacing(tmp: &Path, dir: &Path) -> Result<()> {
    let old = sibling(dir, OLD, Owner::this());
    let moved_aside = dir.exists();
    if moved_aside {
        fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    if let Err(e) = fs::rename(tmp, dir) {
        // Put the previous folder back rather than leave the user with neither.
        if moved_aside {
            let _ = fs::rename(&old, dir);
        }
        return Err(Error::io(dir, e));
    }
    if moved_aside {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Whether `dir` is a folder that holds anything.
pub fn occupied(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

const PARTIAL: &str = "partial";
const OLD: &str = "old";

/// The process that named a temporary sibling: its PID and a token drawn once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: u32,
    token: u32,
}

impl Owner {
    fn this() -> Owner {
        static TOKEN: OnceLock<u32> = OnceLock::new();
        Owner { pid: std::process::id(), token: *TOKEN.get_or_init(rand::random) }
    }

    /// `PID.TOKEN`, as written by `sibling`.
    fn parse(text: &str) -> Option<Owner> {
        let (pid, token) = text.split_once('.')?;
        Some(Owner { pid: pid.parse().ok()?, token: token.parse().ok()? })
    }

    /// Whether it may still be writing `sibling`: this very process, or another one still running.
    fn alive(self, sibling: &Path) -> bool {
        let this = Owner::this();
        if self.pid == this.pid {
            return self.token == this.token;
        }
        process_running(self.pid, sibling)
    }
}

fn sibling(path: &Path, tag: &str, owner: Owner) -> PathBuf {
    path.with_file_name(format!(".{}.{tag}-{}.{}", file_name(path), owner.pid, owner.token))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Tidies what killed processes left beside `path`: half-written `.partial-` files and folders are
/// removed, and `.old-` folders are removed when their replacement is in place, else moved back
/// (they are the user's previous folder, swapped out by a save that was killed mid-way).
pub fn recover(path: &Path) {
    let Some(parent) = path.parent() else { return };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let Ok(entries) = fs::read_dir(parent) else { return };
    let prefix = format!(".{}.", file_name(path));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((tag, owner)) = name.strip_prefix(&prefix).and_then(|rest| rest.split_once('-')) else { continue };
        let Some(owner) = Owner::parse(owner) else { continue };
        if owner.alive(&entry.path()) {
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

/// Removes a file, or a folder with everything in it.
pub fn remove(path: &Path) -> std::io::Result<()> {
    if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) }
}

fn remove_any(path: &Path) {
    match remove(path) {
        Ok(()) => tracing::info!("removed {}, left by an interrupted save", path.display()),
        Err(e) => tracing::warn!("cannot remove {}, left by an interrupted save: {e}", path.display()),
    }
}

/// Whether another process with this PID is running.
#[cfg(unix)]
fn process_running(pid: u32, _sibling: &Path) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // Signal 0 checks existence only; EPERM means it exists under another user.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

/// Without a cheap process check, a sibling untouched for a day is taken to be abandoned.
#[cfg(not(unix))]
fn process_running(_pid: u32, sibling: &Path) -> bool {
    const ABANDONED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    fs::metadata(sibling).and_then(|m| m.modified()).map_or(true, |t| t.elapsed().unwrap_or_default() < ABANDONED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_filled_while_writing_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let result = write_dir(&target, Existing::Refuse, |tmp| {
            // Another writer fills the target while this one is still writing.
            fs::create_dir_all(&target).unwrap();
            fs::write(target.join("theirs.txt"), "theirs").unwrap();
            fs::write(tmp.join("mine.txt"), "mine").unwrap();
            Ok(())
        });
        assert!(matches!(result, Err(Error::Exists { .. })), "{result:?}");
        assert_eq!(fs::read_to_string(target.join("theirs.txt")).unwrap(), "theirs");
        assert!(!target.join("mine.txt").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary sibling is left");
    }

    #[test]
    fn a_folder_moved_aside_by_an_earlier_process_with_this_pid_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model");
        let earlier = Owner { pid: std::process::id(), token: Owner::this().token.wrapping_add(1) };
        let aside = sibling(&target, OLD, earlier);
        fs::create_dir_all(&aside).unwrap();
        fs::write(aside.join("config.json"), "{}").unwrap();
        let mine = sibling(&target, PARTIAL, Owner::this());
        fs::create_dir_all(&mine).unwrap();
        recover(&target);
        assert_eq!(fs::read_to_string(target.join("config.json")).unwrap(), "{}");
        assert!(!aside.exists());
        assert!(mine.exists(), "this process's own sibling is never taken for litter");
    }
}
