//! A connection's reader: parses each command, runs it, queues the reply for the writer.

use super::outbox::{self, Budget};
use crate::access::{RoomClaim, direct_pair};
use crate::app::App;
use crate::hub::{ConnId, JoinedReply, LeftReply, Member, Outbound};
use crate::page::history_frame;
use crate::protocol::{
    Command, CommandError, ErrorCode, ROOMS_LIST_MAX, Request, ServerEvent, parse_command,
};
use crate::ratelimit::TokenBucket;
use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{Stream, StreamExt};
use shared::{RoomId, UserId};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::mpsc;

/// Why the reader stopped.
#[derive(Debug)]
pub enum ReaderExit {
    /// The client closed or the socket broke.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

pub struct Session {
    pub app: Arc<App>,
    pub user: UserId,
    /// The token's `rooms` claim; `None`: not limited by the token.
    pub claim: Option<Arc<RoomClaim>>,
    pub conn: ConnId,
    pub tx: mpsc::Sender<Outbound>,
    pub lagging: Arc<AtomicBool>,
    /// Bytes waiting for the writer; replies wait for room in it.
    pub budget: Arc<Budget>,
    /// Rooms joined, as this reader knows; a room change may have taken the connection
    /// out of one since (see [`Session::is_joined`]).
    pub joined: HashSet<RoomId>,
    pub bucket: TokenBucket,
}

impl Session {
    /// Reads frames until the client leaves; a client silent for two heartbeats is closed.
    pub async fn read<S>(&mut self, stream: &mut S) -> ReaderExit
    where
        S: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        let idle = self.app.config.limits.heartbeat() * 2;
        loop {
            let frame = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => return ReaderExit::Close(1001, "no traffic for two heartbeats"),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return ReaderExit::Gone,
                Ok(Some(Err(e))) => return read_error(e),
                Ok(Some(Ok(frame))) => frame,
            };
            let text = match frame {
                Message::Text(t) => t,
                Message::Binary(_) => Utf8Bytes::from_static(""),
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return ReaderExit::Gone,
            };
            if !self.command(&text).await {
                return ReaderExit::Gone;
            }
        }
    }

    /// Runs one text frame; false when the writer is gone.
    async fn command(&mut self, text: &str) -> bool {
        let parsed = if text.is_empty() {
            Err(CommandError::new(
                ErrorCode::BadRequest,
                "frames must be UTF-8 text holding one JSON object",
            ))
        } else {
            parse_command(text)
        };
        // Every frame takes a token, valid or not: garbage is not a way around the limit.
        let allowed = self.bucket.try_take();
        let (kind, result) = match parsed {
            _ if !allowed => {
                metrics::counter!("courier_rate_limited_total").increment(1);
                let mut e =
                    CommandError::new(ErrorCode::RateLimited, "too many commands; slow down");
                match &parsed {
                    Ok(req) => {
                        e.reference = req.reference.clone();
                        if let Command::Send { id, .. } = &req.command {
                            e.id = Some(id.as_str().to_owned());
                        }
                    }
                    Err(bad) => (e.reference, e.id) = (bad.reference.clone(), bad.id.clone()),
                }
                let kind = parsed.as_ref().map_or("invalid", |r| r.command.kind());
                (kind, Err(e))
            }
            Err(e) => ("invalid", Err(e)),
            // Boxed: a command's future (store reads, publishes) is large and short-lived;
            // inline, it would sit in every idle connection's task.
            Ok(req) => (req.command.kind(), Box::pin(self.run(req)).await),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        metrics::counter!("courier_commands_total", "type" => kind, "result" => outcome)
            .increment(1);
        let item = match result {
            Ok(Some(item)) => item,
            Ok(None) => return true,
            Err(e) => Outbound::Frame(e.to_event().to_json().into()),
        };
        self.queue(item).await
    }

    /// Queues an item for the writer once the connection's bytes leave room for it (a
    /// client that does not read gets no more replies); false when the writer is gone.
    async fn queue(&mut self, item: Outbound) -> bool {
        self.budget.reserve(outbox::cost(&item)).await;
        self.tx.send(item).await.is_ok()
    }

    /// Runs a parsed command; `Ok(None)` when the reply was already queued.
    async fn run(&mut self, req: Request) -> Result<Option<Outbound>, CommandError> {
        let reference = req.reference;
        let with_ref = |mut e: CommandError, id: Option<&str>| {
            e.reference = reference.clone();
            e.id = id.map(str::to_owned);
            e
        };
        match req.command {
            Command::Join { room, since } => self
                .join(room, since, reference.clone())
                .await
                .map_err(|e| with_ref(e, None)),
            Command::Leave { room } => {
                if self.joined.remove(&room) {
                    self.app.hub.leave(&room, self.conn).await;
                }
                Ok(Some(Outbound::Left(Box::new(LeftReply {
                    room,
                    reference,
                    removed: false,
                }))))
            }
            Command::Send { room, id, body } => {
                // Checked on every send, not only at join: a member removed through this
                // gateway's API is refused at once.
                self.allow(&room)
                    .await
                    .map_err(|e| with_ref(e, Some(id.as_str())))?;
                if !self.is_joined(&room) {
                    return Err(with_ref(not_joined(&room), Some(id.as_str())));
                }
                match self
                    .app
                    .publish(room.clone(), self.user.clone(), id.clone(), body)
                    .await
                {
                    Ok(()) => {
                        metrics::counter!("courier_acks_total").increment(1);
                        let ev = ServerEvent::Ack {
                            room: &room,
                            id: &id,
                            reference: reference.as_deref(),
                        };
                        Ok(Some(Outbound::Frame(ev.to_json().into())))
                    }
                    Err(e) => Err(with_ref(e, Some(id.as_str()))),
                }
            }
            Command::History {
                room,
                before,
                limit,
            } => {
                self.allow(&room).await.map_err(|e| with_ref(e, None))?;
                if !self.is_joined(&room) {
                    return Err(with_ref(not_joined(&room), None));
                }
                let messages = self
                    .app
                    .store
                    .before(&room, before, limit)
                    .await
                    .map_err(|e| {
                        tracing::error!(%room, error = %e, "history read failed");
                        with_ref(
                            CommandError::new(
                                ErrorCode::Unavailable,
                                "history is unavailable; retry shortly",
                            ),
                            None,
                        )
                    })?;
                // Cut to the newest messages that fit one frame; the client pages on.
                let frame = history_frame(&room, &messages, reference.as_deref());
                Ok(Some(Outbound::Frame(frame.into())))
            }
            Command::Rooms => {
                let rooms = self.rooms().await.map_err(|e| with_ref(e, None))?;
                let ev = ServerEvent::Rooms {
                    rooms: &rooms,
                    reference: reference.as_deref(),
                };
                Ok(Some(Outbound::Frame(ev.to_json().into())))
            }
            Command::Typing { room } => {
                // Ephemeral: no store read, no queue; only to a room this connection is in.
                if !self.is_joined(&room) {
                    return Err(with_ref(not_joined(&room), None));
                }
                self.app.presence.typing(&self.app.hub, &room, &self.user);
                Ok(None)
            }
            Command::Presence { room } => {
                self.allow(&room).await.map_err(|e| with_ref(e, None))?;
                let (users, truncated) = self.app.presence.users(&room);
                let ev = ServerEvent::Presence {
                    room: &room,
                    users: &users,
                    truncated,
                    reference: reference.as_deref(),
                };
                Ok(Some(Outbound::Frame(ev.to_json().into())))
            }
            Command::Ping => Ok(Some(Outbound::Frame(
                ServerEvent::Pong {
                    reference: reference.as_deref(),
                }
                .to_json()
                .into(),
            ))),
        }
    }

    async fn join(
        &mut self,
        room: RoomId,
        since: Option<u64>,
        reference: Option<String>,
    ) -> Result<Option<Outbound>, CommandError> {
        // Before anything of the room is bound or read (the replay of `since` included).
        self.allow(&room).await?;
        let fresh = !self.is_joined(&room);
        if fresh && !self.enter(&room).await? {
            return Ok(None);
        }
        // Read after joining the hub: anything stored later is delivered live.
        let head = match self.app.store.head(&room).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(%room, error = %e, "reading a room's head failed");
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
            since,
            reference,
        }))))
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

    /// The private rooms the user is a member of and their direct rooms with messages,
    /// as far as the token's claim allows; at most `ROOMS_LIST_MAX`, sorted by bytes.
    async fn rooms(&self) -> Result<Vec<RoomId>, CommandError> {
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
        let listed = stored
            .into_iter()
            .filter(|room| match direct_pair(room) {
                Ok(Some((a, b))) => a == self.user || b == self.user,
                Ok(None) => true,
                Err(_) => false,
            })
            .filter(|room| self.claim.as_ref().is_none_or(|c| c.allows(room)))
            .collect();
        Ok(listed)
    }

    /// `Ok` when this connection's user may join, send to and read `room`.
    async fn allow(&self, room: &RoomId) -> Result<(), CommandError> {
        self.app
            .access
            .check(&self.user, self.claim.as_deref(), room)
            .await
    }

    /// True when the connection is in `room`; a room that a room change took it out of
    /// is forgotten here, so joining it again (once allowed) joins the hub again.
    fn is_joined(&mut self, room: &RoomId) -> bool {
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

fn not_joined(room: &RoomId) -> CommandError {
    CommandError::new(ErrorCode::NotJoined, format!("join {room} first"))
}

fn read_error(e: axum::Error) -> ReaderExit {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            ReaderExit::Close(1009, "frame larger than 64 KiB")
        }
        Some(tungstenite::Error::Utf8(_)) => ReaderExit::Close(1007, "text frame is not UTF-8"),
        _ => ReaderExit::Gone,
    }
}
