//! Ctrl-C (SIGINT) or SIGTERM during a single-process run: the step under way finishes, a snapshot is written and
//! the run ends (`sg2 train` exits with 130); a second signal ends the process at once. Data-parallel workers keep
//! the default behaviour: their ranks could not agree on the step to stop at without a collective per step.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_signal(_: libc::c_int) {
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
    let msg = b"\nstopping: finishing this step and writing a snapshot (signal again to quit at once)\n";
    // SAFETY: write is async-signal-safe; the message is a static buffer.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// While alive, SIGINT and SIGTERM ask the run to stop; dropping it restores the previous handlers.
pub struct Guard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

/// Installs the handlers (see the module's text).
pub fn install() -> Guard {
    REQUESTED.store(false, Ordering::SeqCst);
    let mut previous = vec![];
    for sig in SIGNALS {
        // SAFETY: plain sigaction calls with zeroed, then filled structures.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &action, &mut old) == 0 {
                previous.push((sig, old));
            }
        }
    }
    Guard { previous }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restores the action saved by `install`.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        REQUESTED.store(false, Ordering::SeqCst);
    }
}

/// Whether a signal asked the run to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
