//! Why a connection is refused or ended with an error: one type that knows
//! its reason text (what the client reads after `error: `), its WebSocket
//! close code, its HTTP status when it must be said as HTTP, and the label
//! it is counted under in `/metrics`. A new failure is one more variant,
//! and the compiler points at every place that must say something about it.

use std::fmt;

use crate::handshake::{HandshakeError, HandshakeReason};
use crate::http::{HttpError, Response};
use crate::websocket::{WsError, close_code};

/// A failure that ends a connection, with an error sent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The join handshake was refused or did not finish in time.
    Handshake(HandshakeError),
    /// A TCP line longer than `--max-line`.
    LineTooLong { max_line: usize },
    /// The WebSocket session broke the protocol or a limit.
    WebSocket(WsError),
    /// An HTTP request on the WebSocket port that cannot be served.
    Http(HttpError),
    /// `--max-connections` are already connected.
    ServerFull,
    /// The member stopped reading while its room waited, or its queue
    /// passed `--max-pending`.
    SlowConsumer,
    /// A WebSocket peer answered no ping for a whole interval.
    PingTimeout,
    /// Cluster mode: another node took this member's name while this node
    /// could not reach Redis.
    NameTakenElsewhere,
}

impl Failure {
    /// The close code a WebSocket client gets after the error text.
    pub fn close_code(&self) -> u16 {
        match self {
            Failure::Handshake(HandshakeError::TooLarge) => close_code::TOO_BIG,
            Failure::LineTooLong { .. } => close_code::TOO_BIG,
            Failure::WebSocket(error) => error.close_code(),
            Failure::Handshake(_)
            | Failure::Http(_)
            | Failure::ServerFull
            | Failure::SlowConsumer
            | Failure::NameTakenElsewhere => close_code::POLICY,
            Failure::PingTimeout => close_code::UNEXPECTED,
        }
    }

    /// The response a connection still speaking HTTP gets.
    pub fn http_response(&self) -> Response {
        match self {
            Failure::Http(error) => error.response(),
            Failure::ServerFull => Response::text(503, "server full"),
            Failure::Handshake(HandshakeError::TimedOut) => {
                Response::text(408, "request not received in time")
            }
            other => Response::text(400, &other.to_string()),
        }
    }

    /// The `machat_handshake_errors_total` reason it counts under, if any.
    pub fn handshake_reason(&self) -> Option<HandshakeReason> {
        match self {
            Failure::Handshake(error) => Some(error.reason()),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Handshake(error) => error.fmt(f),
            Failure::LineTooLong { max_line } => write!(f, "line longer than {max_line} bytes"),
            Failure::WebSocket(error) => error.fmt(f),
            Failure::Http(error) => f.write_str(&error.message),
            Failure::ServerFull => f.write_str("server full"),
            Failure::SlowConsumer => f.write_str("slow consumer"),
            Failure::PingTimeout => f.write_str("ping timeout"),
            Failure::NameTakenElsewhere => f.write_str("name taken elsewhere"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<HandshakeError> for Failure {
    fn from(error: HandshakeError) -> Self {
        Failure::Handshake(error)
    }
}

impl From<WsError> for Failure {
    fn from(error: WsError) -> Self {
        Failure::WebSocket(error)
    }
}

impl From<HttpError> for Failure {
    fn from(error: HttpError) -> Self {
        Failure::Http(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_knows_its_code_and_label() {
        let too_large = Failure::Handshake(HandshakeError::TooLarge);
        assert_eq!(too_large.close_code(), close_code::TOO_BIG);
        assert_eq!(too_large.handshake_reason().map(HandshakeReason::label), Some("too_large"));
        assert_eq!(too_large.to_string(), "handshake is larger than 4096 bytes");
        let long_line = Failure::LineTooLong { max_line: 10 };
        assert_eq!((long_line.close_code(), long_line.handshake_reason()), (close_code::TOO_BIG, None));
        assert_eq!(long_line.to_string(), "line longer than 10 bytes");
        assert_eq!(Failure::WebSocket(WsError::InvalidUtf8).close_code(), close_code::INVALID_DATA);
        assert_eq!(Failure::ServerFull.http_response().status, 503);
        assert_eq!(Failure::Handshake(HandshakeError::TimedOut).http_response().status, 408);
    }
}
