//! The PostgreSQL store over sqlx. A batch is one transaction and four statements,
//! whatever its size:
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
//! over the network.

use super::plan::{self, Counters, Plan};
use super::{AFTER, BEFORE, HEAD, NewMessage, Page, RawMessage, StoreOptions, Stored, raw_message};
use crate::error::Error;
use shared::{RoomId, StoredMessage, Timestamp};
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};

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
fn dynamic<'q>(sql: String) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(AssertSqlSafe(sql)).persistent(false)
}

/// A pool of PostgreSQL connections.
#[derive(Clone)]
pub(super) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and runs the migrations.
    pub(super) async fn connect(url: &str, opts: StoreOptions) -> Result<Self, String> {
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { pool })
    }

    /// The pool, for the room settings' statements.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores a batch in one transaction. A connection whose write failed is closed:
    /// its transaction state is not known.
    pub(super) async fn store_batch(&self, batch: &[NewMessage]) -> Result<Vec<Stored>, Error> {
        let mut conn = self.pool.acquire().await?;
        let written = write(&mut conn, batch).await;
        if written.is_err() {
            conn.close_on_drop();
        }
        written
    }

    pub(super) async fn head(&self, room: &RoomId) -> Result<u64, Error> {
        let row = sqlx::query(HEAD)
            .bind(room.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)?.max(0) as u64,
            None => 0,
        })
    }

    /// The rows of `AFTER` or `BEFORE` for (room, seq, limit).
    pub(super) async fn page(&self, page: Page<'_>) -> Result<Vec<StoredMessage>, Error> {
        let rows = sqlx::query(if page.newer { AFTER } else { BEFORE })
            .bind(page.room.as_str())
            .bind(page.seq)
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }
}

fn decode(row: &PgRow) -> Result<StoredMessage, Error> {
    raw_message!(row, try_get).decode()
}

/// One batch in one transaction on `conn`.
async fn write(conn: &mut PgConnection, batch: &[NewMessage]) -> Result<Vec<Stored>, Error> {
    let mut tx = conn.begin().await?;
    let mut last = lock_rooms(&mut tx, batch).await?;
    let mut plan = Plan::new(batch);
    plan.found(find_stored(&mut tx, batch).await?);
    let fresh = plan.number(batch, &mut last);
    insert(&mut tx, batch, &fresh).await?;
    set_counters(&mut tx, &last).await?;
    tx.commit().await?;
    Ok(plan.outcomes(batch, fresh))
}

/// Locks each room's counter (creating it at 0) and returns the room's last seq.
async fn lock_rooms<'a>(
    tx: &mut PgConnection,
    batch: &'a [NewMessage],
) -> Result<Counters<'a>, Error> {
    let rooms = plan::rooms(batch);
    let sql = format!(
        "INSERT INTO room_seq (room, last_seq) VALUES {} ON CONFLICT (room) \
         DO UPDATE SET last_seq = room_seq.last_seq RETURNING room, last_seq",
        tuples_with_zero(rooms.len())
    );
    let mut q = dynamic(sql);
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
    tx: &mut PgConnection,
    batch: &[NewMessage],
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
    let mut q = dynamic(sql);
    for m in batch {
        q = q
            .bind(m.room.as_str())
            .bind(m.from.as_str())
            .bind(m.id.as_str());
    }
    q.fetch_all(&mut *tx).await?.iter().map(decode).collect()
}

async fn insert(
    tx: &mut PgConnection,
    batch: &[NewMessage],
    fresh: &[(usize, i64)],
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
    let mut q = dynamic(sql);
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
async fn set_counters(tx: &mut PgConnection, last: &Counters<'_>) -> Result<(), Error> {
    let moved = plan::moved(last);
    if moved.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO room_seq (room, last_seq) VALUES {} \
         ON CONFLICT (room) DO UPDATE SET last_seq = excluded.last_seq",
        tuples(moved.len(), 2)
    );
    let mut q = dynamic(sql);
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
    }
}
