//! The message store: SQLite (one file, connections on threads of their own) or
//! PostgreSQL (sqlx), behind one type.
//!
//! Writes come in batches, one transaction per batch; reads serve replay, history and
//! resync. Both backends number a room's messages from a counter row locked in the
//! batch's transaction, so seq has no gaps.
//!
//! The worker writes (`store_batch`); the gateway reads (`head`, `after`, `before`),
//! keeps room settings (`room_settings`, `put_room`, members: see `rooms`) and asks
//! `ping` for readiness.

use shared::sync::lock;
use shared::url::redact_url;
use shared::{ClientMsgId, Enriched, RoomId, StoredMessage, Timestamp, UserId};
use std::sync::Arc;
use std::time::Duration;

mod error;
mod plan;
mod postgres;
mod rooms;
mod settings;
mod sqlite;

pub use error::Error;
pub use rooms::RoomSettings;
pub use settings::StoreSettings;

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

/// Connection bounds for [`Store::connect`]: PostgreSQL's pool size; for SQLite, one
/// writer and `max_connections - 1` readers (1 to 3).
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

/// The message store. Cheap to clone (handles).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Why writes are failing (disk full, I/O), until one succeeds again.
    write_failure: Arc<std::sync::Mutex<Option<String>>>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl Store {
    /// Connects (for SQLite: creates the file and its folder) and runs the migrations.
    pub async fn connect(url: &str, opts: StoreOptions) -> Result<Self, Error> {
        let connect_err = |reason: String| Error::Connect {
            url: redact_url(url),
            reason,
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(
                sqlite::SqliteStore::connect(url, opts)
                    .await
                    .map_err(connect_err)?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(
                postgres::PgStore::connect(url, opts)
                    .await
                    .map_err(connect_err)?,
            )
        } else {
            return Err(connect_err(
                "expected sqlite://PATH or postgres://...".into(),
            ));
        };
        Ok(Self {
            backend,
            write_failure: Arc::default(),
        })
    }

    /// Answers when the store can be read and its last write did not fail for an outage
    /// (readiness: a full disk still answers reads).
    pub async fn ping(&self) -> Result<(), Error> {
        if let Some(reason) = self.write_failure().clone() {
            return Err(Error::WritesFailing(reason));
        }
        match &self.backend {
            Backend::Sqlite(s) => s.ping().await,
            Backend::Postgres(p) => p.ping().await,
        }
    }

    fn write_failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        lock(&self.write_failure)
    }

    /// Stores a batch in one transaction. Returns one outcome per input, in input order.
    pub async fn store_batch(&self, batch: &[NewMessage]) -> Result<Vec<Stored>, Error> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let written = match &self.backend {
            Backend::Sqlite(s) => s.store_batch(batch).await,
            Backend::Postgres(p) => p.store_batch(batch).await,
        };
        match &written {
            Ok(_) => *self.write_failure() = None,
            Err(e) if e.is_outage() => *self.write_failure() = Some(e.to_string()),
            Err(_) => {}
        }
        written
    }

    /// The highest stored seq of a room; 0 when it has none.
    pub async fn head(&self, room: &RoomId) -> Result<u64, Error> {
        match &self.backend {
            Backend::Sqlite(s) => s.head(room).await,
            Backend::Postgres(p) => p.head(room).await,
        }
    }

    /// Up to `limit` messages with `seq > after`, oldest first.
    pub async fn after(
        &self,
        room: &RoomId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error> {
        let page = Page {
            newer: true,
            room,
            seq: clamp_i64(after),
            limit,
        };
        self.page(page).await
    }

    /// Up to `limit` messages with `seq < before` (newest when `None`), oldest first.
    pub async fn before(
        &self,
        room: &RoomId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Error> {
        let page = Page {
            newer: false,
            room,
            seq: before.map_or(i64::MAX, clamp_i64),
            limit,
        };
        let mut msgs = self.page(page).await?;
        msgs.reverse();
        Ok(msgs)
    }

    async fn page(&self, page: Page<'_>) -> Result<Vec<StoredMessage>, Error> {
        match &self.backend {
            Backend::Sqlite(s) => s.page(page).await,
            Backend::Postgres(p) => p.page(page).await,
        }
    }
}

/// One page of a room's history: up to `limit` rows after `seq` (`newer`) or before it.
#[derive(Clone, Copy)]
struct Page<'a> {
    newer: bool,
    room: &'a RoomId,
    seq: i64,
    limit: u32,
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A [`RawMessage`] from a row in the column order of `AFTER`, `BEFORE` and `FIND`,
/// through the driver's own getter (`$row.$get(i)?`), for both drivers.
macro_rules! raw_message {
    ($row:expr, $get:ident) => {
        RawMessage {
            room: $row.$get(0)?,
            seq: $row.$get(1)?,
            from: $row.$get(2)?,
            id: $row.$get(3)?,
            body: $row.$get(4)?,
            sent_at: $row.$get(5)?,
            enriched: $row.$get(6)?,
            trace: $row.$get(7)?,
        }
    };
}
use raw_message;

/// A `messages` row as the database gives it, before its fields are checked.
struct RawMessage {
    room: String,
    seq: i64,
    from: String,
    id: String,
    body: String,
    sent_at: i64,
    enriched: String,
    trace: Option<String>,
}

impl RawMessage {
    fn decode(self) -> Result<StoredMessage, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("stored {what} is invalid"));
        Ok(StoredMessage {
            room: RoomId::parse(&self.room).map_err(|_| corrupt("room"))?,
            seq: self.seq.max(0) as u64,
            from: UserId::parse(&self.from).map_err(|_| corrupt("sender"))?,
            id: ClientMsgId::parse(&self.id).map_err(|_| corrupt("client id"))?,
            body: self.body,
            sent_at: Timestamp::from_millis(self.sent_at),
            enriched: serde_json::from_str(&self.enriched).map_err(|_| corrupt("enrichment"))?,
            trace: self.trace,
        })
    }
}
