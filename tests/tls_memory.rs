//! What an idle TLS connection costs on the server, measured: a counting
//! global allocator (per thread, so the harness's other threads do not
//! blur it) tracks the heap a `rustls` server connection keeps after its
//! handshake and one chat line each way, with the configurations
//! `machat::internal::tls` builds. The handshakes run in memory, no
//! sockets.
//!
//! ```text
//! cargo test --test tls_memory -- --nocapture   # prints the figures
//! ```
//!
//! Two ways of holding a connection are measured:
//! - `rustls::ServerConnection` (buffered: rustls owns an input buffer, the
//!   "deframer", and queues for plaintext and TLS records);
//! - `rustls::server::UnbufferedServerConnection`, where the caller owns
//!   every buffer (the reactor's shared read buffer would do), so the
//!   connection keeps only its keys and state.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::Arc;

use machat::internal::tls::{Loaded, load};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, SupportedProtocolVersion};

mod common;
use common::tls::TestPki;

/// The allocator every allocation of this test binary goes through.
struct CountingAllocator;

thread_local! {
    /// Bytes allocated and not yet freed by this thread. `const` and
    /// without a destructor, so reading it never allocates and never fails.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + bytes));
}

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

// SAFETY: every call is passed straight to `System`; only a thread-local
// counter is updated beside it.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The budget the issue sets for an idle TLS connection.
const IDLE_BUDGET: isize = 8 * 1024;

/// A chat line, as a member sends and receives one after joining.
const LINE: &[u8] = b"Mina:hello\n";

/// Heap owned by a value: what is freed when it is dropped. Shared
/// things (the `Arc<ServerConfig>`) are held elsewhere and not counted.
fn heap_of<T>(value: T) -> isize {
    let before = live_bytes();
    drop(value);
    before - live_bytes()
}

/// A buffered server connection after a handshake and one line each way,
/// boxed as the reactor would keep it (so its inline size is counted).
fn idle_buffered(config: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Box<ServerConnection> {
    let mut server = Box::new(ServerConnection::new(config).unwrap());
    let mut client = ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
    let mut wire = Vec::new();
    let mut client_sent_line = false;
    for _ in 0..10 {
        wire.clear();
        client.write_tls(&mut wire).unwrap();
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        wire.clear();
        server.write_tls(&mut wire).unwrap();
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets().unwrap();
        if !client.is_handshaking() && !server.is_handshaking() {
            if client_sent_line {
                break;
            }
            client.writer().write_all(LINE).unwrap();
            server.writer().write_all(LINE).unwrap();
            client_sent_line = true;
        }
    }
    assert!(!server.is_handshaking() && client_sent_line);
    let mut received = [0; 64];
    let read = server.reader().read(&mut received).unwrap();
    assert_eq!(&received[..read], LINE);
    server
}

/// An unbuffered server connection after a handshake and one line each
/// way. The caller's buffers (`incoming`, `outgoing`) are dropped before
/// measuring: in the reactor they are shared by every connection.
fn idle_unbuffered(config: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Box<UnbufferedServerConnection> {
    let mut server = Box::new(UnbufferedServerConnection::new(config).unwrap());
    let mut client = ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
    let mut incoming = Vec::new();
    let mut outgoing = vec![0; 32 * 1024];
    let mut outgoing_len = 0;
    let mut line_sent = false;
    let mut line_received = false;
    for _ in 0..50 {
        client.write_tls(&mut incoming).unwrap();
        let UnbufferedStatus { discard, state } = server.process_tls_records(&mut incoming);
        let mut client_reads = false;
        match state.unwrap() {
            ConnectionState::EncodeTlsData(mut encode) => {
                outgoing_len += encode.encode(&mut outgoing[outgoing_len..]).unwrap();
            }
            ConnectionState::TransmitTlsData(transmit) => {
                client_reads = true;
                transmit.done();
            }
            ConnectionState::BlockedHandshake => {}
            ConnectionState::WriteTraffic(mut write) => {
                if !line_sent {
                    outgoing_len += write.encrypt(LINE, &mut outgoing[outgoing_len..]).unwrap();
                    line_sent = true;
                    client_reads = true;
                    client.writer().write_all(LINE).unwrap();
                }
            }
            ConnectionState::ReadTraffic(mut read) => {
                while let Some(record) = read.next_record() {
                    assert_eq!(record.unwrap().payload, LINE);
                    line_received = true;
                }
            }
            other => panic!("unexpected state {other:?}"),
        }
        incoming.drain(..discard);
        if client_reads {
            client.read_tls(&mut &outgoing[..outgoing_len]).unwrap();
            client.process_new_packets().unwrap();
            outgoing_len = 0;
        }
        if line_received {
            let mut received = [0; 64];
            let read = client.reader().read(&mut received).unwrap();
            assert_eq!(&received[..read], LINE);
            return server;
        }
    }
    panic!("the unbuffered handshake did not finish");
}

#[test]
fn an_idle_tls_connection_costs_less_than_8_kib() {
    let pki = TestPki::new();
    let Loaded { https, line, .. } = load(&pki.files).unwrap();
    let versions: [(&str, &'static SupportedProtocolVersion); 2] =
        [("TLS 1.2", &rustls::version::TLS12), ("TLS 1.3", &rustls::version::TLS13)];
    println!("size_of::<ServerConnection>() = {} bytes", std::mem::size_of::<ServerConnection>());
    println!(
        "size_of::<UnbufferedServerConnection>() = {} bytes",
        std::mem::size_of::<UnbufferedServerConnection>()
    );
    for (name, version) in versions {
        let client = pki.client_config_with(&[version], &[b"http/1.1"]);
        // Warm-up: the first handshake fills once-per-process state (the
        // ticketer's keys, the session cache's map), which is not per
        // connection.
        let warm = idle_buffered(https.clone(), client.clone());
        let suite = warm.negotiated_cipher_suite().map(|suite| suite.suite());
        drop(warm);
        drop(idle_unbuffered(line.clone(), client.clone()));

        let buffered = heap_of(idle_buffered(https.clone(), client.clone()));
        let unbuffered = heap_of(idle_unbuffered(https.clone(), client.clone()));
        println!(
            "{name} ({suite:?}): idle server connection, buffered {buffered} bytes, unbuffered \
             {unbuffered} bytes (heap, the boxed connection itself included)"
        );
        assert!(buffered <= IDLE_BUDGET, "{name}: a buffered idle connection keeps {buffered} bytes");
        assert!(unbuffered < buffered, "{name}: unbuffered {unbuffered} bytes, buffered {buffered}");
    }
}
