//! Message text encoding: today's `Batch::push` path (a UTF-8 check, then
//! one copy; lossy only when invalid) against `sanitize::push_sanitized`,
//! for a 64-byte ASCII message, a 64-byte message with some UTF-8 and
//! 1 KiB messages (ASCII, and with some UTF-8). Throughput is in bytes of
//! message text. A sample appends one message to a buffer that keeps its
//! allocation, as a batch does.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use machat::internal::sanitize::push_sanitized;

/// What `Batch::push` does with the text today.
fn push_today(out: &mut Vec<u8>, text: &[u8]) {
    match std::str::from_utf8(text) {
        Ok(valid) => out.extend_from_slice(valid.as_bytes()),
        Err(_) => out.extend_from_slice(String::from_utf8_lossy(text).as_bytes()),
    }
}

/// `len` bytes of chat-like ASCII.
fn ascii(len: usize) -> Vec<u8> {
    let words = b"the quick brown fox jumps over the lazy dog, 0123456789! ";
    words.iter().copied().cycle().take(len).collect()
}

/// `len` bytes with an `é` or an emoji every few words.
fn some_utf8(len: usize) -> Vec<u8> {
    let words = "café au lait 🙂 déjà vu, naïve résumé ☕ ok! ".as_bytes();
    let mut text: Vec<u8> = words.iter().copied().cycle().take(len).collect();
    // Cut back to a character boundary, then pad with ASCII.
    while std::str::from_utf8(&text).is_err() {
        text.pop();
    }
    text.resize(len, b'x');
    text
}

fn text_encoding(c: &mut Criterion) {
    let cases = [
        ("ascii_64", ascii(64)),
        ("utf8_64", some_utf8(64)),
        ("ascii_1k", ascii(1024)),
        ("utf8_1k", some_utf8(1024)),
    ];
    let mut group = c.benchmark_group("text");
    for (name, text) in &cases {
        assert_eq!(std::str::from_utf8(text).map(str::len), Ok(text.len()));
        group.throughput(Throughput::Bytes(text.len() as u64));
        let mut out = Vec::with_capacity(4 * text.len());
        group.bench_with_input(BenchmarkId::new("today", name), text, |b, text| {
            b.iter(|| {
                out.clear();
                push_today(&mut out, black_box(text));
                black_box(&out);
            })
        });
        group.bench_with_input(BenchmarkId::new("sanitized", name), text, |b, text| {
            b.iter(|| {
                out.clear();
                push_sanitized(&mut out, black_box(text));
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, text_encoding);
criterion_main!(benches);
