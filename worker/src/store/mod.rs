//! The message store over sqlx: one code path for SQLite and PostgreSQL.
//!
//! Writes come in batches, one transaction and a fixed handful of statements per batch
//! (see `write.rs`); reads serve replay, history and resync.

use crate::error::Error;

mod write;
use shared::config::redact_url;
use shared::{ClientMsgId, Enriched, RoomId, StoredMessage, Timestamp, UserId};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::sync::Arc;
use std::time::Duration;

const AFTER: &str = "SELECT room, seq, sender, client_id, body, sent_at, enriched, trace FROM messages \
     WHERE room = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3";
const BEFORE: &str = "SELECT room, seq, sender, client_id, body, sent_at, enriched, trace FROM messages \
     WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";
const HEAD: &str = "SELECT last_seq FROM room_seq WHERE room = $1";

/// A message ready to be stored: enriched, body already censored if flagged.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub room: RoomId,
    pub id: ClientMsgId,
    pub from: UserId,
    pub body: String,
    pub sent_at: Timestamp,
    pub enriched: Enriched,
    pub trace: Option<String>,
}

/// What storing one message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored now under a fresh seq.
    New(StoredMessage),
    /// The (room, from, id) was stored before; this is that stored message.
    Duplicate(StoredMessage),
}

impl Stored {
    pub fn message(&self) -> &StoredMessage {
        match self {
            Self::New(m) | Self::Duplicate(m) => m,
        }
    }

    pub fn into_message(self) -> StoredMessage {
        match self {
            Self::New(m) | Self::Duplicate(m) => m,
        }
    }
}

/// Pool bounds for [`Store::connect`].
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The message store. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Set when the store is SQLite.
    sqlite: Option<Arc<Sqlite>>,
    /// Why writes are failing (disk full, I/O), until one succeeds again.
    write_failure: Arc<std::sync::Mutex<Option<String>>>,
}

/// What only a SQLite store has.
struct Sqlite {
    /// SQLite has one writer at a time; queueing here instead of in SQLite's busy
    /// handler (which sleeps in steps of up to 100 ms) keeps store latency flat.
    writer: tokio::sync::Mutex<()>,
    /// The background checkpoint task, stopped with the last clone of the store.
    checkpoints: tokio::task::JoinHandle<()>,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        self.checkpoints.abort();
    }
}

/// How often SQLite's WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies SQLite's WAL into the database file off the commit path. Left to SQLite, the
/// commit that crosses the WAL threshold does it (with an fsync), and the messages of
/// that batch wait for it: the latency spikes were tens of milliseconds.
async fn checkpoints(pool: AnyPool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "background WAL checkpoint failed; retrying in 500 ms (SQLite's own checkpoint at 10,000 pages bounds the WAL meanwhile)");
        }
    }
}

impl Store {
    /// Connects, creates the SQLite file and its folder when missing, and runs migrations.
    pub async fn connect(url: &str, opts: StoreOptions) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let connect_err = |e: &dyn std::fmt::Display| Error::Connect {
            what: "store",
            url: shown.clone(),
            reason: e.to_string(),
        };
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite {
            prepare_sqlite(url).map_err(|e| connect_err(&e))?
        } else {
            url.to_owned()
        };
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(connect_err(&"expected sqlite://PATH or postgres://..."));
        }
        let pool = AnyPoolOptions::new()
            .max_connections(
                if sqlite {
                    opts.max_connections.min(4)
                } else {
                    opts.max_connections
                }
                .max(1),
            )
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        // Checkpoints run in the background (see `checkpoints`); this is
                        // only the backstop that bounds the WAL if they fall behind.
                        sqlx::query("PRAGMA wal_autocheckpoint = 10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| connect_err(&e))?;
        if sqlite {
            // WAL lets readers (history, replay) run beside the single writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(|e| connect_err(&e))?;
        }
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| connect_err(&e))?;
        let sqlite = sqlite.then(|| {
            Arc::new(Sqlite {
                writer: tokio::sync::Mutex::new(()),
                checkpoints: tokio::spawn(checkpoints(pool.clone())),
            })
        });
        Ok(Self {
            pool,
            sqlite,
            write_failure: Arc::default(),
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Answers when the database does (readiness).
    /// Answers when the store can be read and its last write did not fail for an outage
    /// (readiness: a full disk still answers reads).
    pub async fn ping(&self) -> Result<(), Error> {
        if let Some(reason) = self.write_failure().clone() {
            return Err(Error::WritesFailing(reason));
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn write_failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.write_failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The highest stored seq of a room; 0 when it has none.
    pub async fn head(&self, room: &RoomId) -> Result<u64, Error> {
        let row = sqlx::query(HEAD)
            .bind(room.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)?.max(0) as u64,
            None => 0,
        })
    }

    /// Up to `limit` messages with `seq > after`, oldest first.
    pub async fn after(
        &self,
        room: &RoomId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error> {
        let rows = sqlx::query(AFTER)
            .bind(room.as_str())
            .bind(clamp_i64(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Up to `limit` messages with `seq < before` (newest when `None`), oldest first.
    pub async fn before(
        &self,
        room: &RoomId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error> {
        let rows = sqlx::query(BEFORE)
            .bind(room.as_str())
            .bind(before.map_or(i64::MAX, clamp_i64))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut msgs = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        msgs.reverse();
        Ok(msgs)
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn decode(row: &AnyRow) -> Result<StoredMessage, Error> {
    let text = |i: usize| row.try_get::<String, _>(i);
    let corrupt = |what: &str| Error::Corrupt(format!("stored {what} is invalid"));
    Ok(StoredMessage {
        room: RoomId::parse(&text(0)?).map_err(|_| corrupt("room"))?,
        seq: row.try_get::<i64, _>(1)?.max(0) as u64,
        from: UserId::parse(&text(2)?).map_err(|_| corrupt("sender"))?,
        id: ClientMsgId::parse(&text(3)?).map_err(|_| corrupt("client id"))?,
        body: text(4)?,
        sent_at: Timestamp::from_millis(row.try_get::<i64, _>(5)?),
        enriched: serde_json::from_str(&text(6)?).map_err(|_| corrupt("enrichment"))?,
        trace: row.try_get::<Option<String>, _>(7)?,
    })
}

/// Turns `sqlite://PATH[?query]` into a URL that creates the file, and creates its folder.
fn prepare_sqlite(url: &str) -> Result<String, std::io::Error> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:"
        && let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    Ok(if query.contains("mode=") {
        url.to_owned()
    } else if query.is_empty() {
        format!("sqlite://{path}?mode=rwc")
    } else {
        format!("sqlite://{path}?{query}&mode=rwc")
    })
}
