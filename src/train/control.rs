//! Steering a run from outside its thread: the app's Pause and Cancel buttons, the CLI's signals.
//! The trainer looks at both between steps, so a pause keeps everything in memory and a cancel
//! ends with a checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a paused run looks whether it may go on.
const PAUSE_POLL: Duration = Duration::from_millis(50);

/// Shared flags a running job obeys; clones steer the same run.
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    /// Stop after the current step (or scoring pass), with a checkpoint.
    pub cancel: Arc<AtomicBool>,
    /// While set, wait after the current step; a cancel ends the wait.
    pub pause: Arc<AtomicBool>,
}

impl RunControl {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn paused(&self) -> bool {
        self.pause.load(Ordering::Relaxed)
    }

    /// Asks the run to stop after its current step (or pass).
    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn set_paused(&self, paused: bool) {
        self.pause.store(paused, Ordering::Relaxed);
    }

    /// Neither cancelled nor paused: how a new job starts.
    pub fn reset(&self) {
        self.cancel.store(false, Ordering::Relaxed);
        self.pause.store(false, Ordering::Relaxed);
    }

    /// Returns once the run is neither paused nor cancelled-while-paused.
    pub fn wait_while_paused(&self) {
        while self.paused() && !self.cancelled() {
            std::thread::sleep(PAUSE_POLL);
        }
    }
}
