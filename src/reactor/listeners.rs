//! Listening sockets and accepting: each listener is drained until
//! `WouldBlock` (mio is edge-triggered: a listener that still has waiting
//! connections reports no new event), and every new socket becomes a
//! connection with a fresh session.
//!
//! Running out of descriptors must not end or spin the loop. When `accept`
//! fails with EMFILE or ENFILE, the waiting connection stays in the listen
//! backlog and the listener stays readable, so retrying at once would spin:
//! the listener is deregistered and `Paused` until a connection closes and
//! frees a descriptor, or until a short retry time passes.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Connection, Reactor, ServerState, TlsState};
use crate::rooms::{ConnId, Transport};
use crate::session::{Session, deadline_after};
use crate::tls::TlsListener;

/// How long to wait before trying `accept` again after running out of
/// descriptors (closing a connection retries sooner).
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// Connections the kernel queues for `accept`. std and mio fix this at
/// 128, which overflows when many clients connect at once: 10,000 clients
/// took 7–11 s to connect instead of half a second. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

pub(crate) const TCP_LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WS_LISTENER: Token = Token(usize::MAX - 2);
pub(crate) const TCP_TLS_LISTENER: Token = Token(usize::MAX - 3);
pub(crate) const WSS_LISTENER: Token = Token(usize::MAX - 4);

/// A listening socket and whether it is accepting.
#[derive(Debug)]
pub(crate) struct Listener {
    socket: TcpListener,
    transport: Transport,
    /// Which TLS configuration its connections get, if it is a TLS port.
    tls: Option<TlsListener>,
    state: Accepting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    Open,
    /// Out of descriptors since `since`: deregistered until `until`, or
    /// until a connection closes and frees one.
    Paused {
        until: Instant,
        since: Instant,
    },
    /// Listening again after a pause; open once an accept succeeds.
    Retrying {
        since: Instant,
    },
}

impl Listener {
    /// Binds the first address `address` resolves to that can be bound
    /// (`localhost` may resolve to both 127.0.0.1 and ::1); with
    /// `reuse_port`, with `SO_REUSEPORT` (see [`listen`]).
    pub(crate) fn bind(
        address: &str,
        transport: Transport,
        tls: Option<TlsListener>,
        reuse_port: bool,
    ) -> io::Result<Listener> {
        let mut last_error = None;
        for candidate in address.to_socket_addrs()? {
            match listen(candidate, reuse_port) {
                Ok(socket) => return Ok(Listener { socket, transport, tls, state: Accepting::Open }),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{address} resolves to no address"))
        }))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub(crate) fn token(&self) -> Token {
        match (self.transport, self.tls) {
            (Transport::Tcp, None) => TCP_LISTENER,
            (Transport::WebSocket, None) => WS_LISTENER,
            (Transport::Tcp, Some(_)) => TCP_TLS_LISTENER,
            (Transport::WebSocket, Some(_)) => WSS_LISTENER,
        }
    }

    pub(crate) fn register(&mut self, registry: &Registry) -> io::Result<()> {
        let token = self.token();
        registry.register(&mut self.socket, token, Interest::READABLE)
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    /// When a paused listener should try again.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        match self.state {
            Accepting::Paused { until, .. } => Some(until),
            Accepting::Open | Accepting::Retrying { .. } => None,
        }
    }

    /// A descriptor was freed: a paused listener may try again now.
    pub(crate) fn descriptor_freed(&mut self, now: Instant) {
        if let Accepting::Paused { until, .. } = &mut self.state {
            *until = now;
        }
    }
}

/// A non-blocking listening socket on `address`. With `reuse_port` it is
/// bound with `SO_REUSEPORT`: other sockets that set it too (other machat
/// processes of the same user started with `--reuse-port`) can bind the
/// same address, and the kernel spreads incoming connections over all of
/// them by a hash of the connection's addresses and ports. Without it, a
/// second bind fails with `AddrInUse` as usual.
fn listen(address: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting the server must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Reactor {
    /// Accepts until `WouldBlock`, or until descriptors run out.
    pub(super) fn accept(&mut self, token: Token) {
        if self.state != ServerState::Serving {
            return;
        }
        let Some(index) = self.listeners.iter().position(|listener| listener.token() == token) else {
            return;
        };
        loop {
            let listener = &mut self.listeners[index];
            if let Accepting::Paused { .. } = listener.state {
                return;
            }
            match listener.socket.accept() {
                Ok((socket, _)) => {
                    if let Accepting::Retrying { since } = listener.state {
                        log::info!("accepting again after {:.1?} out of descriptors", self.now - since);
                        listener.state = Accepting::Open;
                    }
                    let (transport, tls) = (listener.transport, listener.tls);
                    self.admit(socket, transport, tls);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) if is_resource_exhaustion(&error) => {
                    let since = match listener.state {
                        Accepting::Retrying { since } => since,
                        _ => {
                            log::warn!(
                                "accept failed ({error}); pausing accepts until a descriptor frees up"
                            );
                            self.now
                        }
                    };
                    listener.deregister(self.poll.registry());
                    listener.state =
                        Accepting::Paused { until: deadline_after(self.now, ACCEPT_RETRY), since };
                    self.stats.accept_pauses += 1;
                    return;
                }
                Err(error) => {
                    log::warn!("accept failed: {error}");
                    return;
                }
            }
        }
    }

    /// Listens again on paused listeners whose retry time has come.
    pub(super) fn resume_accepting_when_due(&mut self) {
        for index in 0..self.listeners.len() {
            let listener = &mut self.listeners[index];
            let Accepting::Paused { until, since } = listener.state else { continue };
            if until > self.now || self.state != ServerState::Serving {
                continue;
            }
            listener.state = Accepting::Retrying { since };
            if let Err(error) = listener.register(self.poll.registry()) {
                log::warn!("cannot listen again: {error}");
                listener.state = Accepting::Paused { until: deadline_after(self.now, ACCEPT_RETRY), since };
                continue;
            }
            let token = listener.token();
            self.accept(token);
        }
    }

    /// Takes a new connection into the slab, or turns it away if the
    /// server is full.
    fn admit(&mut self, mut socket: TcpStream, transport: Transport, tls: Option<TlsListener>) {
        self.stats.accepted += 1;
        let full = self.connections.len() >= self.config.max_connections;
        // Small writes are the whole point of a chat server: do not let
        // Nagle's algorithm hold them back waiting for ACKs.
        let _ = socket.set_nodelay(true);
        if !self.config.tcp_keepalive.is_zero() {
            set_keepalive(&socket, self.config.tcp_keepalive);
        }
        let entry = self.connections.vacant_entry();
        let id = ConnId(entry.key());
        if let Err(error) = self.poll.registry().register(&mut socket, Token(id.0), Interest::READABLE) {
            log::warn!("cannot register a new connection: {error}");
            return;
        }
        let tls = match (tls, &self.tls) {
            (Some(listener), Some(loaded)) => {
                match rustls::ServerConnection::new(loaded.config(listener).clone()) {
                    Ok(connection) => {
                        self.stats.tls_connections[listener as usize] += 1;
                        Some(Box::new(TlsState { connection, listener, accepted: self.now }))
                    }
                    Err(error) => {
                        log::warn!("cannot start a TLS session: {error}");
                        let _ = self.poll.registry().deregister(&mut socket);
                        return;
                    }
                }
            }
            _ => None,
        };
        let session = match transport {
            Transport::Tcp => Session::tcp(self.now, &self.config),
            Transport::WebSocket => Session::http(self.now, &self.config),
        };
        entry.insert(Connection::new(socket, transport, session, tls));
        match transport {
            Transport::Tcp => self.stats.tcp_connections += 1,
            Transport::WebSocket => self.stats.ws_connections += 1,
        }
        if full {
            self.stats.refused_full += 1;
            log::warn!("refusing a connection: server full ({} connections)", self.config.max_connections);
            let connection = &mut self.connections[id.0];
            connection.session.refuse_full(self.now, &mut self.effects);
        }
        self.apply_effects(id);
    }
}

/// Turns on TCP keepalive: after `idle` without traffic the kernel probes
/// the peer every quarter of that (at least a second), and after four
/// unanswered probes reads fail with ETIMEDOUT. A peer whose machine
/// vanished is noticed within about twice `idle`.
fn set_keepalive(socket: &TcpStream, idle: Duration) {
    let interval = (idle / 4).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new().with_time(idle).with_interval(interval).with_retries(4);
    if let Err(error) = socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive) {
        log::debug!("cannot turn TCP keepalive on: {error}");
    }
}

/// Errors that mean "no descriptors or memory for a new socket right now".
fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
