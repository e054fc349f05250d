//! Pages of stored messages cut to fit one frame: `history` replies and the HTTP API's
//! message pages.
//!
//! A page of 200 messages of 4 KiB each is 850 KB, and one of eleven bodies of control
//! characters (each escaped to six bytes) is 270 KB: more than a socket write buffer
//! should hold for one client. So a page holds the messages that fit [`PAGE_BUDGET`]
//! (always one), and the client pages on: `history` keeps the newest (the client goes on
//! with `before`), HTTP keeps the oldest (the caller goes on with `since`).

use shared::{RoomId, StoredMessage};

/// Largest frame the server ever builds, in bytes: the gateway's socket write buffer
/// holds at least this much, so no reply it builds can close a connection.
pub const MAX_SERVER_FRAME: usize = 256 * 1024;
/// Largest `history` reply (and HTTP page of messages): a page is cut to the messages
/// that fit, and the client pages on. One message is at most a few tens of KiB (a
/// 4096-byte body escaped, and what enrichment found in it), so a page always holds one.
pub const PAGE_BUDGET: usize = 192 * 1024;

/// Which end of a page to keep when it must be cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// `history`: the newest; the client pages on with `before`.
    Newest,
    /// HTTP `since`: the oldest; the client pages on with `since`.
    Oldest,
}

/// Serializes `messages` (oldest first) as a JSON array of at most `budget` bytes, keeping
/// as many as fit from the `keep` end, and always one. Returns the array and its length.
pub fn page_json(messages: &[StoredMessage], budget: usize, keep: Keep) -> (String, usize) {
    let mut parts: Vec<String> = Vec::new();
    let mut size = 2; // []
    let ordered: Box<dyn Iterator<Item = &StoredMessage>> = match keep {
        Keep::Newest => Box::new(messages.iter().rev()),
        Keep::Oldest => Box::new(messages.iter()),
    };
    for m in ordered {
        let json = serde_json::to_string(m).expect("messages serialize");
        let grown = size + json.len() + usize::from(!parts.is_empty());
        if grown > budget && !parts.is_empty() {
            break;
        }
        size = grown;
        parts.push(json);
    }
    if keep == Keep::Newest {
        parts.reverse();
    }
    let mut out = String::with_capacity(size);
    out.push('[');
    out.push_str(&parts.join(","));
    out.push(']');
    (out, parts.len())
}

/// The `history` reply for `messages` (oldest first), cut to the newest that fit
/// [`PAGE_BUDGET`]; the same JSON as `ServerEvent::History` would give for them.
pub fn history_frame(room: &RoomId, messages: &[StoredMessage], reference: Option<&str>) -> String {
    let room = serde_json::to_string(room).expect("names serialize");
    let reference = reference.map(|r| serde_json::to_string(r).expect("strings serialize"));
    let fixed = r#"{"type":"history","room":,"messages":}"#.len()
        + room.len()
        + reference
            .as_ref()
            .map_or(0, |r| r.len() + r#","ref":"#.len());
    let (page, _) = page_json(messages, PAGE_BUDGET.saturating_sub(fixed), Keep::Newest);
    let mut out = format!(r#"{{"type":"history","room":{room},"messages":{page}"#);
    if let Some(r) = reference {
        out.push_str(r#","ref":"#);
        out.push_str(&r);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerEvent;
    use serde_json::Value;
    use shared::{ClientMsgId, UserId};

    fn stored(seq: u64, body: &str) -> StoredMessage {
        StoredMessage::plain(
            RoomId::parse("big").unwrap(),
            seq,
            ClientMsgId::parse(&format!("m-{seq}")).unwrap(),
            UserId::parse("zoe").unwrap(),
            body.to_owned(),
            shared::Timestamp::now(),
            Default::default(),
            None,
        )
    }

    #[test]
    fn history_frames_are_cut_to_the_newest_that_fit() {
        let room = RoomId::parse("big").unwrap();
        let small: Vec<StoredMessage> = (1..=3).map(|s| stored(s, "hi 👋 #42")).collect();
        let ev = ServerEvent::History {
            room: &room,
            messages: &small,
            reference: Some("h\"1"),
        };
        assert_eq!(history_frame(&room, &small, Some("h\"1")), ev.to_json());
        let long = "Заказ №5318008 за €12.50 🚚 ".repeat(100);
        let cut = (0..=4000)
            .rev()
            .find(|&i| long.is_char_boundary(i))
            .unwrap();
        let big: Vec<StoredMessage> = (1..=200).map(|s| stored(s, &long[..cut])).collect();
        let frame = history_frame(&room, &big, None);
        assert!(frame.len() <= PAGE_BUDGET, "{}", frame.len());
        let v: Value = serde_json::from_str(&frame).unwrap();
        let seqs: Vec<u64> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert!(seqs.len() < 200 && seqs.last() == Some(&200), "{seqs:?}");
        assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]));
        let (oldest, n) = page_json(&big, PAGE_BUDGET, Keep::Oldest);
        let v: Value = serde_json::from_str(&oldest).unwrap();
        assert_eq!(
            (v[0]["seq"].as_u64(), v.as_array().unwrap().len()),
            (Some(1), n)
        );
    }
}
