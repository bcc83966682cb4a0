//! The public face of the server: bind, read the bound addresses, run,
//! and a handle to stop it or read its counters from another thread.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::event_loop::{EventLoop, Listener, WAKER};
use crate::rooms::Transport;
use crate::stats::{SharedStats, Stats};

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    event_loop: EventLoop,
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
    /// Binds the configured listeners. Nothing is served until [`run`](Server::run).
    pub fn bind(config: Config) -> io::Result<Server> {
        if config.tcp.is_none() && config.ws.is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "both listeners are turned off"));
        }
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = Vec::new();
        let mut tcp_addr = None;
        let mut ws_addr = None;
        if let Some(address) = &config.tcp {
            let listener = Listener::new(bind_first(address)?, Transport::Tcp);
            tcp_addr = Some(listener.local_addr()?);
            listeners.push(listener);
        }
        if let Some(address) = &config.ws {
            let listener = Listener::new(bind_first(address)?, Transport::WebSocket);
            ws_addr = Some(listener.local_addr()?);
            listeners.push(listener);
        }
        let stats = Arc::new(SharedStats::default());
        let shutdown_requested = Arc::new(AtomicBool::new(false));
        let handle = Handle { waker, shutdown_requested: shutdown_requested.clone(), stats: stats.clone() };
        let event_loop = EventLoop::new(poll, listeners, config, stats, shutdown_requested)?;
        Ok(Server { event_loop, tcp_addr, ws_addr, handle })
    }

    /// The address the TCP listener is bound to, if it is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The address the WebSocket listener is bound to, if it is on.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves clients on this thread until [`Handle::shutdown`] is called
    /// and the shutdown has finished.
    pub fn run(self) -> io::Result<()> {
        self.event_loop.run()
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

/// Connections the kernel queues for `accept`. std and mio fix this at
/// 128, which overflows when many clients connect at once: 10,000 clients
/// took 7–11 s to connect instead of half a second. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds the first address `address` resolves to that can be bound
/// (`localhost` may resolve to both 127.0.0.1 and ::1).
fn bind_first(address: &str) -> io::Result<TcpListener> {
    let mut last_error = None;
    for candidate in address.to_socket_addrs()? {
        match listen(candidate) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{address} resolves to no address"))
    }))
}

fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting the server must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}
