//! Read cursors on the signal lane: when a user's cursor in a room moves, their other
//! connections joined to the room (on every gateway) get the same `read` frame at once,
//! and the room's members get `reads` frames with the cursors that moved, coalesced per
//! room: at most one per room every `READS_THROTTLE_MS` on each gateway, however many
//! members read meanwhile ("seen by" without a frame per read per member).
//!
//! Nothing here is stored: the store has the cursors (a `read` moved it before it is
//! relayed), so a frame lost to a full buffer or the lane is read again at the next
//! `join` (`read`, `unread`) or `reads`.

use crate::hub::{ConnId, Hub, Outbound, RoomSignal};
use crate::protocol::ServerEvent;
use shared::shutdown::Shutdown;
use shared::sync::lock;
use shared::{RoomId, UserId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Users one room's pending `reads` frame names at most; a user beyond it in one period
/// is left to the `reads` command (it keeps the frame within a few tens of KiB).
pub const MAX_PENDING_PER_ROOM: usize = 1000;

/// The cursors that moved per room since the last `reads` frames went out.
pub struct ReadRelay {
    throttle: Duration,
    pending: Mutex<HashMap<RoomId, BTreeMap<UserId, u64>>>,
}

impl ReadRelay {
    pub fn new(throttle: Duration) -> Self {
        Self {
            throttle,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// `user`'s cursor in `room` is now `cursor`: the `read` frame goes to their
    /// connections here (but `except`, the one that moved it, which has its reply), and
    /// the cursor into the room's next `reads` frame. Nothing when the room has no
    /// members here.
    pub fn moved(
        &self,
        hub: &Hub,
        room: &RoomId,
        user: &UserId,
        cursor: u64,
        unread: u64,
        except: Option<ConnId>,
    ) {
        let members = hub.members_of(room);
        if members.is_empty() {
            return;
        }
        let own: Vec<_> = members
            .iter()
            .filter(|(conn, m)| m.user == *user && Some(*conn) != except)
            .collect();
        if !own.is_empty() {
            let ev = ServerEvent::Read {
                room,
                seq: cursor,
                unread,
                reference: None,
            };
            let signal = room_signal(room, ev);
            for (_, m) in own {
                // Full or gone: the connection reads its cursor again at its next join.
                let _ = m.tx.try_send(Outbound::Signal(signal.clone()));
            }
            metrics::counter!("courier_reads_relayed_total", "frame" => "read").increment(1);
        }
        self.note(room, user, cursor);
    }

    /// Keeps the most advanced cursor of `user` for the room's next `reads` frame.
    fn note(&self, room: &RoomId, user: &UserId, cursor: u64) {
        let mut pending = lock(&self.pending);
        let users = pending.entry(room.clone()).or_default();
        let full = users.len() >= MAX_PENDING_PER_ROOM;
        match users.get_mut(user) {
            Some(c) => *c = (*c).max(cursor),
            None if !full => {
                users.insert(user.clone(), cursor);
            }
            None => metrics::counter!("courier_reads_dropped_total").increment(1),
        }
    }

    /// Sends each room's pending cursors to its members here, one `reads` frame per
    /// room, and forgets them.
    pub fn flush(&self, hub: &Hub) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        for (room, users) in pending {
            let members = hub.members_of(&room);
            if members.is_empty() {
                continue;
            }
            let reads: Vec<(UserId, u64)> = users.into_iter().collect();
            let ev = ServerEvent::Reads {
                room: &room,
                reads: &reads,
                reference: None,
            };
            let signal = room_signal(&room, ev);
            for (_, m) in members {
                // Full or gone: `reads` answers the same from the store.
                let _ = m.tx.try_send(Outbound::Signal(signal.clone()));
            }
            metrics::counter!("courier_reads_relayed_total", "frame" => "reads").increment(1);
        }
    }

    /// Flushes every `READS_THROTTLE_MS` until `shutdown`: so each room gets at most one
    /// `reads` frame per period, and a cursor waits at most one period to be shown.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.throttle);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.fired() => return,
                _ = tick.tick() => self.flush(&hub),
            }
        }
    }
}

fn room_signal(room: &RoomId, ev: ServerEvent<'_>) -> Arc<RoomSignal> {
    Arc::new(RoomSignal {
        room: room.clone(),
        frame: ev.to_json().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Member;
    use std::sync::atomic::AtomicBool;
    use tokio::sync::mpsc;

    use crate::hub::tests::NoBinding;

    fn room() -> RoomId {
        RoomId::parse("lobby").unwrap()
    }

    fn user(u: &str) -> UserId {
        UserId::parse(u).unwrap()
    }

    async fn connect(hub: &Hub, conn: ConnId, u: &str) -> mpsc::Receiver<Outbound> {
        let (tx, rx) = mpsc::channel(16);
        let member = Member {
            user: user(u),
            claim: None,
            tx,
            lagging: Arc::new(AtomicBool::new(false)),
        };
        hub.join(&room(), conn, member).await.unwrap();
        rx
    }

    fn frames(rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            if let Outbound::Signal(s) = item {
                out.push(s.frame.to_string());
            }
        }
        out
    }

    #[tokio::test]
    async fn the_users_other_connections_get_read_and_everyone_one_coalesced_reads() {
        let hub = Hub::new(Box::new(NoBinding), Duration::from_millis(50));
        let mut phone = connect(&hub, 1, "alice").await;
        let mut laptop = connect(&hub, 2, "alice").await;
        let mut bob = connect(&hub, 3, "bob").await;
        let relay = ReadRelay::new(Duration::from_secs(1));
        relay.moved(&hub, &room(), &user("alice"), 41, 3, Some(1));
        relay.moved(&hub, &room(), &user("alice"), 44, 0, Some(1));
        relay.moved(&hub, &room(), &user("bob"), 40, 4, None);
        relay.moved(&hub, &room(), &user("alice"), 42, 2, Some(2));
        assert_eq!(
            frames(&mut laptop),
            [
                r#"{"type":"read","room":"lobby","seq":41,"unread":3}"#,
                r#"{"type":"read","room":"lobby","seq":44,"unread":0}"#,
            ]
        );
        assert_eq!(
            frames(&mut phone),
            [r#"{"type":"read","room":"lobby","seq":42,"unread":2}"#],
            "as relayed (a client keeps the highest)"
        );
        assert_eq!(
            frames(&mut bob),
            [r#"{"type":"read","room":"lobby","seq":40,"unread":4}"#],
            "from another gateway: every connection of the user"
        );
        relay.flush(&hub);
        let reads = r#"{"type":"reads","room":"lobby","reads":{"alice":44,"bob":40}}"#;
        for rx in [&mut phone, &mut laptop, &mut bob] {
            assert_eq!(frames(rx), [reads], "one frame, the highest cursors");
        }
        relay.flush(&hub);
        assert!(frames(&mut bob).is_empty(), "nothing moved since");
    }

    #[tokio::test]
    async fn rooms_without_members_here_keep_nothing_and_a_room_is_bounded() {
        let hub = Hub::new(Box::new(NoBinding), Duration::from_millis(50));
        let relay = ReadRelay::new(Duration::from_secs(1));
        relay.moved(&hub, &room(), &user("alice"), 7, 0, None);
        assert!(lock(&relay.pending).is_empty());
        let mut bob = connect(&hub, 1, "bob").await;
        for n in 0..MAX_PENDING_PER_ROOM + 5 {
            relay.moved(&hub, &room(), &user(&format!("u{n}")), 9, 0, None);
        }
        relay.moved(&hub, &room(), &user("u0"), 10, 0, None);
        let pending = lock(&relay.pending);
        let users = &pending[&room()];
        assert_eq!(users.len(), MAX_PENDING_PER_ROOM);
        assert_eq!(users[&user("u0")], 10, "a user already in it still moves");
        drop(pending);
        relay.flush(&hub);
        let frames = frames(&mut bob);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].len() < crate::page::MAX_SERVER_FRAME);
    }
}
