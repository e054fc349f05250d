//! Bytes to SQS message bodies and back, message attributes, and deduplication ids.
//!
//! An SQS body is text of a restricted alphabet (no NUL, most control characters,
//! U+FFFE or U+FFFF). Payloads that fit it travel as they are, readable in the console;
//! anything else (not UTF-8, or a refused character) travels as base64, marked by the
//! `courier-encoding` attribute.

use aws_sdk_sqs::types::{Message, MessageAttributeValue};
use sha2::{Digest, Sha256};
use shared::ids::{ClientMsgId, RoomId, UserId};
use shared::message::MessageKey;
use std::collections::HashMap;

/// `base64` when the body is base64 of the payload.
pub(super) const ENCODING: &str = "courier-encoding";
/// Failed attempts of a dead letter, and why it failed.
pub(super) const ATTEMPTS: &str = "courier-attempts";
pub(super) const REASON: &str = "courier-reason";
/// The ingest message group (room) of a dead letter, to replay it into the same group.
pub(super) const GROUP: &str = "courier-group";
/// The idempotency key, set on every ingest message; SQS keeps attributes when its
/// redrive policy moves a message, and the worker copies them onto the dead letters it
/// sends, so dead letters are selected without parsing their payload.
const KEY_ROOM: &str = "courier-key-room";
const KEY_FROM: &str = "courier-key-from";
const KEY_ID: &str = "courier-key-id";
/// SQS's limit for a message, and for a whole batch request; the margin covers ids and
/// attributes.
pub(super) const MAX_BODY: usize = 256 * 1024 - 4096;
const MAX_REASON: usize = 1000;

/// A payload as an SQS body.
pub(super) struct Body {
    pub(super) text: String,
    pub(super) base64: bool,
}

impl Body {
    pub(super) fn encode(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) if s.chars().all(allowed) => Self {
                text: s.to_owned(),
                base64: false,
            },
            _ => Self {
                text: base64_encode(bytes),
                base64: true,
            },
        }
    }

    pub(super) fn len(&self) -> usize {
        self.text.len()
    }

    /// The message attributes that go with it.
    pub(super) fn attributes(&self) -> Option<HashMap<String, MessageAttributeValue>> {
        self.base64
            .then(|| HashMap::from([(ENCODING.to_owned(), string_attr("base64"))]))
    }
}

/// The payload of a received message. A body marked base64 that does not decode is
/// handed on as it is (the worker dead-letters what it cannot read).
pub(super) fn payload_of(m: &Message) -> Vec<u8> {
    let text = m.body().unwrap_or_default();
    if attr(m, ENCODING) == Some("base64")
        && let Some(bytes) = base64_decode(text)
    {
        return bytes;
    }
    text.as_bytes().to_vec()
}

/// The characters SQS accepts in a body.
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

pub(super) fn string_attr(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
}

pub(super) fn number_attr(value: u32) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(value.to_string())
        .build()
        .expect("data_type is set")
}

/// A string or number message attribute of a received message.
pub(super) fn attr<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
    m.message_attributes()?.get(key)?.string_value()
}

/// The reason text as an attribute value: printable, at most `MAX_REASON` bytes.
pub(super) fn reason_attr(reason: &str) -> MessageAttributeValue {
    let mut r: String = reason
        .chars()
        .map(|c| if allowed(c) { c } else { '?' })
        .collect();
    if r.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
    }
    if r.is_empty() {
        r.push('-');
    }
    string_attr(&r)
}

/// The attributes of a message: its body's encoding, and its key when it has one.
pub(super) fn attributes(
    body: &Body,
    key: Option<&MessageKey>,
) -> Option<HashMap<String, MessageAttributeValue>> {
    let mut attrs = body.attributes().unwrap_or_default();
    if let Some(fields) = key.and_then(key_attributes) {
        attrs.extend(fields.map(|(name, value)| (name.to_owned(), value)));
    }
    (!attrs.is_empty()).then_some(attrs)
}

/// The key's attributes. `None` when a part of it has a character SQS refuses in an
/// attribute (an id may): such a message travels without them, and readers take the
/// key from its envelope.
fn key_attributes(key: &MessageKey) -> Option<[(&'static str, MessageAttributeValue); 3]> {
    let fields = [
        (KEY_ROOM, key.room.as_str()),
        (KEY_FROM, key.from.as_str()),
        (KEY_ID, key.id.as_str()),
    ];
    if !fields.iter().all(|(_, v)| v.chars().all(allowed)) {
        return None;
    }
    Some(fields.map(|(name, value)| (name, string_attr(value))))
}

/// The key a received message carries; `None` for one sent before keys were.
pub(super) fn key_of(m: &Message) -> Option<MessageKey> {
    Some(MessageKey {
        room: RoomId::parse(attr(m, KEY_ROOM)?).ok()?,
        from: UserId::parse(attr(m, KEY_FROM)?).ok()?,
        id: ClientMsgId::parse(attr(m, KEY_ID)?).ok()?,
    })
}

/// The FIFO deduplication id of an ingest message: SHA-256 of its key's room, sender and
/// id (NUL-separated), so a client's resend of the same message within SQS's
/// five-minute window is dropped by SQS itself. These are the bytes hashed since before
/// the key was passed explicitly (it was read from the envelope then): a message
/// published by an older and a newer process in a rolling deploy gets the same id.
pub(super) fn dedup_id(key: &MessageKey) -> String {
    let mut h = Sha256::new();
    h.update(key.room.as_str().as_bytes());
    h.update([0u8]);
    h.update(key.from.as_str().as_bytes());
    h.update([0u8]);
    h.update(key.id.as_str().as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = B64.iter().position(|b| b == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for input in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 254, 1, 2],
        ] {
            let e = base64_encode(input);
            assert_eq!(base64_decode(&e).as_deref(), Some(input), "{e}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm9v!mFy"), None);
    }

    #[test]
    fn bodies_stay_readable_unless_sqs_would_refuse_them() {
        let plain = Body::encode("{\"body\":\"héllo\\n\"}".as_bytes());
        assert!(!plain.base64);
        assert!(plain.attributes().is_none());
        for odd in [&b"a\0b"[..], "x\u{FFFF}".as_bytes(), &[0xff, 0xfe]] {
            let b = Body::encode(odd);
            assert!(b.base64);
            assert_eq!(base64_decode(&b.text).as_deref(), Some(odd));
        }
    }

    fn key(room: &str, from: &str, id: &str) -> MessageKey {
        MessageKey {
            room: RoomId::parse(room).unwrap(),
            from: UserId::parse(from).unwrap(),
            id: ClientMsgId::parse(id).unwrap(),
        }
    }

    #[test]
    fn dedup_ids_follow_room_from_and_id() {
        let a = key("r", "u", "m1");
        assert_eq!(dedup_id(&a), dedup_id(&key("r", "u", "m1")));
        assert_ne!(dedup_id(&a), dedup_id(&key("r", "u", "m2")));
        assert_ne!(dedup_id(&a), dedup_id(&key("s", "u", "m1")));
        assert_ne!(dedup_id(&a), dedup_id(&key("r", "v", "m1")));
        // What the id was when it was read from the envelope: SHA-256 of "r\0u\0m1".
        // A deploy must not change it, or SQS would take a resend across it twice.
        assert_eq!(
            dedup_id(&a),
            "fc10bc5205d07a053f759d09d306c5de4c4cf0b57d132b70e79f21fcf345b9c2"
        );
    }

    #[test]
    fn keys_travel_as_attributes_unless_sqs_would_refuse_them() {
        let k = key("r", "u", "m 1");
        let body = Body::encode(b"\0");
        let m = Message::builder()
            .set_message_attributes(attributes(&body, Some(&k)))
            .build();
        assert_eq!(key_of(&m), Some(k));
        assert_eq!(attr(&m, ENCODING), Some("base64"));
        assert!(attributes(&Body::encode(b"{}"), None).is_none());
        assert!(key_attributes(&key("r", "u", "x\u{FFFF}")).is_none());
        assert_eq!(key_of(&Message::builder().build()), None);
    }
}
