//! Edits, deletes and reactions in a batch: which the targets allow, and the latest
//! state each changed target ends in; the same for every backend.
//!
//! A batch is applied in input order, as the room's log will read: a delete early in the
//! batch refuses a later edit of the same message, and a message stored early in the
//! batch may be the target of a later event. The targets' rows are locked with their
//! room's counter (every write to a room takes it first), so what is read here holds
//! until commit.

use super::NewMessage;
use shared::StoredMessage;
use shared::event::{self, EventKind};
use std::collections::{BTreeMap, BTreeSet};

/// A message of a room: (room, seq).
pub(super) type TargetKey = (String, u64);

/// The latest state of every message the batch's events name, as read at the start of
/// the transaction and changed by the batch so far.
#[derive(Default)]
pub(super) struct Targets {
    /// What the batch's events name: only those of the batch's new messages are kept
    /// (a batch of plain messages keeps none).
    named: BTreeSet<TargetKey>,
    states: BTreeMap<TargetKey, StoredMessage>,
    /// Targets an event of this batch changed: their rows (and reactions) are written.
    changed: BTreeSet<TargetKey>,
    /// Targets deleted in this batch: the bodies of their edits are cleared too.
    deleted: BTreeSet<TargetKey>,
}

/// The (room, target) of each event in the batch, for the read of their states.
pub(super) fn target_keys(batch: &[NewMessage]) -> Vec<(&str, i64)> {
    let keys: BTreeSet<(&str, i64)> = batch
        .iter()
        .filter(|m| !m.event.kind.is_message())
        .filter_map(|m| Some((m.room.as_str(), i64::try_from(m.event.target?).ok()?)))
        .collect();
    keys.into_iter().collect()
}

impl Targets {
    /// Starts from the stored states of the targets `batch` names (with their reactions).
    pub(super) fn new(batch: &[NewMessage], found: Vec<StoredMessage>) -> Self {
        let named = target_keys(batch)
            .into_iter()
            .map(|(room, seq)| (room.to_owned(), seq as u64))
            .collect();
        let states = found
            .into_iter()
            .map(|m| ((m.room.as_str().to_owned(), m.seq), m))
            .collect();
        Self {
            named,
            states,
            ..Self::default()
        }
    }

    /// A message of this batch stored under `seq`: kept when a later event names it.
    pub(super) fn add_new(&mut self, m: &NewMessage, seq: u64) {
        if self.named.is_empty() {
            return;
        }
        let key = (m.room.as_str().to_owned(), seq);
        if self.named.contains(&key) {
            self.states.insert(key, m.stored(seq));
        }
    }

    /// Applies `event` when its target allows it; the refusal otherwise.
    pub(super) fn apply(&mut self, event: &StoredMessage) -> Result<(), event::Refusal> {
        let key = (
            event.room.as_str().to_owned(),
            event.target.unwrap_or_default(),
        );
        event::check_target(event, self.states.get(&key))?;
        let target = self.states.get_mut(&key).expect("checked above");
        event::apply(target, event);
        if event.kind == EventKind::Delete {
            self.deleted.insert(key.clone());
        }
        self.changed.insert(key);
        Ok(())
    }

    /// The changed targets in their final state, in (room, seq) order.
    pub(super) fn changed(&self) -> impl Iterator<Item = &StoredMessage> {
        self.changed.iter().map(|k| &self.states[k])
    }

    /// The targets deleted by this batch.
    pub(super) fn deleted(&self) -> impl Iterator<Item = &TargetKey> {
        self.deleted.iter()
    }
}

/// The `enriched` column of a deleted message or of an edit of one.
pub(super) fn cleared_enrichment() -> String {
    serde_json::to_string(&shared::Enriched::default()).expect("enrichment serializes")
}

/// The `(emoji, user)` rows of a message's latest reactions.
pub(super) fn reaction_rows(m: &StoredMessage) -> impl Iterator<Item = (&str, &str)> {
    m.reactions
        .iter()
        .flat_map(|(emoji, users)| users.iter().map(move |u| (emoji.as_str(), u.as_str())))
}
