//! The room's log from a connection: `send` (with `reply_to`), and `edit`, `delete` and
//! `react`, each checked against its target's latest state before it goes onto the
//! queue, then acked exactly as a `send` is: once the queue confirmed it.
//!
//! The checks here answer the client at once (`forbidden`, `bad_request`); the store
//! applies the same rules (`shared::event::check_target`) again in the transaction that
//! writes the event, so one that raced a delete is refused there and stores nothing.

use super::{Reply, Session, frame, store_unavailable};
use crate::protocol::{CommandError, ErrorCode, ServerEvent};
use shared::event::{EventKind, Refusal, check_target};
use shared::{ClientMsgId, Envelope, RoomId, StoredMessage, Timestamp};

/// What an `edit`, `delete` or `react` asks of message `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Change {
    kind: EventKind,
    target: u64,
    /// An edit's new body; empty for the others.
    body: String,
    emoji: Option<String>,
    remove: bool,
}

impl Change {
    pub(super) fn edit(target: u64, body: String) -> Self {
        Self {
            kind: EventKind::Edit,
            target,
            body,
            emoji: None,
            remove: false,
        }
    }

    pub(super) fn delete(target: u64) -> Self {
        Self {
            kind: EventKind::Delete,
            target,
            body: String::new(),
            emoji: None,
            remove: false,
        }
    }

    pub(super) fn react(target: u64, emoji: String, remove: bool) -> Self {
        Self {
            kind: EventKind::Reaction,
            target,
            body: String::new(),
            emoji: Some(emoji),
            remove,
        }
    }
}

impl Session {
    pub(super) async fn send(
        &mut self,
        room: RoomId,
        id: ClientMsgId,
        body: String,
        reply_to: Option<u64>,
        reference: Option<String>,
    ) -> Reply {
        self.allow_joined(&room).await?;
        if let Some(to) = reply_to {
            let head = self
                .app
                .store
                .head(&room)
                .await
                .map_err(store_unavailable("reading a room's head for reply_to"))?;
            check_reply(&room, to, head)?;
        }
        let mut env = self.app.envelope(room, self.user.clone(), id, body);
        env.reply_to = reply_to;
        self.publish(env, reference).await
    }

    /// An `edit`, `delete` or `react`: checked against the target's latest state, then
    /// published and acked.
    pub(super) async fn change(
        &mut self,
        room: RoomId,
        id: ClientMsgId,
        change: Change,
        reference: Option<String>,
    ) -> Reply {
        self.allow_joined(&room).await?;
        // A repeat of a stored event (a retry after a lost ack) is acked again without
        // another check: its target may have changed since, by this very event.
        let stored = self
            .app
            .store
            .seq_of(&room, &self.user, &id)
            .await
            .map_err(store_unavailable("looking up an event's id"))?;
        if stored.is_some() {
            return Ok(Some(ack(&room, &id, reference.as_deref())));
        }
        let target = self
            .app
            .store
            .message(&room, change.target)
            .await
            .map_err(store_unavailable("reading the target of an event"))?;
        let env = event_envelope(
            self.app
                .envelope(room, self.user.clone(), id, String::new()),
            change,
        );
        check_change(&env, target.as_ref())?;
        self.publish(env, reference).await
    }

    /// Puts `env` on the queue and answers `ack` once it is confirmed.
    async fn publish(&self, env: Envelope, reference: Option<String>) -> Reply {
        let (room, id) = (env.room.clone(), env.id.clone());
        self.app.publish(env).await?;
        Ok(Some(ack(&room, &id, reference.as_deref())))
    }
}

fn ack(room: &RoomId, id: &ClientMsgId, reference: Option<&str>) -> crate::hub::Outbound {
    metrics::counter!("courier_acks_total").increment(1);
    frame(ServerEvent::Ack {
        room,
        id,
        reference,
    })
}

/// A reply must answer a seq the room has: 1 to its head.
fn check_reply(room: &RoomId, to: u64, head: u64) -> Result<(), CommandError> {
    if (1..=head).contains(&to) {
        return Ok(());
    }
    Err(CommandError::new(
        ErrorCode::BadRequest,
        format!("reply_to {to} is not a message of {room} (its seqs are 1 to {head})"),
    ))
}

/// The envelope of a change: the plain one with the event's fields set.
fn event_envelope(mut env: Envelope, change: Change) -> Envelope {
    env.kind = change.kind;
    env.target = Some(change.target);
    env.body = change.body;
    env.emoji = change.emoji;
    env.remove = change.remove;
    env
}

/// Whether the event in `env` may change `target` (its latest state), by the store's own
/// rule: `forbidden` for an edit or delete of someone else's message, `bad_request` for
/// a missing target, one that is not a message, a deleted one, or a reaction over the
/// caps.
fn check_change(env: &Envelope, target: Option<&StoredMessage>) -> Result<(), CommandError> {
    let mut probe = StoredMessage::plain(
        env.room.clone(),
        0,
        env.id.clone(),
        env.from.clone(),
        env.body.clone(),
        Timestamp::now(),
        Default::default(),
        None,
    );
    probe.kind = env.kind;
    probe.target = env.target;
    probe.emoji.clone_from(&env.emoji);
    probe.remove = env.remove;
    match check_target(&probe, target) {
        Ok(()) => Ok(()),
        Err(r @ Refusal::NotAuthor(_)) => {
            Err(CommandError::new(ErrorCode::Forbidden, r.to_string()))
        }
        Err(r) => Err(CommandError::new(ErrorCode::BadRequest, r.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{GatewayId, UserId};

    fn room() -> RoomId {
        RoomId::parse("lobby").unwrap()
    }

    fn message(seq: u64, from: &str) -> StoredMessage {
        StoredMessage::plain(
            room(),
            seq,
            ClientMsgId::parse(&format!("c-{seq}")).unwrap(),
            UserId::parse(from).unwrap(),
            "Kaffee 3,20 € ☕".into(),
            Timestamp::now(),
            Default::default(),
            None,
        )
    }

    fn env(from: &str, change: Change) -> Envelope {
        let plain = Envelope::message(
            room(),
            UserId::parse(from).unwrap(),
            ClientMsgId::parse("e-1").unwrap(),
            String::new(),
            GatewayId::from_string("gw".into()),
        );
        event_envelope(plain, change)
    }

    fn code(env: &Envelope, target: Option<&StoredMessage>) -> Option<ErrorCode> {
        check_change(env, target).err().map(|e| e.code)
    }

    #[test]
    fn only_the_author_edits_or_deletes_and_anyone_reacts() {
        let m = message(4, "alice");
        let edit = Change::edit(4, "Kaffee 3,50 €".into());
        assert_eq!(code(&env("alice", edit.clone()), Some(&m)), None);
        assert_eq!(
            code(&env("bob", edit), Some(&m)),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            code(&env("bob", Change::delete(4)), Some(&m)),
            Some(ErrorCode::Forbidden)
        );
        let react = Change::react(4, "👍".into(), false);
        assert_eq!(code(&env("bob", react), Some(&m)), None);
    }

    #[test]
    fn missing_deleted_and_non_message_targets_are_bad_requests() {
        let edit = Change::edit(9, "новый текст".into());
        assert_eq!(
            code(&env("alice", edit.clone()), None),
            Some(ErrorCode::BadRequest)
        );
        let mut deleted = message(9, "alice");
        deleted.deleted = true;
        deleted.body.clear();
        assert_eq!(
            code(&env("alice", edit.clone()), Some(&deleted)),
            Some(ErrorCode::BadRequest)
        );
        let react = Change::react(9, "🎉".into(), false);
        assert_eq!(
            code(&env("bob", react), Some(&deleted)),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            code(&env("bob", Change::delete(9)), Some(&deleted)),
            Some(ErrorCode::BadRequest),
            "someone else's deleted message"
        );
        let mut reaction = message(9, "alice");
        reaction.kind = EventKind::Reaction;
        reaction.target = Some(2);
        assert_eq!(
            code(&env("alice", edit), Some(&reaction)),
            Some(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn a_new_delete_of_ones_own_deleted_message_is_a_bad_request() {
        // A retry of the delete that deleted it is answered before this check (its id
        // is stored); a new one asks for something that cannot be done.
        let mut deleted = message(3, "alice");
        deleted.deleted = true;
        assert_eq!(
            code(&env("alice", Change::delete(3)), Some(&deleted)),
            Some(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn replies_answer_a_seq_of_the_room() {
        assert!(check_reply(&room(), 1, 1).is_ok());
        assert!(check_reply(&room(), 7, 7).is_ok());
        assert_eq!(
            check_reply(&room(), 8, 7).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            check_reply(&room(), 0, 7).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            check_reply(&room(), 1, 0).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn the_envelope_carries_the_event() {
        let e = env("bob", Change::react(4, "🇫🇷".into(), true));
        assert_eq!(
            (
                e.kind,
                e.target,
                e.emoji.as_deref(),
                e.remove,
                e.body.as_str()
            ),
            (EventKind::Reaction, Some(4), Some("🇫🇷"), true, "")
        );
        assert!(e.check().is_ok());
        let e = env("bob", Change::edit(4, "neu".into()));
        assert_eq!((e.kind, e.body.as_str()), (EventKind::Edit, "neu"));
        assert!(e.check().is_ok());
        assert!(env("bob", Change::delete(4)).check().is_ok());
    }
}
