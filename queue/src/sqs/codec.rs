//! Bytes to SQS message bodies and back, message attributes, and deduplication ids.
//!
//! An SQS body is text of a restricted alphabet (no NUL, most control characters,
//! U+FFFE or U+FFFF). Payloads that fit it travel as they are, readable in the console;
//! anything else (not UTF-8, or a refused character) travels as base64, marked by the
//! `courier-encoding` attribute.

use aws_sdk_sqs::types::{Message, MessageAttributeValue};
use sha2::{Digest, Sha256};
use shared::ids::RoomId;
use std::collections::HashMap;

/// `base64` when the body is base64 of the payload.
pub(super) const ENCODING: &str = "courier-encoding";
/// Failed attempts of a dead letter, and why it failed.
pub(super) const ATTEMPTS: &str = "courier-attempts";
pub(super) const REASON: &str = "courier-reason";
/// The ingest message group (room) of a dead letter, to replay it into the same group.
pub(super) const GROUP: &str = "courier-group";
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

/// The FIFO deduplication id of an ingest message: SHA-256 of (room, from, id) when the
/// payload is an envelope, so a client's resend of the same message within SQS's
/// five-minute window is dropped by SQS itself; of the payload otherwise.
pub(super) fn dedup_id(room: &RoomId, payload: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        #[serde(borrow)]
        from: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    let mut h = Sha256::new();
    h.update(room.as_str().as_bytes());
    h.update([0u8]);
    match serde_json::from_slice::<Key>(payload) {
        Ok(k) => {
            h.update(k.from.as_bytes());
            h.update([0u8]);
            h.update(k.id.as_bytes());
        }
        Err(_) => {
            h.update([1u8]);
            h.update(payload);
        }
    }
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

    #[test]
    fn dedup_ids_follow_room_from_and_id() {
        let room = RoomId::parse("r").unwrap();
        let a = br#"{"id":"m1","from":"u","body":"x","sent_at":1}"#;
        let resent = br#"{"id":"m1","from":"u","body":"x","sent_at":2}"#;
        let other = br#"{"id":"m2","from":"u","body":"x","sent_at":1}"#;
        assert_eq!(dedup_id(&room, a), dedup_id(&room, resent));
        assert_ne!(dedup_id(&room, a), dedup_id(&room, other));
        assert_ne!(
            dedup_id(&room, a),
            dedup_id(&RoomId::parse("s").unwrap(), a)
        );
        assert_eq!(dedup_id(&room, b"not json").len(), 64);
    }
}
