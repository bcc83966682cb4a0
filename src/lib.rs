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
//! The public API is [`Server`], [`Config`] (with [`ConfigError`]),
//! [`Handle`] and [`Stats`]. Everything else is internal; benches and fuzz
//! targets reach the socket-free parts through [`internal`], which is not
//! a promise.
//!
//! Where things live: `reactor/` moves bytes and events (the only code
//! that touches sockets); `session/` is one connection's life as a
//! socket-free state machine that returns effects; `handshake`,
//! `line_framing`, `websocket` and `http` turn bytes into meaning under one
//! parsing contract (`parse`), as `cluster::resp` does for Redis's
//! replies; `failure` is why a connection ends; `rooms` is who is where;
//! `output` encodes a message once and queues it per connection; `pages`
//! renders the HTTP pages; `stats` counts.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The public API lives in these, and must be documented.
mod config;
mod server;
mod stats;

// Internal: documented for the reader, but not every field is a promise.
#[allow(missing_docs)]
mod cluster;
#[allow(missing_docs)]
mod failure;
#[allow(missing_docs)]
mod flow;
#[allow(missing_docs)]
mod handshake;
#[allow(missing_docs)]
mod history;
#[allow(missing_docs)]
mod http;
#[allow(missing_docs)]
mod line_framing;
#[allow(missing_docs)]
mod names;
mod operator;
#[allow(missing_docs)]
mod output;
mod pages;
#[allow(missing_docs)]
mod parse;
mod reactor;
#[allow(missing_docs)]
mod rooms;
#[allow(missing_docs)]
mod sanitize;
#[allow(missing_docs)]
mod session;
#[allow(missing_docs)]
mod tls;
#[allow(missing_docs)]
mod websocket;

pub use config::{Config, ConfigError};
pub use server::{Handle, Server};
pub use stats::Stats;

/// Internal modules, exposed for the benches, the fuzz targets and the
/// example clients only. Not part of the API: anything here may change in
/// any release.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod internal {
    pub mod cli;

    pub mod cluster {
        pub use crate::cluster::*;
    }
    pub mod failure {
        pub use crate::failure::*;
    }
    pub mod flow {
        pub use crate::flow::*;
    }
    pub mod handshake {
        pub use crate::handshake::*;
    }
    pub mod history {
        pub use crate::history::*;
    }
    pub mod http {
        pub use crate::http::*;
    }
    pub mod line_framing {
        pub use crate::line_framing::*;
    }
    pub mod output {
        pub use crate::output::*;
    }
    pub mod parse {
        pub use crate::parse::*;
    }
    pub mod names {
        pub use crate::names::*;
    }
    pub mod rooms {
        pub use crate::rooms::*;
    }
    pub mod sanitize {
        pub use crate::sanitize::*;
    }
    pub mod session {
        pub use crate::session::*;
    }
    pub mod tls {
        pub use crate::tls::*;
    }
    pub mod websocket {
        pub use crate::websocket::*;
    }
}
