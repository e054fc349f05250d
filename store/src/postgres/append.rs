//! The common batch on PostgreSQL, new plain messages only, in one statement: one round
//! trip instead of a transaction of four statements and its `BEGIN` and `COMMIT`.
//!
//! The statement moves each room's counter by the room's count (locking the counter
//! rows in room-name order, as the full path does, so two writers never deadlock),
//! numbers the messages after the old counter in input order, and inserts them. It runs
//! alone, so it is its own transaction: when any key was stored before (a redelivery,
//! a retry) the insert fails on the idempotency index, nothing of it stays (no counter
//! moves, so no gap), and the caller runs the full path, which finds what was stored.
//!
//! Its plan joins only the batch's own rows to the counters it returned: unlike a
//! lookup by key, no table is scanned, so a plan cached while the table was small stays
//! cheap when it is large.

use super::Columns;
use crate::error::Error;
use crate::{NewMessage, Stored};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use std::collections::HashMap;

/// Takes the parameters of the full path's insert, in its order (`Columns::bind`); the
/// seqs it is given (`$2`) are not read: the counters number the rows.
const APPEND: &str = "WITH m AS ( \
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
       $6::bigint[], $7::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], \
       $13::text[], $14::bigint[], $15::bigint[]) WITH ORDINALITY \
       AS m(room, unnumbered, sender, client_id, body, sent_at, enriched, trace, kind, \
       target, reply_to, emoji, unreact, moderated, i)), \
     n AS (SELECT room, count(*) AS n FROM m GROUP BY room), \
     c AS (INSERT INTO room_seq (room, last_seq) SELECT room, n FROM n ORDER BY room \
       ON CONFLICT (room) DO UPDATE SET last_seq = room_seq.last_seq + excluded.last_seq \
       RETURNING room, last_seq) \
     INSERT INTO messages \
       (room, seq, sender, client_id, body, sent_at, enriched, stored_at, trace, \
       kind, target, reply_to, emoji, unreact, moderated) \
     SELECT m.room, c.last_seq - n.n + row_number() OVER (PARTITION BY m.room ORDER BY m.i), \
       m.sender, m.client_id, m.body, m.sent_at, m.enriched, $8, m.trace, \
       m.kind, m.target, m.reply_to, m.emoji, m.unreact, m.moderated \
     FROM m JOIN n USING (room) JOIN c USING (room) \
     RETURNING room, seq";

/// Whether `batch` can take the one-statement path: plain messages only (an event reads
/// and changes its target, which only the full path does).
pub(super) fn applies(batch: &[NewMessage]) -> bool {
    !batch.is_empty() && batch.iter().all(|m| m.event.kind.is_message())
}

/// Stores `batch` (which `applies`) as new messages; `None` when a key was stored before,
/// or repeats within the batch: then nothing was written, and the full path decides.
pub(super) async fn append(
    conn: &mut PgConnection,
    batch: &[NewMessage],
) -> Result<Option<Vec<Stored>>, Error> {
    let cols = Columns::of(batch.iter().map(|m| (m, 0)));
    let result = cols.bind(sqlx::query(APPEND)).fetch_all(&mut *conn).await;
    let rows = match result {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Each room's messages took consecutive seqs in input order, from the room's lowest.
    let mut next: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        let room: String = row.try_get(0)?;
        let seq: i64 = row.try_get(1)?;
        next.entry(room)
            .and_modify(|s| *s = (*s).min(seq))
            .or_insert(seq);
    }
    if rows.len() != batch.len() {
        return Err(Error::Corrupt(format!(
            "the append stored {} rows of a batch of {}",
            rows.len(),
            batch.len()
        )));
    }
    let mut out = Vec::with_capacity(batch.len());
    for m in batch {
        let seq = next.get_mut(m.room.as_str()).ok_or_else(|| {
            Error::Corrupt(format!("the append returned no row of room {}", m.room))
        })?;
        out.push(Stored::New(m.stored(*seq as u64)));
        *seq += 1;
    }
    Ok(Some(out))
}
