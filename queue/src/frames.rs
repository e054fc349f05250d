//! Processed messages on their way from workers to gateways, as wire frames: a worker
//! serializes each stored message once (it serializes as the `message` event clients
//! receive), and a gateway forwards those bytes to every member without parsing and
//! serializing them again. It reads only what it orders them by.
//!
//! A packed body is newline-delimited JSON: one `message` event per line. Brokers carry
//! one body per worker batch instead of one per message. `unpack` also reads a single
//! object (one message) and a JSON array of them, the forms older workers sent.

use bytes::Bytes;
use serde::Deserialize;
use shared::ids::RoomId;
use shared::message::StoredMessage;
use shared::time::Timestamp;
use std::fmt;

/// One processed message as its wire frame, with what gateways order it by.
#[derive(Clone)]
pub struct Frame {
    pub room: RoomId,
    pub seq: u64,
    /// When the gateway first received it (epoch ms), for the end-to-end latency.
    pub sent_at_ms: i64,
    /// The envelope's trace id, for logs.
    pub trace: Option<String>,
    /// The `message` event, UTF-8 JSON (no trailing newline).
    pub text: Bytes,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("room", &self.room)
            .field("seq", &self.seq)
            .field("bytes", &self.text.len())
            .finish()
    }
}

impl Frame {
    /// Serializes a stored message once: what an in-process bus hands every gateway.
    pub fn of(m: &StoredMessage) -> Self {
        Self {
            room: m.room.clone(),
            seq: m.seq,
            sent_at_ms: m.sent_at.as_millis(),
            trace: m.trace.clone(),
            text: Bytes::from(serde_json::to_vec(m).expect("messages serialize")),
        }
    }

    /// The whole message again, for tests and tools (gateways never need it).
    pub fn decode(&self) -> Result<StoredMessage, serde_json::Error> {
        serde_json::from_slice(&self.text)
    }

    /// The frame as text; `Frame`s are only built from UTF-8 JSON.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text).expect("frames are UTF-8 JSON")
    }
}

/// What a gateway reads of each message; the other fields are skipped, not allocated.
#[derive(Deserialize)]
struct Head {
    /// `message`: what tells a message from the other bodies a feed carries (room
    /// changes, presence and typing signals).
    #[serde(rename = "type")]
    kind: String,
    room: RoomId,
    seq: u64,
    sent_at: Timestamp,
    #[serde(default)]
    trace: Option<String>,
}

/// Why a body is not a packed batch.
#[derive(Debug, thiserror::Error)]
#[error("not a batch of messages: {0}")]
pub struct NotFrames(String);

/// Packs messages into bodies of at most `max_bytes` (a message that alone exceeds it
/// gets a body of its own: the caller decides what to do with it). Each body is
/// newline-delimited `message` events.
pub fn pack(messages: &[std::sync::Arc<StoredMessage>], max_bytes: usize) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut current: Vec<u8> = Vec::with_capacity(4096);
    for m in messages {
        let start = current.len();
        if start > 0 {
            current.push(b'\n');
        }
        serde_json::to_writer(&mut current, &**m).expect("messages serialize");
        if start > 0 && current.len() > max_bytes {
            // Too much for this body: it starts the next one.
            let line = current.split_off(start + 1);
            current.truncate(start);
            bodies.push(std::mem::replace(&mut current, line));
        }
    }
    if !current.is_empty() {
        bodies.push(current);
    }
    bodies
}

/// The frames of a body `pack` made (or of one message, or a JSON array of them).
pub fn unpack(body: &[u8]) -> Result<Vec<Frame>, NotFrames> {
    let bad = |e: serde_json::Error| NotFrames(e.to_string());
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        // The array older workers sent: parsed whole, then serialized once.
        let messages: Vec<StoredMessage> = serde_json::from_slice(body).map_err(bad)?;
        return Ok(messages.iter().map(Frame::of).collect());
    }
    std::str::from_utf8(body).map_err(|e| NotFrames(e.to_string()))?;
    let shared = Bytes::copy_from_slice(body);
    let mut frames = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Head>();
    let mut start = 0;
    while let Some(head) = stream.next() {
        let head = head.map_err(bad)?;
        if head.kind != "message" {
            return Err(NotFrames(format!("a {:?}, not a message", head.kind)));
        }
        let end = stream.byte_offset();
        let text = trim(&shared, start, end);
        frames.push(Frame {
            room: head.room,
            seq: head.seq,
            sent_at_ms: head.sent_at.as_millis(),
            trace: head.trace,
            text,
        });
        start = end;
    }
    if frames.is_empty() {
        return Err(NotFrames("no message in it".into()));
    }
    Ok(frames)
}

/// `shared[start..end]` without surrounding whitespace, sharing its memory.
fn trim(shared: &Bytes, mut start: usize, mut end: usize) -> Bytes {
    while start < end && shared[start].is_ascii_whitespace() {
        start += 1;
    }
    while end > start && shared[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    shared.slice(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Built from its wire form, so fields added later with defaults need no change here.
    fn msg(room: &str, seq: u64, body: &str) -> Arc<StoredMessage> {
        let mut v = serde_json::json!({
            "room": room, "seq": seq, "id": format!("c-{seq}"), "from": "ann", "body": body,
            "sent_at": Timestamp::from_millis(1_764_000_000_123),
            "enriched": shared::message::Enriched::default(),
        });
        if seq.is_multiple_of(2) {
            v["trace"] = format!("t{seq}").into();
        }
        Arc::new(serde_json::from_value(v).expect("a stored message from JSON"))
    }

    #[test]
    fn packed_frames_are_the_serialized_messages() {
        let bodies = [
            "hi",
            "line\nbreak \"quoted\" 🎉",
            "{\"looks\":\"like json\"}\n",
        ];
        let messages: Vec<_> = (1..=3)
            .map(|n| msg("lobby", n, bodies[n as usize - 1]))
            .collect();
        let packed = pack(&messages, 1 << 20);
        assert_eq!(packed.len(), 1);
        let frames = unpack(&packed[0]).unwrap();
        assert_eq!(frames.len(), 3);
        for (f, m) in frames.iter().zip(&messages) {
            assert_eq!((f.room.as_str(), f.seq), ("lobby", m.seq));
            assert_eq!(f.sent_at_ms, 1_764_000_000_123);
            assert_eq!(f.trace, m.trace);
            assert_eq!(f.as_str(), serde_json::to_string(&**m).unwrap());
            assert_eq!(&f.decode().unwrap(), &**m);
        }
    }

    #[test]
    fn bodies_are_split_at_the_bound_and_nothing_is_lost() {
        let messages: Vec<_> = (1..=50).map(|n| msg("r", n, &"x".repeat(300))).collect();
        let one = serde_json::to_vec(&*messages[0]).unwrap().len();
        let packed = pack(&messages, one * 4 + 10);
        assert!(packed.len() >= 12, "{}", packed.len());
        assert!(packed.iter().all(|b| b.len() <= one * 4 + 10));
        let seqs: Vec<u64> = packed
            .iter()
            .flat_map(|b| unpack(b).unwrap())
            .map(|f| f.seq)
            .collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        // One message over the bound still travels, alone.
        let big = pack(&messages[..2], 10);
        assert_eq!(big.len(), 2);
    }

    #[test]
    fn older_forms_are_read() {
        let messages = vec![msg("a", 1, "one"), msg("b", 7, "two")];
        let array = serde_json::to_vec(&messages).unwrap();
        let frames = unpack(&array).unwrap();
        assert_eq!(frames.iter().map(|f| f.seq).collect::<Vec<_>>(), [1, 7]);
        let single = serde_json::to_vec(&*messages[1]).unwrap();
        let frames = unpack(&single).unwrap();
        assert_eq!((frames[0].room.as_str(), frames[0].seq), ("b", 7));
        assert_eq!(frames[0].text, single);
    }

    #[test]
    fn other_bodies_are_refused() {
        for body in [
            &b"{\"room_changed\":\"lobby\"}"[..],
            b"",
            b"not json",
            b"{\"type\":\"message\",\"room\":\"bad room\",\"seq\":1,\"sent_at\":\"2026-01-01T00:00:00.000Z\"}",
            b"{\"type\":\"typing\",\"room\":\"r\",\"seq\":1,\"sent_at\":\"2026-01-01T00:00:00.000Z\"}",
            b"\xff\xfe",
        ] {
            assert!(unpack(body).is_err(), "{body:?}");
        }
    }
}
