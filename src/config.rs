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
    /// Latest lines kept per room for members who join asking for them
    /// (`"history": n`, at most this); 0 turns history off.
    pub history: usize,
    /// Memory for all rooms' history together, in bytes; the least
    /// recently used rooms lose their history first.
    pub history_memory: usize,
    /// Lines replayed to a member whose handshake does not ask (at most
    /// `history`); 0, the default, keeps the original's behaviour.
    pub history_on_join: usize,
    /// SQLite file the history is persisted to and restored from.
    pub history_db: Option<std::path::PathBuf>,
    /// Persisted lines older than this are deleted (and not restored);
    /// `None` keeps them as long as the per-room count allows.
    pub history_retention: Option<Duration>,
    /// Bearer token that opens the operator views (`/rooms`,
    /// `/rooms/<name>/history`); `None` keeps them closed to everyone.
    pub operator_token: Option<String>,
    /// Cluster mode: `redis://[[user]:password@]host[:port][/db]`. Rooms
    /// span every node on the same Redis; `None` serves alone.
    pub cluster: Option<String>,
    /// This node's id in the cluster; `None` picks a random one.
    pub node_id: Option<String>,
    /// How long a claimed name lives in Redis without a refresh: a crashed
    /// node's names are free again after it.
    pub cluster_name_ttl: Duration,
    /// Serve locally when Redis is unreachable at start (and keep trying),
    /// instead of refusing to start.
    pub cluster_optional: bool,
    /// How long a join waits for Redis before `error: cluster unavailable`.
    pub cluster_join_wait: Duration,
    /// Bind every listener with `SO_REUSEPORT`, so several machat
    /// processes on one machine can listen on the same ports and the
    /// kernel spreads new connections over them. Each process still has
    /// rooms of its own (without a cluster, they do not see each other).
    pub reuse_port: bool,
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
            history: Config::DEFAULT_HISTORY,
            history_memory: Config::DEFAULT_HISTORY_MEMORY,
            history_on_join: 0,
            history_db: None,
            history_retention: None,
            operator_token: None,
            cluster: None,
            node_id: None,
            cluster_name_ttl: Config::DEFAULT_CLUSTER_NAME_TTL,
            cluster_optional: false,
            cluster_join_wait: Config::DEFAULT_CLUSTER_JOIN_WAIT,
            reuse_port: false,
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

    /// Longest `--max-line` accepted: 16 MiB.
    pub const MAX_MAX_LINE: usize = 16 << 20;
    /// Largest `--max-pending` and `--max-queued-total` accepted: 1 TiB.
    pub const MAX_QUEUE_BYTES: u64 = 1 << 40;
    /// Largest `--max-connections` accepted: 2^30, Linux's highest possible
    /// per-process descriptor limit (`fs.nr_open`).
    pub const MAX_MAX_CONNECTIONS: usize = 1 << 30;
    /// Largest `--ws-read-buffer` and `--ws-write-buffer` accepted: 16 MiB
    /// (each is per connection).
    pub const MAX_WS_BUFFER: usize = 16 << 20;
    /// Default of [`Config::history`].
    pub const DEFAULT_HISTORY: usize = crate::history::ring::DEFAULT_LINES;
    /// Default of [`Config::history_memory`].
    pub const DEFAULT_HISTORY_MEMORY: usize = crate::history::ring::DEFAULT_MEMORY;
    /// Largest `--history` accepted: a replay is one turn's work and must
    /// stay small.
    pub const MAX_HISTORY: usize = 10_000;
    /// Default of [`Config::cluster_name_ttl`].
    pub const DEFAULT_CLUSTER_NAME_TTL: Duration = Duration::from_secs(30);
    /// Default of [`Config::cluster_join_wait`].
    pub const DEFAULT_CLUSTER_JOIN_WAIT: Duration = Duration::from_secs(5);
    /// Smallest `--history-memory` accepted while history is on: 64 KiB.
    pub const MIN_HISTORY_MEMORY: usize = 64 * 1024;
    /// Largest `--history-retention`: ten years.
    pub const MAX_HISTORY_RETENTION: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
    /// Shortest non-zero duration accepted for any duration flag.
    pub const MIN_DURATION: Duration = Duration::from_millis(1);
    /// Longest duration accepted for any duration flag: one day.
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
    /// Longest `--tcp-keepalive`: the most seconds Linux takes for
    /// `TCP_KEEPIDLE`.
    pub const MAX_TCP_KEEPALIVE: Duration = Duration::from_secs(32767);

    /// Checks the configuration as a whole; [`Server::bind`](crate::Server::bind)
    /// refuses one that fails. Every size and duration is range-checked,
    /// so no value can make the server overflow, allocate without bound or
    /// panic on deadline arithmetic; the error names the flag.
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
        size("--max-line", self.max_line, 1, Config::MAX_MAX_LINE as u64, "bytes")?;
        size("--max-pending", self.max_pending, 1, Config::MAX_QUEUE_BYTES, "bytes")?;
        size("--max-queued-total", self.max_queued_total, 1, Config::MAX_QUEUE_BYTES, "bytes")?;
        size("--max-connections", self.max_connections, 1, Config::MAX_MAX_CONNECTIONS as u64, "")?;
        size("--ws-read-buffer", self.ws_read_buffer, 0, Config::MAX_WS_BUFFER as u64, "bytes")?;
        size("--ws-write-buffer", self.ws_write_buffer, 0, Config::MAX_WS_BUFFER as u64, "bytes")?;
        let (min, max) = (Config::MIN_DURATION, Config::MAX_DURATION);
        duration("--handshake-timeout", self.handshake_timeout, Zero::Refused, min, max)?;
        duration("--slow-consumer-timeout", self.slow_consumer_timeout, Zero::Refused, min, max)?;
        duration("--shutdown-grace", self.shutdown_grace, Zero::Allowed, min, max)?;
        duration("--ws-ping-interval", self.ws_ping_interval, Zero::Off, min, max)?;
        let keepalive = (Duration::from_secs(1), Config::MAX_TCP_KEEPALIVE);
        duration("--tcp-keepalive", self.tcp_keepalive, Zero::Off, keepalive.0, keepalive.1)?;
        self.flow_limits()?;
        size("--history", self.history, 0, Config::MAX_HISTORY as u64, "lines")?;
        if self.history > 0 {
            // Below this a room of ordinary lines would not fit: history
            // would be on in name only.
            size(
                "--history-memory",
                self.history_memory,
                Config::MIN_HISTORY_MEMORY as u64,
                Config::MAX_QUEUE_BYTES,
                "bytes",
            )?;
        }
        if self.history_on_join > self.history {
            return Err(ConfigError(format!(
                "--history-on-join must be at most --history ({}) (got {})",
                self.history, self.history_on_join
            )));
        }
        if let Some(age) = self.history_retention {
            duration(
                "--history-retention",
                age,
                Zero::Refused,
                Duration::from_secs(1),
                Config::MAX_HISTORY_RETENTION,
            )?;
        }
        if self.history_db.is_some() && self.history == 0 {
            return refuse("--history-db needs history on (--history above 0)");
        }
        if self.history_retention.is_some() && self.history_db.is_none() {
            return refuse("--history-retention applies to the database: it needs --history-db");
        }
        if let Some(token) = &self.operator_token
            && (token.len() < 16 || !token.bytes().all(|byte| byte.is_ascii_graphic()))
        {
            return refuse("--operator-token must be at least 16 printable ASCII characters without spaces");
        }
        self.cluster_config(std::time::Instant::now())?;
        Ok(())
    }

    /// The cluster's configuration, when `--cluster` is set (`now` seeds
    /// a random node id when none is given).
    pub(crate) fn cluster_config(
        &self,
        now: std::time::Instant,
    ) -> Result<Option<crate::cluster::ClusterConfig>, ConfigError> {
        let Some(url) = &self.cluster else {
            if self.node_id.is_some() || self.cluster_optional {
                return Err(ConfigError("--node-id and --cluster-optional need --cluster".into()));
            }
            return Ok(None);
        };
        let url = crate::cluster::RedisUrl::parse(url).map_err(ConfigError)?;
        let (min, max) = (Duration::from_secs(1), Config::MAX_DURATION);
        duration("--cluster-name-ttl", self.cluster_name_ttl, Zero::Refused, min, max)?;
        duration("--cluster-join-wait", self.cluster_join_wait, Zero::Refused, Config::MIN_DURATION, max)?;
        let node_id = match &self.node_id {
            Some(id) if id.is_empty() || id.len() > 64 || !id.bytes().all(|byte| byte.is_ascii_graphic()) => {
                return Err(ConfigError(format!(
                    "--node-id must be 1 to 64 printable ASCII characters without spaces (got {id:?})"
                )));
            }
            Some(id) => id.clone(),
            None => crate::cluster::random_node_id(now),
        };
        Ok(Some(crate::cluster::ClusterConfig {
            url,
            node_id,
            name_ttl: self.cluster_name_ttl,
            join_wait: self.cluster_join_wait,
        }))
    }

    /// The in-memory history's limits.
    pub(crate) fn history_limits(&self) -> crate::history::Limits {
        crate::history::Limits {
            lines: self.history,
            memory: self.history_memory,
            ..crate::history::Limits::default()
        }
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

/// Checks that a size flag is within `min..=max`; `unit` follows the
/// numbers in the message.
fn size(flag: &str, value: usize, min: u64, max: u64, unit: &str) -> Result<(), ConfigError> {
    let value = value as u64;
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    Err(ConfigError(format!("{flag} must be between {min} and {max}{unit} (got {value})")))
}

/// What zero means for a duration flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zero {
    /// Not accepted: the range starts above it.
    Refused,
    /// Part of the range (no wait at all).
    Allowed,
    /// Accepted, and turns the feature off.
    Off,
}

/// Checks that a duration flag is within `min..=max` (or zero, as `zero`
/// says).
fn duration(
    flag: &str,
    value: Duration,
    zero: Zero,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    let in_range = (min..=max).contains(&value) || (value.is_zero() && zero != Zero::Refused);
    if in_range {
        return Ok(());
    }
    let (min_secs, max_secs, got) = (min.as_secs_f64(), max.as_secs_f64(), value.as_secs_f64());
    let range = match zero {
        Zero::Refused => format!("between {min_secs} and {max_secs} seconds"),
        Zero::Allowed => format!("between 0 and {max_secs} seconds"),
        Zero::Off => format!("0 (off) or between {min_secs} and {max_secs} seconds"),
    };
    Err(ConfigError(format!("{flag} must be {range} (got {got})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: Config) -> String {
        match config.validate() {
            Ok(()) => panic!("accepted: {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_defaults_and_the_edges_of_every_range_are_valid() {
        Config::default().validate().unwrap();
        let edges = Config {
            max_line: 1,
            max_connections: Config::MAX_MAX_CONNECTIONS,
            ws_read_buffer: 0,
            ws_write_buffer: Config::MAX_WS_BUFFER,
            handshake_timeout: Config::MIN_DURATION,
            slow_consumer_timeout: Config::MAX_DURATION,
            shutdown_grace: Duration::ZERO,
            ws_ping_interval: Duration::ZERO,
            tcp_keepalive: Config::MAX_TCP_KEEPALIVE,
            ..Config::default()
        };
        edges.validate().unwrap();
        let big = Config {
            max_line: Config::MAX_MAX_LINE,
            max_pending: Config::MAX_QUEUE_BYTES as usize,
            max_queued_total: Config::MAX_QUEUE_BYTES as usize,
            ..Config::default()
        };
        big.validate().unwrap();
    }

    #[test]
    fn each_flag_out_of_range_is_named() {
        let huge = Duration::from_secs_f64(1e19);
        let cases = [
            (
                Config { handshake_timeout: huge, ..Config::default() },
                "--handshake-timeout must be between 0.001 and 86400 seconds (got 10000000000000000000)",
            ),
            (
                Config { shutdown_grace: huge, ..Config::default() },
                "--shutdown-grace must be between 0 and 86400 seconds (got 10000000000000000000)",
            ),
            (
                Config { handshake_timeout: Duration::ZERO, ..Config::default() },
                "--handshake-timeout must be between 0.001 and 86400 seconds (got 0)",
            ),
            (
                Config { slow_consumer_timeout: Duration::MAX, ..Config::default() },
                "--slow-consumer-timeout must be between 0.001 and 86400 seconds",
            ),
            (
                Config { ws_ping_interval: Duration::from_micros(10), ..Config::default() },
                "--ws-ping-interval must be 0 (off) or between 0.001 and 86400 seconds (got 0.00001)",
            ),
            (
                Config { tcp_keepalive: Duration::from_millis(500), ..Config::default() },
                "--tcp-keepalive must be 0 (off) or between 1 and 32767 seconds (got 0.5)",
            ),
            (
                Config { max_line: 0, ..Config::default() },
                "--max-line must be between 1 and 16777216 bytes (got 0)",
            ),
            (
                Config { max_line: usize::MAX, ..Config::default() },
                "--max-line must be between 1 and 16777216 bytes",
            ),
            (Config { max_pending: usize::MAX, ..Config::default() }, "--max-pending must be between 1 and"),
            (
                Config { max_queued_total: usize::MAX, ..Config::default() },
                "--max-queued-total must be between",
            ),
            (
                Config { max_connections: 0, ..Config::default() },
                "--max-connections must be between 1 and 1073741824 (got 0)",
            ),
            (
                Config { ws_read_buffer: usize::MAX, ..Config::default() },
                "--ws-read-buffer must be between 0 and",
            ),
            (
                Config { ws_write_buffer: usize::MAX, ..Config::default() },
                "--ws-write-buffer must be between 0 and",
            ),
            (Config { max_pending: 1000, ..Config::default() }, "--max-pending must be at least"),
        ];
        for (config, message) in cases {
            let refused = refused(config);
            assert!(refused.starts_with(message), "{refused:?} does not start with {message:?}");
        }
    }
}
