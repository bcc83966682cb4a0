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

use crate::operator::{self, OperatorView};
use crate::parse::{Parsed, Status};

/// Request heads larger than this get 431.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Most header lines accepted in one request; more get 431.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head, borrowing from the receive buffer.
///
/// Only requests whose end is certain get this far: a head with a bare CR
/// or obsolete line folding, repeated or conflicting `Content-Length` and
/// `Transfer-Encoding`, or a GET or HEAD with a body is refused by
/// [`parse_request`], so no byte of a body is ever read as a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The target in origin form (`/path?query`); an absolute-form target
    /// (`http://host/path`, RFC 9112 §3.2.2) is reduced to its path.
    pub path: &'a str,
    /// Minor version: `1` for HTTP/1.1.
    pub version: u8,
    pub upgrade: Option<&'a str>,
    pub connection: Option<&'a str>,
    pub websocket_key: Option<&'a str>,
    pub websocket_version: Option<&'a str>,
    /// The first `Origin` header.
    pub origin: Option<&'a str>,
    /// More than one `Origin` header came: which one a check would look at
    /// is anyone's guess, so the request is refused.
    pub repeated_origin: bool,
    /// The first `Authorization` header (the operator views need one).
    pub authorization: Option<&'a str>,
    /// More than one `Authorization` header came (refused, as for `Origin`).
    pub repeated_authorization: bool,
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

    pub(crate) fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.header = Some((name, value));
        self
    }

    fn headers_too_large() -> Self {
        HttpError::new(431, format!("request headers larger than {MAX_REQUEST_HEAD} bytes"))
    }

    fn too_many_headers() -> Self {
        HttpError::new(431, format!("more than {MAX_HEADERS} header lines"))
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
            let method = request.method.unwrap_or_default();
            let framing = Framing::of(request.headers)?;
            if matches!(method, "GET" | "HEAD") && framing.has_body() {
                return Err(HttpError::new(
                    400,
                    format!("a {method} request must not have a body ({framing})"),
                ));
            }
            let header = |name: &str| {
                request
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case(name))
                    .and_then(|header| std::str::from_utf8(header.value).ok())
                    .map(str::trim)
            };
            let count = |name: &str| {
                request.headers.iter().filter(|header| header.name.eq_ignore_ascii_case(name)).count()
            };
            let request = Request {
                method,
                path: origin_form(request.path.unwrap_or_default()),
                version: request.version.unwrap_or_default(),
                upgrade: header("Upgrade"),
                connection: header("Connection"),
                websocket_key: header("Sec-WebSocket-Key"),
                websocket_version: header("Sec-WebSocket-Version"),
                origin: header("Origin"),
                repeated_origin: count("Origin") > 1,
                authorization: header("Authorization"),
                repeated_authorization: count("Authorization") > 1,
            };
            Ok(Status::Complete { value: request, consumed: len })
        }
        Ok(httparse::Status::Partial) if buffer.len() >= MAX_REQUEST_HEAD => {
            Err(HttpError::headers_too_large())
        }
        Ok(httparse::Status::Partial) => Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::too_many_headers()),
        Err(error) => Err(diagnose(buffer)
            .unwrap_or_else(|| HttpError::new(400, format!("not a valid HTTP request: {error}")))),
    }
}

/// How a request says where its body ends: `Content-Length`,
/// `Transfer-Encoding`, or neither (no body). Anything that leaves room for
/// two readings is refused (RFC 9112 §6.3): a body whose end two parsers
/// could see in different places is how requests are smuggled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl Framing {
    fn of(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
        let mut length = None;
        let mut transfer_encoding = false;
        for header in headers {
            if header.name.eq_ignore_ascii_case("Content-Length") {
                if length.is_some() {
                    return Err(HttpError::new(400, "more than one Content-Length header"));
                }
                length = Some(parse_length(header.value)?);
            } else if header.name.eq_ignore_ascii_case("Transfer-Encoding") {
                if transfer_encoding {
                    return Err(HttpError::new(400, "more than one Transfer-Encoding header"));
                }
                transfer_encoding = true;
            }
        }
        match (length, transfer_encoding) {
            (Some(_), true) => Err(HttpError::new(
                400,
                "both Content-Length and Transfer-Encoding: where the request ends is ambiguous",
            )),
            (None, true) => Ok(Framing::Chunked),
            (Some(length), false) => Ok(Framing::Length(length)),
            (None, false) => Ok(Framing::None),
        }
    }

    fn has_body(self) -> bool {
        !matches!(self, Framing::None | Framing::Length(0))
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framing::None => f.write_str("no body"),
            Framing::Length(length) => write!(f, "Content-Length: {length}"),
            Framing::Chunked => f.write_str("Transfer-Encoding"),
        }
    }
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6), no list.
fn parse_length(value: &[u8]) -> Result<u64, HttpError> {
    let value = value.trim_ascii();
    let digits = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
    std::str::from_utf8(value)
        .ok()
        .filter(|_| digits)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| HttpError::new(400, "invalid Content-Length header"))
}

/// Why httparse refused a head, when it is one of the ambiguities that
/// requests are smuggled with: a CR not followed by LF, or a header line
/// that starts with a space or tab (obsolete line folding, RFC 9112 §5.2).
/// httparse refuses both, but calls them an invalid header name or value.
fn diagnose(buffer: &[u8]) -> Option<HttpError> {
    let head = &buffer[..buffer.len().min(MAX_REQUEST_HEAD)];
    for (index, pair) in head.windows(2).enumerate() {
        match pair {
            [b'\r', next] if *next != b'\n' => {
                return Some(HttpError::new(400, "a CR not followed by LF in the request head"));
            }
            // A line after the request line that starts with blank space.
            [b'\n', b' ' | b'\t'] => {
                return Some(HttpError::new(
                    400,
                    "obsolete line folding (a header line starting with a space or tab) is not allowed",
                ));
            }
            // The empty line: the head ended before anything ambiguous.
            [b'\n', b'\n'] => return None,
            [b'\n', b'\r'] if head.get(index + 2) == Some(&b'\n') => return None,
            _ => {}
        }
    }
    None
}

/// The origin form of a request target: an absolute-form target
/// (`http://host:port/path?query`) becomes `/path?query`, or `/` when it
/// has no path. Anything else is returned as it is.
fn origin_form(target: &str) -> &str {
    let Some((scheme, rest)) = target.split_once("://") else { return target };
    let is_scheme = scheme.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !is_scheme {
        return target;
    }
    match rest.find(['/', '?', '#']) {
        Some(start) if rest[start..].starts_with('/') => &rest[start..],
        _ => "/",
    }
}

/// The parts of the configuration that routing needs.
#[derive(Debug, Clone, Copy)]
pub struct Routes<'a> {
    pub websocket_path: &'a str,
    /// Origins allowed to open a WebSocket; empty allows every origin.
    pub allowed_origins: &'a [String],
    /// `--operator-token`: the operator views exist only when it is set.
    pub operator_token: Option<&'a str>,
    /// `--history`: the most lines a history view can ask for.
    pub max_history: usize,
}

/// The pages the server serves besides the WebSocket endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// `/`: the browser chat page.
    Chat,
    /// `/metrics`: counters in Prometheus text format.
    Metrics,
    /// `/healthz`: `ok`.
    Health,
    /// `/rooms...`: an operator view, already authorised.
    Operator(OperatorView),
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
    if request.repeated_origin {
        return Route::Refuse(HttpError::new(403, "more than one Origin header"));
    }
    let path = request.path.split('?').next().unwrap_or_default();
    if operator::is_operator_path(path) && path != routes.websocket_path {
        return match operator::route(request, routes.operator_token, routes.max_history) {
            Ok(view) => Route::Page(Page::Operator(view)),
            Err(error) => Route::Refuse(error),
        };
    }
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
    let Some(key) = request.websocket_key else {
        return Route::Refuse(HttpError::new(400, "missing Sec-WebSocket-Key"));
    };
    if !is_websocket_key(key) {
        return Route::Refuse(HttpError::new(
            400,
            "Sec-WebSocket-Key must be the base64 encoding of 16 bytes",
        ));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Route::Upgrade {
        response: Response::new(101)
            .with_header("Upgrade", "websocket")
            .with_header("Connection", "Upgrade")
            .with_header("Sec-WebSocket-Accept", &accept),
    }
}

/// Whether `key` is 16 bytes in base64 (RFC 6455 §4.1): 22 characters of
/// the base64 alphabet, the last of which carries only 2 bits, then `==`.
fn is_websocket_key(key: &str) -> bool {
    let Some((encoded, padding)) = key.as_bytes().split_at_checked(22) else { return false };
    let alphabet = |byte: &u8| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/');
    // The last character's low 4 bits pad the 128 bits out to 132: zero.
    padding == b"==" && encoded.iter().all(alphabet) && b"AQgw".contains(&encoded[21])
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
        401 => "Unauthorized",
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
        Routes { websocket_path: "/mychat", allowed_origins, operator_token: None, max_history: 100 }
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

    fn refusal(parsed: Parsed<Request<'_>, HttpError>) -> (u16, String) {
        match parsed {
            Err(error) => (error.status, error.message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn more_than_64_header_lines_are_named_as_such() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(refusal(parse_request(&many)), (431, "more than 64 header lines".to_owned()));
    }

    #[test]
    fn a_get_or_head_with_a_body_is_refused() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /",
                "a GET request must not have a body (Content-Length: 5)",
            ),
            (
                b"HEAD / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
                "a HEAD request must not have a body (Content-Length: 1)",
            ),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "a GET request must not have a body (Transfer-Encoding)",
            ),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
                "a GET request must not have a body (Transfer-Encoding)",
            ),
        ];
        for (raw, reason) in cases {
            assert_eq!(
                refusal(parse_request(raw)),
                (400, (*reason).to_owned()),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let empty = complete(b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(empty.path, "/healthz");
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                "more than one Content-Length header",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
                "more than one Content-Length header",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "more than one Transfer-Encoding header",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both Content-Length and Transfer-Encoding: where the request ends is ambiguous",
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", "invalid Content-Length header"),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "invalid Content-Length header"),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "invalid Content-Length header",
            ),
        ];
        for (raw, reason) in cases {
            assert_eq!(
                refusal(parse_request(raw)),
                (400, (*reason).to_owned()),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn folding_and_bare_cr_are_named() {
        let folding = "obsolete line folding (a header line starting with a space or tab) is not allowed";
        let bare_cr = "a CR not followed by LF in the request head";
        let cases: &[(&[u8], &str)] = &[
            (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", folding),
            (b"GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n", folding),
            (b"GET / HTTP/1.1\r\n X-A: a\r\n\r\n", folding),
            (b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", bare_cr),
            (b"GET / HTTP/1.1\rX-A: a\r\n\r\n", bare_cr),
            (b"GET / HTTP/1.1\r\nX-A: a\r\r\n\r\n", bare_cr),
            (b"GET / HTTP/1.1\r\nX-A: a\r\n\r\r\n", bare_cr),
        ];
        for (raw, reason) in cases {
            assert_eq!(
                refusal(parse_request(raw)),
                (400, (*reason).to_owned()),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // Other malformed heads keep httparse's word for it.
        let (status, reason) = refusal(parse_request(b"GET / HTTP/1.1\r\nX A: b\r\n\r\n"));
        assert_eq!((status, reason.as_str()), (400, "not a valid HTTP request: invalid header name"));
    }

    #[test]
    fn absolute_form_targets_are_served() {
        for (target, path) in [
            ("http://localhost:8099/healthz", "/healthz"),
            ("HTTP://h/metrics?x=1", "/metrics?x=1"),
            ("https://h", "/"),
            ("http://h?x", "/"),
            ("/healthz", "/healthz"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: other\r\n\r\n");
            assert_eq!(complete(raw.as_bytes()).path, path, "{target}");
        }
        let raw = b"GET http://localhost:8099/healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(route(&complete(raw), routes(&[])), Route::Page(Page::Health));
        let upgrade = String::from_utf8(UPGRADE.to_vec())
            .unwrap()
            .replace("GET /mychat", "GET ws://localhost:8099/mychat");
        assert_eq!(status(route(&complete(upgrade.as_bytes()), routes(&[]))), 101);
    }

    #[test]
    fn websocket_keys_must_be_16_bytes_of_base64() {
        let with_key = |key: &str| {
            let raw = String::from_utf8(UPGRADE.to_vec()).unwrap().replace("dGhlIHNhbXBsZSBub25jZQ==", key);
            match route(&complete(raw.as_bytes()), routes(&[])) {
                Route::Upgrade { response } => Ok(response.status),
                Route::Refuse(error) => Err((error.status, error.message)),
                Route::Page(page) => panic!("{page:?}"),
            }
        };
        assert_eq!(with_key("AAAAAAAAAAAAAAAAAAAAAA=="), Ok(101));
        assert_eq!(with_key("/+/+/+/+/+/+/+/+/+/+/w=="), Ok(101));
        let malformed = Err((400, "Sec-WebSocket-Key must be the base64 encoding of 16 bytes".to_owned()));
        for key in [
            "dGhlIHNhbXBsZSBub25jZQ",    // no padding
            "dGhlIHNhbXBsZSBub25jZQ=",   // short
            "dGhlIHNhbXBsZSBub25jZQ===", // long
            "dGhlIHNhbXBsZSBub25jZ!==",  // not base64
            "dGhlIHNhbXBsZSBub25jZR==",  // bits past the 16 bytes
            "dGhlIHNhbXBsZSBub25jZQ==x",
            "dGhlIHNhbXBsZSBub25j====", // 15 bytes
            "MTIzNDU2Nzg5MDEyMzQ1Njc=", // 17 bytes
            "",
        ] {
            assert_eq!(with_key(key), malformed, "{key:?}");
        }
        let raw = String::from_utf8(UPGRADE.to_vec())
            .unwrap()
            .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(status(route(&complete(raw.as_bytes()), routes(&[]))), 400);
    }

    #[test]
    fn repeated_origins_are_refused() {
        let twice = String::from_utf8(UPGRADE.to_vec()).unwrap().replace(
            "Origin: http://localhost:8099/\r\n",
            "Origin: http://localhost:8099/\r\norigin: http://evil/\r\n",
        );
        let request = complete(twice.as_bytes());
        assert!(request.repeated_origin);
        let allowed = ["http://localhost:8099/".to_string()];
        for allowed in [&allowed[..], &[]] {
            let Route::Refuse(error) = route(&request, routes(allowed)) else { panic!("expected a refusal") };
            assert_eq!((error.status, error.message.as_str()), (403, "more than one Origin header"));
        }
        assert!(!complete(UPGRADE).repeated_origin);
    }
}
