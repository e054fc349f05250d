//! The message store: SQLite (one file, connections on threads of their own) or
//! PostgreSQL (sqlx), behind one type.
//!
//! Writes come in batches, one transaction per batch; reads serve replay, history and
//! resync. Both backends number a room's messages from a counter row locked in the
//! batch's transaction, so seq has no gaps.
//!
//! The worker writes (`store_batch`: messages, and the edits, deletes and reactions
//! that change them, see `events`); the gateway reads (`head`, `after`, `before`,
//! `message`), keeps room settings (`room_settings`, `put_room`, members: see `rooms`)
//! and read cursors (`mark_read`, `read_cursor`, `unread`, `reads`: see `cursors`), and
//! asks `ping` for readiness.

use shared::event::{EventKind, Reactions};
use shared::sync::lock;
use shared::url::redact_url;
use shared::{ClientMsgId, Enriched, RoomId, StoredMessage, Timestamp, UserId};
use std::sync::Arc;
use std::time::Duration;

mod cursors;
mod error;
mod events;
mod plan;
mod postgres;
mod rooms;
mod settings;
mod sqlite;

pub use error::Error;
pub use rooms::RoomSettings;
pub use settings::StoreSettings;
pub use shared::event::Refusal;

/// The columns of a `messages` row, in the order [`RawMessage`] reads them.
macro_rules! message_columns {
    () => {
        "room, seq, sender, client_id, body, sent_at, enriched, trace, kind, target, \
         reply_to, emoji, unreact, moderated, edited_at, deleted"
    };
}
use message_columns;

const AFTER: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE room = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
);
const BEFORE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
);
const GET: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE room = $1 AND seq = $2"
);
/// The reactions of a room's messages with `$2 <= seq <= $3`.
const REACTIONS: &str = "SELECT seq, emoji, user_name FROM reactions \
     WHERE room = $1 AND seq >= $2 AND seq <= $3";
const HEAD: &str = "SELECT last_seq FROM room_seq WHERE room = $1";
const SEQ_OF_KEY: &str =
    "SELECT seq FROM messages WHERE room = $1 AND sender = $2 AND client_id = $3";

/// What a log entry is besides its text: a message (the default) or an event that
/// changes message `target`, and a message's `reply_to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFields {
    pub kind: EventKind,
    pub target: Option<u64>,
    pub reply_to: Option<u64>,
    pub emoji: Option<String>,
    pub remove: bool,
    pub moderated: bool,
}

/// A message or event ready to be stored: enriched, body already censored if flagged.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub room: RoomId,
    pub id: ClientMsgId,
    pub from: UserId,
    pub body: String,
    pub sent_at: Timestamp,
    pub enriched: Enriched,
    pub trace: Option<String>,
    pub event: EventFields,
}

impl NewMessage {
    /// The log entry this becomes under `seq`, as it is fanned out.
    pub(crate) fn stored(&self, seq: u64) -> StoredMessage {
        let mut m = StoredMessage::plain(
            self.room.clone(),
            seq,
            self.id.clone(),
            self.from.clone(),
            self.body.clone(),
            self.sent_at,
            self.enriched.clone(),
            self.trace.clone(),
        );
        let e = &self.event;
        m.kind = e.kind;
        m.target = e.target;
        m.reply_to = e.reply_to;
        m.emoji.clone_from(&e.emoji);
        m.remove = e.remove;
        m.moderated = e.moderated;
        m
    }
}

/// What storing one message or event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored now under a fresh seq.
    New(StoredMessage),
    /// The (room, from, id) was stored before; this is that stored entry.
    Duplicate(StoredMessage),
    /// An event its target does not allow (deleted, missing, not the author's, full of
    /// reactions): nothing is stored and nothing changes.
    Refused(Refusal),
}

impl Stored {
    /// The stored entry; `None` for a refused event.
    pub fn message(&self) -> Option<&StoredMessage> {
        match self {
            Self::New(m) | Self::Duplicate(m) => Some(m),
            Self::Refused(_) => None,
        }
    }

    pub fn into_message(self) -> Option<StoredMessage> {
        match self {
            Self::New(m) | Self::Duplicate(m) => Some(m),
            Self::Refused(_) => None,
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

    /// The seq stored under (room, from, id), if any: a command repeated after a lost ack
    /// is answered without checking it again.
    pub async fn seq_of(
        &self,
        room: &RoomId,
        from: &UserId,
        id: &ClientMsgId,
    ) -> Result<Option<u64>, Error> {
        let key = [room.as_str(), from.as_str(), id.as_str()].map(str::to_owned);
        let seq: Option<i64> = match &self.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    use shared::sqlite::rusqlite::OptionalExtension;
                    c.prepare_cached(SEQ_OF_KEY)?
                        .query_row(key, |r| r.get(0))
                        .optional()
                })
                .await?
            }
            Backend::Postgres(p) => {
                use sqlx::Row;
                let [room, from, id] = key;
                sqlx::query(SEQ_OF_KEY)
                    .bind(room)
                    .bind(from)
                    .bind(id)
                    .fetch_optional(p.pool())
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?
            }
        };
        Ok(seq.map(|s| s.max(0) as u64))
    }

    /// The log entry `seq` of a room in its latest state (edited, deleted, reactions);
    /// `None` when the room has no such seq.
    pub async fn message(&self, room: &RoomId, seq: u64) -> Result<Option<StoredMessage>, Error> {
        let page = Page {
            newer: true,
            room,
            seq: clamp_i64(seq).saturating_sub(1),
            limit: 1,
        };
        let found = self.page(page).await?;
        Ok(found.into_iter().find(|m| m.seq == seq))
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

/// A [`RawMessage`] from a row in the column order of [`message_columns`], through the
/// driver's own getter (`$row.$get(i)?`), for both drivers.
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
            kind: $row.$get(8)?,
            target: $row.$get(9)?,
            reply_to: $row.$get(10)?,
            emoji: $row.$get(11)?,
            remove: $row.$get(12)?,
            moderated: $row.$get(13)?,
            edited_at: $row.$get(14)?,
            deleted: $row.$get(15)?,
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
    kind: String,
    target: Option<i64>,
    reply_to: Option<i64>,
    emoji: Option<String>,
    remove: i64,
    moderated: i64,
    edited_at: Option<i64>,
    deleted: i64,
}

impl RawMessage {
    fn decode(self) -> Result<StoredMessage, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("stored {what} is invalid"));
        let seq = |v: i64| v.max(0) as u64;
        let mut m = StoredMessage::plain(
            RoomId::parse(&self.room).map_err(|_| corrupt("room"))?,
            seq(self.seq),
            ClientMsgId::parse(&self.id).map_err(|_| corrupt("client id"))?,
            UserId::parse(&self.from).map_err(|_| corrupt("sender"))?,
            self.body,
            Timestamp::from_millis(self.sent_at),
            serde_json::from_str(&self.enriched).map_err(|_| corrupt("enrichment"))?,
            self.trace,
        );
        m.kind = EventKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?;
        m.target = self.target.map(seq);
        m.reply_to = self.reply_to.map(seq);
        m.emoji = self.emoji;
        m.remove = self.remove != 0;
        m.moderated = self.moderated != 0;
        m.edited_at = self.edited_at.map(Timestamp::from_millis);
        m.deleted = self.deleted != 0;
        Ok(m)
    }
}

/// Files `(seq, emoji, user)` rows into the messages' `reactions`, each list sorted by
/// name in bytes (PostgreSQL's `ORDER BY` would follow its collation).
fn attach_reactions(
    messages: &mut [StoredMessage],
    rows: Vec<(i64, String, String)>,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut by_seq: std::collections::HashMap<u64, Reactions> = Default::default();
    for (seq, emoji, user) in rows {
        let user = UserId::parse(&user)
            .map_err(|_| Error::Corrupt("stored reaction user is invalid".into()))?;
        by_seq
            .entry(seq.max(0) as u64)
            .or_default()
            .entry(emoji)
            .or_default()
            .push(user);
    }
    for m in messages {
        if let Some(mut r) = by_seq.remove(&m.seq) {
            r.values_mut().for_each(|users| users.sort());
            m.reactions = r;
        }
    }
    Ok(())
}

/// The lowest and highest seq of a page, for [`REACTIONS`]; `None` for an empty page.
fn seq_range(messages: &[StoredMessage]) -> Option<(i64, i64)> {
    let lo = messages.iter().map(|m| m.seq).min()?;
    let hi = messages.iter().map(|m| m.seq).max()?;
    Some((clamp_i64(lo), clamp_i64(hi)))
}
