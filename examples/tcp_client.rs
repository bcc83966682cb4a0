//! An interactive TCP chat client for machat, the counterpart of the
//! original MaChat's example TCP client.
//!
//! ```text
//! cargo run --example tcp_client -- -client Mina -room dev -address localhost:8989
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

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, FromArgMatches, Parser};

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
    /// The server's TCP address
    #[arg(long, value_name = "HOST:PORT", default_value = "localhost:8989")]
    address: String,
}

fn main() -> ExitCode {
    let command = Args::command();
    let argv = machat::internal::cli::accept_single_dash(&command, std::env::args_os());
    let args = match command.try_get_matches_from(argv).and_then(|matches| Args::from_arg_matches(&matches)) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    let name = args.client.unwrap_or_else(random_user_name);
    match chat(&name, &args.room, &args.address) {
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
