//! The plain-HTTP pages of the WebSocket port, rendered with no socket in
//! sight: the browser chat page, the Prometheus counters, the health check,
//! and the operator views (from what the reactor looks up for them).

use crate::http::{Page, Response};
use crate::operator::{self, Lookup};
use crate::stats::Stats;

/// The browser chat page served at `/`, compiled in.
const CHAT_PAGE: &str = include_str!("chat_page.html");
/// Where the page's script expects the WebSocket path, as a JSON string.
const WS_PATH_PLACEHOLDER: &str = "\"__MACHAT_WS_PATH__\"";
/// Where the page's script expects how many earlier lines to ask for, as a
/// JSON number. Quoted in the page so the unrendered file still parses.
const HISTORY_PLACEHOLDER: &str = "\"__MACHAT_HISTORY__\"";

/// The most earlier lines the chat page asks for on joining: enough to pick
/// up a conversation, few enough that a page does not open on a wall of text.
pub const PAGE_HISTORY_LINES: usize = 50;

/// The response for one of the server's pages. `stats` must be current
/// (gauges refreshed) for the metrics page; `rooms` answers the operator
/// views, whose responses stay within `max_bytes`. `page_history` is the
/// number of earlier lines the chat page asks for in its handshake; it must
/// not exceed the server's `--history`, or every join from the page would be
/// refused.
pub fn render(
    page: Page,
    ws_path: &str,
    page_history: usize,
    stats: &Stats,
    rooms: &dyn Lookup,
    max_bytes: usize,
) -> Response {
    match page {
        Page::Chat => {
            // The page learns the WebSocket path from a JSON string in its
            // script; `<` is escaped so the path cannot end the script.
            let path = serde_json::to_string(ws_path).unwrap_or_default().replace('<', "\\u003c");
            Response::new(200)
                .with_header("Content-Type", "text/html; charset=utf-8")
                .with_header("Cache-Control", "no-cache")
                .with_body(
                    CHAT_PAGE
                        .replace(WS_PATH_PLACEHOLDER, &path)
                        .replace(HISTORY_PLACEHOLDER, &page_history.to_string())
                        .into_bytes(),
                )
        }
        Page::Metrics => Response::new(200)
            .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .with_body(stats.to_prometheus().into_bytes()),
        // Serving, whatever the cluster's state: local chat goes on.
        Page::Health => match stats.cluster_state {
            0 => Response::text(200, "ok"),
            1 => Response::text(200, "ok\ncluster: connected"),
            2 => Response::text(200, "ok\ncluster: connecting"),
            _ => Response::text(200, "ok\ncluster: reconnecting"),
        },
        Page::Operator(view) => operator::render(view, rooms, max_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_page(ws_path: &str, page_history: usize) -> String {
        let response =
            render(Page::Chat, ws_path, page_history, &Stats::default(), &operator::NoRooms, 1 << 20);
        String::from_utf8(response.body().to_vec()).unwrap()
    }

    #[test]
    fn the_chat_page_learns_the_websocket_path_safely() {
        let body = chat_page("/chat</script>", PAGE_HISTORY_LINES);
        assert!(body.contains(r#""/chat\u003c/script>""#));
        assert!(!body.contains(WS_PATH_PLACEHOLDER));
    }

    #[test]
    fn the_chat_page_asks_for_the_history_it_is_given() {
        for lines in [0, 7, PAGE_HISTORY_LINES] {
            let body = chat_page("/mychat", lines);
            // A bare number, so the script sees an integer, not a string.
            assert!(body.contains(&format!("const CONFIGURED_HISTORY = {lines};")), "{lines}");
            assert!(!body.contains("__MACHAT_HISTORY__"));
        }
    }
}
