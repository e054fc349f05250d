//! Read cursors: how far each user has read each room. A cursor only moves forward and
//! never past the room's head, so `unread` (the messages after it that are not the
//! user's own and not deleted) is exact.

use super::{Backend, Store};
use crate::error::Error;
use shared::sqlite::rusqlite::{self, OptionalExtension};
use shared::{RoomId, UserId};
use sqlx::Row;

const CURSOR: &str = "SELECT seq FROM read_cursors WHERE room = $1 AND user_name = $2";
/// Moves the cursor to `min($3, head)` unless it is already further; answers the cursor.
/// SQLite spells the two-argument min and max `min`/`max`, PostgreSQL `LEAST`/`GREATEST`.
macro_rules! mark {
    ($least:literal, $greatest:literal) => {
        concat!(
            "INSERT INTO read_cursors (room, user_name, seq) VALUES ($1, $2, ",
            $least,
            "($3, COALESCE((SELECT last_seq FROM room_seq WHERE room = $1), 0))) ",
            "ON CONFLICT (room, user_name) DO UPDATE SET seq = ",
            $greatest,
            "(read_cursors.seq, excluded.seq) RETURNING seq"
        )
    };
}
const MARK_SQLITE: &str = mark!("min", "max");
const MARK_POSTGRES: &str = mark!("LEAST", "GREATEST");
const UNREAD: &str = "SELECT count(*) FROM messages WHERE room = $1 AND seq > $2 \
     AND kind = 'message' AND deleted = 0 AND sender <> $3";
const READS: &str = "SELECT user_name, seq FROM read_cursors WHERE room = $1 \
     ORDER BY seq DESC LIMIT $2";

fn seq(v: i64) -> u64 {
    v.max(0) as u64
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Moves `user`'s cursor in `room` to `seq` (at most the room's head) unless it is
    /// already further; answers the cursor.
    pub async fn mark_read(&self, room: &RoomId, user: &UserId, seq_: u64) -> Result<u64, Error> {
        let (room, user, at) = (
            room.as_str().to_owned(),
            user.as_str().to_owned(),
            clamp(seq_),
        );
        let cursor: i64 = match &self.backend {
            Backend::Sqlite(s) => {
                s.write(move |c| {
                    c.prepare_cached(MARK_SQLITE)?
                        .query_row(rusqlite::params![room, user, at], |r| r.get(0))
                })
                .await?
            }
            Backend::Postgres(p) => sqlx::query(MARK_POSTGRES)
                .bind(room)
                .bind(user)
                .bind(at)
                .fetch_one(p.pool())
                .await?
                .try_get(0)?,
        };
        Ok(seq(cursor))
    }

    /// `user`'s cursor in `room`; 0 when they never read it.
    pub async fn read_cursor(&self, room: &RoomId, user: &UserId) -> Result<u64, Error> {
        let (room, user) = (room.as_str().to_owned(), user.as_str().to_owned());
        let cursor: Option<i64> = match &self.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    c.prepare_cached(CURSOR)?
                        .query_row(rusqlite::params![room, user], |r| r.get(0))
                        .optional()
                })
                .await?
            }
            Backend::Postgres(p) => sqlx::query(CURSOR)
                .bind(room)
                .bind(user)
                .fetch_optional(p.pool())
                .await?
                .map(|r| r.try_get(0))
                .transpose()?,
        };
        Ok(cursor.map_or(0, seq))
    }

    /// How many messages of `room` after `after` `user` has not read: kind `message`,
    /// not deleted, not their own.
    pub async fn unread(&self, room: &RoomId, user: &UserId, after: u64) -> Result<u64, Error> {
        let (room, user, after) = (
            room.as_str().to_owned(),
            user.as_str().to_owned(),
            clamp(after),
        );
        let n: i64 = match &self.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    c.prepare_cached(UNREAD)?
                        .query_row(rusqlite::params![room, after, user], |r| r.get(0))
                })
                .await?
            }
            Backend::Postgres(p) => sqlx::query(UNREAD)
                .bind(room)
                .bind(after)
                .bind(user)
                .fetch_one(p.pool())
                .await?
                .try_get(0)?,
        };
        Ok(seq(n))
    }

    /// The `limit` most advanced read cursors of `room`, furthest first ("seen by").
    pub async fn reads(&self, room: &RoomId, limit: u32) -> Result<Vec<(UserId, u64)>, Error> {
        let (room, limit) = (room.as_str().to_owned(), i64::from(limit));
        let rows: Vec<(String, i64)> = match &self.backend {
            Backend::Sqlite(s) => {
                s.read(move |c| {
                    c.prepare_cached(READS)?
                        .query_map(rusqlite::params![room, limit], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?
                        .collect()
                })
                .await?
            }
            Backend::Postgres(p) => sqlx::query(READS)
                .bind(room)
                .bind(limit)
                .fetch_all(p.pool())
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?,
        };
        rows.into_iter()
            .map(|(u, s)| {
                let user = UserId::parse(&u)
                    .map_err(|_| Error::Corrupt("stored reader name is invalid".into()))?;
                Ok((user, seq(s)))
            })
            .collect()
    }
}
