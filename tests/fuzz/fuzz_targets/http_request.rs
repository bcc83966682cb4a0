//! The HTTP request step on arbitrary bytes: never panics, and a complete
//! request is routed without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machat::internal::http::{self, Routes};
use machat::internal::parse::Status;

fuzz_target!(|data: &[u8]| {
    let origins = ["http://localhost:8099".to_string()];
    if let Ok(Status::Complete { value: request, consumed }) = http::parse_request(data) {
        assert!(consumed <= data.len());
        // With an operator token, so the operator views' routing (token,
        // percent-decoding, names, query) is fuzzed too.
        let routes = Routes {
            websocket_path: "/mychat",
            allowed_origins: &origins,
            operator_token: Some("fuzz-operator-token"),
            max_history: 100,
        };
        let _ = http::route(&request, routes);
        let _ = request.keep_alive();
    }
});
