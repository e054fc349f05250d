//! The signal lane: ephemeral gateway-to-gateway signals (presence, typing, read cursors)
//! beside the delivery bus. Nothing on it is durable, confirmed end to end or retried: a
//! signal lost is healed by the next presence snapshot, a typing signal lost is just not
//! shown, and a read cursor lost is read from the store at the next `join` or `reads`.
//! It never touches the ingest queue or the store.
//!
//! One implementation per backend: in-process channels ([`MemorySignals`], for the
//! embedded queues), a non-durable fanout exchange on RabbitMQ (`amqp/signals.rs`), and
//! the gateways' own SQS queues (`sqs/signals.rs`).

use crate::QueueError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared::ids::{GatewayId, RoomId, UserId};
use shared::sync::lock;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// One signal from one gateway to every gateway (itself included: receivers skip their
/// own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub gateway: GatewayId,
    /// Increases with every signal of this gateway, so a receiver can drop one that a
    /// later one already overtook (SQS does not keep order).
    pub seq: u64,
    #[serde(flatten)]
    pub kind: SignalKind,
}

/// What a signal says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum SignalKind {
    /// Every room this gateway has users in, with them (at most the presence cap each).
    /// `complete`: this one signal lists all of them, so a room it leaves out has no one
    /// here any more; a snapshot split over several signals leaves that to the TTL.
    Snapshot {
        rooms: Vec<RoomUsers>,
        complete: bool,
    },
    /// `user`'s first connection here joined `room`.
    Online { room: RoomId, user: UserId },
    /// `user`'s last connection here left `room`.
    Offline { room: RoomId, user: UserId },
    /// `user` is typing in `room` (already throttled by the sender).
    Typing { room: RoomId, user: UserId },
    /// `user`'s read cursor in `room` is now `cursor` (stored already), with `unread`
    /// messages after it: for the user's other connections, and the room's `reads`.
    Read {
        room: RoomId,
        user: UserId,
        cursor: u64,
        unread: u64,
    },
    /// The gateway is stopping: forget everything it said.
    Gone,
}

/// One room of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomUsers {
    pub room: RoomId,
    pub users: Vec<UserId>,
    /// More users were there than the sender tracks per room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl Signal {
    /// The JSON every broker carries.
    pub fn encode(&self) -> Result<Vec<u8>, QueueError> {
        serde_json::to_vec(self)
            .map_err(|e| QueueError::Unavailable(format!("serializing a signal: {e}")))
    }

    /// A signal from its JSON; `None` for anything else.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }
}

/// Gateways to gateways: publish a signal to all, receive everyone's.
#[async_trait]
pub trait SignalLane: Send + Sync {
    /// Hands signals to every subscribed gateway, in order; returns once the broker took
    /// them (not once they were received).
    async fn publish(&self, signals: &[Signal]) -> Result<(), QueueError>;

    /// Opens this gateway's end of the lane: at most `buffer` signals wait in it (and, on
    /// RabbitMQ, as many in its queue there, the oldest dropped beyond); beyond that
    /// signals are dropped. The receiver closes only with the lane.
    async fn subscribe(
        &self,
        gateway: &GatewayId,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Signal>, QueueError>;
}

/// The in-process lane of the embedded queues: every subscriber's channel, in this
/// process (the embedded topology has one gateway per queue).
#[derive(Default)]
pub struct MemorySignals {
    subscribers: Mutex<Vec<mpsc::Sender<Signal>>>,
}

impl MemorySignals {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SignalLane for MemorySignals {
    async fn publish(&self, signals: &[Signal]) -> Result<(), QueueError> {
        let mut subs = lock(&self.subscribers);
        subs.retain(|s| !s.is_closed());
        let mut dropped = 0usize;
        for s in signals {
            for sub in subs.iter() {
                // A subscriber that does not keep up loses signals, as on a broker.
                if sub.try_send(s.clone()).is_err() {
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            return Err(QueueError::Unavailable(format!(
                "{dropped} signals dropped: a subscriber's buffer is full"
            )));
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        _gateway: &GatewayId,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Signal>, QueueError> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        lock(&self.subscribers).push(tx);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(s: &str) -> GatewayId {
        GatewayId::from_string(s.into())
    }

    fn typing(seq: u64) -> Signal {
        Signal {
            gateway: gw("gw-1"),
            seq,
            kind: SignalKind::Typing {
                room: RoomId::parse("lobby").unwrap(),
                user: UserId::parse("alice").unwrap(),
            },
        }
    }

    #[test]
    fn signals_round_trip_as_json() {
        let snap = Signal {
            gateway: gw("gw-2"),
            seq: 9,
            kind: SignalKind::Snapshot {
                rooms: vec![RoomUsers {
                    room: RoomId::parse("r").unwrap(),
                    users: vec![UserId::parse("bob").unwrap()],
                    truncated: false,
                }],
                complete: true,
            },
        };
        let read = Signal {
            gateway: gw("gw-3"),
            seq: 5,
            kind: SignalKind::Read {
                room: RoomId::parse("dm:alice:bob").unwrap(),
                user: UserId::parse("bob").unwrap(),
                cursor: 43,
                unread: 2,
            },
        };
        let json = String::from_utf8(read.encode().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"gateway":"gw-3","seq":5,"signal":"read","room":"dm:alice:bob","user":"bob","cursor":43,"unread":2}"#,
            "the cursor is not the signal's own seq"
        );
        for s in [
            typing(1),
            snap,
            read,
            Signal {
                gateway: gw("g"),
                seq: 3,
                kind: SignalKind::Gone,
            },
        ] {
            assert_eq!(Signal::decode(&s.encode().unwrap()), Some(s));
        }
        let json = String::from_utf8(typing(4).encode().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"gateway":"gw-1","seq":4,"signal":"typing","room":"lobby","user":"alice"}"#
        );
        assert_eq!(Signal::decode(br#"{"room_changed":"x"}"#), None);
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_signal_and_a_full_one_loses_them() {
        let lane = MemorySignals::new();
        let mut a = lane.subscribe(&gw("a"), 8).await.unwrap();
        let mut b = lane.subscribe(&gw("b"), 1).await.unwrap();
        lane.publish(&[typing(1)]).await.unwrap();
        assert_eq!(a.recv().await.unwrap().seq, 1);
        assert_eq!(b.recv().await.unwrap().seq, 1);
        assert!(lane.publish(&[typing(2), typing(3)]).await.is_err());
        assert_eq!(a.recv().await.unwrap().seq, 2);
        assert_eq!(a.recv().await.unwrap().seq, 3);
        assert_eq!(b.recv().await.unwrap().seq, 2);
        assert!(
            b.try_recv().is_err(),
            "the one that did not fit was dropped"
        );
    }
}
