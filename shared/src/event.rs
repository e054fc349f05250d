//! The room log's events (a message, and the edits, deletes and reactions that change
//! one) and the one rule that turns a log into each message's latest state.
//!
//! The store applies these rules in the transaction that writes an event; clients apply
//! them to what they receive ([`RoomState`] is the reference, and the property test holds
//! the store to it). Because every change is an event with its own `seq`, a client that
//! replays from any `since` ends with the same room as the store.

use crate::ids::UserId;
use crate::message::{Enriched, StoredMessage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most distinct emoji on one message; a reaction that would add one more is refused.
pub const MAX_EMOJI_PER_MESSAGE: usize = 20;
/// Most users in one emoji's list; a reaction that would add one more is refused.
pub const MAX_USERS_PER_REACTION: usize = 100;
/// Longest emoji, in UTF-8 bytes (a flag or a family with skin tones fits).
pub const MAX_EMOJI_BYTES: usize = 32;

/// Who reacted with what: emoji → user names, each list sorted by name (byte order), so
/// the order does not depend on when a client started to listen.
pub type Reactions = BTreeMap<String, Vec<UserId>>;

/// What one entry of a room's log is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A message someone sent: the only kind that counts as unread.
    #[default]
    Message,
    /// A new body for `target`, enriched again.
    Edit,
    /// `target` taken back: its body and enrichment are cleared everywhere.
    Delete,
    /// An emoji added to (or, with `remove`, taken from) `target`.
    Reaction,
}

impl EventKind {
    pub fn is_message(&self) -> bool {
        *self == Self::Message
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Edit => "edit",
            Self::Delete => "delete",
            Self::Reaction => "reaction",
        }
    }

    /// The kind named `s` in the store's `kind` column.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "message" => Self::Message,
            "edit" => Self::Edit,
            "delete" => Self::Delete,
            "reaction" => Self::Reaction,
            _ => return None,
        })
    }
}

/// A reaction's emoji: 1 to 32 bytes, no whitespace or control character.
pub fn check_emoji(emoji: &str) -> Result<(), String> {
    if emoji.is_empty() || emoji.len() > MAX_EMOJI_BYTES {
        return Err(format!("emoji must be 1 to {MAX_EMOJI_BYTES} bytes"));
    }
    if emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("emoji must not hold spaces or control characters".into());
    }
    Ok(())
}

/// Why an event cannot change its target (the store stores nothing for it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("message {0} does not exist in this room")]
    Missing(u64),
    #[error("message {0} was deleted")]
    Deleted(u64),
    #[error("seq {0} is not a message (it is an edit, a delete or a reaction)")]
    NotAMessage(u64),
    #[error("only the author of message {0} may change it")]
    NotAuthor(u64),
    #[error("message {0} has the most reactions it may have")]
    TooManyReactions(u64),
}

/// Whether `event` may change `target` (its latest state), by the rules the store
/// enforces: an edit or a delete only by the target's author (a moderated delete by
/// anyone), nothing on a deleted message, and the reaction caps.
pub fn check_target(event: &StoredMessage, target: Option<&StoredMessage>) -> Result<(), Refusal> {
    let seq = event.target.unwrap_or_default();
    let t = target.ok_or(Refusal::Missing(seq))?;
    if !t.kind.is_message() {
        return Err(Refusal::NotAMessage(seq));
    }
    if t.deleted {
        return Err(Refusal::Deleted(seq));
    }
    match event.kind {
        EventKind::Edit if t.from != event.from => Err(Refusal::NotAuthor(seq)),
        EventKind::Delete if t.from != event.from && !event.moderated => {
            Err(Refusal::NotAuthor(seq))
        }
        EventKind::Reaction if !event.remove => {
            let emoji = event.emoji.as_deref().unwrap_or_default();
            match t.reactions.get(emoji) {
                Some(users) if users.contains(&event.from) => Ok(()),
                Some(users) if users.len() >= MAX_USERS_PER_REACTION => {
                    Err(Refusal::TooManyReactions(seq))
                }
                None if t.reactions.len() >= MAX_EMOJI_PER_MESSAGE => {
                    Err(Refusal::TooManyReactions(seq))
                }
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Applies `event` (an edit, a delete or a reaction) to its target's latest state. A
/// client applies it only when the target is known and not deleted; the store only to
/// targets [`check_target`] accepts.
pub fn apply(target: &mut StoredMessage, event: &StoredMessage) {
    if target.deleted {
        return;
    }
    match event.kind {
        EventKind::Message => {}
        EventKind::Edit => {
            target.body.clone_from(&event.body);
            target.enriched = event.enriched.clone();
            target.edited_at = Some(event.sent_at);
        }
        EventKind::Delete => {
            target.deleted = true;
            target.body.clear();
            target.enriched = Enriched::default();
            target.reactions.clear();
        }
        EventKind::Reaction => {
            let emoji = event.emoji.clone().unwrap_or_default();
            let users = target.reactions.entry(emoji.clone()).or_default();
            match (users.binary_search(&event.from), event.remove) {
                (Err(at), false) => users.insert(at, event.from.clone()),
                (Ok(at), true) => {
                    users.remove(at);
                }
                _ => {}
            }
            if users.is_empty() {
                target.reactions.remove(&emoji);
            }
        }
    }
}

/// A client's view of one room: the latest state of every message it has seen, built
/// by applying the frames it receives (history pages, replays, live events) in any
/// mix, each at most once per `seq`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomState {
    messages: BTreeMap<u64, StoredMessage>,
}

impl RoomState {
    /// Applies one `message` frame: a message is kept as given (it carries its latest
    /// state when it comes from the store); an event changes its target when the target
    /// is known.
    pub fn apply(&mut self, frame: &StoredMessage) {
        if frame.kind.is_message() {
            self.messages.insert(frame.seq, frame.clone());
        } else if let Some(target) = frame.target.and_then(|t| self.messages.get_mut(&t)) {
            apply(target, frame);
        }
    }

    /// The messages (kind `message`) by `seq`, each in its latest state.
    pub fn messages(&self) -> &BTreeMap<u64, StoredMessage> {
        &self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMsgId, RoomId, Timestamp};

    fn msg(seq: u64, from: &str, kind: EventKind, target: Option<u64>) -> StoredMessage {
        let mut m = StoredMessage::plain(
            RoomId::parse("r").unwrap(),
            seq,
            ClientMsgId::parse(&format!("c{seq}")).unwrap(),
            UserId::parse(from).unwrap(),
            format!("body {seq}"),
            Timestamp::from_millis(seq as i64),
            Enriched::default(),
            None,
        );
        m.kind = kind;
        m.target = target;
        m
    }

    fn react(seq: u64, from: &str, target: u64, emoji: &str, remove: bool) -> StoredMessage {
        let mut m = msg(seq, from, EventKind::Reaction, Some(target));
        m.emoji = Some(emoji.into());
        m.remove = remove;
        m.body.clear();
        m
    }

    #[test]
    fn events_change_their_target_and_a_delete_is_final() {
        let mut room = RoomState::default();
        room.apply(&msg(1, "alice", EventKind::Message, None));
        room.apply(&msg(2, "alice", EventKind::Edit, Some(1)));
        room.apply(&react(3, "zoe", 1, "👍", false));
        room.apply(&react(4, "bob", 1, "👍", false));
        room.apply(&react(5, "bob", 1, "🎉", false));
        room.apply(&react(6, "bob", 1, "🎉", true));
        let m = &room.messages()[&1];
        assert_eq!(m.body, "body 2");
        assert_eq!(m.edited_at, Some(Timestamp::from_millis(2)));
        let names: Vec<&str> = m.reactions["👍"].iter().map(UserId::as_str).collect();
        assert_eq!(names, ["bob", "zoe"], "sorted by name");
        assert!(!m.reactions.contains_key("🎉"), "an emptied emoji goes");
        room.apply(&msg(7, "alice", EventKind::Delete, Some(1)));
        room.apply(&msg(8, "alice", EventKind::Edit, Some(1)));
        room.apply(&react(9, "bob", 1, "👍", false));
        let m = &room.messages()[&1];
        assert!(m.deleted && m.body.is_empty() && m.reactions.is_empty());
        assert_eq!(room.messages().len(), 1, "events are not messages");
    }

    #[test]
    fn the_store_rules_refuse_what_clients_would_ignore() {
        let target = msg(1, "alice", EventKind::Message, None);
        let edit = msg(2, "bob", EventKind::Edit, Some(1));
        assert_eq!(
            check_target(&edit, Some(&target)),
            Err(Refusal::NotAuthor(1))
        );
        let mut delete = msg(2, "bob", EventKind::Delete, Some(1));
        assert_eq!(
            check_target(&delete, Some(&target)),
            Err(Refusal::NotAuthor(1))
        );
        delete.moderated = true;
        assert_eq!(check_target(&delete, Some(&target)), Ok(()));
        assert_eq!(check_target(&delete, None), Err(Refusal::Missing(1)));
        let mut deleted = target.clone();
        deleted.deleted = true;
        let r = react(3, "bob", 1, "👍", false);
        assert_eq!(check_target(&r, Some(&deleted)), Err(Refusal::Deleted(1)));
        assert_eq!(check_target(&r, Some(&edit)), Err(Refusal::NotAMessage(1)));
        let mut full = target.clone();
        for n in 0..MAX_EMOJI_PER_MESSAGE {
            full.reactions
                .insert(format!("e{n}"), vec![UserId::parse("x").unwrap()]);
        }
        assert_eq!(
            check_target(&r, Some(&full)),
            Err(Refusal::TooManyReactions(1))
        );
        let again = react(3, "x", 1, "e0", false);
        assert_eq!(
            check_target(&again, Some(&full)),
            Ok(()),
            "a repeat adds nothing"
        );
    }

    #[test]
    fn emoji_are_short_and_without_spaces() {
        assert!(check_emoji("👍").is_ok());
        assert!(check_emoji("👨‍👩‍👧‍👦").is_ok());
        assert!(check_emoji(":+1:").is_ok());
        assert!(check_emoji("").is_err());
        assert!(check_emoji("a b").is_err());
        assert!(check_emoji(&"x".repeat(33)).is_err());
    }
}
