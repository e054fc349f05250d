//! Room settings: whether a room is private, and who its members are.
//!
//! The statements use `$N` placeholders in order, which SQLite and PostgreSQL both read,
//! so one text serves both backends. Members come back sorted by byte order in Rust:
//! PostgreSQL's `ORDER BY` on text follows the database's collation, not bytes.

use super::{Backend, Store};
use crate::error::Error;
use shared::sqlite::rusqlite::{self, Connection, OptionalExtension};
use shared::{RoomId, UserId};
use sqlx::Row;

const PRIVATE: &str = "SELECT private FROM rooms WHERE room = $1";
const MEMBERS: &str = "SELECT member FROM room_members WHERE room = $1";
const UPSERT_ROOM: &str = "INSERT INTO rooms (room, private) VALUES ($1, $2) \
     ON CONFLICT (room) DO UPDATE SET private = excluded.private";
const CLEAR_MEMBERS: &str = "DELETE FROM room_members WHERE room = $1";
const ADD_MEMBER: &str = "INSERT INTO room_members (room, member) VALUES ($1, $2) \
     ON CONFLICT (room, member) DO NOTHING";
const REMOVE_MEMBER: &str = "DELETE FROM room_members WHERE room = $1 AND member = $2";
const IS_MEMBER: &str = "SELECT 1 FROM room_members WHERE room = $1 AND member = $2";
/// The private rooms `$1` is a member of, and the direct rooms `dm:A:B` naming `$1` that
/// have a stored message (`room_seq` has one row per room with messages: far fewer rows
/// than `messages`). `substr` and `length`, not `LIKE`: a user name may hold `_`.
macro_rules! rooms_of {
    ($order:literal) => {
        concat!(
            "SELECT room FROM (",
            "SELECT m.room AS room FROM room_members m JOIN rooms r ON r.room = m.room ",
            "WHERE m.member = $1 AND r.private = 1 ",
            "UNION SELECT room FROM room_seq WHERE substr(room, 1, 3) = 'dm:' AND (",
            "substr(room, 1, length($1) + 4) = 'dm:' || $1 || ':' ",
            "OR substr(room, length(room) - length($1)) = ':' || $1)",
            ") AS u ORDER BY ",
            $order,
            " LIMIT $2"
        )
    };
}
/// SQLite compares text by bytes; PostgreSQL by the database's collation unless told, and
/// the limit must cut the same list on both.
const ROOMS_OF_SQLITE: &str = rooms_of!("room");
const ROOMS_OF_POSTGRES: &str = rooms_of!("room COLLATE \"C\"");

/// A room's settings. A room never configured is public with no members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomSettings {
    /// Only members may join, send to and read a private room.
    pub private: bool,
    /// Sorted by byte order, without repeats.
    pub members: Vec<UserId>,
}

impl RoomSettings {
    /// True when `user` is in `members`.
    pub fn has_member(&self, user: &UserId) -> bool {
        self.members.binary_search(user).is_ok()
    }
}

/// What the database gave: the `private` column (no row: never configured) and the
/// member names, unchecked.
struct RawSettings {
    private: Option<i64>,
    members: Vec<String>,
}

impl RawSettings {
    fn decode(self) -> Result<RoomSettings, Error> {
        let mut members = self
            .members
            .iter()
            .map(|m| UserId::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::Corrupt("stored room member is invalid".into()))?;
        members.sort();
        members.dedup();
        Ok(RoomSettings {
            private: self.private.is_some_and(|p| p != 0),
            members,
        })
    }
}

impl Store {
    /// The settings of `room`; a room never configured is public with no members.
    pub async fn room_settings(&self, room: &RoomId) -> Result<RoomSettings, Error> {
        let room = room.as_str().to_owned();
        let raw = match &self.backend {
            Backend::Sqlite(s) => s.read(move |conn| sqlite_settings(conn, &room)).await?,
            Backend::Postgres(p) => {
                let private = sqlx::query(PRIVATE)
                    .bind(&room)
                    .fetch_optional(p.pool())
                    .await?
                    .map(|r| r.try_get::<i64, _>(0))
                    .transpose()?;
                let members = sqlx::query(MEMBERS)
                    .bind(&room)
                    .fetch_all(p.pool())
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String, _>(0))
                    .collect::<Result<_, _>>()?;
                RawSettings { private, members }
            }
        };
        raw.decode()
    }

    /// Replaces the settings of `room` (privacy and the whole member list) in one
    /// transaction; returns what is stored now.
    pub async fn put_room(
        &self,
        room: &RoomId,
        private: bool,
        members: &[UserId],
    ) -> Result<RoomSettings, Error> {
        let name = room.as_str().to_owned();
        let names: Vec<String> = members.iter().map(|m| m.as_str().to_owned()).collect();
        let flag = i64::from(private);
        match &self.backend {
            Backend::Sqlite(s) => {
                s.write(move |tx| {
                    tx.prepare_cached(UPSERT_ROOM)?
                        .execute(rusqlite::params![name, flag])?;
                    tx.prepare_cached(CLEAR_MEMBERS)?.execute([&name])?;
                    let mut add = tx.prepare_cached(ADD_MEMBER)?;
                    for m in &names {
                        add.execute([&name, m])?;
                    }
                    Ok(())
                })
                .await?
            }
            Backend::Postgres(p) => {
                let mut tx = p.pool().begin().await?;
                sqlx::query(UPSERT_ROOM)
                    .bind(&name)
                    .bind(flag)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(CLEAR_MEMBERS)
                    .bind(&name)
                    .execute(&mut *tx)
                    .await?;
                for m in &names {
                    sqlx::query(ADD_MEMBER)
                        .bind(&name)
                        .bind(m)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        self.room_settings(room).await
    }

    /// Adds `user` to the members of `room`; true when they were not a member before.
    /// The room's privacy is left as it is (a room never configured stays public).
    pub async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool, Error> {
        self.change_member(ADD_MEMBER, room, user).await
    }

    /// Removes `user` from the members of `room`; true when they were a member.
    pub async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool, Error> {
        self.change_member(REMOVE_MEMBER, room, user).await
    }

    /// True when `user` is listed as a member of `room` (whether or not it is private).
    pub async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool, Error> {
        let (room, user) = (room.as_str().to_owned(), user.as_str().to_owned());
        match &self.backend {
            Backend::Sqlite(s) => {
                s.read(move |conn| {
                    conn.prepare_cached(IS_MEMBER)?
                        .query_row([room, user], |_| Ok(()))
                        .optional()
                        .map(|r| r.is_some())
                })
                .await
            }
            Backend::Postgres(p) => Ok(sqlx::query(IS_MEMBER)
                .bind(room)
                .bind(user)
                .fetch_optional(p.pool())
                .await?
                .is_some()),
        }
    }

    /// The private rooms `user` is a member of and the direct rooms naming them that hold
    /// at least one message: at most `limit`, the first by byte order, sorted. The
    /// caller still applies the access rule (a malformed `dm:` name, a token's claim).
    pub async fn rooms_of(&self, user: &UserId, limit: u32) -> Result<Vec<RoomId>, Error> {
        let user = user.as_str().to_owned();
        let limit = i64::from(limit);
        let names: Vec<String> = match &self.backend {
            Backend::Sqlite(s) => {
                s.read(move |conn| {
                    conn.prepare_cached(ROOMS_OF_SQLITE)?
                        .query_map(rusqlite::params![user, limit], |r| r.get(0))?
                        .collect::<Result<_, _>>()
                })
                .await?
            }
            Backend::Postgres(p) => sqlx::query(ROOMS_OF_POSTGRES)
                .bind(user)
                .bind(limit)
                .fetch_all(p.pool())
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?,
        };
        let mut rooms = names
            .iter()
            .map(|n| RoomId::parse(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::Corrupt("stored room name is invalid".into()))?;
        rooms.sort();
        rooms.dedup();
        Ok(rooms)
    }

    /// Runs `ADD_MEMBER` or `REMOVE_MEMBER`; true when a row changed.
    async fn change_member(
        &self,
        sql: &'static str,
        room: &RoomId,
        user: &UserId,
    ) -> Result<bool, Error> {
        let (room, user) = (room.as_str().to_owned(), user.as_str().to_owned());
        let changed = match &self.backend {
            Backend::Sqlite(s) => {
                s.write(move |tx| tx.prepare_cached(sql)?.execute([room, user]))
                    .await? as u64
            }
            Backend::Postgres(p) => sqlx::query(sql)
                .bind(room)
                .bind(user)
                .execute(p.pool())
                .await?
                .rows_affected(),
        };
        Ok(changed > 0)
    }
}

fn sqlite_settings(conn: &mut Connection, room: &str) -> rusqlite::Result<RawSettings> {
    let private = conn
        .prepare_cached(PRIVATE)?
        .query_row([room], |r| r.get(0))
        .optional()?;
    let members = conn
        .prepare_cached(MEMBERS)?
        .query_map([room], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(RawSettings { private, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_sorts_by_bytes_drops_repeats_and_refuses_bad_names() {
        let raw = |members: &[&str]| RawSettings {
            private: Some(1),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        let s = raw(&["bob", "Zed", "alice", "bob"]).decode().unwrap();
        let names: Vec<&str> = s.members.iter().map(UserId::as_str).collect();
        assert_eq!(names, ["Zed", "alice", "bob"]);
        assert!(s.private && s.has_member(&UserId::parse("alice").unwrap()));
        assert!(raw(&["not valid"]).decode().is_err());
        let never = RawSettings {
            private: None,
            members: vec![],
        };
        assert_eq!(never.decode().unwrap(), RoomSettings::default());
    }
}
