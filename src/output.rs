//! The per-connection output buffer and the pool its buffers come from.
//!
//! Every byte the server sends to a client goes through that client's
//! [`Output`]: broadcasts, error lines, WebSocket control frames, HTTP
//! responses. One ordered buffer per connection means frames can never
//! interleave, and it is the only place the socket is written from.
//!
//! A connection holds a buffer only while it has something queued. Buffers
//! come from a [`BufferPool`] and go back when drained, so an idle
//! connection costs no buffer and a busy one costs no allocation per turn.

use std::io::{self, Write};

/// A new buffer is allocated just large enough for what is queued (at
/// least this): a message fanned out to a huge room then costs each member
/// a few dozen bytes, not a page. Pooled buffers keep whatever they grew to.
const MIN_CAPACITY: usize = 64;
/// Buffers that grew past this are freed instead of pooled.
const MAX_POOLED_CAPACITY: usize = 64 * 1024;
/// Most bytes of free buffers kept for reuse: enough for a buffer per
/// member of a room of tens of thousands.
const MAX_POOLED_BYTES: usize = 32 * 1024 * 1024;

/// Reusable buffers shared by all connections of one loop. The loop
/// empties it when it goes idle, so the memory of a burst is not kept.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Vec<Vec<u8>>,
    /// Capacity of the buffers in `free`.
    pooled_bytes: usize,
}

impl BufferPool {
    fn take(&mut self, needed: usize) -> Vec<u8> {
        match self.free.pop() {
            Some(buffer) => {
                self.pooled_bytes -= buffer.capacity();
                buffer
            }
            None => Vec::with_capacity(needed.max(MIN_CAPACITY)),
        }
    }

    fn give(&mut self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if capacity <= MAX_POOLED_CAPACITY && self.pooled_bytes + capacity <= MAX_POOLED_BYTES {
            buffer.clear();
            self.pooled_bytes += capacity;
            self.free.push(buffer);
        }
    }

    /// Buffers waiting for reuse.
    pub fn pooled(&self) -> usize {
        self.free.len()
    }

    /// Frees every pooled buffer.
    pub fn release(&mut self) {
        self.free = Vec::new();
        self.pooled_bytes = 0;
    }
}

/// Bytes queued for one connection and how many of them were written.
#[derive(Debug)]
pub struct Queued {
    bytes: Vec<u8>,
    written: usize,
}

impl Queued {
    fn unwritten(&self) -> &[u8] {
        &self.bytes[self.written..]
    }
}

/// The output state of one connection.
#[derive(Debug, Default)]
pub enum Output {
    /// Nothing queued, no buffer held.
    #[default]
    Empty,
    /// Bytes queued since the last flush; the connection is on the loop's
    /// flush list and will be written once at the end of the turn.
    Pending(Queued),
    /// The socket did not take everything; the connection waits for a
    /// WRITABLE event and is not on the flush list.
    Blocked(Queued),
}

/// Queuing would pass the connection's cap: it is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverCap;

/// What queuing did to the output state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// The output was empty: put the connection on the flush list.
    NowPending,
    /// Already pending or blocked: nothing more to do.
    Appended,
}

/// What flushes wrote: bytes, and `write` calls that wrote something.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub bytes: usize,
    pub writes: usize,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written and the buffer given back.
    Drained,
    /// The socket is full; bytes remain. WRITABLE interest is needed.
    Blocked,
}

impl Output {
    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        match self {
            Output::Empty => 0,
            Output::Pending(queued) | Output::Blocked(queued) => queued.bytes.len() - queued.written,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Output::Empty)
    }

    pub fn is_blocked(&self) -> bool {
        matches!(self, Output::Blocked(_))
    }

    /// Capacity of the buffer held, if any.
    pub fn capacity(&self) -> usize {
        match self {
            Output::Empty => 0,
            Output::Pending(queued) | Output::Blocked(queued) => queued.bytes.capacity(),
        }
    }

    /// Appends `data`, unless that would leave more than `cap` bytes queued.
    pub fn queue(&mut self, data: &[u8], cap: usize, pool: &mut BufferPool) -> Result<Queue, OverCap> {
        if self.len() + data.len() > cap {
            return Err(OverCap);
        }
        match self {
            Output::Empty => {
                let mut bytes = pool.take(data.len());
                bytes.extend_from_slice(data);
                *self = Output::Pending(Queued { bytes, written: 0 });
                Ok(Queue::NowPending)
            }
            Output::Pending(queued) | Output::Blocked(queued) => {
                // Reclaim the written prefix before growing, so a blocked
                // buffer does not creep towards twice the cap.
                if queued.written > 0 && queued.bytes.len() + data.len() > queued.bytes.capacity() {
                    queued.bytes.drain(..queued.written);
                    queued.written = 0;
                }
                queued.bytes.extend_from_slice(data);
                Ok(Queue::Appended)
            }
        }
    }

    /// Writes as much as the socket takes. `tally` counts what was written,
    /// even when an error is returned.
    pub fn flush(
        &mut self,
        sink: &mut impl Write,
        pool: &mut BufferPool,
        tally: &mut Tally,
    ) -> io::Result<Flushed> {
        let queued = match self {
            Output::Empty => return Ok(Flushed::Drained),
            Output::Pending(queued) | Output::Blocked(queued) => queued,
        };
        while !queued.unwritten().is_empty() {
            match sink.write(queued.unwritten()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    queued.written += n;
                    tally.bytes += n;
                    tally.writes += 1;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    *self = match std::mem::take(self) {
                        Output::Pending(queued) | Output::Blocked(queued) => Output::Blocked(queued),
                        Output::Empty => Output::Empty,
                    };
                    return Ok(Flushed::Blocked);
                }
                Err(error) => return Err(error),
            }
        }
        if let Output::Pending(queued) | Output::Blocked(queued) = std::mem::take(self) {
            pool.give(queued.bytes);
        }
        Ok(Flushed::Drained)
    }

    /// Drops everything queued, giving the buffer back.
    pub fn discard(&mut self, pool: &mut BufferPool) -> usize {
        let dropped = self.len();
        if let Output::Pending(queued) | Output::Blocked(queued) = std::mem::take(self) {
            pool.give(queued.bytes);
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `room` more bytes, then would block.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queue_flush_block_and_drain() {
        let mut pool = BufferPool::default();
        let mut output = Output::default();
        assert_eq!(output.queue(b"hello ", 100, &mut pool), Ok(Queue::NowPending));
        assert_eq!(output.queue(b"world", 100, &mut pool), Ok(Queue::Appended));
        assert_eq!(output.len(), 11);

        let mut socket = Socket { taken: Vec::new(), room: 4 };
        let mut tally = Tally::default();
        assert_eq!(output.flush(&mut socket, &mut pool, &mut tally).unwrap(), Flushed::Blocked);
        assert!(output.is_blocked());
        assert_eq!((tally.bytes, tally.writes, output.len()), (4, 1, 7));

        // More output while blocked stays in order behind the rest.
        assert_eq!(output.queue(b"!", 100, &mut pool), Ok(Queue::Appended));
        socket.room = 100;
        assert_eq!(output.flush(&mut socket, &mut pool, &mut tally).unwrap(), Flushed::Drained);
        assert_eq!((tally.bytes, tally.writes), (12, 2));
        assert_eq!(socket.taken, b"hello world!");
        assert!(output.is_empty());
        assert_eq!(output.capacity(), 0, "a drained connection holds no buffer");
        assert_eq!(pool.pooled(), 1, "the buffer went back to the pool");
    }

    #[test]
    fn the_cap_counts_unwritten_bytes_only() {
        let mut pool = BufferPool::default();
        let mut output = Output::default();
        output.queue(&[1; 8], 10, &mut pool).unwrap();
        assert_eq!(output.queue(&[2; 3], 10, &mut pool), Err(OverCap));
        let mut socket = Socket { taken: Vec::new(), room: 5 };
        output.flush(&mut socket, &mut pool, &mut Tally::default()).unwrap();
        assert_eq!(output.queue(&[2; 7], 10, &mut pool), Ok(Queue::Appended));
        assert_eq!(output.len(), 10);
        assert_eq!(output.discard(&mut pool), 10);
        assert!(output.is_empty());
    }
}
