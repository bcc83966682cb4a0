//! Server configuration: listen addresses, the WebSocket path and every
//! limit. `Config::default()` is the protocol's defaults (PROTOCOL §1–§6);
//! [`Config::validate`] says what is wrong with a configuration before any
//! socket is bound.

use std::fmt;
use std::time::Duration;

/// Everything a [`Server`](crate::Server) needs to know before it binds.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// TCP listen address (`host:port`); `None` turns the TCP listener off.
    pub tcp: Option<String>,
    /// WebSocket listen address; `None` turns the WebSocket listener off.
    pub ws: Option<String>,
    /// The path WebSocket clients upgrade on.
    pub ws_path: String,
    /// Origins allowed to open a WebSocket; empty allows every origin.
    pub allowed_origins: Vec<String>,
    /// Longest chat line (TCP) or message (WebSocket), in bytes.
    pub max_line: usize,
    /// Most output queued for one connection, in bytes: the hard cap. A
    /// quarter of it is the high-water mark above which the connection's
    /// room stops being read (docs/PROTOCOL.md §5).
    pub max_pending: usize,
    /// Most output queued for all connections together, in bytes; when it
    /// is reached no sender is read until it drains.
    pub max_queued_total: usize,
    /// How long a member above the high-water mark may make no progress
    /// before it is cut as a slow consumer.
    pub slow_consumer_timeout: Duration,
    /// Most clients connected at once; more are told `error: server full`.
    pub max_connections: usize,
    /// Time from accept to a complete handshake.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for pending output to drain.
    pub shutdown_grace: Duration,
    /// Bytes of tungstenite read buffer per WebSocket connection (the
    /// original's `Rbsize`).
    pub ws_read_buffer: usize,
    /// Bytes of frames tungstenite gathers before handing them to the
    /// connection's output buffer (the original's `Wbsize`). Broadcasts are
    /// framed by machat itself and bypass it.
    pub ws_write_buffer: usize,
    /// Idle time before TCP keepalive probes start on a connection, to
    /// notice peers that vanished; zero turns keepalive off.
    pub tcp_keepalive: Duration,
    /// Silence after which a WebSocket member is pinged; one more interval
    /// without any frame closes it. Zero turns pings off.
    pub ws_ping_interval: Duration,
    /// HTTPS and `wss://` listen address (the WebSocket port's routes over
    /// TLS); needs `tls_cert` and `tls_key`.
    pub wss: Option<String>,
    /// Line protocol over TLS listen address; needs `tls_cert` and `tls_key`.
    pub tcp_tls: Option<String>,
    /// PEM certificate chain (leaf first) for the TLS listeners.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for the TLS listeners.
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tcp: Some(Config::DEFAULT_TCP.to_owned()),
            ws: Some(Config::DEFAULT_WS.to_owned()),
            ws_path: Config::DEFAULT_WS_PATH.to_owned(),
            allowed_origins: Vec::new(),
            max_line: Config::DEFAULT_MAX_LINE,
            max_pending: Config::DEFAULT_MAX_PENDING,
            max_queued_total: Config::DEFAULT_MAX_QUEUED_TOTAL,
            slow_consumer_timeout: Config::DEFAULT_SLOW_CONSUMER_TIMEOUT,
            max_connections: Config::DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: Config::DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_grace: Config::DEFAULT_SHUTDOWN_GRACE,
            ws_read_buffer: Config::DEFAULT_WS_READ_BUFFER,
            ws_write_buffer: Config::DEFAULT_WS_WRITE_BUFFER,
            tcp_keepalive: Config::DEFAULT_TCP_KEEPALIVE,
            ws_ping_interval: Config::DEFAULT_WS_PING_INTERVAL,
            wss: None,
            tcp_tls: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// What is wrong with a [`Config`], in words fit for the user (they name
/// the flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Default of [`Config::tcp`].
    pub const DEFAULT_TCP: &str = "localhost:8989";
    /// Default of [`Config::ws`].
    pub const DEFAULT_WS: &str = "localhost:8099";
    /// Default of [`Config::ws_path`].
    pub const DEFAULT_WS_PATH: &str = "/mychat";
    /// Default of [`Config::max_line`].
    pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
    /// Default of [`Config::max_pending`].
    pub const DEFAULT_MAX_PENDING: usize = 1024 * 1024;
    /// Default of [`Config::max_queued_total`]: 256 MiB, a fixed figure a
    /// small server can afford whatever the machine.
    pub const DEFAULT_MAX_QUEUED_TOTAL: usize = 256 * 1024 * 1024;
    /// Default of [`Config::slow_consumer_timeout`].
    pub const DEFAULT_SLOW_CONSUMER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default of [`Config::tcp_keepalive`].
    pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
    /// Default of [`Config::ws_ping_interval`].
    pub const DEFAULT_WS_PING_INTERVAL: Duration = Duration::from_secs(30);
    /// Default of [`Config::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
    /// Default of [`Config::handshake_timeout`].
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default of [`Config::shutdown_grace`].
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
    /// Default of [`Config::ws_read_buffer`].
    pub const DEFAULT_WS_READ_BUFFER: usize = 1024;
    /// Default of [`Config::ws_write_buffer`].
    pub const DEFAULT_WS_WRITE_BUFFER: usize = 1024;

    /// Checks the configuration as a whole; [`Server::bind`](crate::Server::bind)
    /// refuses one that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |message: &str| Err(ConfigError(message.to_owned()));
        if self.tcp.is_none() && self.ws.is_none() && self.wss.is_none() && self.tcp_tls.is_none() {
            return refuse("every listener is turned off");
        }
        let tls_listener = self.wss.is_some() || self.tcp_tls.is_some();
        match (tls_listener, &self.tls_cert, &self.tls_key) {
            (true, None, _) | (true, _, None) => {
                return refuse("--wss and --tcp-tls need a certificate and its key (--tls-cert, --tls-key)");
            }
            (false, Some(_), _) | (false, _, Some(_)) => {
                return refuse("--tls-cert and --tls-key need a TLS listener (--wss or --tcp-tls)");
            }
            _ => {}
        }
        if !self.ws_path.starts_with('/') {
            return refuse("--ws-path must start with '/'");
        }
        self.flow_limits()?;
        Ok(())
    }

    /// The certificate and key files, when TLS is on.
    pub(crate) fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) if self.wss.is_some() || self.tcp_tls.is_some() => {
                Some(crate::tls::TlsFiles { cert: cert.clone(), key: key.clone() })
            }
            _ => None,
        }
    }

    /// The flow-control marks this configuration gives.
    pub(crate) fn flow_limits(&self) -> Result<crate::flow::FlowLimits, ConfigError> {
        crate::flow::FlowLimits::new(
            self.max_pending,
            self.max_line,
            self.max_queued_total,
            self.slow_consumer_timeout,
        )
        .map_err(ConfigError)
    }

    /// Both listeners on `127.0.0.1`, port 0 (an ephemeral port each):
    /// what tests and embedders usually want.
    pub fn ephemeral() -> Self {
        Config {
            tcp: Some("127.0.0.1:0".to_owned()),
            ws: Some("127.0.0.1:0".to_owned()),
            ..Config::default()
        }
    }
}
