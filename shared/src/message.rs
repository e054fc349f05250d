//! The queue envelope (gateway → worker), its body rule, and the processed message
//! (worker → gateways, store).

use crate::event::{EventKind, Reactions};
use crate::ids::{ClientMsgId, GatewayId, RoomId, UserId};
use crate::time::Timestamp;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

/// Version of the envelope format gateways write; `docs/envelope.schema.json` describes it.
/// Version 2 added the optional `trace`; version 3 the log events (`kind`, `target`,
/// `emoji`, `remove`, `moderated`) and `reply_to`. Workers still read versions 1 and 2.
pub const ENVELOPE_VERSION: u32 = 3;
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
    /// What this log event is (v3; a message when absent). Edits, deletes and
    /// reactions change the message `target` of the same room.
    #[serde(default, skip_serializing_if = "EventKind::is_message")]
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// A message's answer to an earlier message of its room (v3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// A reaction's emoji (v3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    /// A reaction taken back (v3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
    /// A delete by the operator (HTTP API), allowed whoever wrote the target (v3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moderated: bool,
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

    /// A plain message envelope (kind `message`), as a gateway writes one for `send`.
    pub fn message(
        room: RoomId,
        from: UserId,
        id: ClientMsgId,
        body: String,
        gateway: GatewayId,
    ) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            id,
            room,
            from,
            body,
            sent_at: Timestamp::now(),
            gateway,
            trace: Some(new_trace()),
            kind: EventKind::Message,
            target: None,
            reply_to: None,
            emoji: None,
            remove: false,
            moderated: false,
        }
    }

    /// Parses and checks the version; a worker refuses what it does not understand.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(ENVELOPE_MIN_VERSION..=ENVELOPE_VERSION).contains(&env.v) {
            return Err(format!("unsupported envelope version {}", env.v));
        }
        Ok(env)
    }

    /// Checks the fields each kind needs (the wire rules, again, for envelopes other
    /// writers put on the queue): a message or an edit has a valid body, an edit, a
    /// delete or a reaction names its target, a reaction its emoji.
    pub fn check(&self) -> Result<(), String> {
        let body = || check_body(&self.body).map_err(|e| format!("invalid envelope body: {e}"));
        let target = || match self.target {
            Some(t) if t > 0 => Ok(()),
            _ => Err(format!("a {} needs a target seq", self.kind.as_str())),
        };
        match self.kind {
            EventKind::Message => body(),
            EventKind::Edit => body().and(target()),
            EventKind::Delete => target(),
            EventKind::Reaction => {
                target()?;
                let emoji = self.emoji.as_deref().ok_or("a reaction needs an emoji")?;
                crate::event::check_emoji(emoji)
            }
        }
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
    /// What this log event is; a message when absent.
    #[serde(default)]
    pub kind: EventKind,
    /// The `seq` an edit, a delete or a reaction changes.
    #[serde(default)]
    pub target: Option<u64>,
    /// The `seq` a message answers.
    #[serde(default)]
    pub reply_to: Option<u64>,
    /// A reaction's emoji.
    #[serde(default)]
    pub emoji: Option<String>,
    /// A reaction taken back.
    #[serde(default)]
    pub remove: bool,
    /// A delete by the operator.
    #[serde(default)]
    pub moderated: bool,
    /// Latest state of a message (kind `message`): when it was last edited.
    #[serde(default)]
    pub edited_at: Option<Timestamp>,
    /// Latest state: deleted (its body and enrichment are cleared).
    #[serde(default)]
    pub deleted: bool,
    /// Latest state: who reacted with what, each list sorted by user name.
    #[serde(default)]
    pub reactions: Reactions,
}

impl StoredMessage {
    /// A plain message (kind `message`, no reply, never changed).
    #[allow(clippy::too_many_arguments)]
    pub fn plain(
        room: RoomId,
        seq: u64,
        id: ClientMsgId,
        from: UserId,
        body: String,
        sent_at: Timestamp,
        enriched: Enriched,
        trace: Option<String>,
    ) -> Self {
        Self {
            room,
            seq,
            id,
            from,
            body,
            sent_at,
            enriched,
            trace,
            kind: EventKind::Message,
            target: None,
            reply_to: None,
            emoji: None,
            remove: false,
            moderated: false,
            edited_at: None,
            deleted: false,
            reactions: Reactions::new(),
        }
    }
}

/// The `message` event of the wire contract, `"type":"message"` included; the event and
/// latest-state fields only when they say something, so a plain message reads as before.
impl Serialize for StoredMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_map(None)?;
        st.serialize_entry("type", "message")?;
        st.serialize_entry("room", &self.room)?;
        st.serialize_entry("seq", &self.seq)?;
        st.serialize_entry("id", &self.id)?;
        st.serialize_entry("from", &self.from)?;
        st.serialize_entry("body", &self.body)?;
        st.serialize_entry("sent_at", &self.sent_at)?;
        st.serialize_entry("enriched", &self.enriched)?;
        if let Some(trace) = &self.trace {
            st.serialize_entry("trace", trace)?;
        }
        if !self.kind.is_message() {
            st.serialize_entry("kind", &self.kind)?;
        }
        if let Some(target) = self.target {
            st.serialize_entry("target", &target)?;
        }
        if let Some(reply_to) = self.reply_to {
            st.serialize_entry("reply_to", &reply_to)?;
        }
        if let Some(emoji) = &self.emoji {
            st.serialize_entry("emoji", emoji)?;
        }
        if self.kind == EventKind::Reaction {
            st.serialize_entry("remove", &self.remove)?;
        }
        if self.moderated {
            st.serialize_entry("moderated", &true)?;
        }
        if let Some(at) = &self.edited_at {
            st.serialize_entry("edited_at", at)?;
        }
        if self.deleted {
            st.serialize_entry("deleted", &true)?;
        }
        if !self.reactions.is_empty() {
            st.serialize_entry("reactions", &self.reactions)?;
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
        let v4 = raw.replace(r#""v":1"#, r#""v":4"#);
        assert!(
            Envelope::from_json(v4.as_bytes())
                .unwrap_err()
                .contains("version 4")
        );
        let edit = r#"{"v":3,"id":"e-1","room":"lobby","from":"alice","body":"fixed","sent_at":"2026-11-25T18:00:00.123Z","gateway":"gw-7f3a","kind":"edit","target":43}"#;
        let env3 = Envelope::from_json(edit.as_bytes()).unwrap();
        assert_eq!((env3.kind, env3.target), (EventKind::Edit, Some(43)));
        assert!(env3.check().is_ok());
        assert_eq!(String::from_utf8(env3.to_json()).unwrap(), edit);
        let delete = edit
            .replace(r#""body":"fixed""#, r#""body":"""#)
            .replace("edit", "delete");
        assert!(
            Envelope::from_json(delete.as_bytes())
                .unwrap()
                .check()
                .is_ok()
        );
        let no_target = edit.replace(r#","target":43"#, "");
        let e = Envelope::from_json(no_target.as_bytes()).unwrap().check();
        assert!(e.unwrap_err().contains("target"));
        let react = edit
            .replace("edit", "reaction")
            .replace(r#""body":"fixed""#, r#""body":"""#);
        let e = Envelope::from_json(react.as_bytes()).unwrap().check();
        assert!(e.unwrap_err().contains("emoji"));
    }

    #[test]
    fn the_published_schema_knows_this_version_and_every_field() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/envelope.schema.json")).unwrap();
        let versions = schema["properties"]["v"]["enum"].as_array().unwrap();
        assert!(versions.contains(&ENVELOPE_VERSION.into()));
        let mut env = Envelope::message(
            RoomId::parse("r").unwrap(),
            UserId::parse("u").unwrap(),
            ClientMsgId::parse("c").unwrap(),
            "b".into(),
            GatewayId::from_string("gw-1".into()),
        );
        (env.kind, env.target, env.reply_to) = (EventKind::Reaction, Some(1), Some(1));
        (env.emoji, env.remove, env.moderated) = (Some("👍".into()), true, true);
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        for field in json.as_object().unwrap().keys() {
            assert!(
                schema["properties"].get(field).is_some(),
                "docs/envelope.schema.json lacks {field}"
            );
        }
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
        let mut m = StoredMessage::plain(
            RoomId::parse("lobby").unwrap(),
            43,
            ClientMsgId::parse("c-1").unwrap(),
            UserId::parse("alice").unwrap(),
            "hi".into(),
            Timestamp::parse_rfc3339("2026-11-25T18:00:00.123Z").unwrap(),
            Enriched::default(),
            None,
        );
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.starts_with(r#"{"type":"message","room":"lobby","seq":43,"#));
        assert!(
            !json.contains("kind"),
            "a plain message reads as before: {json}"
        );
        let back: StoredMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        m.kind = EventKind::Reaction;
        m.target = Some(7);
        m.emoji = Some("👍".into());
        m.body = String::new();
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.ends_with(r#""kind":"reaction","target":7,"emoji":"👍","remove":false}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<StoredMessage>(&json).unwrap(), m);
    }
}
