//! The in-process queue: the embedded topology's broker, and the reference
//! implementation the contract tests hold every other backend to.

use super::{
    Consumer, DeadLetter, DeadLetterFilter, Delivery, FeedEvent, Queue, QueueError, QueueOptions,
    RoomBinding, Settle, Settled, Subscription, Token,
};
use crate::ids::{GatewayId, RoomId};
use crate::message::StoredMessage;
use async_trait::async_trait;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// An in-process broker with the same settlement rules as the real ones.
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

struct Inner {
    opts: QueueOptions,
    state: Mutex<State>,
    wake: Notify,
    subscribers: Mutex<Vec<Subscriber>>,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Item>,
    /// Retries waiting for their delay, earliest first.
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_items: HashMap<u64, Item>,
    in_flight: HashMap<u64, Item>,
    dead: VecDeque<DeadLetter>,
    next_tag: u64,
}

struct Item {
    payload: Vec<u8>,
    /// Deliveries so far.
    attempts: u32,
}

struct Subscriber {
    rooms: Arc<Mutex<HashSet<RoomId>>>,
    tx: mpsc::Sender<FeedEvent>,
}

impl MemoryQueue {
    pub fn new(opts: QueueOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                opts,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                subscribers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Messages waiting or in flight (the backlog an autoscaler would read).
    pub fn depth(&self) -> usize {
        let st = self.inner.lock();
        st.ready.len() + st.delayed_items.len() + st.in_flight.len()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-changed in a way
        // that loses messages, so keep serving rather than poisoning every caller.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_dead(&self, st: &mut State, dl: DeadLetter) {
        if st.dead.len() >= self.opts.memory_capacity {
            let evicted = st.dead.pop_front();
            tracing::error!(
                capacity = self.opts.memory_capacity,
                reason = evicted.map(|d| d.reason).unwrap_or_default(),
                "in-memory dead-letter store is full; evicting its oldest entry (use a durable queue backend to keep dead letters)"
            );
        }
        st.dead.push_back(dl);
    }
}

impl State {
    fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((at, tag))) = self.delayed.peek().copied() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if let Some(item) = self.delayed_items.remove(&tag) {
                self.ready.push_back(item);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, _))| *at)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn publish(&self, _room: &RoomId, payload: Vec<u8>) -> Result<(), QueueError> {
        {
            let mut st = self.inner.lock();
            let depth = st.ready.len() + st.delayed_items.len() + st.in_flight.len();
            if depth >= self.inner.opts.memory_capacity {
                return Err(QueueError::Unavailable(format!(
                    "in-memory queue is full ({depth} messages); workers are behind"
                )));
            }
            st.ready.push_back(Item {
                payload,
                attempts: 0,
            });
        }
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(MemoryConsumer {
            inner: self.inner.clone(),
        }))
    }

    async fn fan_out(&self, messages: &[Arc<StoredMessage>]) -> Result<(), QueueError> {
        let targets: Vec<(Arc<Mutex<HashSet<RoomId>>>, mpsc::Sender<FeedEvent>)> = {
            let mut subs = self
                .inner
                .subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            subs.retain(|s| !s.tx.is_closed());
            subs.iter()
                .map(|s| (s.rooms.clone(), s.tx.clone()))
                .collect()
        };
        for (rooms, tx) in targets {
            for m in messages {
                let bound = rooms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&m.room);
                // A closed receiver is a gateway that went away: nothing is owed to it.
                if bound && tx.send(FeedEvent::Message(m.clone())).await.is_err() {
                    break;
                }
            }
        }
        Ok(())
    }

    async fn subscribe(&self, _gateway: &GatewayId) -> Result<Subscription, QueueError> {
        let (tx, rx) = mpsc::channel(self.inner.opts.delivery_buffer.max(1));
        let rooms = Arc::new(Mutex::new(HashSet::new()));
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscriber {
                rooms: rooms.clone(),
                tx,
            });
        Ok(Subscription {
            rooms: Box::new(MemoryBinding { rooms }),
            events: rx,
        })
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self.inner.lock().dead.iter().take(max).cloned().collect())
    }

    async fn backlog(&self) -> Result<Option<u64>, QueueError> {
        Ok(Some(self.depth() as u64))
    }

    async fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<usize, QueueError> {
        let replayed = {
            let mut st = self.inner.lock();
            let (chosen, kept): (VecDeque<DeadLetter>, VecDeque<DeadLetter>) =
                std::mem::take(&mut st.dead)
                    .into_iter()
                    .partition(|d| filter.matches(&d.payload));
            st.dead = kept;
            let n = chosen.len();
            st.ready.extend(chosen.into_iter().map(|d| Item {
                payload: d.payload,
                attempts: 0,
            }));
            n
        };
        self.inner.wake.notify_waiters();
        Ok(replayed)
    }

    async fn purge_dead_letters(&self) -> Result<usize, QueueError> {
        let mut st = self.inner.lock();
        let n = st.dead.len();
        st.dead.clear();
        Ok(n)
    }
}

struct MemoryBinding {
    rooms: Arc<Mutex<HashSet<RoomId>>>,
}

#[async_trait]
impl RoomBinding for MemoryBinding {
    async fn bind(&self, room: &RoomId) -> Result<(), QueueError> {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.clone());
        Ok(())
    }

    async fn unbind(&self, room: &RoomId) -> Result<(), QueueError> {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room);
        Ok(())
    }
}

struct MemoryConsumer {
    inner: Arc<Inner>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + self.inner.opts.receive_wait;
        loop {
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let now = Instant::now();
                let mut st = self.inner.lock();
                st.promote_due(now);
                if !st.ready.is_empty() {
                    return Ok(self.take_ready(&mut st, max.max(1)));
                }
                st.next_due().map_or(deadline, |due| due.min(deadline))
            };
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout_at(wake_at, notified).await;
        }
    }

    fn try_receive(&mut self, max: usize) -> Vec<Delivery> {
        let mut st = self.inner.lock();
        st.promote_due(Instant::now());
        if st.ready.is_empty() || max == 0 {
            return Vec::new();
        }
        self.take_ready(&mut st, max)
    }
}

impl MemoryConsumer {
    fn take_ready(&self, st: &mut State, max: usize) -> Vec<Delivery> {
        let n = st.ready.len().min(max);
        let settle: Arc<dyn Settle> = self.inner.clone();
        let mut out = Vec::with_capacity(n);
        for mut item in st.ready.drain(..n).collect::<Vec<_>>() {
            item.attempts += 1;
            let tag = st.next_tag;
            st.next_tag += 1;
            let payload = item.payload.clone();
            let attempt = item.attempts;
            st.in_flight.insert(tag, item);
            out.push(Delivery::new(
                payload,
                attempt,
                Box::new(tag),
                settle.clone(),
            ));
        }
        out
    }
}

fn tag_of(token: Token) -> u64 {
    *token
        .downcast::<u64>()
        .expect("memory deliveries carry memory tokens")
}

#[async_trait]
impl Settle for Inner {
    async fn ack(&self, tokens: Vec<Token>) -> Result<(), QueueError> {
        let mut st = self.lock();
        for t in tokens {
            st.in_flight.remove(&tag_of(t));
        }
        Ok(())
    }

    async fn retry(
        &self,
        token: Token,
        _payload: &[u8],
        _attempt: u32,
        delay: Duration,
        reason: &str,
    ) -> Result<Settled, QueueError> {
        let tag = tag_of(token);
        let outcome = {
            let mut st = self.lock();
            let Some(item) = st.in_flight.remove(&tag) else {
                return Ok(Settled::Retrying);
            };
            if item.attempts >= self.opts.max_attempts {
                let dl = DeadLetter {
                    payload: item.payload,
                    attempts: item.attempts,
                    reason: reason.to_owned(),
                };
                self.push_dead(&mut st, dl);
                Settled::DeadLettered
            } else {
                st.delayed.push(Reverse((Instant::now() + delay, tag)));
                st.delayed_items.insert(tag, item);
                Settled::Retrying
            }
        };
        self.wake.notify_waiters();
        Ok(outcome)
    }

    async fn dead_letter(
        &self,
        token: Token,
        _payload: &[u8],
        _attempt: u32,
        reason: &str,
    ) -> Result<(), QueueError> {
        let mut st = self.lock();
        if let Some(item) = st.in_flight.remove(&tag_of(token)) {
            let dl = DeadLetter {
                payload: item.payload,
                attempts: item.attempts,
                reason: reason.to_owned(),
            };
            self.push_dead(&mut st, dl);
        }
        Ok(())
    }

    fn abandon(&self, token: Token) {
        {
            let mut st = self.lock();
            if let Some(item) = st.in_flight.remove(&tag_of(token)) {
                st.ready.push_front(item);
            }
        }
        self.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_queue_passes_the_contract() {
        super::super::contract::run_all(|opts| async move {
            Arc::new(MemoryQueue::new(opts)) as Arc<dyn Queue>
        })
        .await;
    }

    #[tokio::test]
    async fn publish_refuses_when_full() {
        let q = MemoryQueue::new(QueueOptions {
            memory_capacity: 2,
            ..QueueOptions::default()
        });
        let room = RoomId::parse("r").unwrap();
        q.publish(&room, b"1".to_vec()).await.unwrap();
        q.publish(&room, b"2".to_vec()).await.unwrap();
        let err = q.publish(&room, b"3".to_vec()).await.unwrap_err();
        assert!(matches!(err, QueueError::Unavailable(_)), "{err}");
        assert_eq!(q.depth(), 2);
    }
}
