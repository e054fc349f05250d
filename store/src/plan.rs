//! Which of a batch's messages are new, which repeat a stored one, and the seqs the new
//! ones get: the same for every backend.

use super::{NewMessage, Stored};
use shared::StoredMessage;
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

    /// Numbers the new messages after their room's counter: (input, seq).
    pub(super) fn number(
        &self,
        batch: &[NewMessage],
        last: &mut Counters<'_>,
    ) -> Vec<(usize, i64)> {
        batch
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.first[i] == i && self.stored[i].is_none())
            .map(|(i, m)| {
                let counter = last
                    .get_mut(m.room.as_str())
                    .expect("every room was locked");
                counter.1 += 1;
                (i, counter.1)
            })
            .collect()
    }

    pub(super) fn outcomes(self, batch: &[NewMessage], fresh: Vec<(usize, i64)>) -> Vec<Stored> {
        let mut out: Vec<Option<Stored>> = self
            .stored
            .into_iter()
            .map(|s| s.map(Stored::Duplicate))
            .collect();
        for (i, seq) in fresh {
            let m = &batch[i];
            out[i] = Some(Stored::New(StoredMessage {
                room: m.room.clone(),
                seq: seq as u64,
                id: m.id.clone(),
                from: m.from.clone(),
                body: m.body.clone(),
                sent_at: m.sent_at,
                enriched: m.enriched.clone(),
                trace: m.trace.clone(),
            }));
        }
        for (i, &j) in self.first.iter().enumerate() {
            if j != i {
                let first = out[j]
                    .as_ref()
                    .expect("first inputs are settled")
                    .message()
                    .clone();
                out[i] = Some(Stored::Duplicate(first));
            }
        }
        out.into_iter()
            .map(|o| o.expect("every input has an outcome"))
            .collect()
    }
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
