//! The SQLite store: one writer connection and a few readers, each on a thread of its own
//! (`shared::sqlite::Db`), so a whole batch transaction is one hop from the async code.
//!
//! Without round trips per statement there is no reason to build a statement per batch
//! shape: the transaction runs small cached statements once per room and per message.
//! WAL lets the readers (history, replay, resync) run beside the one writer.

use super::events::{self, Targets};
use super::plan::{self, Counters, Plan};
use super::{
    AFTER, BEFORE, GET, HEAD, NewMessage, Page, REACTIONS, RawMessage, StoreOptions, Stored,
    attach_reactions, message_columns, raw_message, seq_range,
};
use crate::error::Error;
use shared::sqlite::rusqlite::{self, Connection, OptionalExtension, TransactionBehavior};
use shared::sqlite::{Checkpoints, Db, OpenOptions};
use shared::{RoomId, StoredMessage, Timestamp};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LOCK_ROOM: &str = "INSERT INTO room_seq (room, last_seq) VALUES (?1, 0) ON CONFLICT (room) \
     DO UPDATE SET last_seq = room_seq.last_seq RETURNING last_seq";
const FIND: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE room = ?1 AND sender = ?2 AND client_id = ?3"
);
const INSERT: &str = "INSERT INTO messages \
     (room, seq, sender, client_id, body, sent_at, enriched, stored_at, trace, \
     kind, target, reply_to, emoji, unreact, moderated) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";
const SET_COUNTER: &str = "UPDATE room_seq SET last_seq = ?2 WHERE room = ?1";
/// A changed target's latest state.
const SET_STATE: &str = "UPDATE messages SET body = ?3, enriched = ?4, edited_at = ?5, \
     deleted = ?6 WHERE room = ?1 AND seq = ?2";
const CLEAR_REACTIONS: &str = "DELETE FROM reactions WHERE room = ?1 AND seq = ?2";
const ADD_REACTION: &str =
    "INSERT INTO reactions (room, seq, emoji, user_name) VALUES (?1, ?2, ?3, ?4)";
/// A deleted message's edits lose their bodies too.
const CLEAR_EDITS: &str = "UPDATE messages SET body = '', enriched = ?3 \
     WHERE room = ?1 AND target = ?2 AND kind = 'edit'";

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The migrations, in order: (version, SQL). The same files PostgreSQL runs through sqlx.
const MIGRATIONS: [(i64, &str); 4] = [
    (1, include_str!("../migrations/0001_messages.sql")),
    (2, include_str!("../migrations/0002_trace.sql")),
    (3, include_str!("../migrations/0003_rooms.sql")),
    (4, include_str!("../migrations/0004_events.sql")),
];

#[derive(Clone)]
pub(super) struct SqliteStore {
    writer: Db,
    readers: Arc<[Db]>,
    next_reader: Arc<AtomicUsize>,
    /// Stopped with the last clone of the store.
    _checkpoints: Arc<Checkpoints>,
}

impl SqliteStore {
    /// Opens (creating the file and its folder) and migrates `sqlite://PATH`.
    pub(super) async fn connect(url: &str, opts: StoreOptions) -> Result<Self, String> {
        let path = sqlite_path(url)?;
        let mut options = OpenOptions::new(&path);
        options.background_checkpoints = true;
        let open = |name: &str| {
            let options = options.clone();
            let name = name.to_owned();
            async move { Db::open(&name, options).await.map_err(|e| e.to_string()) }
        };
        let writer = open("store-writer").await?;
        writer
            .call(|conn| migrate(conn).map_err(|e| format!("running the migrations: {e}")))
            .await
            .map_err(|e| e.to_string())??;
        let mut readers = Vec::new();
        for n in 0..opts.max_connections.saturating_sub(1).clamp(1, 3) {
            readers.push(open(&format!("store-reader-{n}")).await?);
        }
        let checkpoints = Checkpoints::start("store-checkpoint", options, CHECKPOINT_EVERY)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            writer,
            readers: readers.into(),
            next_reader: Arc::default(),
            _checkpoints: Arc::new(checkpoints),
        })
    }

    fn reader(&self) -> &Db {
        let n = self.next_reader.fetch_add(1, Ordering::Relaxed);
        &self.readers[n % self.readers.len()]
    }

    /// Runs `work` on a reader's thread.
    pub(super) async fn read<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, Error> {
        Ok(self.reader().call(work).await??)
    }

    /// Runs `work` on the writer's thread, in one immediate transaction.
    pub(super) async fn write<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, Error> {
        let done = self
            .writer
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let r = work(&tx)?;
                tx.commit()?;
                Ok::<_, rusqlite::Error>(r)
            })
            .await??;
        Ok(done)
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        self.reader()
            .call(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await??;
        Ok(())
    }

    /// Stores a batch in one transaction on the writer's thread.
    pub(super) async fn store_batch(&self, batch: &[NewMessage]) -> Result<Vec<Stored>, Error> {
        let batch = batch.to_vec();
        self.writer
            .call(move |conn| {
                let written = write(conn, &batch);
                if written.is_err() && !conn.is_autocommit() {
                    // A failed COMMIT (a full disk) can leave the transaction open; the
                    // next batch must start clean.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                written
            })
            .await?
    }

    pub(super) async fn head(&self, room: &RoomId) -> Result<u64, Error> {
        let room = room.as_str().to_owned();
        let seq: Option<i64> = self
            .reader()
            .call(move |conn| {
                conn.prepare_cached(HEAD)?
                    .query_row([room], |r| r.get(0))
                    .optional()
            })
            .await??;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// The rows of `AFTER` or `BEFORE` for (room, seq, limit).
    pub(super) async fn page(&self, page: Page<'_>) -> Result<Vec<StoredMessage>, Error> {
        let Page {
            newer,
            room,
            seq,
            limit,
        } = page;
        let room = room.as_str().to_owned();
        self.reader()
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(if newer { AFTER } else { BEFORE })?;
                let rows = stmt.query_map(rusqlite::params![room, seq, limit], raw)?;
                let rows = rows.collect::<Result<Vec<_>, _>>()?;
                let mut messages = decode_all(rows)?;
                with_reactions(conn, &room, &mut messages)?;
                Ok::<_, Error>(messages)
            })
            .await?
    }
}

fn decode_all(rows: Vec<RawMessage>) -> Result<Vec<StoredMessage>, Error> {
    rows.into_iter().map(RawMessage::decode).collect()
}

/// Fills in the reactions of a page of one room's messages.
fn with_reactions(
    conn: &Connection,
    room: &str,
    messages: &mut [StoredMessage],
) -> Result<(), Error> {
    let Some((lo, hi)) = seq_range(messages) else {
        return Ok(());
    };
    let mut stmt = conn.prepare_cached(REACTIONS)?;
    let rows = stmt
        .query_map(rusqlite::params![room, lo, hi], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    attach_reactions(messages, rows)
}

/// The path in `sqlite://PATH` (or `sqlite:PATH`); creates its folder. A query string is
/// ignored but for `mode=`, which sqlx's URLs used to carry.
fn sqlite_path(url: &str) -> Result<std::path::PathBuf, String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, _) = shared::url::split_query(rest);
    if path.is_empty() {
        return Err("expected sqlite://PATH".into());
    }
    let path = Path::new(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    Ok(path.to_owned())
}

/// Runs the migrations the file has not seen. Files made by earlier versions recorded
/// theirs in sqlx's `_sqlx_migrations` table; that is read once, then `user_version`.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let mut version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 0 {
        let sqlx_table: bool = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                [],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if sqlx_table {
            version = conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                [],
                |r| r.get(0),
            )?;
            conn.pragma_update(None, "user_version", version)?;
        }
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", v)?;
        tx.commit()?;
    }
    Ok(())
}

/// One batch in one transaction: lock each room's counter (in room-name order), find
/// the keys stored before, insert the new messages, move the counters.
fn write(conn: &mut Connection, batch: &[NewMessage]) -> Result<Vec<Stored>, Error> {
    // Take the write lock up front: a deferred transaction that upgrades later can fail
    // with SQLITE_BUSY instead of waiting.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut last = lock_rooms(&tx, batch)?;
    let mut plan = Plan::new(batch);
    plan.found(find_stored(&tx, batch)?);
    let mut targets = Targets::new(batch, read_targets(&tx, batch)?);
    let numbered = plan.number(batch, &mut last, &mut targets);
    let now = Timestamp::now().as_millis();
    let mut insert = tx.prepare_cached(INSERT)?;
    for &(i, seq) in &numbered.fresh {
        let m = &batch[i];
        let e = &m.event;
        let enriched = serde_json::to_string(&m.enriched).expect("enrichment serializes");
        insert.execute(rusqlite::params![
            m.room.as_str(),
            seq,
            m.from.as_str(),
            m.id.as_str(),
            m.body,
            m.sent_at.as_millis(),
            enriched,
            now,
            m.trace,
            e.kind.as_str(),
            e.target.map(|t| t as i64),
            e.reply_to.map(|t| t as i64),
            e.emoji,
            i64::from(e.remove),
            i64::from(e.moderated),
        ])?;
    }
    drop(insert);
    write_targets(&tx, &targets)?;
    let mut set = tx.prepare_cached(SET_COUNTER)?;
    for (room, seq) in plan::moved(&last) {
        set.execute(rusqlite::params![room, seq])?;
    }
    drop(set);
    tx.commit()?;
    Ok(plan.outcomes(batch, numbered))
}

/// The latest state of every message the batch's events name.
fn read_targets(tx: &Connection, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, Error> {
    let mut found = Vec::new();
    for (room, seq) in events::target_keys(batch) {
        let row = tx
            .prepare_cached(GET)?
            .query_row(rusqlite::params![room, seq], raw)
            .optional()?;
        if let Some(row) = row {
            let mut one = [row.decode()?];
            with_reactions(tx, room, &mut one)?;
            found.extend(one);
        }
    }
    Ok(found)
}

/// Writes the latest state of each target the batch changed.
fn write_targets(tx: &Connection, targets: &Targets) -> Result<(), Error> {
    for m in targets.changed() {
        let (room, seq) = (m.room.as_str(), m.seq as i64);
        let enriched = serde_json::to_string(&m.enriched).expect("enrichment serializes");
        tx.prepare_cached(SET_STATE)?.execute(rusqlite::params![
            room,
            seq,
            m.body,
            enriched,
            m.edited_at.map(Timestamp::as_millis),
            i64::from(m.deleted),
        ])?;
        tx.prepare_cached(CLEAR_REACTIONS)?
            .execute(rusqlite::params![room, seq])?;
        let mut add = tx.prepare_cached(ADD_REACTION)?;
        for (emoji, user) in events::reaction_rows(m) {
            add.execute(rusqlite::params![room, seq, emoji, user])?;
        }
    }
    let cleared = events::cleared_enrichment();
    for (room, seq) in targets.deleted() {
        tx.prepare_cached(CLEAR_EDITS)?
            .execute(rusqlite::params![room, *seq as i64, cleared])?;
    }
    Ok(())
}

fn lock_rooms<'a>(tx: &Connection, batch: &'a [NewMessage]) -> Result<Counters<'a>, Error> {
    let mut rooms = plan::rooms(batch);
    let mut stmt = tx.prepare_cached(LOCK_ROOM)?;
    for (room, counter) in rooms.iter_mut() {
        let seq: i64 = stmt.query_row([room], |r| r.get(0))?;
        *counter = (seq, seq);
    }
    Ok(rooms)
}

/// The stored messages whose keys the batch repeats (a retry, a redelivery).
fn find_stored(tx: &Connection, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, Error> {
    let mut stmt = tx.prepare_cached(FIND)?;
    let mut found = Vec::new();
    for m in batch {
        let key = [m.room.as_str(), m.from.as_str(), m.id.as_str()];
        if let Some(row) = stmt.query_row(key, raw).optional()? {
            found.push(row.decode()?);
        }
    }
    Ok(found)
}

/// A `messages` row in the column order of `AFTER`, `BEFORE` and `FIND`.
fn raw(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawMessage> {
    Ok(raw_message!(row, get))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_file_is_migrated_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), 4);
        migrate(&mut conn).unwrap();
        let trace: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'trace'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(trace, 1, "every migration ran, the second once");
    }

    #[test]
    fn a_file_migrated_by_sqlx_keeps_its_rows_and_is_not_migrated_again() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.execute_batch(MIGRATIONS[1].1).unwrap();
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, success BOOLEAN NOT NULL);
             INSERT INTO _sqlx_migrations VALUES (1, TRUE), (2, TRUE);
             INSERT INTO messages (room, seq, sender, client_id, body, sent_at, enriched, stored_at)
               VALUES ('lobby', 1, 'alice', 'm1', 'kept', 0, '{}', 0);",
        )
        .unwrap();
        migrate(&mut conn).expect("nothing is run again (ALTER TABLE would fail)");
        assert_eq!(version(&conn), 4, "only the later migrations ran");
        let body: String = conn
            .query_row("SELECT body FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(body, "kept");
    }
}
