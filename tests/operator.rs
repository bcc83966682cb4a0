//! The operator views over real sockets: `GET /rooms` and
//! `GET /rooms/<name>/history` exist only with `--operator-token`, answer
//! only the right bearer token (401 otherwise, counted), and refuse bad
//! room names and limits with 400 and a reason.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use common::{HttpReply, TIMEOUT, TestServer, joined_tcp, joined_ws};
use machat::Config;

const TOKEN: &str = "test-operator-token-0123456789";

fn server_with_token() -> TestServer {
    TestServer::with_config(Config {
        tcp: Some("127.0.0.1:0".into()),
        ws: Some("127.0.0.1:0".into()),
        operator_token: Some(TOKEN.into()),
        ..Config::default()
    })
}

/// One request on its own connection (`Connection: close`), answered and closed.
fn get(address: SocketAddr, target: &str, authorization: Option<&str>) -> HttpReply {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let auth = authorization.map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default();
    let request = format!("GET {target} HTTP/1.1\r\nHost: machat\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    HttpReply::read_from(&mut stream)
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn status(reply: &HttpReply) -> u16 {
    reply.status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status code")
}

#[test]
fn without_a_token_configured_the_views_are_not_there() {
    let server = TestServer::start();
    let reply = get(server.ws, "/rooms", Some(&bearer()));
    assert_eq!(status(&reply), 404, "{reply:?}");
    let reply = get(server.ws, "/rooms/dev/history", Some(&bearer()));
    assert_eq!(status(&reply), 404, "{reply:?}");
}

#[test]
fn a_missing_or_wrong_token_gets_401_and_learns_nothing() {
    let server = server_with_token();
    let _member = joined_tcp(server.tcp, "Mina", "secret-room");
    for authorization in [None, Some("Bearer wrong"), Some("Basic dXNlcjpwYXNz"), Some(TOKEN)] {
        for target in ["/rooms", "/rooms/secret-room/history", "/rooms/%ZZ/history?limit=0"] {
            let reply = get(server.ws, target, authorization);
            assert_eq!(status(&reply), 401, "{target} with {authorization:?}: {reply:?}");
            assert_eq!(reply.header("WWW-Authenticate"), Some("Bearer realm=\"machat\""));
            assert!(!reply.body.contains("secret"), "nothing about the rooms: {reply:?}");
        }
    }
    // Counted as 401s (the slot after 400 in `http_responses`).
    server.wait_for("twelve 401s counted", |stats| stats.http_responses[3] == 12);
}

#[test]
fn rooms_lists_members_and_history_and_history_gives_json_lines() {
    let server = server_with_token();
    let mut mina = joined_tcp(server.tcp, "Mina", "Café");
    let mut bo = joined_ws(server.ws, "Bo", "café");
    mina.expect_line("Bo:hello");
    mina.send_line("first \"quoted\"");
    bo.expect_text("Mina:first \"quoted\"\n");
    mina.expect_line("Mina:first \"quoted\"");
    bo.send_line("second");
    mina.expect_line("Bo:second");
    {
        let mut gone = joined_tcp(server.tcp, "Gone", "emptied");
        gone.send_line("still here after I leave");
        gone.expect_line("Gone:still here after I leave");
    }
    server.wait_for("the room emptied", |stats| stats.rooms == 1);

    let reply = get(server.ws, "/rooms", Some(&bearer()));
    assert_eq!(status(&reply), 200, "{reply:?}");
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    let listing: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(
        listing,
        serde_json::json!({
            "rooms": [
                // Joined, hello'd, and chatted: hello from each, then two lines.
                { "name": "Café", "members": 2, "history": 4 },
                { "name": "emptied", "members": 0, "history": 2 },
            ],
            "total": 2,
            "truncated": false,
        })
    );

    // The name folds like a join's does: `CAFÉ` is the room `Café`.
    let reply = get(server.ws, "/rooms/CAF%C3%89/history?limit=2", Some(&bearer()));
    assert_eq!(status(&reply), 200, "{reply:?}");
    assert_eq!(reply.header("Content-Type"), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = reply
        .body
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((&lines[0]["name"], &lines[0]["text"]), (&"Mina".into(), &"first \"quoted\"".into()));
    assert_eq!((&lines[1]["name"], &lines[1]["text"]), (&"Bo".into(), &"second".into()));
    let (first, second) = (lines[0]["seq"].as_u64().unwrap(), lines[1]["seq"].as_u64().unwrap());
    assert_eq!(second, first + 1);
    assert!(lines[0]["time_ms"].as_u64().unwrap() > 1_700_000_000_000, "wall-clock milliseconds");

    // Paging forward from a sequence number.
    let reply = get(server.ws, &format!("/rooms/Caf%C3%A9/history?after={first}"), Some(&bearer()));
    let after: Vec<serde_json::Value> =
        reply.body.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["seq"].as_u64(), Some(second));

    // A room that emptied keeps its history.
    let reply = get(server.ws, "/rooms/emptied/history", Some(&bearer()));
    assert_eq!(status(&reply), 200);
    assert_eq!(reply.body.lines().count(), 2);
}

#[test]
fn bad_room_names_limits_and_unknown_rooms_are_refused_with_a_reason() {
    let server = server_with_token();
    let _member = joined_tcp(server.tcp, "Mina", "dev");
    let cases = [
        ("/rooms/dev/history?limit=0", 400, "limit must be a whole number from 1 to 100"),
        ("/rooms/dev/history?limit=101", 400, "limit must be a whole number from 1 to 100"),
        ("/rooms/dev/history?limit=many", 400, "limit must be a whole number"),
        ("/rooms/dev/history?after=soon", 400, "after must be a sequence number"),
        ("/rooms/dev/history?colour=red", 400, "unknown query parameter"),
        ("/rooms?limit=0", 400, "limit must be a whole number from 1 to 100000"),
        ("/rooms/%E2%80%8B/history", 400, "invisible"),
        ("/rooms/%1B%5B2J/history", 400, "control character"),
        ("/rooms/%FF/history", 400, "not valid percent-encoded UTF-8"),
        ("/rooms/%/history", 400, "not valid percent-encoded UTF-8"),
        ("/rooms/nobody-here/history", 404, "no such room: nobody-here"),
        ("/rooms/dev", 404, "no such path"),
    ];
    for (target, expected, reason) in cases {
        let reply = get(server.ws, target, Some(&bearer()));
        assert_eq!(status(&reply), expected, "{target}: {reply:?}");
        assert!(reply.body.contains(reason), "{target}: {:?} lacks {reason:?}", reply.body);
    }
    // The server is unharmed: the member still chats.
    let reply = get(server.ws, "/rooms", Some(&bearer()));
    assert_eq!(status(&reply), 200);
}
