//! The signal lane on SQS: signals ride in the gateways' own delivery queues
//! (`PREFIX--gw-<id>`), as room changes do. A publish packs every signal it is given
//! into as few bodies as fit, `{"signals":[...]}`, and sends each body to every gateway
//! queue: one `SendMessage` per gateway per batch of signals. The gateway's feed hands
//! what it reads of them to the lane's receiver (see `feed.rs`).

use super::codec::{Body, MAX_BODY};
use super::{SqsQueue, fanout};
use crate::{QueueError, Signal, SignalLane};
use async_trait::async_trait;
use shared::ids::GatewayId;
use shared::sync::lock;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where the feed hands the signals it reads: the gateway's end of the lane, once open.
#[derive(Default)]
pub(super) struct Inbox(std::sync::Mutex<Option<mpsc::Sender<Signal>>>);

impl Inbox {
    /// Takes the signals of a body that holds some; false when it holds none. Each
    /// signal is read on its own, so one of a kind this version does not know (a newer
    /// gateway's, during a roll) is dropped alone, not with the body's others.
    pub(super) fn take(&self, payload: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Packed {
            signals: Vec<serde_json::Value>,
        }
        let Ok(packed) = serde_json::from_slice::<Packed>(payload) else {
            return false;
        };
        let Some(tx) = lock(&self.0).clone() else {
            return true; // no one listens here: dropped, as a broker would
        };
        let known = packed.signals.into_iter().filter_map(|v| {
            let s = serde_json::from_value::<Signal>(v).ok();
            if s.is_none() {
                metrics::counter!("courier_signal_lane_errors_total", "op" => "decode")
                    .increment(1);
            }
            s
        });
        for s in known {
            // Full: dropped; the next snapshot heals presence.
            if tx.try_send(s).is_err() {
                metrics::counter!("courier_signal_lane_errors_total", "op" => "overflow")
                    .increment(1);
            }
        }
        true
    }
}

/// Packs signals into `{"signals":[...]}` bodies of at most `MAX_BODY` bytes each.
fn pack(signals: &[Signal]) -> Result<Vec<Body>, QueueError> {
    let mut bodies = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for s in signals {
        let json = s.encode()?;
        if json.len() + 16 > MAX_BODY {
            tracing::error!(
                bytes = json.len(),
                "a signal is too big for an SQS body; dropped"
            );
            continue;
        }
        if !current.is_empty() && current.len() + json.len() + 2 > MAX_BODY {
            current.extend_from_slice(b"]}");
            bodies.push(Body::encode(&current));
            current.clear();
        }
        if current.is_empty() {
            current.extend_from_slice(b"{\"signals\":[");
        } else {
            current.push(b',');
        }
        current.extend_from_slice(&json);
    }
    if !current.is_empty() {
        current.extend_from_slice(b"]}");
        bodies.push(Body::encode(&current));
    }
    Ok(bodies)
}

#[async_trait]
impl SignalLane for SqsQueue {
    async fn publish(&self, signals: &[Signal]) -> Result<(), QueueError> {
        let bodies = pack(signals)?;
        if bodies.is_empty() {
            return Ok(());
        }
        fanout::send_all(&self.shared, Arc::new(bodies)).await
    }

    /// The signals read from this gateway's delivery queue (its feed must be open:
    /// `subscribe` of the delivery bus creates the queue).
    async fn subscribe(
        &self,
        _gateway: &GatewayId,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Signal>, QueueError> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        *lock(&self.shared.signals.0) = Some(tx);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignalKind;
    use shared::ids::{RoomId, UserId};

    #[test]
    fn packs_into_bodies_that_fit_and_the_inbox_takes_them() {
        let signal = |seq| Signal {
            gateway: GatewayId::from_string("gw-1".into()),
            seq,
            kind: SignalKind::Typing {
                room: RoomId::parse("lobby").unwrap(),
                user: UserId::parse(&"u".repeat(64)).unwrap(),
            },
        };
        let many: Vec<Signal> = (0..5000).map(signal).collect();
        let bodies = pack(&many).unwrap();
        assert!(bodies.len() >= 2, "{}", bodies.len());
        assert!(bodies.iter().all(|b| b.len() <= MAX_BODY && !b.base64));
        let inbox = Inbox::default();
        let (tx, mut rx) = mpsc::channel(10_000);
        *lock(&inbox.0) = Some(tx);
        for b in &bodies {
            assert!(inbox.take(b.text.as_bytes()));
        }
        let mut seqs = Vec::new();
        while let Ok(s) = rx.try_recv() {
            seqs.push(s.seq);
        }
        assert_eq!(seqs, (0..5000).collect::<Vec<_>>());
        assert!(!inbox.take(br#"{"room_changed":"lobby"}"#));
    }

    #[test]
    fn a_read_cursor_rides_beside_typing_in_one_body() {
        let gw = GatewayId::from_string("gw-2".into());
        let room = RoomId::parse("team-7:general").unwrap();
        let user = UserId::parse("zoe").unwrap();
        let signals = vec![
            Signal {
                gateway: gw.clone(),
                seq: 1,
                kind: SignalKind::Typing {
                    room: room.clone(),
                    user: user.clone(),
                },
            },
            Signal {
                gateway: gw,
                seq: 2,
                kind: SignalKind::Read {
                    room,
                    user,
                    cursor: 1_000_000,
                    unread: 0,
                },
            },
        ];
        let bodies = pack(&signals).unwrap();
        assert_eq!(bodies.len(), 1);
        let inbox = Inbox::default();
        let (tx, mut rx) = mpsc::channel(8);
        *lock(&inbox.0) = Some(tx);
        assert!(inbox.take(bodies[0].text.as_bytes()));
        assert_eq!(rx.try_recv().unwrap(), signals[0]);
        assert_eq!(rx.try_recv().unwrap(), signals[1]);
        let text =
            bodies[0]
                .text
                .replacen(r#""signal":"read""#, r#""signal":"from_the_future""#, 1);
        assert!(inbox.take(text.as_bytes()));
        assert_eq!(rx.try_recv().unwrap(), signals[0]);
        assert!(rx.try_recv().is_err(), "the unknown one alone is dropped");
    }
}
