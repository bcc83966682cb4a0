//! The one contract every parser in machat keeps, in the shape `httparse`
//! made familiar: give it the bytes that arrived and it answers
//!
//! - `Ok(Status::Complete { value, consumed })`: one thing is complete, and
//!   the first `consumed` bytes of this input were its (or were taken into
//!   the parser's own buffer on the way to it); the caller goes on with the
//!   rest, which may hold the next thing;
//! - `Ok(Status::Partial)`: nothing is complete yet;
//! - `Err(error)`: the input is wrong, and the error says why.
//!
//! The handshake scanner and the WebSocket session are incremental: on
//! `Partial` they have taken every byte given and keep what they need, so
//! the caller simply feeds what arrives next. [`http::parse_request`] is
//! stateless, like `httparse` itself: on `Partial` the caller keeps the
//! bytes and calls again with more.
//!
//! [`http::parse_request`]: crate::http::parse_request

/// Whether a parser finished something; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status<T> {
    /// `value` is complete; `consumed` bytes of the input were taken.
    Complete { value: T, consumed: usize },
    /// Nothing is complete yet.
    Partial,
}

/// What every parser returns.
pub type Parsed<T, E> = Result<Status<T>, E>;
