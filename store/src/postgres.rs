//! The PostgreSQL store over sqlx. A batch of new plain messages is one statement
//! ([`append`]); any other batch (one that repeats a stored key, or holds events) is one
//! transaction and four statements, whatever its size:
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

mod append;

use super::events::{self, Targets};
use super::plan::{self, Counters, Plan};
use super::{
    AFTER, BEFORE, HEAD, NewMessage, Page, REACTIONS, RawMessage, StoreOptions, Stored,
    attach_reactions, message_columns, raw_message, seq_range,
};
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
        let mut messages = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        if let Some((lo, hi)) = seq_range(&messages) {
            let rows = sqlx::query(REACTIONS)
                .bind(page.room.as_str())
                .bind(lo)
                .bind(hi)
                .fetch_all(&self.pool)
                .await?;
            attach_reactions(&mut messages, reaction_rows(&rows)?)?;
        }
        Ok(messages)
    }
}

/// `(seq, emoji, user)` from the rows of `REACTIONS`.
fn reaction_rows(rows: &[PgRow]) -> Result<Vec<(i64, String, String)>, Error> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

fn decode(row: &PgRow) -> Result<StoredMessage, Error> {
    raw_message!(row, try_get).decode()
}

/// One batch on `conn`: in one statement when it can, else in one transaction.
async fn write(conn: &mut PgConnection, batch: &[NewMessage]) -> Result<Vec<Stored>, Error> {
    if append::applies(batch)
        && let Some(stored) = append::append(conn, batch).await?
    {
        return Ok(stored);
    }
    let mut tx = conn.begin().await?;
    let mut last = lock_rooms(&mut tx, batch).await?;
    let mut plan = Plan::new(batch);
    plan.found(find_stored(&mut tx, batch).await?);
    let mut targets = Targets::new(batch, read_targets(&mut tx, batch).await?);
    let numbered = plan.number(batch, &mut last, &mut targets);
    insert(&mut tx, batch, &numbered.fresh).await?;
    write_targets(&mut tx, &targets).await?;
    set_counters(&mut tx, &last).await?;
    tx.commit().await?;
    Ok(plan.outcomes(batch, numbered))
}

/// Locks each room's counter (creating it at 0), in room-name order, and returns the
/// room's last seq.
const LOCK_ROOMS: &str = "INSERT INTO room_seq (room, last_seq) \
     SELECT r, 0 FROM unnest($1::text[]) AS r ORDER BY r \
     ON CONFLICT (room) DO UPDATE SET last_seq = room_seq.last_seq RETURNING room, last_seq";

/// The stored messages whose keys the batch repeats (a retry, a redelivery).
const FIND_STORED: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE (room, sender, client_id) IN \
     (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
);

/// The rows the batch's events name, and their reactions.
const TARGETS: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE (room, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))"
);
const TARGET_REACTIONS: &str = "SELECT room, seq, emoji, user_name FROM reactions \
     WHERE (room, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))";
/// A changed target's latest state, its reactions replaced, and (deleted) its edits'
/// bodies cleared.
const SET_STATE: &str = "UPDATE messages SET body = $3, enriched = $4, edited_at = $5, \
     deleted = $6 WHERE room = $1 AND seq = $2";
const CLEAR_REACTIONS: &str = "DELETE FROM reactions WHERE room = $1 AND seq = $2";
const ADD_REACTIONS: &str = "INSERT INTO reactions (room, seq, emoji, user_name) \
     SELECT $1, $2, e, u FROM unnest($3::text[], $4::text[]) AS r(e, u)";
const CLEAR_EDITS: &str = "UPDATE messages SET body = '', enriched = $3 \
     WHERE room = $1 AND target = $2 AND kind = 'edit'";

const INSERT: &str = "INSERT INTO messages \
     (room, seq, sender, client_id, body, sent_at, enriched, stored_at, trace, \
     kind, target, reply_to, emoji, unreact, moderated) \
     SELECT room, seq, sender, client_id, body, sent_at, enriched, $8, trace, \
     kind, target, reply_to, emoji, unreact, moderated \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
     $7::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::text[], \
     $14::bigint[], $15::bigint[]) \
     AS m(room, seq, sender, client_id, body, sent_at, enriched, trace, \
     kind, target, reply_to, emoji, unreact, moderated)";

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
    let cols = Columns::of(fresh.iter().map(|&(i, seq)| (&batch[i], seq)));
    cols.bind(sqlx::query(INSERT)).execute(&mut *tx).await?;
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
    kind: Vec<&'static str>,
    target: Vec<Option<i64>>,
    reply_to: Vec<Option<i64>>,
    emoji: Vec<Option<&'a str>>,
    unreact: Vec<i64>,
    moderated: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// The columns of `rows`, each with the seq it is stored under.
    fn of(rows: impl ExactSizeIterator<Item = (&'a NewMessage, i64)>) -> Self {
        let mut cols = Columns::with_capacity(rows.len());
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
            let e = &m.event;
            cols.kind.push(e.kind.as_str());
            cols.target.push(e.target.map(|t| t as i64));
            cols.reply_to.push(e.reply_to.map(|t| t as i64));
            cols.emoji.push(e.emoji.as_deref());
            cols.unreact.push(i64::from(e.remove));
            cols.moderated.push(i64::from(e.moderated));
        }
        cols
    }

    /// `query` with the columns as `$1` to `$15`, in `INSERT`'s order, and the time they
    /// are stored as `$8`.
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.room)
            .bind(&self.seq)
            .bind(&self.sender)
            .bind(&self.client_id)
            .bind(&self.body)
            .bind(&self.sent_at)
            .bind(&self.enriched)
            .bind(Timestamp::now().as_millis())
            .bind(&self.trace)
            .bind(&self.kind)
            .bind(&self.target)
            .bind(&self.reply_to)
            .bind(&self.emoji)
            .bind(&self.unreact)
            .bind(&self.moderated)
    }

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
            kind: Vec::with_capacity(n),
            target: Vec::with_capacity(n),
            reply_to: Vec::with_capacity(n),
            emoji: Vec::with_capacity(n),
            unreact: Vec::with_capacity(n),
            moderated: Vec::with_capacity(n),
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

/// The latest state of every message the batch's events name (none for a batch of
/// plain messages: no round trip).
async fn read_targets(
    tx: &mut PgConnection,
    batch: &[NewMessage],
) -> Result<Vec<StoredMessage>, Error> {
    let keys = events::target_keys(batch);
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (rooms, seqs): (Vec<&str>, Vec<i64>) = keys.into_iter().unzip();
    let rows = sqlx::query(TARGETS)
        .bind(&rooms)
        .bind(&seqs)
        .fetch_all(&mut *tx)
        .await?;
    let mut found = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    let rows = sqlx::query(TARGET_REACTIONS)
        .bind(&rooms)
        .bind(&seqs)
        .fetch_all(&mut *tx)
        .await?;
    // Rows of several rooms: attach each room's to that room's messages.
    let mut by_room: std::collections::HashMap<String, Vec<(i64, String, String)>> =
        Default::default();
    for r in &rows {
        let room: String = r.try_get(0)?;
        let row = (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        by_room.entry(room).or_default().push(row);
    }
    found.sort_by(|a, b| a.room.cmp(&b.room));
    for of_room in found.chunk_by_mut(|a, b| a.room == b.room) {
        if let Some(rows) = by_room.remove(of_room[0].room.as_str()) {
            attach_reactions(of_room, rows)?;
        }
    }
    Ok(found)
}

/// Writes the latest state of each target the batch changed: events are rare next to
/// messages, so a few statements per changed target are fine.
async fn write_targets(tx: &mut PgConnection, targets: &Targets) -> Result<(), Error> {
    for m in targets.changed() {
        let (room, seq) = (m.room.as_str(), m.seq as i64);
        sqlx::query(SET_STATE)
            .bind(room)
            .bind(seq)
            .bind(&m.body)
            .bind(serde_json::to_string(&m.enriched).expect("enrichment serializes"))
            .bind(m.edited_at.map(Timestamp::as_millis))
            .bind(i64::from(m.deleted))
            .execute(&mut *tx)
            .await?;
        sqlx::query(CLEAR_REACTIONS)
            .bind(room)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let (emoji, users): (Vec<&str>, Vec<&str>) = events::reaction_rows(m).unzip();
        if !emoji.is_empty() {
            sqlx::query(ADD_REACTIONS)
                .bind(room)
                .bind(seq)
                .bind(&emoji)
                .bind(&users)
                .execute(&mut *tx)
                .await?;
        }
    }
    let cleared = events::cleared_enrichment();
    for (room, seq) in targets.deleted() {
        sqlx::query(CLEAR_EDITS)
            .bind(room)
            .bind(*seq as i64)
            .bind(&cleared)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
