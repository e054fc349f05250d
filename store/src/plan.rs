//! Which of a batch's messages are new, which repeat a stored one, which events their
//! targets refuse, and the seqs the new ones get: the same for every backend.

use super::events::Targets;
use super::{NewMessage, Stored};
use shared::StoredMessage;
use shared::event::Refusal;
use std::collections::{BTreeMap, HashMap};

type Key<'a> = (&'a str, &'a str, &'a str);

/// What becomes of each input: the first input of each key is new or was stored before;
/// a later input with the same key repeats the first.
pub(super) struct Plan<'a> {
    index: HashMap<Key<'a>, usize>,
    /// For each input, the index of the first input with its key.
    first: Vec<usize>,
    /// For first inputs, what was stored before under their key.
    stored: Vec<Option<StoredMessage>>,
}

fn key(m: &NewMessage) -> Key<'_> {
    (m.room.as_str(), m.from.as_str(), m.id.as_str())
}

impl<'a> Plan<'a> {
    pub(super) fn new(batch: &'a [NewMessage]) -> Self {
        let mut index = HashMap::with_capacity(batch.len());
        let first = batch
            .iter()
            .enumerate()
            .map(|(i, m)| *index.entry(key(m)).or_insert(i))
            .collect();
        Self {
            index,
            first,
            stored: vec![None; batch.len()],
        }
    }

    /// Files each already-stored message under the first input with its key.
    pub(super) fn found(&mut self, rows: Vec<StoredMessage>) {
        for row in rows {
            let k = (row.room.as_str(), row.from.as_str(), row.id.as_str());
            if let Some(&i) = self.index.get(&k) {
                self.stored[i] = Some(row);
            }
        }
    }

    /// Numbers the new entries after their room's counter, in input order, applying
    /// each event to its target as it goes: (input, seq) for what is stored, (input,
    /// why) for the events their targets refuse (they take no seq).
    pub(super) fn number(
        &self,
        batch: &[NewMessage],
        last: &mut Counters<'_>,
        targets: &mut Targets,
    ) -> Numbered {
        let mut numbered = Numbered::default();
        for (i, m) in batch.iter().enumerate() {
            if self.first[i] != i || self.stored[i].is_some() {
                continue;
            }
            let counter = last
                .get_mut(m.room.as_str())
                .expect("every room was locked");
            let seq = (counter.1 + 1) as u64;
            if m.event.kind.is_message() {
                targets.add_new(m, seq);
            } else if let Err(why) = targets.apply(&m.stored(seq)) {
                numbered.refused.push((i, why));
                continue;
            }
            counter.1 += 1;
            numbered.fresh.push((i, counter.1));
        }
        numbered
    }

    pub(super) fn outcomes(self, batch: &[NewMessage], numbered: Numbered) -> Vec<Stored> {
        let mut out: Vec<Option<Stored>> = self
            .stored
            .into_iter()
            .map(|s| s.map(Stored::Duplicate))
            .collect();
        for (i, seq) in numbered.fresh {
            out[i] = Some(Stored::New(batch[i].stored(seq as u64)));
        }
        for (i, why) in numbered.refused {
            out[i] = Some(Stored::Refused(why));
        }
        for (i, &j) in self.first.iter().enumerate() {
            if j != i {
                out[i] = Some(match out[j].as_ref().expect("first inputs are settled") {
                    Stored::New(m) | Stored::Duplicate(m) => Stored::Duplicate(m.clone()),
                    Stored::Refused(why) => Stored::Refused(why.clone()),
                });
            }
        }
        out.into_iter()
            .map(|o| o.expect("every input has an outcome"))
            .collect()
    }
}

/// What numbering decided for a batch's new inputs.
#[derive(Default)]
pub(super) struct Numbered {
    /// (input, seq) of each entry to store, in input order.
    pub(super) fresh: Vec<(usize, i64)>,
    /// (input, why) of each event its target refused.
    pub(super) refused: Vec<(usize, Refusal)>,
}

/// Each room's counter in a batch: (last seq before, last seq after numbering).
pub(super) type Counters<'a> = BTreeMap<&'a str, (i64, i64)>;

/// The batch's rooms, each with its counter still unknown, in room-name order (the
/// order counters are locked in, so two writers never deadlock).
pub(super) fn rooms(batch: &[NewMessage]) -> Counters<'_> {
    batch.iter().map(|m| (m.room.as_str(), (0, 0))).collect()
}

/// The counters that moved, with their new values.
pub(super) fn moved<'a>(counters: &Counters<'a>) -> Vec<(&'a str, i64)> {
    counters
        .iter()
        .filter(|(_, (start, end))| end != start)
        .map(|(room, (_, end))| (*room, *end))
        .collect()
}
