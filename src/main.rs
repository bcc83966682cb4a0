//! The `machat` binary: flags, logging, the open-file limit, signals, and
//! then the server's event loop on the main thread.

use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use machat::{Config, Handle, Server};

/// A chat server for the MaChat protocol: TCP line clients and WebSocket
/// clients share rooms. Long flags also work with one dash (-tcp ADDR).
/// Sizes are bytes; durations are seconds (fractions allowed).
#[derive(Debug, Parser)]
#[command(name = "machat", version)]
struct Cli {
    /// TCP listen address
    #[arg(long, value_name = "ADDR", default_value = Config::DEFAULT_TCP)]
    tcp: String,
    /// WebSocket listen address
    #[arg(long, value_name = "ADDR", default_value = Config::DEFAULT_WS)]
    ws: String,
    /// Path WebSocket clients upgrade on
    #[arg(long, value_name = "PATH", default_value = Config::DEFAULT_WS_PATH)]
    ws_path: String,
    /// Turn the TCP listener off
    #[arg(long)]
    no_tcp: bool,
    /// Turn the WebSocket listener off
    #[arg(long)]
    no_ws: bool,
    /// Origin allowed to open a WebSocket (repeatable) [default: any origin]
    #[arg(long, value_name = "ORIGIN")]
    allowed_origin: Vec<String>,
    /// Longest chat line or WebSocket message, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = Config::DEFAULT_MAX_LINE)]
    max_line: usize,
    /// Output queued for one client at most, in bytes (a quarter of it pauses the client's room)
    #[arg(long, value_name = "BYTES", default_value_t = Config::DEFAULT_MAX_PENDING)]
    max_pending: usize,
    /// Output queued for all clients together at most, in bytes; at it, no sender is read
    #[arg(long, value_name = "BYTES", default_value_t = Config::DEFAULT_MAX_QUEUED_TOTAL)]
    max_queued_total: usize,
    /// Seconds a member over its high-water mark may make no progress before it is cut
    #[arg(long, value_name = "SECS", default_value_t = Config::DEFAULT_SLOW_CONSUMER_TIMEOUT.as_secs_f64())]
    slow_consumer_timeout: f64,
    /// Most clients connected at once
    #[arg(long, value_name = "N", default_value_t = Config::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds from connect to a complete handshake
    #[arg(long, value_name = "SECS", default_value_t = Config::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    handshake_timeout: f64,
    /// Seconds shutdown waits for pending output to be flushed
    #[arg(long, value_name = "SECS", default_value_t = Config::DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    shutdown_grace: f64,
    /// WebSocket read buffer per connection, in bytes (the original's Rbsize)
    #[arg(long, value_name = "BYTES", default_value_t = Config::DEFAULT_WS_READ_BUFFER)]
    ws_read_buffer: usize,
    /// WebSocket write buffer per connection, in bytes (the original's Wbsize)
    #[arg(long, value_name = "BYTES", default_value_t = Config::DEFAULT_WS_WRITE_BUFFER)]
    ws_write_buffer: usize,
    /// Seconds of idle before TCP keepalive probes (0: off)
    #[arg(long, value_name = "SECS", default_value_t = Config::DEFAULT_TCP_KEEPALIVE.as_secs_f64())]
    tcp_keepalive: f64,
    /// HTTPS and wss:// listen address (the WebSocket port's routes over TLS) [default: off]
    #[arg(long, value_name = "ADDR")]
    wss: Option<String>,
    /// Line protocol over TLS listen address [default: off]
    #[arg(long, value_name = "ADDR")]
    tcp_tls: Option<String>,
    /// PEM certificate chain for the TLS listeners (leaf first); SIGHUP reloads it
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for the TLS listeners; SIGHUP reloads it
    #[arg(long, value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    /// Seconds of WebSocket silence before a ping; no answer within as long again closes (0: off)
    #[arg(long, value_name = "SECS", default_value_t = Config::DEFAULT_WS_PING_INTERVAL.as_secs_f64())]
    ws_ping_interval: f64,
    /// Latest lines kept per room for members who ask on joining (0: history off)
    #[arg(long, value_name = "N", default_value_t = Config::DEFAULT_HISTORY)]
    history: usize,
    /// Memory for all rooms' history, in bytes; least recently used rooms are dropped first
    #[arg(long, value_name = "BYTES", default_value_t = Config::DEFAULT_HISTORY_MEMORY)]
    history_memory: usize,
    /// Lines replayed to members whose handshake does not ask for history
    #[arg(long, value_name = "N", default_value_t = 0)]
    history_on_join: usize,
    /// SQLite file the history is persisted to and restored from at start [default: memory only]
    #[arg(long, value_name = "FILE")]
    history_db: Option<std::path::PathBuf>,
    /// Seconds persisted lines are kept (with --history-db) [default: as long as --history allows]
    #[arg(long, value_name = "SECS")]
    history_retention: Option<f64>,
    /// Bearer token that opens GET /rooms and /rooms/NAME/history [default: closed]
    #[arg(long, value_name = "TOKEN", env = "MACHAT_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// Cluster mode: Redis URL redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]; rooms span every node on it [default: off]
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's id in the cluster [default: random, logged at start]
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Seconds a claimed name outlives its node in Redis without a refresh
    #[arg(long, value_name = "SECS", default_value_t = Config::DEFAULT_CLUSTER_NAME_TTL.as_secs_f64())]
    cluster_name_ttl: f64,
    /// Start even when Redis is unreachable, serving locally and retrying
    #[arg(long)]
    cluster_optional: bool,
    /// Seconds a join waits for Redis before `error: cluster unavailable`
    #[arg(long, value_name = "SECS", default_value_t = Config::DEFAULT_CLUSTER_JOIN_WAIT.as_secs_f64())]
    cluster_join_wait: f64,
    /// Bind every listener with SO_REUSEPORT: machat processes on one machine share the ports
    #[arg(long)]
    reuse_port: bool,
}

impl Cli {
    fn into_config(self) -> Result<Config, String> {
        // Too large for a `Duration` is the largest one, which
        // `Config::validate` then refuses with the flag's range.
        let seconds = |name: &str, value: f64| {
            if value.is_nan() || value < 0.0 {
                return Err(format!("--{name} must be a non-negative number of seconds"));
            }
            Ok(Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX))
        };
        let config = Config {
            tcp: (!self.no_tcp).then_some(self.tcp),
            ws: (!self.no_ws).then_some(self.ws),
            ws_path: self.ws_path,
            allowed_origins: self.allowed_origin,
            max_line: self.max_line,
            max_pending: self.max_pending,
            max_queued_total: self.max_queued_total,
            slow_consumer_timeout: seconds("slow-consumer-timeout", self.slow_consumer_timeout)?,
            max_connections: self.max_connections,
            handshake_timeout: seconds("handshake-timeout", self.handshake_timeout)?,
            shutdown_grace: seconds("shutdown-grace", self.shutdown_grace)?,
            ws_read_buffer: self.ws_read_buffer,
            ws_write_buffer: self.ws_write_buffer,
            tcp_keepalive: seconds("tcp-keepalive", self.tcp_keepalive)?,
            ws_ping_interval: seconds("ws-ping-interval", self.ws_ping_interval)?,
            wss: self.wss,
            tcp_tls: self.tcp_tls,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            history: self.history,
            history_memory: self.history_memory,
            history_on_join: self.history_on_join,
            history_db: self.history_db,
            history_retention: self
                .history_retention
                .map(|secs| seconds("history-retention", secs))
                .transpose()?,
            operator_token: self.operator_token,
            cluster: self.cluster,
            node_id: self.node_id,
            cluster_name_ttl: seconds("cluster-name-ttl", self.cluster_name_ttl)?,
            cluster_optional: self.cluster_optional,
            cluster_join_wait: seconds("cluster-join-wait", self.cluster_join_wait)?,
            reuse_port: self.reuse_port,
        };
        config.validate().map_err(|error| error.to_string())?;
        Ok(config)
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let command = Cli::command();
    let args = machat::internal::cli::accept_single_dash(&command, std::env::args_os());
    let cli = match command.try_get_matches_from(args).and_then(|matches| Cli::from_arg_matches(&matches)) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::info!("open-file limit: {limit}"),
        Err(error) => log::warn!("cannot raise the open-file limit: {error}"),
    }
    let ws_path = config.ws_path.clone();
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(error) => {
            log::error!("cannot start: {error}");
            std::process::exit(1);
        }
    };
    if let Some(address) = server.tcp_addr() {
        log::info!("listening for TCP clients on {address}");
    }
    if let Some(address) = server.ws_addr() {
        log::info!("listening for WebSocket clients on ws://{address}{ws_path}");
    }
    if let Some(address) = server.wss_addr() {
        log::info!("listening for HTTPS and WebSocket clients on wss://{address}{ws_path}");
    }
    if let Some(address) = server.tcp_tls_addr() {
        log::info!("listening for TLS line clients on {address}");
    }
    if let Err(error) = stop_on_signals(server.handle()) {
        log::warn!("cannot handle signals: {error}");
    }
    if let Err(error) = server.run() {
        log::error!("event loop failed: {error}");
        std::process::exit(1);
    }
}

/// SIGINT or SIGTERM starts a graceful shutdown; a second one exits at
/// once. SIGHUP reloads the TLS certificate and key (on this thread: the
/// event loop never reads the disk).
fn stop_on_signals(handle: Handle) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut stops = 0;
        for signal in signals.forever() {
            if signal == SIGHUP {
                handle.reload_tls();
                continue;
            }
            stops += 1;
            if stops == 1 {
                log::info!("received signal {signal}; shutting down");
                handle.shutdown();
            } else {
                log::warn!("received signal {signal} again; exiting now");
                std::process::exit(1);
            }
        }
    })?;
    Ok(())
}
