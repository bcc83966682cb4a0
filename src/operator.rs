//! The operator views on the WebSocket port: `GET /rooms` (every room with
//! members or history) and `GET /rooms/<name>/history` (a room's latest
//! lines, one JSON object per line). Room names and what was said in them
//! are not public: the views exist only when `--operator-token` is set,
//! and answer only requests carrying `Authorization: Bearer <token>`.
//!
//! No sockets here: [`route`] turns a request into an [`OperatorView`] or
//! the error to answer with; [`render_rooms`] and [`render_history`] turn
//! what the reactor looked up into the response.

use serde::Serialize;

use crate::history::LineView;
use crate::http::{HttpError, Request, Response};
use crate::names::{self, Checked};

/// The `/rooms` listing's default and largest length.
pub const DEFAULT_ROOMS_LIMIT: usize = 1000;
pub const MAX_ROOMS_LIMIT: usize = 100_000;

/// A view an authorised operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorView {
    /// `/rooms?limit=N`: rooms with the most members first.
    Rooms { limit: usize },
    /// `/rooms/<name>/history?limit=N&after=SEQ`: the latest `limit` lines,
    /// or, with `after`, up to `limit` lines numbered above it (to page
    /// forward).
    History { room: Checked, limit: usize, after: Option<u64> },
}

/// Whether `path` (without the query) is one of the operator views'.
pub fn is_operator_path(path: &str) -> bool {
    path == "/rooms" || path.starts_with("/rooms/")
}

/// Checks the token, then the path and the query. `token` is
/// `--operator-token`; `max_history` is `--history`, the most lines a
/// history view can hold.
pub fn route(
    request: &Request<'_>,
    token: Option<&str>,
    max_history: usize,
) -> Result<OperatorView, HttpError> {
    let (path, query) = request.path.split_once('?').unwrap_or((request.path, ""));
    // Without a token the views do not exist, and say nothing more.
    let Some(token) = token else {
        return Err(HttpError::new(404, format!("no such path: {path}")));
    };
    if request.repeated_authorization {
        return Err(HttpError::new(400, "more than one Authorization header"));
    }
    if !bearer_matches(request.authorization, token) {
        return Err(HttpError::new(
            401,
            "a valid operator token is required (Authorization: Bearer <token>)",
        )
        .with_header("WWW-Authenticate", "Bearer realm=\"machat\""));
    }
    if !matches!(request.method, "GET" | "HEAD") {
        return Err(
            HttpError::new(405, "only GET and HEAD are allowed here").with_header("Allow", "GET, HEAD")
        );
    }
    let query = Query::parse(query)?;
    if path == "/rooms" {
        query.refuse_after()?;
        let limit = query.limit(DEFAULT_ROOMS_LIMIT, MAX_ROOMS_LIMIT)?;
        return Ok(OperatorView::Rooms { limit });
    }
    let Some(encoded) = path.strip_prefix("/rooms/").and_then(|rest| rest.strip_suffix("/history")) else {
        return Err(HttpError::new(404, format!("no such path: {path}")));
    };
    let name = percent_decode(encoded)
        .ok_or_else(|| HttpError::new(400, "the room name is not valid percent-encoded UTF-8"))?;
    let room = names::check_room(&name).map_err(|problem| HttpError::new(400, problem.to_string()))?;
    let limit = query.limit(max_history, max_history)?;
    Ok(OperatorView::History { room, limit, after: query.after })
}

/// `Authorization: Bearer <token>`, the scheme in any case, the token
/// compared in constant time (its length aside), so the time taken says
/// nothing of how much of a guess was right.
fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some(value) = authorization else { return false };
    let Some((scheme, given)) = value.split_once(' ') else { return false };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Every byte is looked at whatever the others were; black_box keeps the
    // compiler from turning the fold back into an early exit.
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(difference) == 0
}

/// The query parameters the views take; any other is refused, so a typo
/// is an error rather than a silently ignored wish.
#[derive(Debug, Default)]
struct Query {
    limit: Option<String>,
    after: Option<u64>,
}

impl Query {
    fn parse(query: &str) -> Result<Query, HttpError> {
        let mut parsed = Query::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "limit" if parsed.limit.is_none() => parsed.limit = Some(value.to_owned()),
                "after" if parsed.after.is_none() => {
                    let after = value.parse::<u64>().map_err(|_| {
                        HttpError::new(400, format!("after must be a sequence number (got {value:?})"))
                    })?;
                    parsed.after = Some(after);
                }
                "limit" | "after" => return Err(HttpError::new(400, format!("{key} is given twice"))),
                _ => {
                    let key: String = key.chars().take(32).collect();
                    return Err(HttpError::new(400, format!("unknown query parameter {key:?}")));
                }
            }
        }
        Ok(parsed)
    }

    fn limit(&self, default: usize, max: usize) -> Result<usize, HttpError> {
        let Some(value) = &self.limit else { return Ok(default) };
        match value.parse::<usize>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(HttpError::new(
                400,
                format!("limit must be a whole number from 1 to {max} (got {value:?})"),
            )),
        }
    }

    fn refuse_after(&self) -> Result<(), HttpError> {
        match self.after {
            Some(_) => Err(HttpError::new(400, "after applies to a room's history only")),
            None => Ok(()),
        }
    }
}

/// `%XX` escapes decoded (`+` is a plus in a path); `None` if an escape is
/// malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// What the operator views read from the server's state.
pub trait Lookup {
    /// Every room with members or history.
    fn rooms(&self) -> Vec<RoomRow>;
    /// The room's lines (see [`OperatorView::History`]); `None` when the
    /// room has neither members nor history.
    fn history(&self, room: &Checked, limit: usize, after: Option<u64>) -> Option<Vec<LineView>>;
}

/// A server with no rooms, for tests.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRooms;

#[cfg(test)]
impl Lookup for NoRooms {
    fn rooms(&self) -> Vec<RoomRow> {
        Vec::new()
    }

    fn history(&self, _: &Checked, _: usize, _: Option<u64>) -> Option<Vec<LineView>> {
        None
    }
}

/// The response to an authorised view.
pub fn render(view: OperatorView, lookup: &dyn Lookup, max_bytes: usize) -> Response {
    match view {
        OperatorView::Rooms { limit } => render_rooms(lookup.rooms(), limit, max_bytes),
        OperatorView::History { room, limit, after } => match lookup.history(&room, limit, after) {
            Some(lines) => render_history(&lines),
            None => Response::text(404, &format!("no such room: {}", room.display)),
        },
    }
}

/// One room in the `/rooms` listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomRow {
    pub name: String,
    pub members: usize,
    /// Lines of history held in memory.
    pub history: usize,
}

#[derive(Serialize)]
struct RoomsBody<'a> {
    rooms: &'a [RoomRow],
    /// Rooms there are in all (with members or history).
    total: usize,
    /// Whether rooms were left out (the limit, or the size cap).
    truncated: bool,
}

/// The `/rooms` listing: rooms with the most members first, then by name;
/// at most `limit` of them, and no more than `max_bytes` of JSON (a
/// response must fit the connection's output cap).
pub fn render_rooms(mut rows: Vec<RoomRow>, limit: usize, max_bytes: usize) -> Response {
    let total = rows.len();
    rows.sort_unstable_by(|a, b| b.members.cmp(&a.members).then_with(|| a.name.cmp(&b.name)));
    rows.truncate(limit);
    // Each row is a few dozen bytes plus its name; trim until the whole
    // fits (rarely more than one pass).
    let mut body;
    loop {
        let truncated = rows.len() < total;
        body = serde_json::to_vec(&RoomsBody { rooms: &rows, total, truncated }).unwrap_or_default();
        if body.len() <= max_bytes || rows.is_empty() {
            break;
        }
        let keep = rows.len() * max_bytes / body.len();
        rows.truncate(keep.min(rows.len() - 1));
    }
    body.push(b'\n');
    json_response(body, "application/json")
}

/// A room's history as JSON lines: one object per line, oldest first.
pub fn render_history(lines: &[LineView]) -> Response {
    let mut body = Vec::new();
    for line in lines {
        // A LineView always serialises.
        let _ = serde_json::to_writer(&mut body, line);
        body.push(b'\n');
    }
    json_response(body, "application/x-ndjson")
}

fn json_response(body: Vec<u8>, content_type: &str) -> Response {
    Response::new(200)
        .with_header("Content-Type", content_type)
        .with_header("Cache-Control", "no-store")
        .with_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request;
    use crate::parse::Status;

    const TOKEN: &str = "0123456789abcdef-token";

    fn route_head(head: &str, token: Option<&str>) -> Result<OperatorView, HttpError> {
        let Ok(Status::Complete { value: request, .. }) = parse_request(head.as_bytes()) else {
            panic!("not a complete request: {head:?}")
        };
        route(&request, token, 100)
    }

    fn get(target: &str, authorization: Option<&str>) -> Result<OperatorView, HttpError> {
        let auth = authorization.map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default();
        route_head(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"), Some(TOKEN))
    }

    fn status(result: Result<OperatorView, HttpError>) -> u16 {
        result.map_or_else(|error| error.status, |_| 200)
    }

    #[test]
    fn without_a_token_configured_the_views_do_not_exist() {
        let head = format!("GET /rooms HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
        assert_eq!(route_head(&head, None).unwrap_err().status, 404);
    }

    #[test]
    fn a_missing_wrong_or_malformed_token_is_401() {
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(status(get("/rooms", None)), 401);
        assert_eq!(status(get("/rooms", Some("Bearer wrong"))), 401);
        assert_eq!(status(get("/rooms", Some(&format!("Bearer {TOKEN}x")))), 401);
        assert_eq!(status(get("/rooms", Some(&format!("Basic {TOKEN}")))), 401);
        assert_eq!(status(get("/rooms", Some(TOKEN))), 401);
        assert_eq!(status(get("/rooms/dev/history", None)), 401, "checked before the room name");
        assert_eq!(status(get("/rooms/%ZZ/history", None)), 401, "checked before the room name");
        assert_eq!(get("/rooms", Some(&bearer)), Ok(OperatorView::Rooms { limit: DEFAULT_ROOMS_LIMIT }));
        assert_eq!(status(get("/rooms", Some(&format!("bearer {TOKEN}")))), 200, "the scheme has no case");
        let twice =
            format!("GET /rooms HTTP/1.1\r\nAuthorization: {bearer}\r\nAuthorization: {bearer}\r\n\r\n");
        assert_eq!(route_head(&twice, Some(TOKEN)).unwrap_err().status, 400);
    }

    #[test]
    fn history_paths_names_and_limits() {
        let bearer = format!("Bearer {TOKEN}");
        let auth = Some(bearer.as_str());
        let view = get("/rooms/Caf%C3%A9%20au%20lait/history?limit=5&after=7", auth).unwrap();
        let OperatorView::History { room, limit, after } = view else { panic!("{view:?}") };
        assert_eq!((&*room.display, limit, after), ("Café au lait", 5, Some(7)));
        assert_eq!(
            get("/rooms/dev/history", auth)
                .map(|view| matches!(view, OperatorView::History { limit: 100, .. })),
            Ok(true)
        );
        for bad in [
            "/rooms/dev/history?limit=0",
            "/rooms/dev/history?limit=101",
            "/rooms/dev/history?limit=ten",
            "/rooms/dev/history?limit=1&limit=2",
            "/rooms/dev/history?after=-1",
            "/rooms/dev/history?colour=red",
            "/rooms?after=3",
            "/rooms?limit=0",
            "/rooms/%ZZ/history",
            "/rooms/%FF/history",
            "/rooms/%0A/history",
            "/rooms//history",
        ] {
            assert_eq!(status(get(bad, auth)), 400, "{bad}");
        }
        for missing in ["/rooms/dev", "/rooms/dev/history/more", "/rooms/"] {
            assert_eq!(status(get(missing, auth)), 404, "{missing}");
        }
        let post = format!("POST /rooms HTTP/1.1\r\nAuthorization: {bearer}\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(route_head(&post, Some(TOKEN)).unwrap_err().status, 405);
    }

    #[test]
    fn the_rooms_listing_fits_its_cap_and_says_so() {
        let rows: Vec<RoomRow> = (0..500)
            .map(|index| RoomRow { name: format!("room-{index:03}"), members: index % 7, history: index })
            .collect();
        let response = render_rooms(rows.clone(), 1000, 4096);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert!(response.body().len() <= 4097);
        assert_eq!(body["total"], 500);
        assert_eq!(body["truncated"], true);
        let listed = body["rooms"].as_array().unwrap();
        assert!(!listed.is_empty());
        assert_eq!(listed[0]["members"], 6, "most members first");
        let whole = render_rooms(rows, 1000, 1 << 20);
        let body: serde_json::Value = serde_json::from_slice(whole.body()).unwrap();
        assert_eq!(
            (body["rooms"].as_array().unwrap().len(), body["truncated"].as_bool()),
            (500, Some(false))
        );
    }

    #[test]
    fn history_is_one_json_object_per_line() {
        let lines = [
            LineView { seq: 1, time_ms: 10, name: "Mina".into(), text: "hi \"there\"".into() },
            LineView { seq: 2, time_ms: 11, name: "Bo".into(), text: "".into() },
        ];
        let response = render_history(&lines);
        let text = std::str::from_utf8(response.body()).unwrap();
        let parsed: Vec<serde_json::Value> =
            text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(parsed[0]["text"], "hi \"there\"");
        assert_eq!(parsed[1]["seq"], 2);
        assert!(render_history(&[]).body().is_empty());
    }
}
