//! machat: a chat server speaking the MaChat protocol over TCP and
//! WebSocket, from one single-threaded mio event loop.
//!
//! ```no_run
//! let server = machat::Server::bind(machat::Config::default())?;
//! let handle = server.handle(); // handle.shutdown() from any thread stops it
//! server.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Where things live: [`event_loop`] moves bytes and events;
//! [`connection`] is one client's state machine; [`handshake`],
//! [`line_framing`], [`websocket`] and [`http`] turn bytes into meaning
//! without touching sockets; [`rooms`] is who is where; [`broadcast`]
//! encodes a message once per transport; [`output`] is the per-connection
//! output buffer.

pub mod broadcast;
pub mod cli;
pub mod config;
pub mod connection;
mod event_loop;
pub mod handshake;
pub mod http;
pub mod line_framing;
pub mod names;
pub mod output;
pub mod rooms;
pub mod sanitize;
mod server;
pub mod stats;
pub mod websocket;

pub use config::Config;
pub use server::{Handle, Server};
pub use stats::Stats;
