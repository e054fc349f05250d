//! Presence and typing across gateways (issue 13): who has a connection in a room on any
//! gateway, `member` events when that changes, and `typing` relayed to the other members;
//! and moved read cursors (issue 14, [`reads`]). None of it touches the ingest queue: it
//! travels on the signal lane ([`queue::SignalLane`]) beside the delivery bus.
//!
//! Each gateway tells the others when a user's first connection here joins a room or
//! their last one leaves (deltas), and every `PRESENCE_SNAPSHOT_MS` all its rooms and
//! users (a snapshot, also the heartbeat). What another gateway said of a room expires
//! `PRESENCE_TTL_MS` after it last said it, so a gateway killed without a word has its
//! users go offline everywhere else within that. The state itself is [`state`].

mod reads;
mod state;
#[cfg(test)]
mod tests;

pub use reads::ReadRelay;
pub use state::{Change, Local, PresenceState, TYPING_EVERY};

use crate::config::PresenceSettings;
use crate::hub::{ConnId, Hub, Membership, Outbound, RoomSignal};
use crate::protocol::ServerEvent;
use queue::{RoomUsers, Signal, SignalKind, SignalLane};
use shared::shutdown::{self as sd, Shutdown, Trigger};
use shared::sync::lock;
use shared::{GatewayId, RoomId, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Signals published in one call at most (one SQS body, one burst of confirms).
const PUBLISH_BATCH: usize = 256;
/// Bytes of user names one snapshot signal carries at most; more are split.
const SNAPSHOT_BYTES: usize = 64 * 1024;
/// Expiry and the gauge, this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Snapshots asked for by a newly heard gateway go out at most this often.
const SNAPSHOT_GAP: Duration = Duration::from_millis(500);

pub struct Presence {
    me: GatewayId,
    state: Mutex<PresenceState>,
    /// Signals for the publisher, in the order the state changed; bounded
    /// (`SIGNAL_BUFFER`): when full, deltas are dropped and the next snapshot heals.
    outgoing: mpsc::Sender<SignalKind>,
    seq: AtomicU64,
    /// A gateway not heard from before asks for a snapshot at once.
    snapshot_now: Notify,
    lane: Arc<dyn SignalLane>,
    /// Ends the publisher, after the graceful stop's last deltas.
    stop_publishing: Mutex<Option<Trigger>>,
    /// Moved read cursors: to the user's other connections, and `reads` frames.
    reads: Arc<ReadRelay>,
}

impl Membership for Presence {
    fn entered(&self, hub: &Hub, room: &RoomId, conn: ConnId, user: &UserId) {
        let local = {
            let mut st = lock(&self.state);
            let local = st.join(room, user, conn);
            self.queue(&local);
            local
        };
        self.changed(hub, local.change);
    }

    fn left(&self, hub: &Hub, room: &RoomId, conn: ConnId) {
        let local = {
            let mut st = lock(&self.state);
            let local = st.leave(room, conn);
            self.queue(&local);
            local
        };
        self.changed(hub, local.change);
    }
}

impl Presence {
    /// Starts presence on `lane` (already subscribed: `incoming`) and tells `hub` to
    /// report its members here.
    pub fn start(
        me: GatewayId,
        settings: &PresenceSettings,
        lane: Arc<dyn SignalLane>,
        incoming: mpsc::Receiver<Signal>,
        hub: Arc<Hub>,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(settings.signal_buffer as usize);
        let (stop, publishing) = sd::channel();
        let presence = Arc::new(Self {
            state: Mutex::new(PresenceState::new(
                me.clone(),
                settings.presence_max_users_per_room as usize,
                settings.ttl(),
            )),
            me,
            outgoing: tx,
            seq: AtomicU64::new(1),
            snapshot_now: Notify::new(),
            lane,
            stop_publishing: Mutex::new(Some(stop)),
            reads: Arc::new(ReadRelay::new(settings.reads_throttle())),
        });
        hub.observe(presence.clone());
        // A first (empty) snapshot: the other gateways hear of this one and answer with
        // theirs, so its presence is complete within a round trip.
        presence.snapshot_now.notify_one();
        tokio::spawn(publish(
            presence.clone(),
            rx,
            settings.snapshot_every(),
            publishing,
        ));
        tokio::spawn(presence.reads.clone().run(hub.clone(), shutdown.clone()));
        tokio::spawn(receive(
            presence.clone(),
            incoming,
            hub,
            settings.ttl(),
            shutdown,
        ));
        presence
    }

    /// Queues the lane's part of a local change; called under the state's lock so the
    /// lane sees changes in their order.
    fn queue(&self, local: &Local) {
        if let Some(kind) = &local.signal
            && self.outgoing.try_send(kind.clone()).is_err()
        {
            metrics::counter!("courier_signal_lane_errors_total", "op" => "overflow").increment(1);
        }
    }

    /// Tells this gateway's members of `room` about a change of the union.
    fn changed(&self, hub: &Hub, change: Option<Change>) {
        let Some(change) = change else { return };
        let (room, user, state) = match &change {
            Change::Online(r, u) => (r, u, "online"),
            Change::Offline(r, u) => (r, u, "offline"),
        };
        let frame = ServerEvent::Member { room, user, state }.to_json();
        tell(hub, room, user, frame);
    }

    /// Who is in `room` on any gateway, sorted, and whether the list was cut at the cap.
    pub fn users(&self, room: &RoomId) -> (Vec<UserId>, bool) {
        lock(&self.state).users(room)
    }

    /// A `typing` of `user` in `room` on this gateway: relayed to the other members here
    /// and to the other gateways, unless one was within `TYPING_EVERY` (then dropped).
    pub fn typing(&self, hub: &Hub, room: &RoomId, user: &UserId) {
        let allowed = lock(&self.state).typing_allowed(room, user, None, Instant::now());
        if !allowed {
            metrics::counter!("courier_typing_dropped_total").increment(1);
            return;
        }
        relay_typing(hub, room, user);
        let kind = SignalKind::Typing {
            room: room.clone(),
            user: user.clone(),
        };
        if self.outgoing.try_send(kind).is_err() {
            metrics::counter!("courier_signal_lane_errors_total", "op" => "overflow").increment(1);
        }
    }

    /// `user`'s read cursor in `room` moved to `cursor` (stored) through connection
    /// `conn` here: their other connections, here and on the other gateways, get the
    /// `read` frame, and the room's members the cursor in their next `reads` frame.
    pub fn read(
        &self,
        hub: &Hub,
        room: &RoomId,
        user: &UserId,
        conn: ConnId,
        cursor: u64,
        unread: u64,
    ) {
        self.reads
            .moved(hub, room, user, cursor, unread, Some(conn));
        let kind = SignalKind::Read {
            room: room.clone(),
            user: user.clone(),
            cursor,
            unread,
        };
        if self.outgoing.try_send(kind).is_err() {
            metrics::counter!("courier_signal_lane_errors_total", "op" => "overflow").increment(1);
        }
    }

    /// Tells the other gateways this one is gone (a graceful stop), so they drop its
    /// users at once rather than after the TTL.
    pub async fn stop(&self) {
        if let Some(t) = lock(&self.stop_publishing).take() {
            t.fire();
        }
        let gone = Signal {
            gateway: self.me.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            kind: SignalKind::Gone,
        };
        if let Err(e) = self.lane.publish(&[gone]).await {
            tracing::warn!(error = %e, "telling the other gateways this one stops failed; they expire its users after PRESENCE_TTL_MS");
        }
    }

    fn signal(&self, kind: SignalKind) -> Signal {
        Signal {
            gateway: self.me.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            kind,
        }
    }

    /// This gateway's rooms as snapshot signals, split to stay small.
    fn snapshot(&self) -> Vec<Signal> {
        let rooms = lock(&self.state).snapshot_rooms();
        let mut parts: Vec<Vec<RoomUsers>> = vec![Vec::new()];
        let mut bytes = 0usize;
        for room in rooms {
            let size: usize = room
                .users
                .iter()
                .map(|u| u.as_str().len() + 3)
                .sum::<usize>()
                + room.room.as_str().len()
                + 32;
            if bytes + size > SNAPSHOT_BYTES && parts.last().is_some_and(|p| !p.is_empty()) {
                parts.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(p) = parts.last_mut() {
                p.push(room);
            }
        }
        let complete = parts.len() == 1;
        parts
            .into_iter()
            .map(|rooms| self.signal(SignalKind::Snapshot { rooms, complete }))
            .collect()
    }
}

/// Sends `frame` of `room` to this gateway's members of it, except `user`'s own
/// connections.
fn tell(hub: &Hub, room: &RoomId, user: &UserId, frame: String) {
    let signal = Arc::new(RoomSignal {
        room: room.clone(),
        frame: frame.into(),
    });
    for (_, member) in hub.members_of(room) {
        if member.user != *user {
            // Full or gone: an ephemeral event is just not shown.
            let _ = member.tx.try_send(Outbound::Signal(signal.clone()));
        }
    }
}

fn relay_typing(hub: &Hub, room: &RoomId, user: &UserId) {
    let frame = ServerEvent::Typing { room, user }.to_json();
    tell(hub, room, user, frame);
    metrics::counter!("courier_typing_relayed_total").increment(1);
}

/// Publishes queued signals in order, in batches, and a snapshot every `every` (or when
/// a new gateway asks), until [`Presence::stop`] (through the graceful stop's drain, so
/// the deltas of connections closing then still go out).
async fn publish(
    p: Arc<Presence>,
    mut rx: mpsc::Receiver<SignalKind>,
    every: Duration,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_snapshot: Option<Instant> = None;
    loop {
        let batch = tokio::select! {
            biased;
            _ = shutdown.fired() => return,
            first = rx.recv() => {
                let Some(first) = first else { return };
                let mut batch = vec![p.signal(first)];
                while batch.len() < PUBLISH_BATCH
                    && let Ok(next) = rx.try_recv()
                {
                    batch.push(p.signal(next));
                }
                batch
            }
            _ = tick.tick() => p.snapshot(),
            _ = p.snapshot_now.notified() => {
                if last_snapshot.is_some_and(|t| t.elapsed() < SNAPSHOT_GAP) {
                    continue;
                }
                p.snapshot()
            }
        };
        if batch
            .iter()
            .any(|s| matches!(s.kind, SignalKind::Snapshot { .. }))
        {
            last_snapshot = Some(Instant::now());
        }
        match p.lane.publish(&batch).await {
            Ok(()) => {
                metrics::counter!("courier_signal_publishes_total").increment(1);
                metrics::counter!("courier_signals_published_total").increment(batch.len() as u64);
            }
            Err(e) => {
                metrics::counter!("courier_signal_lane_errors_total", "op" => "publish")
                    .increment(1);
                tracing::debug!(error = %e, signals = batch.len(), "publishing signals failed; the next snapshot heals presence");
            }
        }
    }
}

/// Applies the other gateways' signals, relays their typing, expires the silent ones.
async fn receive(
    p: Arc<Presence>,
    mut incoming: mpsc::Receiver<Signal>,
    hub: Arc<Hub>,
    ttl: Duration,
    shutdown: Shutdown,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    // When each other gateway was last heard from, to answer a new one with a snapshot.
    let mut heard: HashMap<GatewayId, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.fired() => return,
            s = incoming.recv() => {
                let Some(s) = s else {
                    tracing::error!("the signal lane closed; presence of other gateways is no longer updated");
                    return;
                };
                if s.gateway == p.me {
                    continue;
                }
                let now = Instant::now();
                if heard.insert(s.gateway.clone(), now).is_none() {
                    p.snapshot_now.notify_one();
                }
                apply(&p, &hub, s, now);
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                heard.retain(|_, at| now.duration_since(*at) < ttl);
                let (changes, entries) = {
                    let mut st = lock(&p.state);
                    (st.expire(now), st.entries())
                };
                if !changes.is_empty() {
                    tracing::info!(changes = changes.len(), "presence of silent gateways expired");
                }
                for c in changes {
                    p.changed(&hub, Some(c));
                }
                metrics::gauge!("courier_presence_entries").set(entries as f64);
            }
        }
    }
}

fn apply(p: &Presence, hub: &Hub, s: Signal, now: Instant) {
    if let SignalKind::Read {
        room,
        user,
        cursor,
        unread,
    } = &s.kind
    {
        p.reads.moved(hub, room, user, *cursor, *unread, None);
        return;
    }
    if let SignalKind::Typing { room, user } = &s.kind {
        if lock(&p.state).typing_allowed(room, user, Some(&s.gateway), now) {
            relay_typing(hub, room, user);
        } else {
            metrics::counter!("courier_typing_dropped_total").increment(1);
        }
        return;
    }
    let changes = lock(&p.state).apply(s, now);
    for c in changes {
        p.changed(hub, Some(c));
    }
}
