//! Storing a batch: one transaction and four statements, whatever the batch's size.
//!
//! 1. Lock every room's counter row, in room-name order so two workers never deadlock
//!    (one multi-row `INSERT … ON CONFLICT … DO UPDATE … RETURNING`).
//! 2. Find the batch's keys that are already stored (a retry, a redelivery).
//! 3. Insert the new messages with consecutive seqs after each room's counter.
//! 4. Move the counters.
//!
//! Concurrent workers on one room wait at step 1, so seq stays gapless; nobody else can
//! insert a room's key while its counter is locked, so step 2's answer holds until commit.
//! One statement per step (not per message) is what lifts the store from a few thousand
//! rows per second to tens of thousands: each statement is a round trip to the database
//! (or to SQLite's worker thread).

use super::{NewMessage, Store, Stored, decode};
use crate::error::Error;
use shared::{StoredMessage, Timestamp};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Connection, Row};
use std::collections::{BTreeMap, HashMap};

type Key<'a> = (&'a str, &'a str, &'a str);

/// `($1, $2), ($3, $4), …`: `rows` tuples of `width` numbered placeholders.
fn tuples(rows: usize, width: usize) -> String {
    let mut s = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            s.push_str(&format!("${}", r * width + c + 1));
        }
        s.push(')');
    }
    s
}

/// A statement built for this batch's shape; not cached, since shapes vary.
///
/// Placeholders are numbered in bind order. SQLite gets anonymous `?` instead: it looks
/// a named parameter up by walking a list, so `$N` costs O(N²) per statement, which was
/// a tenth of the gateway's CPU with 100-message batches.
fn dynamic<'q>(sql: String, sqlite: bool) -> Query<'q, Any, AnyArguments> {
    let sql = if sqlite { anonymous(&sql) } else { sql };
    sqlx::query(AssertSqlSafe(sql)).persistent(false)
}

/// `$1, $2` → `?, ?` (the statements here have no `$` anywhere else).
fn anonymous(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            out.push('?');
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Store {
    /// Stores a batch in one transaction. Returns one outcome per input, in input order.
    pub async fn store_batch(&self, batch: &[NewMessage]) -> Result<Vec<Stored>, Error> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let _writer = match &self.sqlite {
            Some(s) => Some(s.writer.lock().await),
            None => None,
        };
        let mut conn = self.pool.acquire().await?;
        let written = write(&mut conn, batch, self.sqlite.is_some()).await;
        match &written {
            Ok(_) => *self.write_failure() = None,
            Err(e) => {
                // After a failed write the connection's transaction state is not known
                // (SQLite rolls back on its own on a full disk; a commit may have failed
                // half-way): never hand it to the next batch.
                conn.close_on_drop();
                if e.is_outage() {
                    *self.write_failure() = Some(e.to_string());
                }
            }
        }
        written
    }
}

/// One batch in one transaction on `conn`.
async fn write(
    conn: &mut AnyConnection,
    batch: &[NewMessage],
    sqlite: bool,
) -> Result<Vec<Stored>, Error> {
    let mut tx = if sqlite {
        // Take the write lock up front: a deferred transaction that upgrades later
        // can fail with SQLITE_BUSY instead of waiting.
        conn.begin_with("BEGIN IMMEDIATE").await?
    } else {
        conn.begin().await?
    };
    let mut last = lock_rooms(&mut tx, batch, sqlite).await?;
    let mut plan = Plan::new(batch);
    plan.found(find_stored(&mut tx, batch, sqlite).await?);
    let fresh = plan.number(batch, &mut last);
    insert(&mut tx, batch, &fresh, sqlite).await?;
    set_counters(&mut tx, &last, sqlite).await?;
    tx.commit().await?;
    Ok(plan.outcomes(batch, fresh))
}

/// Locks each room's counter (creating it at 0) and returns the room's last seq.
async fn lock_rooms<'a>(
    tx: &mut AnyConnection,
    batch: &'a [NewMessage],
    sqlite: bool,
) -> Result<BTreeMap<&'a str, (i64, i64)>, Error> {
    let rooms: BTreeMap<&str, (i64, i64)> =
        batch.iter().map(|m| (m.room.as_str(), (0, 0))).collect();
    let sql = format!(
        "INSERT INTO room_seq (room, last_seq) VALUES {} ON CONFLICT (room) \
         DO UPDATE SET last_seq = room_seq.last_seq RETURNING room, last_seq",
        tuples_with_zero(rooms.len())
    );
    let mut q = dynamic(sql, sqlite);
    for room in rooms.keys() {
        q = q.bind(*room);
    }
    let mut out = rooms;
    for row in q.fetch_all(&mut *tx).await? {
        let room: String = row.try_get(0)?;
        let seq: i64 = row.try_get(1)?;
        if let Some(v) = out.get_mut(room.as_str()) {
            *v = (seq, seq);
        }
    }
    Ok(out)
}

/// `($1, 0), ($2, 0), …`
fn tuples_with_zero(rows: usize) -> String {
    (1..=rows)
        .map(|i| format!("(${i}, 0)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stored messages whose keys the batch repeats (a retry, a redelivery).
async fn find_stored(
    tx: &mut AnyConnection,
    batch: &[NewMessage],
    sqlite: bool,
) -> Result<Vec<StoredMessage>, Error> {
    let terms: Vec<String> = (0..batch.len())
        .map(|i| {
            let p = i * 3;
            format!(
                "(room = ${} AND sender = ${} AND client_id = ${})",
                p + 1,
                p + 2,
                p + 3
            )
        })
        .collect();
    let sql = format!(
        "SELECT room, seq, sender, client_id, body, sent_at, enriched, trace FROM messages \
         WHERE {}",
        terms.join(" OR ")
    );
    let mut q = dynamic(sql, sqlite);
    for m in batch {
        q = q
            .bind(m.room.as_str())
            .bind(m.from.as_str())
            .bind(m.id.as_str());
    }
    q.fetch_all(&mut *tx).await?.iter().map(decode).collect()
}

/// What becomes of each input: the first input of each key is new or was stored before;
/// a later input with the same key repeats the first.
struct Plan<'a> {
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
    fn new(batch: &'a [NewMessage]) -> Self {
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
    fn found(&mut self, rows: Vec<StoredMessage>) {
        for row in rows {
            let k = (row.room.as_str(), row.from.as_str(), row.id.as_str());
            if let Some(&i) = self.index.get(&k) {
                self.stored[i] = Some(row);
            }
        }
    }

    /// Numbers the new messages after their room's counter: (input, seq).
    fn number(
        &self,
        batch: &[NewMessage],
        last: &mut BTreeMap<&str, (i64, i64)>,
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

    fn outcomes(self, batch: &[NewMessage], fresh: Vec<(usize, i64)>) -> Vec<Stored> {
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

async fn insert(
    tx: &mut AnyConnection,
    batch: &[NewMessage],
    fresh: &[(usize, i64)],
    sqlite: bool,
) -> Result<(), Error> {
    if fresh.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO messages (room, seq, sender, client_id, body, sent_at, enriched, stored_at, trace) \
         VALUES {}",
        tuples(fresh.len(), 9)
    );
    let now = Timestamp::now().as_millis();
    let mut q = dynamic(sql, sqlite);
    for &(i, seq) in fresh {
        let m = &batch[i];
        let enriched = serde_json::to_string(&m.enriched).expect("enrichment serializes");
        q = q
            .bind(m.room.as_str())
            .bind(seq)
            .bind(m.from.as_str())
            .bind(m.id.as_str())
            .bind(m.body.as_str())
            .bind(m.sent_at.as_millis())
            .bind(enriched)
            .bind(now)
            .bind(m.trace.as_deref());
    }
    q.execute(&mut *tx).await?;
    Ok(())
}

/// Writes back the counters that moved.
async fn set_counters(
    tx: &mut AnyConnection,
    last: &BTreeMap<&str, (i64, i64)>,
    sqlite: bool,
) -> Result<(), Error> {
    let moved: Vec<(&str, i64)> = last
        .iter()
        .filter(|(_, (start, end))| end != start)
        .map(|(room, (_, end))| (*room, *end))
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO room_seq (room, last_seq) VALUES {} \
         ON CONFLICT (room) DO UPDATE SET last_seq = excluded.last_seq",
        tuples(moved.len(), 2)
    );
    let mut q = dynamic(sql, sqlite);
    for (room, seq) in moved {
        q = q.bind(room).bind(seq);
    }
    q.execute(&mut *tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_row_by_row() {
        assert_eq!(super::tuples(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(super::tuples_with_zero(2), "($1, 0), ($2, 0)");
        assert_eq!(
            super::anonymous("VALUES ($1, $12), ($3, 0)"),
            "VALUES (?, ?), (?, 0)"
        );
    }
}
