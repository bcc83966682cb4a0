//! The protocols the generator speaks, one module each, and the encoder that
//! puts a message text (see `message`) into the chosen one:
//!
//! - `machat`: handshake and lines, over TCP or inside WebSocket messages;
//! - `websocket`: upgrade and framing;
//! - `resp`: Redis pub/sub.

pub mod machat;
pub mod resp;
pub mod websocket;

use crate::flags::{Proto, Transport};
use crate::message;

/// Builds outgoing messages for the chosen protocol into a connection's
/// output buffer.
pub struct MessageEncoder {
    pub proto: Proto,
    pub transport: Transport,
    payload: usize,
    pub room_names: Vec<String>,
    /// The text being wrapped, reused so sending allocates nothing.
    text: Vec<u8>,
    random_state: u64,
}

impl MessageEncoder {
    pub fn new(
        proto: Proto,
        transport: Transport,
        payload: usize,
        room_names: Vec<String>,
        seed: u64,
    ) -> Self {
        MessageEncoder {
            proto,
            transport,
            payload,
            room_names,
            text: Vec::with_capacity(payload + 64),
            // xorshift gets stuck at zero.
            random_state: seed | 1,
        }
    }

    /// xorshift64: masks and keys need to vary, not to be secret.
    pub fn next_random(&mut self) -> u64 {
        let mut x = self.random_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random_state = x;
        x
    }

    /// Appends one client WebSocket frame with a fresh mask.
    pub fn ws_frame(&mut self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        let mask = (self.next_random() as u32).to_ne_bytes();
        websocket::write_client_frame(out, opcode, payload, mask);
    }

    pub fn websocket_key(&mut self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.next_random().to_le_bytes());
        key[8..].copy_from_slice(&self.next_random().to_le_bytes());
        key
    }

    /// Wraps `self.text` as one chat message for `room`.
    fn wrap(&mut self, out: &mut Vec<u8>, room: u32) {
        match (self.proto, self.transport) {
            (Proto::Machat, Transport::Tcp) => {
                out.extend_from_slice(&self.text);
                out.push(b'\n');
            }
            (Proto::Machat, Transport::Ws) => {
                self.text.push(b'\n');
                let text = std::mem::take(&mut self.text);
                self.ws_frame(out, websocket::OPCODE_TEXT, &text);
                self.text = text;
            }
            (Proto::Redis, _) => {
                resp::write_publish(out, self.room_names[room as usize].as_bytes(), &self.text);
            }
        }
    }

    /// Appends data message `seq` of `sender`, stamped `now_ns`.
    pub fn data(&mut self, out: &mut Vec<u8>, room: u32, sender: u32, seq: u64, now_ns: u64) {
        message::write_data(&mut self.text, self.payload, sender, seq, now_ns);
        self.wrap(out, room);
    }

    /// Appends a barrier marker (`m<id>`) or an idle-mode probe (`p`).
    pub fn control(&mut self, out: &mut Vec<u8>, room: u32, prefix: u8, id: Option<u32>) {
        message::write_control(&mut self.text, prefix, id);
        self.wrap(out, room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder(proto: Proto, transport: Transport) -> MessageEncoder {
        MessageEncoder::new(proto, transport, 40, vec!["lg0".into(), "lg1".into()], 1)
    }

    #[test]
    fn data_over_machat_tcp_is_one_line() {
        let mut enc = encoder(Proto::Machat, Transport::Tcp);
        let mut out = Vec::new();
        enc.data(&mut out, 0, 7, 12345, 987654321);
        assert_eq!(out.len(), 41);
        assert!(out.starts_with(b"s7 12345 987654321 xxx") && out.ends_with(b"x\n"));
    }

    #[test]
    fn data_over_websocket_is_one_masked_text_frame_holding_a_line() {
        let mut enc = encoder(Proto::Machat, Transport::Ws);
        let mut out = Vec::new();
        enc.data(&mut out, 0, 1, 2, 3);
        enc.control(&mut out, 0, b'm', Some(1));
        // Two frames: 41 and 3 payload bytes, 2 header and 4 mask bytes each.
        assert_eq!(out.len(), 6 + 41 + 6 + 3);
        assert_eq!((out[0], out[1]), (0x81, 0x80 | 41));
        let body: Vec<u8> = out[6..47].iter().enumerate().map(|(i, b)| b ^ out[2 + (i & 3)]).collect();
        assert!(body.starts_with(b"s1 2 3 x") && body.ends_with(b"x\n"));
        assert_ne!(out[2..6], out[49..53], "each frame gets its own mask");
    }

    #[test]
    fn data_over_redis_is_publish_to_the_rooms_channel() {
        let mut enc = encoder(Proto::Redis, Transport::Tcp);
        let mut out = Vec::new();
        enc.control(&mut out, 1, b'p', None);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$3\r\nlg1\r\n$1\r\np\r\n");
    }
}
