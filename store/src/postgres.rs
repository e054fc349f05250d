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
//! over the network. Each takes the batch as arrays (`unnest`), so its text is the same
//! whatever the batch's size: it is parsed and planned once per connection, not once
//! per batch.

use super::plan::{self, Counters, Plan};
use super::{AFTER, BEFORE, HEAD, NewMessage, Page, RawMessage, StoreOptions, Stored, raw_message};
use crate::error::Error;
use shared::{RoomId, StoredMessage, Timestamp};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

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

/// Locks each room's counter (creating it at 0), in room-name order, and returns the
/// room's last seq.
const LOCK_ROOMS: &str = "INSERT INTO room_seq (room, last_seq) \
     SELECT r, 0 FROM unnest($1::text[]) AS r ORDER BY r \
     ON CONFLICT (room) DO UPDATE SET last_seq = room_seq.last_seq RETURNING room, last_seq";

/// The stored messages whose keys the batch repeats (a retry, a redelivery).
const FIND_STORED: &str = "SELECT m.room, m.seq, m.sender, m.client_id, m.body, m.sent_at, \
     m.enriched, m.trace FROM messages m \
     JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(room, sender, client_id) \
     ON m.room = k.room AND m.sender = k.sender AND m.client_id = k.client_id";

const INSERT: &str = "INSERT INTO messages \
     (room, seq, sender, client_id, body, sent_at, enriched, stored_at, trace) \
     SELECT room, seq, sender, client_id, body, sent_at, enriched, $8, trace \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
     $7::text[], $9::text[]) AS m(room, seq, sender, client_id, body, sent_at, enriched, trace)";

/// Writes back the counters that moved (their rows are locked by this transaction).
const SET_COUNTERS: &str = "UPDATE room_seq SET last_seq = v.seq \
     FROM unnest($1::text[], $2::bigint[]) AS v(room, seq) WHERE room_seq.room = v.room";

async fn lock_rooms<'a>(
    tx: &mut PgConnection,
    batch: &'a [NewMessage],
) -> Result<Counters<'a>, Error> {
    let rooms = plan::rooms(batch);
    let names: Vec<&str> = rooms.keys().copied().collect();
    let mut out = rooms;
    for row in sqlx::query(LOCK_ROOMS)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?
    {
        let room: String = row.try_get(0)?;
        let seq: i64 = row.try_get(1)?;
        if let Some(v) = out.get_mut(room.as_str()) {
            *v = (seq, seq);
        }
    }
    Ok(out)
}

async fn find_stored(
    tx: &mut PgConnection,
    batch: &[NewMessage],
) -> Result<Vec<StoredMessage>, Error> {
    let rooms: Vec<&str> = batch.iter().map(|m| m.room.as_str()).collect();
    let senders: Vec<&str> = batch.iter().map(|m| m.from.as_str()).collect();
    let ids: Vec<&str> = batch.iter().map(|m| m.id.as_str()).collect();
    sqlx::query(FIND_STORED)
        .bind(&rooms)
        .bind(&senders)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(decode)
        .collect()
}

async fn insert(
    tx: &mut PgConnection,
    batch: &[NewMessage],
    fresh: &[(usize, i64)],
) -> Result<(), Error> {
    if fresh.is_empty() {
        return Ok(());
    }
    let rows = fresh.iter().map(|&(i, seq)| (&batch[i], seq));
    let mut cols = Columns::with_capacity(fresh.len());
    for (m, seq) in rows {
        cols.room.push(m.room.as_str());
        cols.seq.push(seq);
        cols.sender.push(m.from.as_str());
        cols.client_id.push(m.id.as_str());
        cols.body.push(m.body.as_str());
        cols.sent_at.push(m.sent_at.as_millis());
        cols.enriched
            .push(serde_json::to_string(&m.enriched).expect("enrichment serializes"));
        cols.trace.push(m.trace.as_deref());
    }
    sqlx::query(INSERT)
        .bind(&cols.room)
        .bind(&cols.seq)
        .bind(&cols.sender)
        .bind(&cols.client_id)
        .bind(&cols.body)
        .bind(&cols.sent_at)
        .bind(&cols.enriched)
        .bind(Timestamp::now().as_millis())
        .bind(&cols.trace)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A batch's new rows, column by column: one array parameter each.
struct Columns<'a> {
    room: Vec<&'a str>,
    seq: Vec<i64>,
    sender: Vec<&'a str>,
    client_id: Vec<&'a str>,
    body: Vec<&'a str>,
    sent_at: Vec<i64>,
    enriched: Vec<String>,
    trace: Vec<Option<&'a str>>,
}

impl Columns<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            room: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            sender: Vec::with_capacity(n),
            client_id: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
            sent_at: Vec::with_capacity(n),
            enriched: Vec::with_capacity(n),
            trace: Vec::with_capacity(n),
        }
    }
}

async fn set_counters(tx: &mut PgConnection, last: &Counters<'_>) -> Result<(), Error> {
    let moved = plan::moved(last);
    if moved.is_empty() {
        return Ok(());
    }
    let (rooms, seqs): (Vec<&str>, Vec<i64>) = moved.into_iter().unzip();
    sqlx::query(SET_COUNTERS)
        .bind(&rooms)
        .bind(&seqs)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
