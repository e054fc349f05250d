//! Rooms on a connection: `join` (with the user's read state), `history`, `rooms`, and
//! the access and membership checks every room command shares.

use super::{Reply, Session, frame};
use crate::access::direct_pair;
use crate::hub::{JoinedReply, Member, Outbound};
use crate::page::history_frame;
use crate::protocol::{CommandError, ErrorCode, ROOMS_LIST_MAX, ServerEvent};
use shared::RoomId;

impl Session {
    pub(super) async fn join(
        &mut self,
        room: RoomId,
        since: Option<u64>,
        reference: Option<String>,
    ) -> Reply {
        // Before anything of the room is bound or read (the replay of `since` included).
        self.allow(&room).await?;
        let fresh = !self.is_joined(&room);
        if fresh && !self.enter(&room).await? {
            return Ok(None);
        }
        // Read after joining the hub: anything stored later is delivered live.
        let (head, read, unread) = match self.room_state(&room).await {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(%room, error = %e, "reading a room's head or read state failed");
                if fresh {
                    self.app.hub.leave(&room, self.conn).await;
                    self.queue(Outbound::Abandon(room)).await;
                }
                return Err(unavailable("the store is not answering"));
            }
        };
        // A room change that took the connection out meanwhile has queued its `left`:
        // no `joined` (nor replay) may follow it.
        if !self.app.hub.is_member(&room, self.conn) {
            return Err(self.allow(&room).await.err().unwrap_or_else(|| {
                CommandError::new(
                    ErrorCode::Forbidden,
                    format!("you were removed from {room}"),
                )
            }));
        }
        self.joined.insert(room.clone());
        metrics::counter!("courier_joins_total").increment(1);
        Ok(Some(Outbound::Joined(Box::new(JoinedReply {
            room,
            head,
            read,
            unread,
            since,
            reference,
        }))))
    }

    /// The room's head, the user's read cursor and the exact count of unread messages
    /// after it.
    async fn room_state(&self, room: &RoomId) -> Result<(u64, u64, u64), store::Error> {
        let store = &self.app.store;
        let head = store.head(room).await?;
        let read = store.read_cursor(room, &self.user).await?;
        let unread = store.unread(room, &self.user, read).await?;
        Ok((head, read, unread))
    }

    /// Adds the connection to `room` in the hub (the first part of a fresh join); false
    /// when the writer is gone.
    async fn enter(&mut self, room: &RoomId) -> Result<bool, CommandError> {
        let max = self.app.config.limits.max_rooms_per_connection as usize;
        if self.joined.len() >= max {
            return Err(CommandError::new(
                ErrorCode::BadRequest,
                format!("a connection may join at most {max} rooms"),
            ));
        }
        // Joining goes first, so live messages that race the join are kept, not lost.
        if !self.queue(Outbound::Joining(room.clone())).await {
            return Ok(false);
        }
        let member = Member {
            user: self.user.clone(),
            claim: self.claim.clone(),
            tx: self.tx.clone(),
            lagging: self.lagging.clone(),
        };
        if let Err(e) = self.app.hub.join(room, self.conn, member).await {
            tracing::warn!(%room, error = %e, "binding a room failed");
            self.queue(Outbound::Abandon(room.clone())).await;
            return Err(unavailable("the queue is not answering"));
        }
        // Again, now that a room change would find this connection in the hub: one that
        // the hub missed, because it came between the first check and the join, dropped
        // the cached settings before it was announced, so this check sees it.
        if let Err(e) = self.allow(room).await {
            self.app.hub.leave(room, self.conn).await;
            self.queue(Outbound::Abandon(room.clone())).await;
            return Err(e);
        }
        Ok(true)
    }

    pub(super) async fn history(
        &mut self,
        room: RoomId,
        before: Option<u64>,
        limit: u32,
        reference: Option<String>,
    ) -> Reply {
        self.allow_joined(&room).await?;
        let messages = self
            .app
            .store
            .before(&room, before, limit)
            .await
            .map_err(|e| {
                tracing::error!(%room, error = %e, "history read failed");
                CommandError::new(
                    ErrorCode::Unavailable,
                    "history is unavailable; retry shortly",
                )
            })?;
        // Cut to the newest messages that fit one frame; the client pages on.
        let frame = history_frame(&room, &messages, reference.as_deref());
        Ok(Some(Outbound::Frame(frame.into())))
    }

    /// The private rooms the user is a member of and their direct rooms with messages,
    /// as far as the token's claim allows; at most `ROOMS_LIST_MAX`, sorted by bytes.
    pub(super) async fn rooms(&self, reference: Option<String>) -> Reply {
        let stored = self
            .app
            .store
            .rooms_of(&self.user, ROOMS_LIST_MAX)
            .await
            .map_err(|e| {
                tracing::error!(user = %self.user, error = %e, "listing a user's rooms failed");
                CommandError::new(
                    ErrorCode::Unavailable,
                    "the room list is unavailable; retry shortly",
                )
            })?;
        // The store matched names by text; a direct room must also parse as one naming
        // this user (a malformed `dm:` name is no one's), and the token may allow fewer.
        let listed: Vec<RoomId> = stored
            .into_iter()
            .filter(|room| match direct_pair(room) {
                Ok(Some((a, b))) => a == self.user || b == self.user,
                Ok(None) => true,
                Err(_) => false,
            })
            .filter(|room| self.claim.as_ref().is_none_or(|c| c.allows(room)))
            .collect();
        Ok(Some(frame(ServerEvent::Rooms {
            rooms: &listed,
            reference: reference.as_deref(),
        })))
    }

    /// `Ok` when this connection's user may join, send to and read `room`.
    pub(super) async fn allow(&self, room: &RoomId) -> Result<(), CommandError> {
        self.app
            .access
            .check(&self.user, self.claim.as_deref(), room)
            .await
    }

    /// True when the connection is in `room`; a room that a room change took it out of
    /// is forgotten here, so joining it again (once allowed) joins the hub again.
    pub(super) fn is_joined(&mut self, room: &RoomId) -> bool {
        if self.joined.contains(room) && !self.app.hub.is_member(room, self.conn) {
            self.joined.remove(room);
        }
        self.joined.contains(room)
    }

    /// Leaves every room; called once the connection is over.
    pub async fn leave_all(&mut self) {
        let rooms = std::mem::take(&mut self.joined);
        self.app.hub.leave_all(rooms, self.conn).await;
    }
}

fn unavailable(what: &str) -> CommandError {
    CommandError::new(
        ErrorCode::Unavailable,
        format!("cannot join now: {what}; retry shortly"),
    )
}
