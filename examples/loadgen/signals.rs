//! Ctrl-C (SIGINT/SIGTERM): the first ends the timed phase (or the hold),
//! the second ends the drain, the third leaves at once with status 130.

use std::sync::atomic::{AtomicU32, Ordering};

static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 2 {
        unsafe { libc::_exit(130) };
    }
}

pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        // A closed socket must give EPIPE, not kill the process.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Signals received so far.
pub fn count() -> u32 {
    SIGNALS.load(Ordering::Relaxed)
}
