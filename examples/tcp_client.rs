//! An interactive TCP chat client for machat, the counterpart of the
//! original MaChat's example TCP client.
//!
//! ```text
//! cargo run --example tcp_client -- -client Mina -room dev -address localhost:8989
//! cargo run --example tcp_client -- -client Mina -address tls://localhost:8990 --ca ca.pem
//! ```
//!
//! It connects, sends the handshake `{"name":...,"room":...}` with no
//! newline (as the original did), then sends each line typed on stdin and
//! prints every line the server sends, like `Mina:hello`. When stdin ends
//! (Ctrl-D) it shuts down its write side and keeps printing until the
//! server closes; when the server closes, it says so and exits (with
//! status 1 if the server's last line was an `error: ...`).
//!
//! Flags take one dash or two: `-client NAME` (default `UserNNN`, random),
//! `-room ROOM` (default `lounge`), `-address HOST:PORT` (default
//! `localhost:8989`).
//!
//! TLS (machat's `--tcp-tls` listener): `-address tls://HOST:PORT`, or
//! `--tls` with a plain `HOST:PORT`. The server's certificate is checked
//! against HOST and the system's trust store, or, with `--ca FILE`, the CA
//! certificates in that PEM file (for a self-signed certificate, the
//! certificate itself). At the end of stdin the client sends TLS
//! close_notify and half-closes, as it half-closes plain TCP.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, FromArgMatches, Parser};

#[path = "shared/tls.rs"]
mod tls;

/// The scheme that asks for TLS in `-address`.
const TLS_SCHEME: &str = "tls://";

/// How often the TLS client looks for typed lines while waiting for the
/// server (one TLS stream cannot be read and written from two threads).
const POLL: Duration = Duration::from_millis(20);

/// Chat with a machat server over TCP: type lines, read the room.
#[derive(Debug, Parser)]
#[command(name = "tcp_client")]
struct Args {
    /// Your name in the room [default: a random UserNNN]
    #[arg(long, value_name = "NAME")]
    client: Option<String>,
    /// The room to join
    #[arg(long, value_name = "ROOM", default_value = "lounge")]
    room: String,
    /// The server's TCP address; tls://HOST:PORT for TLS
    #[arg(long, value_name = "HOST:PORT", default_value = "localhost:8989")]
    address: String,
    /// Speak TLS (as a tls:// address does)
    #[arg(long)]
    tls: bool,
    /// With TLS: trust the CA certificates in this PEM file instead of the
    /// system's trust store
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

fn main() -> ExitCode {
    let command = Args::command();
    let argv = machat::internal::cli::accept_single_dash(&command, std::env::args_os());
    let args = match command.try_get_matches_from(argv).and_then(|matches| Args::from_arg_matches(&matches)) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    let name = args.client.unwrap_or_else(random_user_name);
    let outcome = match args.address.strip_prefix(TLS_SCHEME) {
        Some(address) => chat_tls(&name, &args.room, address, args.ca.as_deref()),
        None if args.tls => chat_tls(&name, &args.room, &args.address, args.ca.as_deref()),
        None if args.ca.is_some() => Err(io::Error::other("--ca is for TLS: use tls://HOST:PORT or --tls")),
        None => chat(&name, &args.room, &args.address),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tcp_client: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `User` and three digits taken from the clock.
fn random_user_name() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |time| time.subsec_nanos());
    format!("User{:03}", nanos % 1000)
}

fn chat(name: &str, room: &str, address: &str) -> io::Result<()> {
    let mut stream = TcpStream::connect(address)
        .map_err(|error| io::Error::new(error.kind(), format!("cannot connect to {address}: {error}")))?;
    stream.write_all(serde_json::json!({ "name": name, "room": room }).to_string().as_bytes())?;
    eprintln!("connected to {address} as {name} in room {room}; type lines to send, Ctrl-D to leave");

    // stdin → server, on its own thread.
    let mut writer = stream.try_clone()?;
    let input_ended = Arc::new(AtomicBool::new(false));
    let ended = input_ended.clone();
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if writer.write_all(format!("{line}\n").as_bytes()).is_err() {
                return;
            }
        }
        // Tell the server we are done; what it still sends is printed below.
        ended.store(true, Ordering::SeqCst);
        let _ = writer.shutdown(Shutdown::Write);
    });

    // server → stdout, until the server closes.
    let mut reader = BufReader::new(stream);
    let mut stdout = io::stdout().lock();
    let mut line = Vec::new();
    let mut refused = false;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // The server reports a fatal error as `error: <reason>` and closes.
        refused = line.starts_with(b"error: ");
        stdout.write_all(&line)?;
        if !line.ends_with(b"\n") {
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
    }
    if refused {
        return Err(io::Error::other("the server refused us and closed the connection"));
    }
    if input_ended.load(Ordering::SeqCst) {
        eprintln!("left the room; the server closed the connection");
    } else {
        eprintln!("the server closed the connection");
    }
    Ok(())
}

/// The same conversation over TLS. One `rustls` stream cannot be split
/// between a reading and a writing thread, so stdin lines come through a
/// channel and this thread alternates: send what was typed, then read for
/// at most [`POLL`].
fn chat_tls(name: &str, room: &str, address: &str, ca: Option<&Path>) -> io::Result<()> {
    let (host, port) = tls::split_host_port(address).map_err(io::Error::other)?;
    let config = tls::client_config(ca, &[]).map_err(io::Error::other)?;
    let mut stream = tls::connect(host, port, config).map_err(io::Error::other)?;
    stream.write_all(serde_json::json!({ "name": name, "room": room }).to_string().as_bytes())?;
    stream.flush()?;
    let security = tls::describe(&stream.conn);
    eprintln!(
        "connected to {address} ({security}) as {name} in room {room}; type lines to send, Ctrl-D to leave"
    );
    stream.sock.set_read_timeout(Some(POLL))?;

    let typed = typed_lines();
    let mut input_open = true;
    let mut received = Vec::new();
    let mut buffer = [0; 16 * 1024];
    let mut refused = false;
    loop {
        while input_open {
            match typed.try_recv() {
                Ok(line) => {
                    stream.write_all(format!("{line}\n").as_bytes())?;
                    stream.flush()?;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // Tell the server we are done; what it still sends is printed below.
                    input_open = false;
                    stream.conn.send_close_notify();
                    stream.flush()?;
                    let _ = stream.sock.shutdown(Shutdown::Write);
                }
            }
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => refused = print_lines(&mut received, &buffer[..read])?.unwrap_or(refused),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            // The server closed without a TLS close_notify: still the end.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error),
        }
    }
    if !received.is_empty() {
        refused = received.starts_with(b"error: ");
        received.push(b'\n');
        print_lines(&mut received, &[])?;
    }
    if refused {
        return Err(io::Error::other("the server refused us and closed the connection"));
    }
    if input_open {
        eprintln!("the server closed the connection");
    } else {
        eprintln!("left the room; the server closed the connection");
    }
    Ok(())
}

/// Stdin lines, read on their own thread; the channel closes at the end
/// of input.
fn typed_lines() -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Appends `bytes` to what was received and prints every complete line;
/// answers whether the last complete line was an `error: ...` (`None` if
/// no line was complete).
fn print_lines(received: &mut Vec<u8>, bytes: &[u8]) -> io::Result<Option<bool>> {
    received.extend_from_slice(bytes);
    let Some(last_newline) = received.iter().rposition(|&byte| byte == b'\n') else { return Ok(None) };
    let mut stdout = io::stdout().lock();
    stdout.write_all(&received[..=last_newline])?;
    stdout.flush()?;
    let last_line_start =
        received[..last_newline].iter().rposition(|&byte| byte == b'\n').map_or(0, |at| at + 1);
    // The server reports a fatal error as `error: <reason>` and closes.
    let refused = received[last_line_start..].starts_with(b"error: ");
    received.drain(..=last_newline);
    Ok(Some(refused))
}
