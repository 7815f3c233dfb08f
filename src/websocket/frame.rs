//! Just enough of the WebSocket framing (RFC 6455 §5) for a byte relay that must be able to
//! end a socket cleanly: where frames begin and end in a stream gatehouse passes through
//! untouched, and the bytes of the close frame it writes at such a boundary.
//!
//! Frame headers are parsed and close frames encoded by `tungstenite`'s frame module (a
//! widely used, well-tested implementation), never by hand; payloads are never buffered,
//! only counted.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{CloseCode, Control, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader, Utf8Bytes};

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Follows the frames of one direction of a relayed socket as its bytes go by.
#[derive(Debug, Default)]
pub struct Frames {
    head: [u8; MAX_HEADER],
    /// Header bytes of the current frame seen so far (0 between frames and in a payload).
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The stream is not WebSocket framing we understand: no boundary is ever trusted again.
    broken: bool,
    /// A close frame went by.
    saw_close: bool,
}

impl Frames {
    /// Accounts for `bytes`, the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.broken {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let take = (self.header_len() - self.have).min(bytes.len());
            self.head[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have >= 2 && self.have == self.header_len() {
                self.end_header();
            }
        }
    }

    /// Length of the current header, as far as its first two bytes tell.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let length = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        2 + length + mask
    }

    fn end_header(&mut self) {
        let mut cursor = Cursor::new(&self.head[..self.have]);
        match FrameHeader::parse(&mut cursor) {
            Ok(Some((header, length))) => {
                self.payload_left = length;
                self.have = 0;
                if header.opcode == OpCode::Control(Control::Close) {
                    self.saw_close = true;
                }
            }
            // A reserved opcode, or a header we measured wrongly: stop trusting the stream.
            Ok(None) | Err(_) => self.broken = true,
        }
    }

    /// Whether the bytes so far end exactly at a frame boundary, where a frame may be written.
    pub fn at_boundary(&self) -> bool {
        !self.broken && self.have == 0 && self.payload_left == 0
    }

    /// How many more bytes to read at most without passing the end of the current header or
    /// payload: reading no more than this, then asking again, stops exactly at the boundary.
    /// 0 at a boundary, or when the stream is broken.
    pub fn to_boundary(&self) -> usize {
        if self.broken {
            0
        } else if self.payload_left > 0 {
            usize::try_from(self.payload_left).unwrap_or(usize::MAX)
        } else if self.have == 0 {
            0
        } else {
            self.header_len() - self.have
        }
    }

    /// Whether the stream is one we could not follow (then no frame may be written into it).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether a close frame went by.
    pub fn saw_close(&self) -> bool {
        self.saw_close
    }
}

/// A close frame with `code` and `reason`; `masked` for frames sent to a server (the
/// upstream), which RFC 6455 §5.3 requires to be masked with a fresh random key.
pub fn close_frame(code: u16, reason: &'static str, masked: bool) -> Vec<u8> {
    let mut frame = Frame::close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    }));
    if masked {
        frame.header_mut().mask = Some(rand::random());
    }
    let mut out = Vec::with_capacity(2 + 4 + 2 + reason.len());
    match frame.format(&mut out) {
        Ok(()) => out,
        // Writing into a Vec cannot fail; an empty frame is never written.
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::Data;

    fn frame(opcode: OpCode, payload: usize, masked: bool) -> Vec<u8> {
        let mut f = Frame::message(vec![7u8; payload], opcode, true);
        if masked {
            f.header_mut().mask = Some([1, 2, 3, 4]);
        }
        let mut out = Vec::new();
        f.format(&mut out).unwrap();
        out
    }

    fn stream() -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for (payload, masked) in [
            (0, false),
            (5, true),
            (125, false),
            (126, true),
            (70_000, false),
        ] {
            bytes.extend(frame(OpCode::Data(Data::Binary), payload, masked));
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    #[test]
    fn boundaries_are_found_however_the_stream_is_split() {
        let (bytes, ends) = stream();
        for chunk in [1, 2, 3, 7, 13, 1000, bytes.len()] {
            let mut frames = Frames::default();
            let mut seen = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let n = chunk.min(bytes.len() - at);
                for i in 0..n {
                    frames.feed(&bytes[at + i..at + i + 1]);
                    if frames.at_boundary() {
                        seen.push(at + i + 1);
                    }
                }
                at += n;
            }
            assert_eq!(seen, ends, "chunk {chunk}");
        }
    }

    #[test]
    fn reading_at_most_to_boundary_stops_exactly_at_the_end_of_a_frame() {
        let (bytes, ends) = stream();
        let mut frames = Frames::default();
        frames.feed(&bytes[..3]);
        let mut at = 3;
        while !frames.at_boundary() {
            let n = frames.to_boundary().min(1000);
            assert!(n > 0);
            frames.feed(&bytes[at..at + n]);
            at += n;
        }
        assert_eq!(at, ends[1]);
        assert_eq!(frames.to_boundary(), 0);
    }

    #[test]
    fn a_close_frame_going_by_is_noticed() {
        let mut frames = Frames::default();
        frames.feed(&frame(OpCode::Data(Data::Text), 3, true));
        assert!(!frames.saw_close());
        frames.feed(&close_frame(1000, "bye", true));
        assert!(frames.saw_close() && frames.at_boundary());
    }

    #[test]
    fn a_reserved_opcode_breaks_the_stream_for_good() {
        let mut frames = Frames::default();
        frames.feed(&[0x83, 0x00]);
        assert!(frames.is_broken() && !frames.at_boundary());
        frames.feed(&frame(OpCode::Data(Data::Text), 1, false));
        assert!(!frames.at_boundary(), "never trusted again");
    }

    #[test]
    fn close_frames_carry_the_code_and_reason_and_are_masked_only_towards_servers() {
        let to_client = close_frame(4401, "session ended", false);
        assert_eq!(to_client[0], 0x88, "FIN + close opcode");
        assert_eq!(to_client[1], 2 + 13, "unmasked, payload length");
        assert_eq!(&to_client[2..4], &4401u16.to_be_bytes());
        assert_eq!(&to_client[4..], b"session ended");

        let to_server = close_frame(4401, "session ended", true);
        assert_eq!(to_server[1], 0x80 | 15, "masked");
        let (mask, payload) = to_server[2..].split_at(4);
        let unmasked: Vec<u8> = payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(&unmasked[..2], &4401u16.to_be_bytes());
        assert_eq!(&unmasked[2..], b"session ended");
        let mut frames = Frames::default();
        frames.feed(&to_server);
        assert!(frames.at_boundary() && frames.saw_close());
    }
}
