//! The durable half of the embedded queue: a SQLite file (WAL) that holds every message
//! from its publish until a worker settled it, and the dead letters after that.
//!
//! One process owns the file (an exclusive lock on `PATH.lock`): it alone writes the
//! message table, through one committer thread ([`commit`]) that puts whatever arrived
//! while the previous transaction was committing into the next one (group commit), so one
//! commit carries many connections' messages. A `send` is acked only after its row is
//! committed. Other processes (`worker dlq …`) may read the dead letters, purge them, and
//! ask the owner to replay some, which it does within a second. Those reads and the rare
//! writes beside the committer go through a second connection ([`Db`]).

mod commit;

use super::{DeadLetter, DeadLetterFilter, QueueError};
use commit::Op;
use shared::ids::RoomId;
use shared::sqlite::rusqlite::{self, Connection, TransactionBehavior};
use shared::sqlite::{Checkpoints, Db, OpenOptions};
use shared::sync::lock;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;
use tracing::warn;

/// Most operations one transaction carries.
const GROUP_MAX: usize = 512;
/// How often the owner copies the WAL back into the file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS queue_health (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS queue_headroom (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS queue_messages (
        id INTEGER PRIMARY KEY,
        room TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        available_at INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS queue_dead (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL,
        reason TEXT NOT NULL,
        dead_at INTEGER NOT NULL,
        replay INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX IF NOT EXISTS queue_dead_replay ON queue_dead(replay) WHERE replay = 1;";
// Numbered `?N` parameters: SQLite numbers `$N` ones by first appearance, not by N.
const LOAD: &str =
    "SELECT id, room, payload, attempts, available_at FROM queue_messages ORDER BY id";
const INSERT: &str = "INSERT INTO queue_messages (id, room, payload) VALUES (?1, ?2, ?3)";
const DELETE: &str = "DELETE FROM queue_messages WHERE id = ?1";
const RETRY: &str = "UPDATE queue_messages SET attempts = ?2, available_at = ?3 WHERE id = ?1";
const BURY: &str = "INSERT INTO queue_dead (room, payload, attempts, reason, dead_at) \
     VALUES (?1, ?2, ?3, ?4, ?5)";
const LIST_DEAD: &str = "SELECT payload, attempts, reason FROM queue_dead ORDER BY id LIMIT ?1";
const ALL_DEAD: &str = "SELECT id, room, payload FROM queue_dead ORDER BY id";
const REQUESTED: &str = "SELECT id, room, payload FROM queue_dead WHERE replay = 1 ORDER BY id";
const UNBURY: &str = "DELETE FROM queue_dead WHERE id = ?1";
const REQUEST: &str = "UPDATE queue_dead SET replay = 1 WHERE id = ?1";
const PURGE: &str = "DELETE FROM queue_dead";
const PROBE: &str = "INSERT OR REPLACE INTO queue_health (id, at) VALUES (1, ?1)";
/// After a failed commit the probe also writes this much, rewritten in place, so readiness
/// comes back only when a send of any size can be committed: a row of a few bytes still
/// fits in WAL space the file already has, so on a full disk it succeeded while every real
/// send was refused.
const HEADROOM: &str =
    "INSERT OR REPLACE INTO queue_headroom (id, pad) VALUES (1, zeroblob(65536))";

/// A message's row: its id (the queue's order), its room and its bytes.
#[derive(Clone)]
pub(super) struct Row {
    pub id: u64,
    pub room: RoomId,
    pub payload: Vec<u8>,
}

impl Row {
    pub(super) fn new(id: u64, room: &RoomId, payload: &[u8]) -> Self {
        Self {
            id,
            room: room.clone(),
            payload: payload.to_vec(),
        }
    }
}

/// A message as the file keeps it.
pub(super) struct Queued {
    pub id: u64,
    pub room: RoomId,
    pub payload: Vec<u8>,
    pub attempts: u32,
    /// Epoch ms before which it is not delivered (a pending retry).
    pub available_at: i64,
}

/// The open file: for its owner, also the committer.
pub(super) struct Journal {
    /// The second connection: reads, and the writes of processes that do not own it.
    db: Db,
    path: PathBuf,
    /// The committer thread's inbox; `None` when another process owns the file.
    ops: Option<mpsc::Sender<Op>>,
    /// Why the last commit failed (disk full, I/O), until one succeeds.
    failure: Arc<Mutex<Option<String>>>,
    /// Settled ids not yet deleted: the committer takes them into its next group.
    settled: Arc<Mutex<Vec<u64>>>,
    /// The owner copies the WAL back in the background, off the commit path.
    _checkpoints: Option<Checkpoints>,
    _lock: Option<std::fs::File>,
}

impl Journal {
    /// Opens (creating) the file; becomes its owner unless another process is.
    pub(super) async fn open(path: &Path, sync_full: bool) -> Result<Self, QueueError> {
        let shown = path.display().to_string();
        let fail = |reason: String| QueueError::Connect {
            url: format!("sqlite://{shown}"),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock = own(path).map_err(|e| fail(format!("cannot lock {shown}.lock: {e}")))?;
        let mut options = OpenOptions::new(path);
        options.sync_full = sync_full;
        options.background_checkpoints = true;
        let db = Db::open("queue-db", options.clone())
            .await
            .map_err(|e| fail(e.reason))?;
        db.call(|conn| conn.execute_batch(SCHEMA))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(format!("creating the queue tables: {e}")))?;
        let failure = Arc::default();
        let settled = Arc::default();
        let (ops, checkpoints) = match lock {
            Some(_) => {
                let checkpoints =
                    Checkpoints::start("queue-checkpoint", options.clone(), CHECKPOINT_EVERY)
                        .await
                        .map_err(|e| fail(e.reason))?;
                let ops = commit::start(options, Arc::clone(&failure), Arc::clone(&settled))
                    .await
                    .map_err(fail)?;
                (Some(ops), Some(checkpoints))
            }
            None => (None, None),
        };
        Ok(Self {
            db,
            path: path.to_owned(),
            ops,
            failure,
            settled,
            _checkpoints: checkpoints,
            _lock: lock,
        })
    }

    pub(super) fn is_owner(&self) -> bool {
        self.ops.is_some()
    }

    /// Every message still in the file, in publish order.
    pub(super) async fn load(&self) -> Result<Vec<Queued>, QueueError> {
        self.on_db("reading the queue", |conn| {
            let mut statement = conn.prepare(LOAD)?;
            let mut rows = statement.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let room: String = r.get(1)?;
                let Ok(room) = RoomId::parse(&room) else {
                    warn!(%room, "a queued message with an invalid room name is skipped");
                    continue;
                };
                out.push(Queued {
                    id: r.get::<_, i64>(0)? as u64,
                    room,
                    payload: r.get(2)?,
                    attempts: r.get::<_, i64>(3)?.max(0) as u32,
                    available_at: r.get(4)?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Commits a new message under `id`; Ok once it is on disk.
    pub(super) async fn append(&self, row: Row) -> Result<(), QueueError> {
        self.ask(|done| Op::Append { row, done }).await
    }

    /// Forgets settled messages in a later transaction, without waking the committer:
    /// nobody waits for a delete, and a row a crash leaves behind is only delivered
    /// again (the store drops the duplicate). So deletes ride along with the next
    /// group, or go within `SETTLED_FLUSH` when no group comes.
    pub(super) fn remove(&self, ids: impl IntoIterator<Item = u64>) {
        if self.ops.is_some() {
            lock(&self.settled).extend(ids);
        }
    }

    pub(super) async fn retry(
        &self,
        id: u64,
        attempts: u32,
        available_at: i64,
    ) -> Result<(), QueueError> {
        self.ask(|done| Op::Retry {
            id,
            attempts,
            available_at,
            done,
        })
        .await
    }

    /// Moves the message `row` names to the dead letters.
    pub(super) async fn bury(
        &self,
        row: Row,
        attempts: u32,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.ask(|done| Op::Bury {
            row,
            attempts,
            reason: reason.to_owned(),
            done,
        })
        .await
    }

    pub(super) async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.on_db("reading the dead letters", move |conn| {
            let mut statement = conn.prepare_cached(LIST_DEAD)?;
            let letters = statement.query_map([max], |r| {
                // The file keeps the envelope only: readers take the key from it.
                Ok(DeadLetter {
                    payload: r.get(0)?,
                    key: None,
                    attempts: r.get::<_, i64>(1)?.max(0) as u32,
                    reason: r.get(2)?,
                })
            })?;
            letters.collect()
        })
        .await
    }

    /// Dead letters the filter selects (owner), or that another process asked to replay
    /// (`requested`), as (dead row id, room, payload).
    pub(super) async fn dead_to_replay(
        &self,
        filter: Option<&DeadLetterFilter>,
    ) -> Result<Vec<(i64, RoomId, Vec<u8>)>, QueueError> {
        let sql = if filter.is_some() {
            ALL_DEAD
        } else {
            REQUESTED
        };
        let rows = self
            .on_db("reading the dead letters", move |conn| {
                let mut statement = conn.prepare_cached(sql)?;
                let rows = statement.query_map([], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<(i64, String, Vec<u8>)>>>()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, room, payload)| {
                if filter.is_some_and(|f| !f.matches(None, &payload)) {
                    return None;
                }
                Some((id, RoomId::parse(&room).ok()?, payload))
            })
            .collect())
    }

    /// Moves dead letters back onto the queue under fresh ids (owner only).
    pub(super) async fn unbury(&self, rows: Vec<(i64, Row)>) -> Result<(), QueueError> {
        self.ask(|done| Op::Unbury { rows, done }).await
    }

    /// Asks the owner to replay these dead letters (from another process).
    pub(super) async fn request_replay(&self, dead_ids: &[i64]) -> Result<(), QueueError> {
        let ids = dead_ids.to_vec();
        let asked = self
            .db
            .call(move |conn| request(conn, &ids))
            .await
            .map_err(|e| self.unavailable("asking for a replay", e))?;
        asked.map_err(|(what, e)| self.unavailable(what, e))
    }

    pub(super) async fn purge(&self) -> Result<usize, QueueError> {
        self.on_db("purging the dead letters", |conn| conn.execute(PURGE, []))
            .await
    }

    /// Readiness: the file answers, and after a failed commit, a probe write goes
    /// through (so readiness comes back by itself once space returns).
    pub(super) async fn ping(&self) -> Result<(), QueueError> {
        let failing = lock(&self.failure).is_some();
        if failing && self.is_owner() {
            return self.ask(Op::Probe).await;
        }
        self.on_db("reading the queue", |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
        })
        .await
    }

    /// Runs `work` on the second connection; the error names the file and `what` failed.
    async fn on_db<R: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, QueueError> {
        match self.db.call(work).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self.unavailable(what, e)),
            Err(gone) => Err(self.unavailable(what, gone)),
        }
    }

    /// Hands `op` to the committer and waits for its transaction's outcome.
    async fn ask(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), QueueError>>) -> Op,
    ) -> Result<(), QueueError> {
        let Some(ops) = &self.ops else {
            return Err(QueueError::Unavailable(format!(
                "{} is owned by another process (a running gateway)",
                self.path.display()
            )));
        };
        let (done, answer) = oneshot::channel();
        ops.send(op(done)).map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> QueueError {
        QueueError::Unavailable(format!("{what} in {}: {e}", self.path.display()))
    }
}

/// Marks dead letters for the owner to replay, in one transaction; the error says which
/// step failed. (A failed transaction rolls back when dropped, leaving the connection
/// clean for the next call.)
fn request(conn: &mut Connection, ids: &[i64]) -> Result<(), (&'static str, rusqlite::Error)> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| ("starting a transaction", e))?;
    let asking = |e| ("asking for a replay", e);
    {
        let mut statement = tx.prepare_cached(REQUEST).map_err(asking)?;
        for id in ids {
            statement.execute([id]).map_err(asking)?;
        }
    }
    tx.commit().map_err(asking)
}

/// Takes the owner lock, or `None` when another process holds it.
fn own(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests;
