//! The queue envelope (gateway → worker), its body rule, and the processed message
//! (worker → gateways, store).

use crate::ids::{ClientMsgId, GatewayId, RoomId, UserId};
use crate::time::Timestamp;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

/// Version of the envelope format gateways write; `docs/envelope.schema.json` describes it.
/// Version 2 added the optional `trace`; workers still read version 1.
pub const ENVELOPE_VERSION: u32 = 2;
/// Oldest envelope version workers read.
pub const ENVELOPE_MIN_VERSION: u32 = 1;
/// Largest `body` of a message, in UTF-8 bytes.
pub const MAX_BODY_BYTES: usize = 4096;

/// Why a message body breaks the contract. The texts are what clients read in `error`
/// events and HTTP answers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body must not be empty")]
    Empty,
    #[error("body is {0} bytes; the limit is {MAX_BODY_BYTES}")]
    TooLarge(usize),
    #[error("body must not hold control characters other than tab, line feed and carriage return")]
    ControlCharacter,
}

/// Checks a message body against the contract: non-empty, at most 4096 UTF-8 bytes, and
/// no control character but tab, line feed and carriage return. A NUL cannot be stored
/// in PostgreSQL text, and each other control character is written as a six-byte escape.
/// Gateways check it on the way in; workers again, for envelopes other writers put on
/// the queue.
pub fn check_body(body: &str) -> Result<(), BodyError> {
    if body.is_empty() {
        return Err(BodyError::Empty);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::TooLarge(body.len()));
    }
    if body
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(BodyError::ControlCharacter);
    }
    Ok(())
}

/// A message's identity: its room orders it (queue partition, FIFO group), and room,
/// sender and client id together deduplicate it (the store's unique key, SQS FIFO).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub room: RoomId,
    pub from: UserId,
    pub id: ClientMsgId,
}

/// What a gateway puts on the ingest queue: one JSON object per message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub id: ClientMsgId,
    pub room: RoomId,
    pub from: UserId,
    pub body: String,
    pub sent_at: Timestamp,
    pub gateway: GatewayId,
    /// Follows the message through every process's logs (v2; absent in v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// A new trace id: 16 hex digits.
pub fn new_trace() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

impl Envelope {
    pub fn key(&self) -> MessageKey {
        MessageKey {
            room: self.room.clone(),
            from: self.from.clone(),
            id: self.id.clone(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// Parses and checks the version; a worker refuses what it does not understand.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(ENVELOPE_MIN_VERSION..=ENVELOPE_VERSION).contains(&env.v) {
            return Err(format!("unsupported envelope version {}", env.v));
        }
        Ok(env)
    }
}

/// What the enrichment stages found in a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enriched {
    pub mentions: Vec<String>,
    pub hashtags: Vec<String>,
    pub links: Vec<String>,
    /// ISO 639-3 code, or null when the detector is not confident.
    pub lang: Option<String>,
    pub flagged: bool,
}

/// A stored, enriched message with its room sequence number. Serializes as the
/// `message` event of the wire contract, `"type":"message"` included.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct StoredMessage {
    pub room: RoomId,
    pub seq: u64,
    pub id: ClientMsgId,
    pub from: UserId,
    /// Censored when `enriched.flagged`; the original is never stored.
    pub body: String,
    pub sent_at: Timestamp,
    pub enriched: Enriched,
    /// The envelope's trace id, when it had one.
    #[serde(default)]
    pub trace: Option<String>,
}

impl Serialize for StoredMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("StoredMessage", 9)?;
        st.serialize_field("type", "message")?;
        st.serialize_field("room", &self.room)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("from", &self.from)?;
        st.serialize_field("body", &self.body)?;
        st.serialize_field("sent_at", &self.sent_at)?;
        st.serialize_field("enriched", &self.enriched)?;
        if let Some(trace) = &self.trace {
            st.serialize_field("trace", trace)?;
        }
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_matches_the_contract_example() {
        let raw = r#"{"v":1,"id":"c-1","room":"lobby","from":"alice","body":"hi @bob","sent_at":"2026-11-25T18:00:00.123Z","gateway":"gw-7f3a"}"#;
        let env = Envelope::from_json(raw.as_bytes()).unwrap();
        assert_eq!(env.room.as_str(), "lobby");
        assert_eq!(env.trace, None);
        assert_eq!(
            String::from_utf8(env.to_json()).unwrap(),
            raw,
            "v1 reads and writes back"
        );
        let v2 = raw
            .replace(r#""v":1"#, r#""v":2"#)
            .replace('}', r#","trace":"0123456789abcdef"}"#);
        let env2 = Envelope::from_json(v2.as_bytes()).unwrap();
        assert_eq!(env2.trace.as_deref(), Some("0123456789abcdef"));
        let v3 = raw.replace(r#""v":1"#, r#""v":3"#);
        assert!(
            Envelope::from_json(v3.as_bytes())
                .unwrap_err()
                .contains("version 3")
        );
    }

    #[test]
    fn bodies_break_the_rule_with_the_texts_clients_read() {
        for body in [
            "a\u{0}b",
            "\u{1b}[31m",
            "del \u{7f}",
            "c1 \u{85}",
            "\u{1f}🙂",
        ] {
            assert_eq!(
                check_body(body),
                Err(BodyError::ControlCharacter),
                "{body:?}"
            );
        }
        assert!(check_body("Total:\t€12.50\r\nДоставка 🚚\n").is_ok());
        assert!(check_body(&"é".repeat(2048)).is_ok());
        assert_eq!(
            check_body(&"x".repeat(4097)).unwrap_err().to_string(),
            "body is 4097 bytes; the limit is 4096"
        );
        assert_eq!(
            check_body("").unwrap_err().to_string(),
            "body must not be empty"
        );
        assert_eq!(
            BodyError::ControlCharacter.to_string(),
            "body must not hold control characters other than tab, line feed and carriage return"
        );
    }

    #[test]
    fn message_serializes_as_event() {
        let m = StoredMessage {
            room: RoomId::parse("lobby").unwrap(),
            seq: 43,
            id: ClientMsgId::parse("c-1").unwrap(),
            from: UserId::parse("alice").unwrap(),
            body: "hi".into(),
            sent_at: Timestamp::parse_rfc3339("2026-11-25T18:00:00.123Z").unwrap(),
            enriched: Enriched::default(),
            trace: None,
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.starts_with(r#"{"type":"message","room":"lobby","seq":43,"#));
        let back: StoredMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
