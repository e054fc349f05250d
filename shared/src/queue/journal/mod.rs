//! The durable half of the embedded queue: a SQLite file (WAL) that holds every message
//! from its publish until a worker settled it, and the dead letters after that.
//!
//! One process owns the file (an exclusive lock on `PATH.lock`): it alone writes the
//! message table, through one committer task that puts whatever arrived while the previous
//! transaction was committing into the next one (group commit), so one commit carries
//! many connections' messages. A `send` is acked only after its row is committed. Other
//! processes (`worker dlq …`) may read the dead letters, purge them, and ask the owner to
//! replay some, which it does within a second.

mod commit;

use super::{DeadLetter, DeadLetterFilter, QueueError};
use crate::ids::RoomId;
use commit::{Op, commit_loop};
use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite, Transaction};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Most operations one transaction carries.
const GROUP_MAX: usize = 512;
/// Rows per multi-row statement (SQLite allows 32,766 parameters).
const ROWS_PER_INSERT: usize = 256;

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS queue_health (id INTEGER PRIMARY KEY, at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS queue_messages (
        id INTEGER PRIMARY KEY,
        room TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        available_at INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS queue_dead (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL,
        reason TEXT NOT NULL,
        dead_at INTEGER NOT NULL,
        replay INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS queue_dead_replay ON queue_dead(replay) WHERE replay = 1",
];
const LOAD: &str =
    "SELECT id, room, payload, attempts, available_at FROM queue_messages ORDER BY id";
const DELETE: &str = "DELETE FROM queue_messages WHERE id = $1";
const RETRY: &str = "UPDATE queue_messages SET attempts = $2, available_at = $3 WHERE id = $1";
const BURY: &str = "INSERT INTO queue_dead (room, payload, attempts, reason, dead_at) \
     VALUES ($1, $2, $3, $4, $5)";
const LIST_DEAD: &str = "SELECT payload, attempts, reason FROM queue_dead ORDER BY id LIMIT $1";
const ALL_DEAD: &str = "SELECT id, room, payload FROM queue_dead ORDER BY id";
const REQUESTED: &str = "SELECT id, room, payload FROM queue_dead WHERE replay = 1 ORDER BY id";
const UNBURY: &str = "DELETE FROM queue_dead WHERE id = $1";
const REQUEST: &str = "UPDATE queue_dead SET replay = 1 WHERE id = $1";
const PURGE: &str = "DELETE FROM queue_dead";
const PROBE: &str = "INSERT OR REPLACE INTO queue_health (id, at) VALUES (1, $1)";

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
    pool: SqlitePool,
    path: PathBuf,
    /// `None` when another process owns the file.
    ops: Option<mpsc::UnboundedSender<Op>>,
    /// Why the last commit failed (disk full, I/O), until one succeeds.
    failure: Arc<Mutex<Option<String>>>,
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
        let sync = if sync_full {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{shown}"))
            .map_err(|e| fail(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|e| fail(e.to_string()))?;
        for ddl in SCHEMA {
            sqlx::query(ddl)
                .execute(&pool)
                .await
                .map_err(|e| fail(format!("creating the queue tables: {e}")))?;
        }
        let mut journal = Self {
            pool,
            path: path.to_owned(),
            ops: None,
            failure: Arc::default(),
            _lock: lock,
        };
        if journal._lock.is_some() {
            let (tx, rx) = mpsc::unbounded_channel();
            let failure = journal.failure.clone();
            tokio::spawn(commit_loop(journal.pool.clone(), rx, failure));
            journal.ops = Some(tx);
        }
        Ok(journal)
    }

    pub(super) fn is_owner(&self) -> bool {
        self.ops.is_some()
    }

    /// Every message still in the file, in publish order.
    pub(super) async fn load(&self) -> Result<Vec<Queued>, QueueError> {
        let rows = sqlx::query(LOAD)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.unavailable("reading the queue", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let room: String = r.get(1);
            let Ok(room) = RoomId::parse(&room) else {
                warn!(%room, "a queued message with an invalid room name is skipped");
                continue;
            };
            out.push(Queued {
                id: r.get::<i64, _>(0) as u64,
                room,
                payload: r.get(2),
                attempts: r.get::<i64, _>(3).max(0) as u32,
                available_at: r.get(4),
            });
        }
        Ok(out)
    }

    /// Commits a new message under `id`; Ok once it is on disk.
    pub(super) async fn append(
        &self,
        id: u64,
        room: &RoomId,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        self.ask(|done| Op::Append {
            id,
            room: room.clone(),
            payload: payload.to_vec(),
            done,
        })
        .await
    }

    /// Forgets settled messages, in the next transaction.
    pub(super) fn remove(&self, ids: impl IntoIterator<Item = u64>) {
        if let Some(ops) = &self.ops {
            for id in ids {
                let _ = ops.send(Op::Remove(id));
            }
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

    pub(super) async fn bury(
        &self,
        id: u64,
        room: &RoomId,
        payload: &[u8],
        attempts: u32,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.ask(|done| Op::Bury {
            id,
            room: room.clone(),
            payload: payload.to_vec(),
            attempts,
            reason: reason.to_owned(),
            done,
        })
        .await
    }

    pub(super) async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let rows = sqlx::query(LIST_DEAD)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.unavailable("reading the dead letters", e))?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                payload: r.get(0),
                attempts: r.get::<i64, _>(1).max(0) as u32,
                reason: r.get(2),
            })
            .collect())
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
        let rows = sqlx::query(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.unavailable("reading the dead letters", e))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let payload: Vec<u8> = r.get(2);
                if filter.is_some_and(|f| !f.matches(&payload)) {
                    return None;
                }
                let room = RoomId::parse(&r.get::<String, _>(1)).ok()?;
                Some((r.get::<i64, _>(0), room, payload))
            })
            .collect())
    }

    /// Moves dead letters back onto the queue under fresh ids (owner only).
    pub(super) async fn unbury(
        &self,
        rows: Vec<(i64, u64, RoomId, Vec<u8>)>,
    ) -> Result<(), QueueError> {
        self.ask(|done| Op::Unbury { rows, done }).await
    }

    /// Asks the owner to replay these dead letters (from another process).
    pub(super) async fn request_replay(&self, dead_ids: &[i64]) -> Result<(), QueueError> {
        let mut tx = self.begin().await?;
        for id in dead_ids {
            sqlx::query(REQUEST)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.unavailable("asking for a replay", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.unavailable("asking for a replay", e))
    }

    pub(super) async fn purge(&self) -> Result<usize, QueueError> {
        let done = sqlx::query(PURGE)
            .execute(&self.pool)
            .await
            .map_err(|e| self.unavailable("purging the dead letters", e))?;
        Ok(done.rows_affected() as usize)
    }

    /// Readiness: the file answers, and after a failed commit, a probe write goes
    /// through (so readiness comes back by itself once space returns).
    pub(super) async fn ping(&self) -> Result<(), QueueError> {
        let failing = lock(&self.failure).is_some();
        if failing && self.is_owner() {
            return self.ask(Op::Probe).await;
        }
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| self.unavailable("reading the queue", e))
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, QueueError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.unavailable("starting a transaction", e))
    }

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
