//! The queue envelope (gateway → worker) and the processed message (worker → gateways, store).

use crate::ids::{ClientMsgId, GatewayId, RoomId, UserId};
use crate::time::Timestamp;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

/// Version of the envelope format gateways write; `docs/envelope.schema.json` describes it.
/// Version 2 added the optional `trace`; workers still read version 1.
pub const ENVELOPE_VERSION: u32 = 2;
/// Oldest envelope version workers read.
pub const ENVELOPE_MIN_VERSION: u32 = 1;

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
