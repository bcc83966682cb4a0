//! The public face of the server: bind, read the bound addresses, run,
//! and a handle to stop it or read its counters from another thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::{Poll, Waker};

use crate::config::Config;
use crate::reactor::{Listener, Reactor, WAKER};
use crate::rooms::Transport;
use crate::stats::{SharedStats, Stats};

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    reactor: Reactor,
    tcp_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    handle: Handle,
}

/// Stops a running server and reads its counters. Cheap to clone and
/// usable from any thread.
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    shutdown_requested: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
}

impl Server {
    /// Checks the configuration and binds the configured listeners.
    /// Nothing is served until [`run`](Server::run). A configuration that
    /// fails [`Config::validate`] is refused with `InvalidInput` and the
    /// reason.
    pub fn bind(config: Config) -> io::Result<Server> {
        config.validate().map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = Vec::new();
        let mut tcp_addr = None;
        let mut ws_addr = None;
        if let Some(address) = &config.tcp {
            let listener = Listener::bind(address, Transport::Tcp)?;
            tcp_addr = Some(listener.local_addr()?);
            listeners.push(listener);
        }
        if let Some(address) = &config.ws {
            let listener = Listener::bind(address, Transport::WebSocket)?;
            ws_addr = Some(listener.local_addr()?);
            listeners.push(listener);
        }
        let stats = Arc::new(SharedStats::default());
        let shutdown_requested = Arc::new(AtomicBool::new(false));
        let handle = Handle { waker, shutdown_requested: shutdown_requested.clone(), stats: stats.clone() };
        let reactor = Reactor::new(poll, listeners, config, stats, shutdown_requested)?;
        Ok(Server { reactor, tcp_addr, ws_addr, handle })
    }

    /// The address the TCP listener is bound to, if it is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The address the WebSocket listener is bound to, if it is on.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// A handle to stop the server or read its counters from any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves clients on this thread until [`Handle::shutdown`] is called
    /// and the shutdown has finished.
    pub fn run(self) -> io::Result<()> {
        self.reactor.run()
    }
}

impl Handle {
    /// Asks the server to shut down gracefully: stop accepting and
    /// reading, flush pending output (bounded by the shutdown grace), send
    /// WebSocket clients Close 1001, and return from `run`.
    pub fn shutdown(&self) {
        self.shutdown_requested.store(true, Ordering::Release);
        if let Err(error) = self.waker.wake() {
            log::error!("cannot wake the event loop: {error}");
        }
    }

    /// The counters as the loop last published them (once per turn).
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }
}
