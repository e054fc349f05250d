//! A connection's reader: parses each command, runs it, queues the reply for the writer.
//!
//! The commands are grouped by concept: rooms (`join`, `leave`, `history`, `rooms`:
//! [`rooms`]), the room's log (`send`, `edit`, `delete`, `react`: [`log`]) and read
//! state (`read`, `reads`: [`reads`]).

mod log;
mod reads;
mod rooms;

use super::outbox::{self, Budget};
use crate::access::RoomClaim;
use crate::app::App;
use crate::hub::{ConnId, LeftReply, Outbound};
use crate::protocol::{Command, CommandError, ErrorCode, Request, ServerEvent, parse_command};
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

/// What a command answers: the reply to queue, or `None` when it was queued already
/// (or there is none).
type Reply = Result<Option<Outbound>, CommandError>;

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
                        e.id = req.command.id().map(|id| id.as_str().to_owned());
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

    /// Runs a parsed command; an error carries the command's `ref` and, for a command
    /// that goes onto the queue, its `id`.
    async fn run(&mut self, req: Request) -> Reply {
        let id = req.command.id().map(|id| id.as_str().to_owned());
        let reference = req.reference;
        let r = reference.clone();
        let result = match req.command {
            Command::Join { room, since } => self.join(room, since, r).await,
            Command::Leave { room } => Ok(Some(self.leave(room, r).await)),
            Command::Send {
                room,
                id,
                body,
                reply_to,
            } => self.send(room, id, body, reply_to, r).await,
            Command::Edit {
                room,
                id,
                target,
                body,
            } => {
                self.change(room, id, log::Change::edit(target, body), r)
                    .await
            }
            Command::Delete { room, id, target } => {
                self.change(room, id, log::Change::delete(target), r).await
            }
            Command::React {
                room,
                id,
                target,
                emoji,
                remove,
            } => {
                let change = log::Change::react(target, emoji, remove);
                self.change(room, id, change, r).await
            }
            Command::Read { room, seq } => self.mark_read(room, seq, r).await,
            Command::Reads { room } => self.reads(room, r).await,
            Command::History {
                room,
                before,
                limit,
            } => self.history(room, before, limit, r).await,
            Command::Rooms => self.rooms(r).await,
            Command::Typing { room } => self.typing(room),
            Command::Presence { room } => self.presence(room, r).await,
            Command::Ping => Ok(Some(frame(ServerEvent::Pong {
                reference: r.as_deref(),
            }))),
        };
        result.map_err(|mut e| {
            e.reference = reference;
            e.id = id;
            e
        })
    }

    async fn leave(&mut self, room: RoomId, reference: Option<String>) -> Outbound {
        if self.joined.remove(&room) {
            self.app.hub.leave(&room, self.conn).await;
        }
        Outbound::Left(Box::new(LeftReply {
            room,
            reference,
            removed: false,
        }))
    }

    fn typing(&mut self, room: RoomId) -> Reply {
        // Ephemeral: no store read, no queue; only to a room this connection is in.
        if !self.is_joined(&room) {
            return Err(not_joined(&room));
        }
        self.app.presence.typing(&self.app.hub, &room, &self.user);
        Ok(None)
    }

    async fn presence(&mut self, room: RoomId, reference: Option<String>) -> Reply {
        self.allow(&room).await?;
        let (users, truncated) = self.app.presence.users(&room);
        Ok(Some(frame(ServerEvent::Presence {
            room: &room,
            users: &users,
            truncated,
            reference: reference.as_deref(),
        })))
    }

    /// `Ok` when this connection's user may use `room` and has joined it here: what
    /// every command on a room's content needs. Access is checked on every command, not
    /// only at join: a member removed through this gateway's API is refused at once.
    async fn allow_joined(&mut self, room: &RoomId) -> Result<(), CommandError> {
        self.allow(room).await?;
        if !self.is_joined(room) {
            return Err(not_joined(room));
        }
        Ok(())
    }
}

/// A reply frame, serialized.
fn frame(ev: ServerEvent<'_>) -> Outbound {
    Outbound::Frame(ev.to_json().into())
}

/// A store read failed: logged with its cause, answered as retryable.
fn store_unavailable(what: &'static str) -> impl FnOnce(store::Error) -> CommandError {
    move |e| {
        tracing::error!(error = %e, "{what} failed");
        CommandError::new(
            ErrorCode::Unavailable,
            "the message store is not answering; retry shortly",
        )
    }
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
