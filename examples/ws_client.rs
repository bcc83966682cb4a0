//! A WebSocket chat client: the counterpart of the original MaChat's
//! WebSocket example client (Go, `golang.org/x/net/websocket`).
//!
//! It joins a room, sends every line typed on stdin, and prints every
//! message the room delivers:
//!
//! ```text
//! cargo run --example ws_client -- -client Mina -room dev
//! cargo run --example ws_client -- --address ws://127.0.0.1:8099/mychat --origin http://localhost:8099/
//! cargo run --example ws_client -- -client Mina --address wss://localhost:8443/mychat --ca ca.pem
//! ```
//!
//! On the wire it behaves like the original: the handshake
//! `{"name":..,"room":..}` goes as one text message with no newline, then
//! each stdin line as one text message `line\n`; everything received is
//! treated as one byte stream and printed line by line at `\n`. When the
//! server closes the connection the client says so and exits; at the end
//! of stdin it closes the connection itself (after the server has
//! answered, so the echoes of the last lines are printed first).
//!
//! Flags take one dash or two (`-room dev` or `--room dev`), as the
//! original's Go flags did.
//!
//! TLS (machat's `--wss` listener): a `wss://HOST:PORT/PATH` address. The
//! client offers ALPN `http/1.1`, as browsers do, and checks the server's
//! certificate against HOST and the system's trust store, or, with
//! `--ca FILE`, the CA certificates in that PEM file (for a self-signed
//! certificate, the certificate itself). The Origin it sends defaults to
//! `https://HOST:PORT/` there, as a browser on the server's chat page would.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, FromArgMatches, Parser};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

// tcp_client uses all of it; this client needs no HOST:PORT splitting.
#[allow(dead_code)]
#[path = "shared/tls.rs"]
mod tls;

/// The Origin sent to a ws:// address unless `-origin` says otherwise: the
/// original client's.
const DEFAULT_ORIGIN: &str = "http://localhost:8099/";

/// How often the client looks for typed lines while waiting for messages.
const POLL: Duration = Duration::from_millis(20);

/// MaChat WebSocket client: joins a room, sends stdin lines, prints what
/// the room says.
#[derive(Debug, Parser)]
#[command(name = "ws_client")]
struct Cli {
    /// Your name in the room [default: a random UserNNN]
    #[arg(long, value_name = "NAME")]
    client: Option<String>,
    /// The room to join
    #[arg(long, value_name = "ROOM", default_value = "lounge")]
    room: String,
    /// The Origin header sent with the upgrade request [default:
    /// http://localhost:8099/, or https://HOST:PORT/ for wss://]
    #[arg(long, value_name = "ORIGIN")]
    origin: Option<String>,
    /// The server's WebSocket URL, ws:// or wss://
    #[arg(long, value_name = "URL", default_value = "ws://localhost:8099/mychat")]
    address: String,
    /// With wss://: trust the CA certificates in this PEM file instead of
    /// the system's trust store
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// A `UserNNN` name like the original's, from the clock (no rand crate).
fn random_name() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
    format!("User{:03}", nanos % 1000)
}

fn main() {
    let command = Cli::command();
    let args = machat::internal::cli::accept_single_dash(&command, std::env::args_os());
    let cli = match command.try_get_matches_from(args).and_then(|matches| Cli::from_arg_matches(&matches)) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match run(cli) {
        Ok(Ending::ServerClosed(why)) => {
            eprintln!("server closed the connection{why}");
            std::process::exit(1);
        }
        Ok(Ending::InputEnded) => {}
        Err(error) => {
            eprintln!("ws_client: {error}");
            std::process::exit(1);
        }
    }
}

/// How a session ended.
enum Ending {
    /// The server closed first; the text says how.
    ServerClosed(String),
    /// Stdin ended and the close handshake finished.
    InputEnded,
}

fn run(cli: Cli) -> Result<Ending, String> {
    let name = cli.client.clone().unwrap_or_else(random_name);
    let target = Target::parse(&cli.address, cli.origin.as_deref())?;
    if target.secure {
        let config = tls::client_config(cli.ca.as_deref(), &[b"http/1.1"])?;
        let stream = tls::connect(&target.host, target.port, config)?;
        let security = tls::describe(&stream.conn);
        let ws = upgrade(target.request, stream)?;
        join_and_chat(ws, &cli, &name, &format!("{} ({security})", cli.address))
    } else {
        if cli.ca.is_some() {
            return Err("--ca is for wss:// addresses".into());
        }
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .map_err(|error| format!("cannot connect to {}: {error}", cli.address))?;
        let _ = stream.set_nodelay(true);
        let ws = upgrade(target.request, stream)?;
        join_and_chat(ws, &cli, &name, &cli.address)
    }
}

/// Sends the handshake, then chats until one side closes.
fn join_and_chat<S: Transport>(
    mut ws: WebSocket<S>,
    cli: &Cli,
    name: &str,
    on: &str,
) -> Result<Ending, String> {
    // The handshake: one text message, no newline, as the original sends it.
    let handshake = serde_json::json!({ "name": name, "room": cli.room }).to_string();
    ws.send(Message::text(handshake)).map_err(|error| format!("cannot send the handshake: {error}"))?;
    eprintln!("joined room {:?} as {name:?} on {on}", cli.room);
    chat(&mut ws, typed_lines())
}

/// Where to connect, and the upgrade request to send there.
struct Target {
    request: Request,
    host: String,
    port: u16,
    /// wss://: TLS first.
    secure: bool,
}

impl Target {
    fn parse(address: &str, origin: Option<&str>) -> Result<Target, String> {
        let mut request =
            address.into_client_request().map_err(|error| format!("bad address {address}: {error}"))?;
        let uri = request.uri().clone();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(format!("only ws:// and wss:// addresses are supported, not {address}")),
        };
        let host = uri.host().ok_or_else(|| format!("no host in {address}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let origin = match origin {
            Some(origin) => origin.to_owned(),
            // What a browser on the server's own chat page sends.
            None if secure => {
                format!("https://{}/", uri.authority().map_or(host.as_str(), |authority| authority.as_str()))
            }
            None => DEFAULT_ORIGIN.to_owned(),
        };
        let origin = origin.parse().map_err(|_| format!("bad origin {origin:?}"))?;
        request.headers_mut().insert("Origin", origin);
        Ok(Target { request, host, port, secure })
    }
}

/// What a WebSocket runs over: plain TCP, or TLS over TCP. Either way the
/// TCP stream underneath gets the read timeout.
trait Transport: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for tls::TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// Upgrades the connection with `request` (its Origin already set).
fn upgrade<S: Transport>(request: Request, stream: S) -> Result<WebSocket<S>, String> {
    let (ws, _response) =
        tungstenite::client(request, stream).map_err(|error| format!("WebSocket upgrade failed: {error}"))?;
    // Reads wake up now and then so typed lines are sent promptly.
    ws.get_ref().tcp().set_read_timeout(Some(POLL)).map_err(|error| error.to_string())?;
    Ok(ws)
}

/// Stdin lines, read on their own thread; the channel closes at the end
/// of input.
fn typed_lines() -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Sends typed lines and prints arriving messages until one side closes.
fn chat<S: Transport>(ws: &mut WebSocket<S>, typed: Receiver<String>) -> Result<Ending, String> {
    let mut received = Vec::new();
    let mut input_open = true;
    loop {
        // Send whatever has been typed, each line as `line\n`.
        while input_open {
            match typed.try_recv() {
                Ok(line) => {
                    let line = line.strip_suffix('\r').unwrap_or(&line);
                    ws.send(Message::text(format!("{line}\n")))
                        .map_err(|error| format!("cannot send: {error}"))?;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    input_open = false;
                    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
                    ws.close(Some(bye)).map_err(|error| format!("cannot close: {error}"))?;
                }
            }
        }
        match ws.read() {
            Ok(Message::Text(text)) => print_lines(&mut received, text.as_bytes()),
            Ok(Message::Binary(data)) => print_lines(&mut received, &data),
            Ok(Message::Close(frame)) => {
                print_rest(&mut received);
                if !input_open {
                    // The server's answer to our Close: finish the handshake.
                    continue;
                }
                let why = frame.map_or_else(String::new, |frame| {
                    format!(" (code {}: {})", u16::from(frame.code), frame.reason)
                });
                return Ok(Ending::ServerClosed(why));
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Err(tungstenite::Error::Io(error))
                if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            // Over TLS, a server that closes without close_notify: still a close.
            Err(tungstenite::Error::Io(error))
                if error.kind() == io::ErrorKind::UnexpectedEof && !input_open =>
            {
                return Ok(Ending::InputEnded);
            }
            Err(tungstenite::Error::ConnectionClosed) if !input_open => return Ok(Ending::InputEnded),
            Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
                print_rest(&mut received);
                return Ok(Ending::ServerClosed(String::new()));
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                print_rest(&mut received);
                return Ok(Ending::ServerClosed(String::new()));
            }
            Err(error) => {
                print_rest(&mut received);
                return Ok(Ending::ServerClosed(format!(" ({error})")));
            }
        }
    }
}

/// Appends `bytes` to the stream received so far and prints every
/// complete line, as the original splits its input at `\n`.
fn print_lines(received: &mut Vec<u8>, bytes: &[u8]) {
    received.extend_from_slice(bytes);
    let Some(last_newline) = received.iter().rposition(|&byte| byte == b'\n') else { return };
    let mut stdout = io::stdout().lock();
    for line in received[..last_newline].split(|&byte| byte == b'\n') {
        let _ = writeln!(stdout, "{}", String::from_utf8_lossy(line));
    }
    let _ = stdout.flush();
    received.drain(..=last_newline);
}

/// Prints a last line that never got its `\n`.
fn print_rest(received: &mut Vec<u8>) {
    if !received.is_empty() {
        println!("{}", String::from_utf8_lossy(received));
        received.clear();
    }
}
