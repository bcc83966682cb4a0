//! Ctrl-C (SIGINT/SIGTERM): the first ends the timed phase (or the hold),
//! the second ends the drain, the third leaves at once with status 130.
//!
//! signal-hook's flag actions can only store, not count, so each signal
//! writes a byte into a self-pipe (a socket pair) that the event loop reads
//! and counts; the pipe is registered with the poll so a signal wakes it.
//! Once two have been counted, a conditional shutdown armed for the next
//! signal exits from the handler itself, in case the loop is stuck.

use std::io::{self, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use signal_hook::low_level::pipe;

use crate::exit_code;

pub struct Interrupts {
    pipe: mio::net::UnixStream,
    count: usize,
    /// Read by the signal handler: set, the next signal exits.
    exit_on_next: Arc<AtomicBool>,
}

impl Interrupts {
    /// Takes over SIGINT and SIGTERM. (SIGPIPE needs nothing: Rust programs
    /// start with it ignored, so a closed socket gives EPIPE.)
    pub fn install() -> io::Result<Self> {
        let (read_end, write_end) = UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        let exit_on_next = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            // A signal's actions run in the order registered: the shutdown
            // must look at the flag before this signal is counted.
            flag::register_conditional_shutdown(signal, exit_code::INTERRUPTED, Arc::clone(&exit_on_next))?;
            pipe::register(signal, write_end.try_clone()?)?;
        }
        Ok(Interrupts { pipe: mio::net::UnixStream::from_std(read_end), count: 0, exit_on_next })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.pipe, token, Interest::READABLE)
    }

    /// Signals received so far; exits (status 130) at the third.
    pub fn count(&mut self) -> usize {
        let mut bytes = [0u8; 16];
        loop {
            match self.pipe.read(&mut bytes) {
                Ok(0) => break,
                Ok(n) => self.count += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock: all read.
                Err(_) => break,
            }
        }
        if self.count >= 2 {
            self.exit_on_next.store(true, Ordering::SeqCst);
        }
        if self.count >= 3 {
            std::process::exit(exit_code::INTERRUPTED);
        }
        self.count
    }

    /// Signals counted at the last `count`, without reading the pipe.
    pub fn counted(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_the_pipe_are_counted_signals() {
        let (read_end, mut write_end) = UnixStream::pair().unwrap();
        read_end.set_nonblocking(true).unwrap();
        let mut interrupts = Interrupts {
            pipe: mio::net::UnixStream::from_std(read_end),
            count: 0,
            exit_on_next: Arc::new(AtomicBool::new(false)),
        };
        assert_eq!(interrupts.count(), 0);
        std::io::Write::write_all(&mut write_end, b"X").unwrap();
        assert_eq!(interrupts.count(), 1);
        assert!(!interrupts.exit_on_next.load(Ordering::SeqCst));
        std::io::Write::write_all(&mut write_end, b"X").unwrap();
        assert_eq!(interrupts.count(), 2);
        assert_eq!(interrupts.counted(), 2);
        assert!(interrupts.exit_on_next.load(Ordering::SeqCst), "the third must exit from the handler");
    }
}
