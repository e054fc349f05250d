//! Presence as one gateway knows it: its own connections per room, what every other
//! gateway last said (each room with a TTL since that gateway's last word about it), and
//! the typing throttle. Pure state: the caller feeds it events and the time, and turns
//! the [`Change`]s it returns into `member` frames.
//!
//! A user is online in a room when any gateway has a connection of theirs there: the
//! union, so two tabs on two gateways are one `online` and one `offline`.

use crate::hub::ConnId;
use queue::{RoomUsers, Signal, SignalKind};
use shared::{GatewayId, RoomId, UserId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// At most one `typing` per user and room in this long (the wire contract's 2 s).
pub const TYPING_EVERY: Duration = Duration::from_secs(2);

/// A user's presence in a room changed (in the union of every gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Online(RoomId, UserId),
    Offline(RoomId, UserId),
}

/// This gateway's connections in one room.
#[derive(Default)]
struct LocalRoom {
    /// Tracked connections and whose they are.
    conns: HashMap<ConnId, UserId>,
    /// Tracked users and how many of their connections are here.
    users: BTreeMap<UserId, usize>,
    /// Users were left untracked because the room was at the cap.
    truncated: bool,
}

/// What another gateway last said of one room.
struct RemoteRoom {
    users: BTreeSet<UserId>,
    truncated: bool,
    /// The seq of the signal that last changed it: older ones are stale.
    seq: u64,
    /// When that gateway last spoke of it; it expires `ttl` later.
    heard: Instant,
}

/// What a local join or leave means for the lane and for the room's members.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// The signal to tell the other gateways (the user's first or last connection here).
    pub signal: Option<SignalKind>,
    /// The change of the union, for this gateway's members.
    pub change: Option<Change>,
}

pub struct PresenceState {
    me: GatewayId,
    /// Users tracked per room, here and of each other gateway.
    cap: usize,
    ttl: Duration,
    local: HashMap<RoomId, LocalRoom>,
    remote: HashMap<GatewayId, HashMap<RoomId, RemoteRoom>>,
    /// When each (room, user) last had a `typing` relayed, and from which gateway
    /// (`None`: this one).
    typing: HashMap<(RoomId, UserId), (Instant, Option<GatewayId>)>,
}

impl PresenceState {
    pub fn new(me: GatewayId, cap: usize, ttl: Duration) -> Self {
        Self {
            me,
            cap: cap.max(1),
            ttl,
            local: HashMap::new(),
            remote: HashMap::new(),
            typing: HashMap::new(),
        }
    }

    /// True when any gateway has `user` in `room`.
    fn online(&self, room: &RoomId, user: &UserId) -> bool {
        self.local
            .get(room)
            .is_some_and(|r| r.users.contains_key(user))
            || self
                .remote
                .values()
                .any(|rooms| rooms.get(room).is_some_and(|r| r.users.contains(user)))
    }

    /// A connection of `user` joined `room` here.
    pub fn join(&mut self, room: &RoomId, user: &UserId, conn: ConnId) -> Local {
        let was = self.online(room, user);
        let cap = self.cap;
        let r = self.local.entry(room.clone()).or_default();
        if r.conns.contains_key(&conn) {
            return Local::default();
        }
        if !r.users.contains_key(user) && r.users.len() >= cap {
            r.truncated = true;
            return Local::default();
        }
        r.conns.insert(conn, user.clone());
        let count = r.users.entry(user.clone()).or_default();
        *count += 1;
        let first = *count == 1;
        Local {
            signal: first.then(|| SignalKind::Online {
                room: room.clone(),
                user: user.clone(),
            }),
            change: (!was).then(|| Change::Online(room.clone(), user.clone())),
        }
    }

    /// A connection left `room` here (or never was tracked in it: then nothing).
    pub fn leave(&mut self, room: &RoomId, conn: ConnId) -> Local {
        let Some(r) = self.local.get_mut(room) else {
            return Local::default();
        };
        let Some(user) = r.conns.remove(&conn) else {
            return Local::default();
        };
        let last = match r.users.get_mut(&user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                r.users.remove(&user);
                true
            }
        };
        if r.conns.is_empty() {
            self.local.remove(room);
        }
        if !last {
            return Local::default();
        }
        let gone = !self.online(room, &user);
        Local {
            signal: Some(SignalKind::Offline {
                room: room.clone(),
                user: user.clone(),
            }),
            change: gone.then(|| Change::Offline(room.clone(), user)),
        }
    }

    /// Applies another gateway's signal (its own are ignored); typing and read cursors
    /// are not presence (see [`PresenceState::typing_allowed`] and `reads`).
    pub fn apply(&mut self, signal: Signal, now: Instant) -> Vec<Change> {
        if signal.gateway == self.me {
            return Vec::new();
        }
        let (gateway, seq) = (signal.gateway, signal.seq);
        match signal.kind {
            SignalKind::Online { room, user } => self.delta(gateway, seq, room, user, true, now),
            SignalKind::Offline { room, user } => self.delta(gateway, seq, room, user, false, now),
            SignalKind::Snapshot { rooms, complete } => {
                self.snapshot(gateway, seq, rooms, complete, now)
            }
            SignalKind::Gone => {
                let rooms = self.remote.remove(&gateway).unwrap_or_default();
                self.settle(rooms.into_iter().flat_map(|(room, r)| {
                    r.users.into_iter().map(move |u| (room.clone(), u, true))
                }))
            }
            SignalKind::Typing { .. } | SignalKind::Read { .. } => Vec::new(),
        }
    }

    fn delta(
        &mut self,
        gateway: GatewayId,
        seq: u64,
        room: RoomId,
        user: UserId,
        online: bool,
        now: Instant,
    ) -> Vec<Change> {
        let was = self.online(&room, &user);
        let cap = self.cap;
        let rooms = self.remote.entry(gateway).or_default();
        let r = rooms.entry(room.clone()).or_insert_with(|| RemoteRoom {
            users: BTreeSet::new(),
            truncated: false,
            seq: 0,
            heard: now,
        });
        if seq < r.seq {
            return Vec::new(); // a later signal already said more
        }
        (r.seq, r.heard) = (seq, now);
        if !online {
            r.users.remove(&user);
        } else if r.users.len() < cap || r.users.contains(&user) {
            r.users.insert(user.clone());
        } else {
            r.truncated = true;
        }
        self.settle([(room, user, was)])
    }

    /// Replaces what `gateway` said of the rooms listed (those a later delta did not
    /// overtake); a `complete` snapshot also clears the rooms it leaves out.
    fn snapshot(
        &mut self,
        gateway: GatewayId,
        seq: u64,
        listed: Vec<RoomUsers>,
        complete: bool,
        now: Instant,
    ) -> Vec<Change> {
        let cap = self.cap;
        let empty = HashMap::new();
        let known = self.remote.get(&gateway).unwrap_or(&empty);
        let mut fresh: HashMap<RoomId, RemoteRoom> = HashMap::new();
        let mut touched: Vec<(RoomId, UserId)> = Vec::new();
        for listed in listed {
            if known.get(&listed.room).is_some_and(|r| r.seq > seq) {
                continue;
            }
            let users: BTreeSet<UserId> = listed.users.into_iter().take(cap).collect();
            let old = known.get(&listed.room).map(|r| &r.users);
            touched.extend(
                users
                    .iter()
                    .filter(|u| old.is_none_or(|o| !o.contains(*u)))
                    .chain(old.into_iter().flatten().filter(|u| !users.contains(*u)))
                    .map(|u| (listed.room.clone(), u.clone())),
            );
            let room = RemoteRoom {
                users,
                truncated: listed.truncated,
                seq,
                heard: now,
            };
            fresh.insert(listed.room, room);
        }
        let cleared: Vec<RoomId> = known
            .iter()
            .filter(|(room, r)| complete && r.seq <= seq && !fresh.contains_key(*room))
            .map(|(room, r)| {
                touched.extend(r.users.iter().map(|u| (room.clone(), u.clone())));
                room.clone()
            })
            .collect();
        let was: Vec<(RoomId, UserId, bool)> = touched
            .into_iter()
            .map(|(room, user)| {
                let was = self.online(&room, &user);
                (room, user, was)
            })
            .collect();
        let rooms = self.remote.entry(gateway).or_default();
        for room in cleared {
            rooms.remove(&room);
        }
        rooms.extend(fresh);
        self.settle(was)
    }

    /// The changes of the union for (room, user, online before) once state changed.
    fn settle(&self, before: impl IntoIterator<Item = (RoomId, UserId, bool)>) -> Vec<Change> {
        before
            .into_iter()
            .filter_map(|(room, user, was)| match (was, self.online(&room, &user)) {
                (false, true) => Some(Change::Online(room, user)),
                (true, false) => Some(Change::Offline(room, user)),
                _ => None,
            })
            .collect()
    }

    /// Forgets what other gateways said of a room and did not repeat within the TTL
    /// (a gateway that died without a word), and old typing marks.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        self.typing
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < TYPING_EVERY);
        let ttl = self.ttl;
        let mut gone: Vec<(RoomId, UserId, bool)> = Vec::new();
        for rooms in self.remote.values_mut() {
            rooms.retain(|room, r| {
                let live = now.saturating_duration_since(r.heard) < ttl;
                if !live {
                    gone.extend(r.users.iter().map(|u| (room.clone(), u.clone(), true)));
                }
                live
            });
        }
        self.remote.retain(|_, rooms| !rooms.is_empty());
        self.settle(gone)
    }

    /// True when a `typing` of `user` in `room`, from this gateway (`from` `None`) or
    /// relayed by gateway `from`, may go to the members now (and marks it); false within
    /// `TYPING_EVERY` of the last one, unless both came from the same other gateway: that
    /// one throttled them already, and the lane's jitter must not drop the next one. So
    /// a user typing on two gateways is still one event per 2 s.
    pub fn typing_allowed(
        &mut self,
        room: &RoomId,
        user: &UserId,
        from: Option<&GatewayId>,
        now: Instant,
    ) -> bool {
        let key = (room.clone(), user.clone());
        if let Some((at, last)) = self.typing.get(&key)
            && now.saturating_duration_since(*at) < TYPING_EVERY
            && (from.is_none() || last.as_ref() != from)
        {
            return false;
        }
        self.typing.insert(key, (now, from.cloned()));
        true
    }

    /// The users of `room` on every gateway, sorted, at most the cap; true when there
    /// were more (or a gateway tracked no more than the cap of them).
    pub fn users(&self, room: &RoomId) -> (Vec<UserId>, bool) {
        let mut all: BTreeSet<&UserId> = BTreeSet::new();
        let mut truncated = false;
        if let Some(r) = self.local.get(room) {
            all.extend(r.users.keys());
            truncated |= r.truncated;
        }
        for rooms in self.remote.values() {
            if let Some(r) = rooms.get(room) {
                all.extend(r.users.iter());
                truncated |= r.truncated;
            }
        }
        truncated |= all.len() > self.cap;
        (all.into_iter().take(self.cap).cloned().collect(), truncated)
    }

    /// This gateway's rooms and their users, for a snapshot.
    pub fn snapshot_rooms(&self) -> Vec<RoomUsers> {
        let mut rooms: Vec<RoomUsers> = self
            .local
            .iter()
            .map(|(room, r)| RoomUsers {
                room: room.clone(),
                users: r.users.keys().cloned().collect(),
                truncated: r.truncated,
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    /// (room, user) entries held: this gateway's and the others'.
    pub fn entries(&self) -> usize {
        let local: usize = self.local.values().map(|r| r.users.len()).sum();
        let remote: usize = self
            .remote
            .values()
            .flat_map(|rooms| rooms.values())
            .map(|r| r.users.len())
            .sum();
        local + remote
    }
}
