//! A whole session driven by arbitrary operations, as the reactor would
//! drive it: input in arbitrary pieces, time passing, output written, the
//! peer closing, a shutdown. Never panics; never takes more input than it
//! was given or nothing while it still reads; leaves no effect unapplied;
//! a closed session stays closed.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use machat::Config;
use machat::internal::names::{check_name, check_room};
use machat::internal::rooms::{ConnId, Rooms, Transport};
use machat::internal::session::{Effects, JoinRefused, Reading, Session};

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut data)) = data.split_first() else { return };
    let config = Config { max_line: 64, ..Config::default() };
    let mut now = Instant::now();
    let mut session = if first & 1 == 0 { Session::tcp(now, &config) } else { Session::http(now, &config) };
    let mut rooms = Rooms::new();
    // Someone already holds "Mina" in "dev", so the taken-name path runs too
    // (for "mina", "MINA", "Mіna" with a Cyrillic і... as well).
    rooms.join(&check_room("dev").unwrap(), &check_name("Mina").unwrap(), ConnId(0), Transport::Tcp).unwrap();
    let mut effects = Effects::default();
    let mut was_closed = false;
    let mut apply = |session: &mut Session, effects: &mut Effects, rooms: &mut Rooms, now: Instant| {
        while let Some(request) = effects.join.take() {
            let claim = rooms
                .join(&request.room, &request.name, ConnId(1), Transport::Tcp)
                .map_err(|_| JoinRefused::Taken { holder: "Mina".into() });
            session.joined(request, claim, now, &config, effects);
        }
        effects.room = None;
        effects.messages.clear();
        effects.send.clear();
        effects.page = None;
        if let Some(left) = effects.left.take() {
            rooms.leave(left.room, &left.key).expect("the member was in its room");
        }
        effects.failure = None;
        effects.http_status = None;
        effects.shutdown_write = false;
        effects.closed = None;
        assert!(effects.is_empty());
    };
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        match op % 8 {
            0..=3 => {
                let len = usize::from(op / 8).min(data.len());
                let (mut input, rest) = data.split_at(len);
                data = rest;
                while !input.is_empty() && session.reading() == Reading::Wanted {
                    let taken = session.input(input, now, &config, &mut effects);
                    assert!(taken > 0 && taken <= input.len());
                    input = &input[taken..];
                    apply(&mut session, &mut effects, &mut rooms, now);
                }
            }
            4 => {
                now += Duration::from_millis(u64::from(op) * 100);
                session.timeout(now, &config, &mut effects);
            }
            5 => session.output_drained(now, &mut effects),
            6 => session.peer_closed(now, &mut effects),
            _ => session.shutdown(now + Duration::from_secs(1), &mut effects),
        }
        apply(&mut session, &mut effects, &mut rooms, now);
        if was_closed {
            assert_eq!(session.reading(), Reading::Over, "a closed session stays closed");
        }
        was_closed = session.reading() == Reading::Over;
    }
});
