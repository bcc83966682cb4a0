//! HTTP on the WebSocket port, with no sockets in it: reading a request
//! head, deciding what it gets, and encoding the response.
//!
//! [`parse_request`] keeps the parsing contract of [`crate::parse`], and
//! like `httparse` itself it is stateless: give it everything received so
//! far and it answers `Partial` (send more), a complete request borrowed
//! from the buffer, or an [`HttpError`] with its status. [`route`] then
//! turns a request into a WebSocket upgrade, one of the server's pages (the
//! chat page, metrics, health), or an error; a new page is one more arm of
//! its match.

use std::fmt::{self, Write as _};

use crate::parse::{Parsed, Status};

/// Request heads larger than this get 431.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 64;

/// A parsed request head, borrowing from the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Minor version: `1` for HTTP/1.1.
    pub version: u8,
    pub upgrade: Option<&'a str>,
    pub connection: Option<&'a str>,
    pub websocket_key: Option<&'a str>,
    pub websocket_version: Option<&'a str>,
    pub origin: Option<&'a str>,
}

/// A request that cannot be served: the status and a one-line reason,
/// sent as a plain-text response before the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
    /// A header the response must carry (`Allow` with 405, say).
    header: Option<(&'static str, &'static str)>,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError { status, message: message.into(), header: None }
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.header = Some((name, value));
        self
    }

    fn headers_too_large() -> Self {
        HttpError::new(431, format!("request headers larger than {MAX_REQUEST_HEAD} bytes"))
    }

    /// The response that says so.
    pub fn response(&self) -> Response {
        let response = Response::text(self.status, &self.message);
        match self.header {
            Some((name, value)) => response.with_header(name, value),
            None => response,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}

impl std::error::Error for HttpError {}

/// Reads a request head from the start of `buffer`. `consumed` is the
/// head's length; bytes after it belong to whatever follows (WebSocket
/// frames after an upgrade, or a pipelined request).
pub fn parse_request(buffer: &[u8]) -> Parsed<Request<'_>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) if len > MAX_REQUEST_HEAD => Err(HttpError::headers_too_large()),
        Ok(httparse::Status::Complete(len)) => {
            let header = |name: &str| {
                request
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case(name))
                    .and_then(|header| std::str::from_utf8(header.value).ok())
                    .map(str::trim)
            };
            let request = Request {
                method: request.method.unwrap_or_default(),
                path: request.path.unwrap_or_default(),
                version: request.version.unwrap_or_default(),
                upgrade: header("Upgrade"),
                connection: header("Connection"),
                websocket_key: header("Sec-WebSocket-Key"),
                websocket_version: header("Sec-WebSocket-Version"),
                origin: header("Origin"),
            };
            Ok(Status::Complete { value: request, consumed: len })
        }
        Ok(httparse::Status::Partial) if buffer.len() >= MAX_REQUEST_HEAD => {
            Err(HttpError::headers_too_large())
        }
        Ok(httparse::Status::Partial) => Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::headers_too_large()),
        Err(error) => Err(HttpError::new(400, format!("not a valid HTTP request: {error}"))),
    }
}

/// The parts of the configuration that routing needs.
#[derive(Debug, Clone, Copy)]
pub struct Routes<'a> {
    pub websocket_path: &'a str,
    /// Origins allowed to open a WebSocket; empty allows every origin.
    pub allowed_origins: &'a [String],
}

/// The pages the server serves besides the WebSocket endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/`: the browser chat page.
    Chat,
    /// `/metrics`: counters in Prometheus text format.
    Metrics,
    /// `/healthz`: `ok`.
    Health,
}

/// What a request gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Switch to WebSocket; the 101 response is in `response`.
    Upgrade { response: Response },
    /// Serve a page (the caller renders it; a HEAD request gets no body).
    Page(Page),
    /// Answer with an error and close.
    Refuse(HttpError),
}

impl Request<'_> {
    /// Whether the client wants the connection kept open after the
    /// response (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        match self.connection {
            Some(value) if has_token(value, "close") => false,
            Some(value) if has_token(value, "keep-alive") => true,
            _ => self.version >= 1,
        }
    }

    /// Whether only the head of the response is wanted.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Decides what a complete request gets.
pub fn route(request: &Request<'_>, routes: Routes<'_>) -> Route {
    let path = request.path.split('?').next().unwrap_or_default();
    let page = match path {
        "/" => Some(Page::Chat),
        "/metrics" => Some(Page::Metrics),
        "/healthz" => Some(Page::Health),
        _ => None,
    };
    if let Some(page) = page.filter(|_| path != routes.websocket_path) {
        return match request.method {
            "GET" | "HEAD" => Route::Page(page),
            _ => Route::Refuse(
                HttpError::new(405, "only GET and HEAD are allowed here").with_header("Allow", "GET, HEAD"),
            ),
        };
    }
    if path != routes.websocket_path {
        return Route::Refuse(HttpError::new(404, format!("no such path: {path}")));
    }
    if request.method != "GET" {
        return Route::Refuse(HttpError::new(405, "only GET is allowed here").with_header("Allow", "GET"));
    }
    let upgrade_asked = request.upgrade.is_some_and(|value| has_token(value, "websocket"))
        && request.connection.is_some_and(|value| has_token(value, "upgrade"));
    if !upgrade_asked || request.version < 1 {
        return Route::Refuse(HttpError::new(
            400,
            format!("{} takes WebSocket upgrade requests only", routes.websocket_path),
        ));
    }
    if let Some(origin) = request.origin {
        let allowed = routes.allowed_origins.is_empty()
            || routes.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin));
        if !allowed {
            return Route::Refuse(HttpError::new(403, format!("origin {origin} is not allowed")));
        }
    }
    if request.websocket_version != Some("13") {
        return Route::Refuse(
            HttpError::new(400, "unsupported Sec-WebSocket-Version: 13 is required")
                .with_header("Sec-WebSocket-Version", "13"),
        );
    }
    let Some(key) = request.websocket_key.filter(|key| key.len() == 24) else {
        return Route::Refuse(HttpError::new(400, "missing or malformed Sec-WebSocket-Key"));
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Route::Upgrade {
        response: Response::new(101)
            .with_header("Upgrade", "websocket")
            .with_header("Connection", "Upgrade")
            .with_header("Sec-WebSocket-Accept", &accept),
    }
}

/// Whether a comma-separated header value contains `token` (any case).
fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// An HTTP response, encoded whole into the output buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response { status, headers: String::new(), body: Vec::new() }
    }

    /// A plain-text response whose body is `message` and a newline.
    pub fn text(status: u16, message: &str) -> Self {
        let mut body = message.as_bytes().to_vec();
        body.push(b'\n');
        Response::new(status).with_header("Content-Type", "text/plain; charset=utf-8").with_body(body)
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Appends the response to `out`, saying whether the connection stays
    /// open after it. A response to HEAD (`head_only`) has no body.
    pub fn encode(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        let mut head = format!("HTTP/1.1 {} {}\r\n{}", self.status, reason(self.status), self.headers);
        if self.status != 101 {
            let connection = if keep_alive { "keep-alive" } else { "close" };
            let _ = write!(head, "Content-Length: {}\r\nConnection: {connection}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        408 => "Request Timeout",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /mychat HTTP/1.1\r\nHost: localhost:8099\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Origin: http://localhost:8099/\r\n\r\n";

    fn routes(allowed_origins: &[String]) -> Routes<'_> {
        Routes { websocket_path: "/mychat", allowed_origins }
    }

    fn complete(bytes: &[u8]) -> Request<'_> {
        match parse_request(bytes) {
            Ok(Status::Complete { value, .. }) => value,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn status(route: Route) -> u16 {
        match route {
            Route::Upgrade { response } => response.status,
            Route::Refuse(error) => error.status,
            Route::Page(_) => 200,
        }
    }

    fn refused_with(parsed: Parsed<Request<'_>, HttpError>) -> u16 {
        match parsed {
            Err(error) => error.status,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn upgrade_gets_the_rfc_accept_key() {
        let Route::Upgrade { response } = route(&complete(UPGRADE), routes(&[])) else {
            panic!("expected an upgrade");
        };
        let mut out = Vec::new();
        response.encode(&mut out, true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        // The example key and answer from RFC 6455 §1.3.
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn every_prefix_of_a_request_is_partial() {
        for end in 0..UPGRADE.len() {
            assert_eq!(parse_request(&UPGRADE[..end]), Ok(Status::Partial), "prefix of {end} bytes");
        }
        let mut with_frame = UPGRADE.to_vec();
        with_frame.extend_from_slice(b"\x81\x80");
        assert!(
            matches!(parse_request(&with_frame), Ok(Status::Complete { consumed, .. }) if consumed == UPGRADE.len())
        );
    }

    #[test]
    fn wrong_path_method_origin_and_garbage_are_refused() {
        let other_path = b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status(route(&complete(other_path), routes(&[]))), 404);
        let post = b"POST /mychat HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status(route(&complete(post), routes(&[]))), 405);
        let plain_get = b"GET /mychat HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status(route(&complete(plain_get), routes(&[]))), 400);
        let allowed = ["http://example.com".to_string()];
        assert_eq!(status(route(&complete(UPGRADE), routes(&allowed))), 403);
        let allowed = ["HTTP://localhost:8099/".to_string()];
        assert_eq!(status(route(&complete(UPGRADE), routes(&allowed))), 101);
        assert_eq!(refused_with(parse_request(b"{\"name\":\"Mina\"}\n")), 400);
    }

    #[test]
    fn pages_answer_get_and_head_only() {
        let get = |path: &str, method: &str| {
            let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            let route = route(&complete(raw.as_bytes()), routes(&[]));
            match route {
                Route::Page(page) => Ok(page),
                Route::Upgrade { response } => Err(response.status),
                Route::Refuse(error) => Err(error.status),
            }
        };
        assert_eq!(get("/", "GET"), Ok(Page::Chat));
        assert_eq!(get("/?room=dev", "HEAD"), Ok(Page::Chat));
        assert_eq!(get("/metrics", "GET"), Ok(Page::Metrics));
        assert_eq!(get("/healthz", "GET"), Ok(Page::Health));
        assert_eq!(get("/metrics", "POST"), Err(405));
        assert_eq!(get("/nope", "GET"), Err(404));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let keep = |raw: &[u8]| complete(raw).keep_alive();
        assert!(keep(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn head_responses_have_no_body_but_its_length() {
        let mut out = Vec::new();
        Response::text(200, "ok").encode(&mut out, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Length: 3\r\nConnection: close\r\n\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn oversized_heads_get_431() {
        let mut big = b"GET /mychat HTTP/1.1\r\nX-Filler: ".to_vec();
        big.resize(MAX_REQUEST_HEAD + 1, b'a');
        assert_eq!(refused_with(parse_request(&big)), 431);
        let mut many = b"GET /mychat HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(refused_with(parse_request(&many)), 431);
    }
}
