//! The real `machat` binary: flags as the original spells them, the bound
//! addresses read back from its log, chat through both listeners, and a
//! graceful exit on SIGTERM and SIGINT that delivers every queued message.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use common::{MACHAT, Machat, TIMEOUT, joined_tcp};
use tungstenite::Message;

type WsClient = tungstenite::WebSocket<TcpStream>;

/// Joins like the original's WebSocket client: the handshake as one text
/// message with no newline.
fn ws_join(address: SocketAddr, name: &str, room: &str) -> WsClient {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{address}/mychat"), stream).expect("upgrade");
    ws.send(Message::text(common::handshake(name, room))).unwrap();
    ws
}

fn ws_read_text(ws: &mut WsClient) -> String {
    match ws.read().expect("a message") {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Starts machat, chats through both listeners, queues many messages for
/// a reader that does not read yet, sends `signal`, and checks that the
/// reader still gets every message, that WebSocket clients get Close 1001,
/// and that machat exits 0 with one summary line.
fn graceful_shutdown_on(signal: libc::c_int) {
    const MESSAGES: usize = 100_000;
    let mut machat =
        Machat::start(&["-tcp", "127.0.0.1:0", "-ws", "127.0.0.1:0", "--max-pending", "67108864"]);
    let (tcp, ws) = machat.addresses();

    // TCP and WebSocket clients share the room.
    let mut reader = joined_tcp(tcp, "reader", "dev");
    let mut web = ws_join(ws, "web", "dev");
    web.send(Message::text("hello from the web\n")).unwrap();
    assert_eq!(ws_read_text(&mut web), "web:hello from the web\n");
    reader.expect_line("web:hello from the web");
    reader.send_line("hello web");
    reader.expect_line("reader:hello web");
    assert_eq!(ws_read_text(&mut web), "reader:hello web\n");

    // The sender reads its echoes as they come; when the last one is back,
    // every message has been taken in and queued for the others.
    let mut sender = joined_tcp(tcp, "sender", "dev");
    reader.expect_line("sender:hello");
    assert_eq!(ws_read_text(&mut web), "sender:hello\n");
    let line = |k: usize| format!("{k:06} {}", "p".repeat(100));
    let mut writer = sender.stream.try_clone().unwrap();
    let (all_echoed, echoed) = mpsc::channel();
    let echoes = thread::spawn(move || {
        for k in 0..MESSAGES {
            sender.expect_line(&format!("sender:{}", line(k)));
        }
        all_echoed.send(()).unwrap();
        sender.read_to_close()
    });
    // The WebSocket client keeps reading too, until the Close frame.
    let web_reader = thread::spawn(move || {
        for k in 0..MESSAGES {
            assert_eq!(ws_read_text(&mut web), format!("sender:{}\n", line(k)));
        }
        match web.read().expect("the Close frame") {
            Message::Close(Some(frame)) => u16::from(frame.code),
            other => panic!("expected Close, got {other:?}"),
        }
    });
    let all: String = (0..MESSAGES).map(|k| line(k) + "\n").collect();
    writer.write_all(all.as_bytes()).unwrap();
    echoed.recv_timeout(TIMEOUT).expect("every message echoed");

    machat.signal(signal);
    for k in 0..MESSAGES {
        assert_eq!(reader.read_line(), format!("sender:{}", line(k)), "message {k} after the signal");
    }
    assert_eq!(reader.read_to_close(), "", "EOF after the queued messages");
    assert_eq!(echoes.join().unwrap(), "");
    assert_eq!(web_reader.join().unwrap(), 1001, "WebSocket clients get Close 1001 (going away)");
    drop((reader, writer));

    let status = machat.wait_exit();
    assert!(status.success(), "exit status {status}; log: {:#?}", machat.log);
    assert!(machat.log.iter().any(|l| l.contains(&format!("received signal {signal}"))), "{:#?}", machat.log);
    let queued: u64 = machat
        .wait_log("shutting down: ")
        .split(", ")
        .find_map(|part| part.strip_suffix(" bytes queued"))
        .expect("queued bytes in the shutdown line")
        .parse()
        .unwrap();
    assert!(queued > 0, "nothing was queued at the signal: the test would prove nothing");
    let summaries = machat.log.iter().filter(|l| l.contains("shutdown complete")).count();
    assert_eq!(summaries, 1, "one summary line; log: {:#?}", machat.log);
}

#[test]
fn sigterm_flushes_queued_messages_and_exits_0() {
    graceful_shutdown_on(libc::SIGTERM);
}

#[test]
fn sigint_flushes_queued_messages_and_exits_0() {
    graceful_shutdown_on(libc::SIGINT);
}

fn run(args: &[&str]) -> Output {
    Command::new(MACHAT).args(args).env("RUST_LOG", "info").stdin(Stdio::null()).output().expect("run machat")
}

/// `--help` (and `-help`, as the original spells it) lists every flag with
/// its default.
#[test]
fn help_lists_every_flag_with_its_default() {
    use machat::Config;
    let default = |value: &dyn std::fmt::Display| Some(format!("[default: {value}]"));
    let flags = [
        ("--tcp", default(&Config::DEFAULT_TCP)),
        ("--ws", default(&Config::DEFAULT_WS)),
        ("--ws-path", default(&Config::DEFAULT_WS_PATH)),
        ("--no-tcp", None),
        ("--no-ws", None),
        ("--reuse-port", None),
        ("--allowed-origin", default(&"any origin")),
        ("--max-line", default(&Config::DEFAULT_MAX_LINE)),
        ("--max-pending", default(&Config::DEFAULT_MAX_PENDING)),
        ("--max-connections", default(&Config::DEFAULT_MAX_CONNECTIONS)),
        ("--handshake-timeout", default(&Config::DEFAULT_HANDSHAKE_TIMEOUT.as_secs())),
        ("--shutdown-grace", default(&Config::DEFAULT_SHUTDOWN_GRACE.as_secs())),
        ("--ws-read-buffer", default(&Config::DEFAULT_WS_READ_BUFFER)),
        ("--ws-write-buffer", default(&Config::DEFAULT_WS_WRITE_BUFFER)),
    ];
    for spelling in ["--help", "-help"] {
        let output = run(&[spelling]);
        assert!(output.status.success(), "{spelling}: {}", output.status);
        let help = String::from_utf8(output.stdout).unwrap();
        for (flag, default) in &flags {
            // The flag's entry: from its name to the next entry.
            let start = help
                .find(&format!("{flag} "))
                .or_else(|| help.find(&format!("{flag}\n")))
                .unwrap_or_else(|| panic!("{flag} missing from {spelling}:\n{help}"));
            let entry = &help[start..];
            let end = entry[flag.len()..].find("\n  -").map_or(entry.len(), |end| end + flag.len());
            let entry = &entry[..end];
            if let Some(default) = default {
                assert!(entry.contains(default.as_str()), "{flag} should show {default}: {entry:?}");
            }
        }
    }
}

/// Bad flags and values are refused with a message and a non-zero exit,
/// before anything is served.
#[test]
fn invalid_flags_exit_non_zero_with_a_message() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 7] = [
        (&["--max-line", "lots"], "invalid value 'lots' for '--max-line <BYTES>'"),
        (&["-max-pending=-5"], "invalid value '-5' for '--max-pending <BYTES>'"),
        (&["--handshake-timeout=-1"], "--handshake-timeout must be a non-negative number of seconds"),
        (&["--ws-path", "mychat"], "--ws-path must start with '/'"),
        (&["--bogus"], "unexpected argument '--bogus'"),
        (&["-tcp", "nowhere", "-ws", "127.0.0.1:0"], "cannot start"),
        (&["-tcp", &busy, "-ws", "127.0.0.1:0"], "cannot start"),
    ];
    for (args, message) in cases {
        let output = run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail; stderr: {stderr}");
        assert!(stderr.contains(message), "{args:?}: expected {message:?} in {stderr:?}");
    }
}
