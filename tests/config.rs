//! No configuration can crash the server: `Config::validate` never panics,
//! whatever the values, and a configuration it accepts binds, serves a
//! join over each transport, and shuts down.

mod common;

use std::time::Duration;

use common::{TcpClient, TestServer, WsClient};
use machat::Config;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tungstenite::Message;

/// Durations from the edges of every range and far past them.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Config::MIN_DURATION),
        Just(Config::MAX_DURATION),
        Just(Duration::from_secs_f64(1e19)),
        (0u64..3_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(secs, nanos)| Duration::new(secs, nanos)),
    ]
}

/// Sizes from zero to `usize::MAX`, powers of two included.
fn any_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(usize::MAX),
        0usize..200_000,
        (0u32..usize::BITS).prop_map(|shift| 1usize << shift),
        any::<usize>(),
    ]
}

/// Listen addresses: both listeners, one, or none.
fn listeners() -> impl Strategy<Value = (Option<String>, Option<String>)> {
    let address = prop_oneof![Just(Some("127.0.0.1:0".to_owned())), Just(None)];
    (address.clone(), address)
}

prop_compose! {
    fn any_config()(
        (tcp, ws) in listeners(),
        ws_path in prop_oneof![Just("/mychat".to_owned()), Just("mychat".to_owned()), Just("/".to_owned())],
        sizes in (any_size(), any_size(), any_size(), any_size(), any_size(), any_size()),
        durations in (any_duration(), any_duration(), any_duration(), any_duration(), any_duration()),
        history in (any_size(), any_size(), any_size(), proptest::option::of(any_duration())),
        operator_token in proptest::option::of("[ -~]{0,40}"),
        reuse_port in any::<bool>(),
    ) -> Config {
        let (history, history_memory, history_on_join, history_retention) = history;
        let (max_line, max_pending, max_queued_total, max_connections, ws_read_buffer, ws_write_buffer) = sizes;
        let (handshake_timeout, shutdown_grace, slow_consumer_timeout, tcp_keepalive, ws_ping_interval) =
            durations;
        Config {
            tcp,
            ws,
            ws_path,
            allowed_origins: Vec::new(),
            max_line,
            max_pending,
            max_queued_total,
            slow_consumer_timeout,
            max_connections,
            handshake_timeout,
            shutdown_grace,
            ws_read_buffer,
            ws_write_buffer,
            tcp_keepalive,
            ws_ping_interval,
            // TLS needs certificate files; it has tests of its own.
            wss: None,
            tcp_tls: None,
            tls_cert: None,
            tls_key: None,
            history,
            history_memory,
            history_on_join,
            // The database has tests of its own (tests/history.rs).
            history_db: None,
            history_retention,
            operator_token,
            // Cluster mode needs a Redis; tests/cluster.rs has its own.
            cluster: None,
            node_id: None,
            cluster_name_ttl: Config::DEFAULT_CLUSTER_NAME_TTL,
            cluster_optional: false,
            cluster_join_wait: Config::DEFAULT_CLUSTER_JOIN_WAIT,
            reuse_port,
        }
    }
}

/// A duration picked among the edges of its range (zero included, which
/// some flags refuse).
fn edge_duration(max: Duration) -> impl Strategy<Value = Duration> {
    prop::sample::select(vec![
        Duration::ZERO,
        Config::MIN_DURATION,
        Duration::from_millis(300),
        Duration::from_secs(1),
        Duration::from_secs(10),
        max,
    ])
}

prop_compose! {
    /// Configurations near the edges of every range, most of them valid.
    fn edge_config()(
        (tcp, ws) in listeners(),
        max_line in prop::sample::select(vec![1, 64, 65_536, Config::MAX_MAX_LINE]),
        max_pending in prop::sample::select(vec![1 << 20, 64 << 20, Config::MAX_QUEUE_BYTES as usize]),
        total_is_cap in any::<bool>(),
        max_connections in prop::sample::select(vec![1, 2, 100_000, Config::MAX_MAX_CONNECTIONS]),
        ws_read_buffer in prop::sample::select(vec![0, 1, 1024, Config::MAX_WS_BUFFER]),
        ws_write_buffer in prop::sample::select(vec![0, 1, 1024, Config::MAX_WS_BUFFER]),
        handshake_timeout in edge_duration(Config::MAX_DURATION),
        shutdown_grace in edge_duration(Config::MAX_DURATION),
        slow_consumer_timeout in edge_duration(Config::MAX_DURATION),
        tcp_keepalive in edge_duration(Config::MAX_TCP_KEEPALIVE),
        ws_ping_interval in edge_duration(Config::MAX_DURATION),
        history in prop::sample::select(vec![0, 1, 100, Config::MAX_HISTORY]),
        history_on_join in prop::sample::select(vec![0, 1, 100]),
        history_memory in prop::sample::select(vec![Config::MIN_HISTORY_MEMORY, Config::DEFAULT_HISTORY_MEMORY]),
        reuse_port in any::<bool>(),
    ) -> Config {
        let max_queued_total = if total_is_cap { max_pending } else { Config::MAX_QUEUE_BYTES as usize };
        Config {
            tcp,
            ws,
            ws_path: "/mychat".to_owned(),
            allowed_origins: Vec::new(),
            max_line,
            max_pending,
            max_queued_total,
            slow_consumer_timeout,
            max_connections,
            handshake_timeout,
            shutdown_grace,
            ws_read_buffer,
            ws_write_buffer,
            tcp_keepalive,
            ws_ping_interval,
            // TLS needs certificate files; it has tests of its own.
            wss: None,
            tcp_tls: None,
            tls_cert: None,
            tls_key: None,
            history,
            history_memory,
            history_on_join: history_on_join.min(history),
            history_db: None,
            history_retention: None,
            operator_token: None,
            cluster: None,
            node_id: None,
            cluster_name_ttl: Config::DEFAULT_CLUSTER_NAME_TTL,
            cluster_optional: false,
            cluster_join_wait: Config::DEFAULT_CLUSTER_JOIN_WAIT,
            // Port 0 with SO_REUSEPORT still gets a port of its own.
            reuse_port,
        }
    }
}

fn persistence() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
    Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions")))
}

/// A line the echo of which shows the join worked, or, when the
/// configuration allows so little time that the join itself may be cut,
/// the error that says so.
fn expect_echo_or(line: &str, echo: &str, excused: &[&str]) {
    assert!(
        line == echo || excused.contains(&line),
        "expected {echo:?} (or one of {excused:?}), got {line:?}"
    );
}

/// Joins over TCP and sends one one-byte line.
fn join_over_tcp(server: &TestServer, config: &Config) {
    let mut client = TcpClient::join(server.tcp, "tcp", "dev");
    client.send_line("h");
    let excused: &[&str] =
        if config.handshake_timeout < Duration::from_secs(1) { &["error: handshake timed out"] } else { &[] };
    expect_echo_or(&client.read_line(), "tcp:h", excused);
}

/// Joins over WebSocket and sends one one-byte message (no newline: it
/// must fit in a `--max-line` of 1).
fn join_over_websocket(server: &TestServer, config: &Config) {
    let mut client = WsClient::join(server.ws, "web", "dev");
    client.send_text("h");
    let mut excused = Vec::new();
    if config.handshake_timeout < Duration::from_secs(1) {
        excused.push("error: handshake timed out\n");
    }
    if !config.ws_ping_interval.is_zero() && config.ws_ping_interval < Duration::from_secs(1) {
        excused.push("error: ping timeout\n");
    }
    let text = loop {
        match client.read() {
            // With --history-on-join, the TCP member's line comes first.
            Message::Text(text) if config.history_on_join > 0 && text.as_str() == "tcp:h\n" => continue,
            Message::Text(text) => break text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected the echo, got {other:?}"),
        }
    };
    expect_echo_or(&text, "web:h\n", &excused);
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: persistence(),
        ..ProptestConfig::with_cases(4096)
    })]

    #[test]
    fn validate_never_panics(config in any_config()) {
        let _ = config.validate();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: persistence(),
        ..ProptestConfig::with_cases(64)
    })]

    #[test]
    fn a_valid_config_binds_serves_a_join_and_shuts_down(config in edge_config()) {
        if config.validate().is_err() {
            return Ok(());
        }
        let server = TestServer::with_config(config.clone());
        let both = config.max_connections >= 2;
        if config.tcp.is_some() {
            join_over_tcp(&server, &config);
        }
        if config.ws.is_some() && (both || config.tcp.is_none()) {
            join_over_websocket(&server, &config);
        }
        server.stop().expect("run returns Ok after shutdown");
    }
}
