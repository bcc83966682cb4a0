//! The public face of the server: bind, read the bound addresses, run,
//! and a handle to stop it or read its counters from another thread.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use mio::{Poll, Waker};

use crate::cluster::{Cluster, RedisUrl, resp};
use crate::config::Config;
use crate::history::{History, Store, StoreOptions};
use crate::parse::Status;
use crate::reactor::{Listener, Reactor, WAKER};
use crate::rooms::Transport;
use crate::stats::{SharedStats, Stats};
use crate::tls::{Loaded, Reloadable, TlsListener};

/// Reloaded certificates waiting for the loop to take them. A few at most:
/// a burst of SIGHUPs needs only the newest.
const TLS_RELOADS_QUEUED: usize = 4;

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    reactor: Reactor,
    tcp_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    wss_addr: Option<SocketAddr>,
    tcp_tls_addr: Option<SocketAddr>,
    handle: Handle,
}

/// Stops a running server and reads its counters. Cheap to clone and
/// usable from any thread.
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    shutdown_requested: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
    /// The TLS files and what was last loaded from them, when TLS is on;
    /// reloads happen on the caller's thread, never on the loop's.
    tls: Option<Arc<Mutex<Reloadable>>>,
    tls_reloads: SyncSender<Loaded>,
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
        // The certificate is checked before any listener opens: a bad
        // file refuses to start, naming it.
        let tls = match config.tls_files() {
            Some(files) => Some(
                Reloadable::load(files)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?,
            ),
            None => None,
        };
        let cluster = join_cluster(&config)?;
        let history = open_history(&config)?;
        let mut listeners = Vec::new();
        let mut bind = |address: &Option<String>, transport, tls| -> io::Result<Option<SocketAddr>> {
            let Some(address) = address else { return Ok(None) };
            let listener = Listener::bind(address, transport, tls, config.reuse_port)?;
            let local = listener.local_addr()?;
            listeners.push(listener);
            Ok(Some(local))
        };
        let tcp_addr = bind(&config.tcp, Transport::Tcp, None)?;
        let ws_addr = bind(&config.ws, Transport::WebSocket, None)?;
        let wss_addr = bind(&config.wss, Transport::WebSocket, Some(TlsListener::Wss))?;
        let tcp_tls_addr = bind(&config.tcp_tls, Transport::Tcp, Some(TlsListener::TcpTls))?;
        let stats = Arc::new(SharedStats::default());
        let shutdown_requested = Arc::new(AtomicBool::new(false));
        let (tls_reloads, reloaded): (SyncSender<Loaded>, Receiver<Loaded>) =
            std::sync::mpsc::sync_channel(TLS_RELOADS_QUEUED);
        let loaded = tls.as_ref().map(|tls| tls.current().clone());
        let handle = Handle {
            waker,
            shutdown_requested: shutdown_requested.clone(),
            stats: stats.clone(),
            tls: tls.map(|tls| Arc::new(Mutex::new(tls))),
            tls_reloads,
        };
        let reactor = Reactor::new(
            poll,
            listeners,
            config,
            stats,
            shutdown_requested,
            loaded,
            reloaded,
            history,
            cluster,
        )?;
        Ok(Server { reactor, tcp_addr, ws_addr, wss_addr, tcp_tls_addr, handle })
    }

    /// The address the TCP listener is bound to, if it is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The address the WebSocket listener is bound to, if it is on.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The address the HTTPS / `wss://` listener is bound to, if it is on.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// The address the line-protocol TLS listener is bound to, if it is on.
    pub fn tcp_tls_addr(&self) -> Option<SocketAddr> {
        self.tcp_tls_addr
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

    /// Reads the TLS certificate and key again (on this thread) and, if
    /// they pass every check, gives them to the loop for new connections;
    /// existing connections keep theirs. A bad file keeps the old
    /// certificate and logs an error. Does nothing without TLS. The
    /// binary calls this on SIGHUP.
    pub fn reload_tls(&self) {
        let Some(tls) = &self.tls else {
            log::info!("no TLS listener: nothing to reload");
            return;
        };
        let mut tls = match tls.lock() {
            Ok(tls) => tls,
            Err(poisoned) => poisoned.into_inner(),
        };
        let files = tls.files().clone();
        match tls.reload() {
            Ok(loaded) => {
                log::info!(
                    "reloaded TLS certificate {} ({}) and key {} for new connections",
                    files.cert.display(),
                    loaded.subject,
                    files.key.display()
                );
                match self.tls_reloads.try_send(loaded.clone()) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                    Err(TrySendError::Full(_)) => {
                        log::warn!("TLS reloads are coming faster than the loop takes them")
                    }
                }
                if let Err(error) = self.waker.wake() {
                    log::error!("cannot wake the event loop: {error}");
                }
            }
            Err(error) => log::error!("TLS reload failed, keeping the certificate loaded before: {error}"),
        }
    }

    /// The counters as the loop last published them (once per turn).
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }
}

/// The in-memory history, filled from the database when there is one:
/// the database is opened (or refused, naming the file) and read here,
/// before any listener opens; after this the loop never reads the disk.
fn open_history(config: &Config) -> io::Result<(History, Option<Store>)> {
    let mut ring = History::new(config.history_limits());
    let Some(path) = &config.history_db else { return Ok((ring, None)) };
    let options = StoreOptions {
        lines: config.history,
        retention: config.history_retention,
        load_bytes: config.history_memory,
        ..StoreOptions::default()
    };
    let started = std::time::Instant::now();
    let (store, loaded) =
        Store::open(path, &options).map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let restored = loaded.restore_into(&mut ring);
    log::info!(
        "history: {} lines of {} rooms restored from {} in {:?}",
        restored,
        loaded.rooms.len(),
        path.display(),
        started.elapsed()
    );
    Ok((ring, Some(store)))
}

/// Cluster mode: Redis's address, resolved now (the loop does no DNS), and
/// checked with a PING (logged in, if the URL says how) before any
/// listener opens, so a wrong URL or a Redis that is not there stops the
/// start with a clear error, unless `--cluster-optional` says to serve
/// locally meanwhile. The loop then opens its own connections.
fn join_cluster(config: &Config) -> io::Result<Option<(Cluster, SocketAddr)>> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
    let now = std::time::Instant::now();
    let Some(cluster) = config.cluster_config(now).map_err(|error| invalid(error.to_string()))? else {
        return Ok(None);
    };
    let url = &cluster.url;
    let address = url
        .address()
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| invalid(format!("cluster: cannot resolve the Redis host in {url}")))?;
    match ping_redis(address, url) {
        Ok(()) => log::info!("cluster: Redis at {url} answers; this node is {}", cluster.node_id),
        Err(error) if config.cluster_optional => {
            log::warn!("cluster: Redis at {url} does not answer ({error}); serving locally and retrying")
        }
        Err(error) => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "cluster: Redis at {url} does not answer: {error} (--cluster-optional starts anyway)"
                ),
            ));
        }
    }
    Ok(Some((Cluster::new(cluster, now), address)))
}

/// One blocking PING (after AUTH and SELECT, when the URL has them), with
/// a timeout: start-up only, never on the loop.
fn ping_redis(address: SocketAddr, url: &RedisUrl) -> io::Result<()> {
    use std::io::{Read, Write};
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut request = Vec::new();
    let mut replies = url.encode_login(&mut request, true) + 1;
    resp::encode_command(&mut request, &[b"PING"]);
    stream.write_all(&request)?;
    let mut received = Vec::new();
    let mut chunk = [0; 512];
    let limits = resp::Limits::default();
    while replies > 0 {
        match resp::parse(&received, &limits) {
            Ok(Status::Complete { value, consumed }) => {
                if let resp::Reply::Error(error) = value {
                    return Err(io::Error::other(format!("Redis said: {error}")));
                }
                received.drain(..consumed);
                replies -= 1;
            }
            Ok(Status::Partial) => {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::Error::other("Redis closed the connection"));
                }
                received.extend_from_slice(&chunk[..n]);
            }
            Err(error) => return Err(io::Error::other(format!("not Redis: {error}"))),
        }
    }
    Ok(())
}
