//! The hub: which connections are in which room, and in-order fan-out to them.
//!
//! Deliveries from the queue may arrive out of `seq` order (two workers finishing one
//! room's messages in the other order). Each room forwards strictly in order; a message
//! that comes early is held for `hold`, then released anyway, and each connection's
//! writer fills the hole from the store. Each delivery is serialized once and its bytes
//! are shared by every recipient.
//!
//! The hub never waits for a connection: when a member's buffer is full the message is
//! not queued for it and the member is marked lagging; its writer resyncs from the store
//! once it has caught up (and closes with 1008 if its socket stays blocked meanwhile).

use crate::access::RoomClaim;
use axum::extract::ws::Utf8Bytes;
use queue::{Frame, QueueError, RoomBinding};
use shared::sync::lock;
use shared::{RoomId, UserId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::warn;

/// Identifies one WebSocket connection within this gateway.
pub type ConnId = u64;

/// Early arrivals one room holds at most before releasing them without waiting.
const MAX_HELD: usize = 1024;

/// What a connection's writer is asked to do, in order.
#[derive(Debug)]
pub enum Outbound {
    /// A direct reply, written as is.
    Frame(Utf8Bytes),
    /// A join is under way: keep this room's live messages until `Joined`.
    Joining(RoomId),
    /// The join failed: forget the room without writing anything.
    Abandon(RoomId),
    /// Write `joined`, replay what `since` asks for, then go live.
    Joined(Box<JoinedReply>),
    /// Stop this room's messages and write `left`.
    Left(Box<LeftReply>),
    /// Messages may have been missed: write what the store has beyond each cursor.
    Resync,
    /// One room message, in the room's order; every member gets the same allocation.
    Live(Arc<Delivered>),
    /// An ephemeral event of a room (`member`, `typing`, `read`, `reads`): written only
    /// while the room is live on the connection, dropped when the connection's buffer is
    /// full.
    Signal(Arc<RoomSignal>),
    /// Close the connection with this code.
    Close(u16, &'static str),
}

/// A successful join, as the writer needs it (boxed: rare, and it would triple the size
/// of every slot of every connection's buffer).
#[derive(Debug)]
pub struct JoinedReply {
    pub room: RoomId,
    pub head: u64,
    /// The user's read cursor in the room, and the exact count of unread messages.
    pub read: u64,
    pub unread: u64,
    pub since: Option<u64>,
    pub reference: Option<String>,
}

/// A leave, as the writer needs it.
#[derive(Debug)]
pub struct LeftReply {
    pub room: RoomId,
    pub reference: Option<String>,
    /// The connection was taken out of the room because it may no longer use it (the
    /// room's settings changed), not because it asked to leave.
    pub removed: bool,
}

/// A stored message on its way to a room's members, serialized once.
#[derive(Debug)]
pub struct Delivered {
    pub room: RoomId,
    pub seq: u64,
    pub frame: Utf8Bytes,
    /// When the gateway first received it (epoch ms), for the end-to-end latency.
    pub sent_at_ms: i64,
}

/// A `member`, `typing`, `read` or `reads` frame of one room, serialized once for every
/// recipient.
#[derive(Debug)]
pub struct RoomSignal {
    pub room: RoomId,
    pub frame: Utf8Bytes,
}

/// Told of every connection that enters or leaves a room (presence). Called in the
/// room's turn, outside the hub's lock, so it may read the hub.
pub trait Membership: Send + Sync {
    fn entered(&self, hub: &Hub, room: &RoomId, conn: ConnId, user: &UserId);
    fn left(&self, hub: &Hub, room: &RoomId, conn: ConnId);
}

/// A connection's entry in a room.
#[derive(Clone)]
pub struct Member {
    /// Who it is and what its token allows: a room change checks its members again.
    pub user: UserId,
    pub claim: Option<Arc<RoomClaim>>,
    pub tx: mpsc::Sender<Outbound>,
    /// Set when a message could not be queued because the buffer was full.
    pub lagging: Arc<AtomicBool>,
}

struct Room {
    members: HashMap<ConnId, Member>,
    /// The seq this room forwards next; unknown until its first delivery.
    next: Option<u64>,
    held: BTreeMap<u64, Arc<Delivered>>,
    held_since: Option<Instant>,
}

pub struct Hub {
    rooms: Mutex<HashMap<RoomId, Room>>,
    /// One lock per room with a membership change under way: it serializes a room's
    /// changes with their bind/unbind, so they reach the broker in order, while other
    /// rooms' changes (and their broker round trips) go on at the same time.
    membership: Mutex<HashMap<RoomId, Arc<tokio::sync::Mutex<()>>>>,
    binding: Box<dyn RoomBinding>,
    hold: Duration,
    membership_observer: std::sync::OnceLock<Arc<dyn Membership>>,
}

/// Holds one room's membership lock; the entry goes when its last user does.
struct RoomTurn<'a> {
    hub: &'a Hub,
    room: RoomId,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Drop for RoomTurn<'_> {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else { return };
        let mut locks = self.hub.locks();
        // Ours and the map's: nobody else waits for this room.
        if Arc::strong_count(&lock) <= 2 {
            locks.remove(&self.room);
        }
    }
}

impl Hub {
    pub fn new(binding: Box<dyn RoomBinding>, hold: Duration) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            membership: Mutex::new(HashMap::new()),
            binding,
            hold,
            membership_observer: std::sync::OnceLock::new(),
        }
    }

    /// Sets who is told of members entering and leaving rooms (once).
    pub fn observe(&self, observer: Arc<dyn Membership>) {
        let _ = self.membership_observer.set(observer);
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Room>> {
        lock(&self.rooms)
    }

    fn locks(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Arc<tokio::sync::Mutex<()>>>> {
        lock(&self.membership)
    }

    /// Waits for `room`'s turn to change its membership.
    async fn turn(&self, room: &RoomId) -> (RoomTurn<'_>, tokio::sync::OwnedMutexGuard<()>) {
        let lock = self.locks().entry(room.clone()).or_default().clone();
        let turn = RoomTurn {
            hub: self,
            room: room.clone(),
            lock: Some(lock.clone()),
        };
        (turn, lock.lock_owned().await)
    }

    /// Adds a member; the first member of a room binds it at the broker first, so every
    /// message stored after this returns is delivered here.
    pub async fn join(
        &self,
        room: &RoomId,
        conn: ConnId,
        member: Member,
    ) -> Result<(), QueueError> {
        // The guard is released before the turn is dropped (reverse order).
        let (_turn, _order) = self.turn(room).await;
        let known = self.rooms().contains_key(room);
        if !known {
            self.binding.bind(room).await?;
        }
        let user = member.user.clone();
        {
            let mut rooms = self.rooms();
            let entry = rooms.entry(room.clone()).or_insert_with(|| Room {
                members: HashMap::new(),
                next: None,
                held: BTreeMap::new(),
                held_since: None,
            });
            entry.members.insert(conn, member);
            metrics::gauge!("courier_rooms").set(rooms.len() as f64);
        }
        if let Some(o) = self.membership_observer.get() {
            o.entered(self, room, conn, &user);
        }
        Ok(())
    }

    /// Removes a connection from all of `rooms` at once (a disconnect): the unbinds of
    /// rooms it was the last member of go to the broker concurrently.
    pub async fn leave_all(&self, rooms: impl IntoIterator<Item = RoomId>, conn: ConnId) {
        let rooms: Vec<RoomId> = rooms.into_iter().collect();
        futures_util::future::join_all(rooms.iter().map(|room| self.leave(room, conn))).await;
    }

    /// Removes a member; the last one out unbinds the room. False when `conn` was not
    /// one (it left already, or a room change removed it).
    pub async fn leave(&self, room: &RoomId, conn: ConnId) -> bool {
        let (_turn, _order) = self.turn(room).await;
        let (was_member, emptied) = {
            let mut rooms = self.rooms();
            let (was_member, emptied) = match rooms.get_mut(room) {
                Some(r) => (r.members.remove(&conn).is_some(), r.members.is_empty()),
                None => (false, false),
            };
            if emptied {
                rooms.remove(room);
            }
            metrics::gauge!("courier_rooms").set(rooms.len() as f64);
            (was_member, emptied)
        };
        if was_member && let Some(o) = self.membership_observer.get() {
            o.left(self, room, conn);
        }
        if emptied && let Err(e) = self.binding.unbind(room).await {
            // Harmless: the gateway drops deliveries of rooms it has no members in.
            warn!(%room, error = %e, "unbinding an empty room failed");
        }
        was_member
    }

    /// The room's members here, as they are now.
    pub fn members_of(&self, room: &RoomId) -> Vec<(ConnId, Member)> {
        self.rooms().get(room).map_or_else(Vec::new, |r| {
            r.members.iter().map(|(c, m)| (*c, m.clone())).collect()
        })
    }

    /// True while `conn` is a member of `room`.
    pub fn is_member(&self, room: &RoomId, conn: ConnId) -> bool {
        self.rooms()
            .get(room)
            .is_some_and(|r| r.members.contains_key(&conn))
    }

    /// Hands one delivered message to the room's members, in seq order. Its frame is the
    /// worker's serialization, passed on as it is.
    pub fn dispatch(&self, msg: Frame) {
        tracing::debug!(trace = msg.trace.as_deref().unwrap_or("-"), room = %msg.room, seq = msg.seq, "message delivered to the hub");
        let mut rooms = self.rooms();
        let Some(room) = rooms.get_mut(&msg.room) else {
            return;
        };
        let next = room.next.unwrap_or(msg.seq);
        if msg.seq < next {
            return; // already forwarded (a redelivery, or released past while held)
        }
        // Where a delivery's latency goes: this is the gateway's receipt of the send to
        // its arrival back here; `courier_delivery_latency_seconds` adds the writes.
        let age = shared::Timestamp::now().as_millis() - msg.sent_at_ms;
        metrics::histogram!("courier_feed_age_seconds").record(age.max(0) as f64 / 1000.0);
        let Ok(text) = Utf8Bytes::try_from(msg.text) else {
            warn!(room = %msg.room, seq = msg.seq, "dropping a delivered frame that is not UTF-8; members fill it in from the store");
            return;
        };
        let frame = Arc::new(Delivered {
            room: msg.room,
            seq: msg.seq,
            frame: text,
            sent_at_ms: msg.sent_at_ms,
        });
        if frame.seq > next {
            room.held.insert(frame.seq, frame);
            room.held_since.get_or_insert_with(Instant::now);
            if room.held.len() > MAX_HELD {
                room.release_held();
            }
            return;
        }
        room.forward(frame);
        while let Some(frame) = room.next.and_then(|n| room.held.remove(&n)) {
            room.forward(frame);
        }
        if room.held.is_empty() {
            room.held_since = None;
        }
    }

    /// Releases messages held longer than `hold`; writers fill the holes from the store.
    pub fn release_expired(&self) {
        let now = Instant::now();
        let mut rooms = self.rooms();
        for room in rooms.values_mut() {
            if room
                .held_since
                .is_some_and(|t| now.duration_since(t) >= self.hold)
            {
                room.release_held();
            }
        }
    }

    /// After an interrupted feed: every member catches up from the store, and each room
    /// forgets its position so the next delivery starts it afresh.
    pub fn resync_all(&self) {
        let mut rooms = self.rooms();
        for room in rooms.values_mut() {
            room.next = None;
            room.held.clear();
            room.held_since = None;
            for member in room.members.values() {
                if member.tx.try_send(Outbound::Resync).is_err() {
                    member.lagging.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Rooms with at least one member here.
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }
}

impl Room {
    fn forward(&mut self, msg: Arc<Delivered>) {
        self.next = Some(msg.seq + 1);
        let mut delivered = 0u64;
        for member in self.members.values() {
            match member.tx.try_send(Outbound::Live(msg.clone())) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !member.lagging.swap(true, Ordering::Relaxed) {
                        metrics::counter!("courier_lagging_members_total").increment(1);
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        metrics::counter!("courier_deliveries_total").increment(delivered);
    }

    fn release_held(&mut self) {
        for (_, msg) in std::mem::take(&mut self.held) {
            self.forward(msg);
        }
        self.held_since = None;
    }
}

#[cfg(test)]
pub(crate) mod tests;
