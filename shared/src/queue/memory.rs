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
///
/// Like a FIFO queue's message groups, a room is handed to one consumer at a time: while
/// any message of a room is in flight or waiting for its retry, no consumer gets that
/// room's later messages. Rooms stay parallel, and each room is stored in publish order
/// whatever the number of workers.
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
    /// Rooms with ready messages and none held, in the order they became available.
    /// A room is here exactly when its lane has ready messages and holds none.
    available: VecDeque<RoomId>,
    lanes: HashMap<RoomId, Lane>,
    /// Retries waiting for their delay, earliest first.
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_items: HashMap<u64, Item>,
    in_flight: HashMap<u64, Item>,
    dead: VecDeque<DeadItem>,
    /// Ready, delayed and in flight: what the capacity bounds.
    depth: usize,
    next_tag: u64,
    next_order: u64,
}

/// One room's messages.
#[derive(Default)]
struct Lane {
    /// Waiting to be handed out, in publish order.
    ready: VecDeque<Item>,
    /// In flight or waiting for a retry: while non-zero, the room is held.
    held: usize,
}

struct Item {
    room: RoomId,
    /// Publish order, so a message handed back takes its place again.
    order: u64,
    payload: Vec<u8>,
    /// Deliveries so far.
    attempts: u32,
}

struct DeadItem {
    room: RoomId,
    letter: DeadLetter,
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
        self.inner.lock().depth
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-changed in a way
        // that loses messages, so keep serving rather than poisoning every caller.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_dead(&self, st: &mut State, item: Item, reason: &str) {
        st.release(&item.room);
        st.depth -= 1;
        if st.dead.len() >= self.opts.memory_capacity {
            let evicted = st.dead.pop_front();
            tracing::error!(
                capacity = self.opts.memory_capacity,
                reason = evicted.map(|d| d.letter.reason).unwrap_or_default(),
                "in-memory dead-letter store is full; evicting its oldest entry (use a durable queue backend to keep dead letters)"
            );
        }
        st.dead.push_back(DeadItem {
            room: item.room,
            letter: DeadLetter {
                payload: item.payload,
                attempts: item.attempts,
                reason: reason.to_owned(),
            },
        });
    }
}

impl State {
    /// Queues a new message at the end of its room's lane.
    fn push_new(&mut self, room: RoomId, payload: Vec<u8>) {
        let order = self.next_order;
        self.next_order += 1;
        self.depth += 1;
        let lane = self.lanes.entry(room.clone()).or_default();
        lane.ready.push_back(Item {
            room: room.clone(),
            order,
            payload,
            attempts: 0,
        });
        if lane.held == 0 && lane.ready.len() == 1 {
            self.available.push_back(room);
        }
    }

    /// A held message is ready again: it takes its place in publish order.
    fn put_back(&mut self, item: Item) {
        let room = item.room.clone();
        let lane = self.lanes.entry(room.clone()).or_default();
        lane.held = lane.held.saturating_sub(1);
        let at = lane.ready.partition_point(|i| i.order < item.order);
        lane.ready.insert(at, item);
        if lane.held == 0 {
            self.available.push_back(room);
        }
    }

    /// A held message of `room` is settled for good.
    fn release(&mut self, room: &RoomId) {
        let Some(lane) = self.lanes.get_mut(room) else {
            return;
        };
        lane.held = lane.held.saturating_sub(1);
        if lane.held == 0 {
            if lane.ready.is_empty() {
                self.lanes.remove(room);
            } else {
                self.available.push_back(room.clone());
            }
        }
    }

    /// Up to `max` ready messages, whole rooms first: each room taken is held until
    /// every message handed out of it is settled.
    fn take(&mut self, max: usize) -> Vec<(u64, Item)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(room) = self.available.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&room) else {
                continue;
            };
            let n = lane.ready.len().min(max - out.len());
            lane.held += n;
            for mut item in lane.ready.drain(..n) {
                item.attempts += 1;
                out.push((self.next_tag, item));
                self.next_tag += 1;
            }
        }
        out
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((at, tag))) = self.delayed.peek().copied() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if let Some(item) = self.delayed_items.remove(&tag) {
                self.put_back(item);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, _))| *at)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn publish(&self, room: &RoomId, payload: Vec<u8>) -> Result<(), QueueError> {
        {
            let mut st = self.inner.lock();
            if st.depth >= self.inner.opts.memory_capacity {
                return Err(QueueError::Unavailable(format!(
                    "in-memory queue is full ({} messages); workers are behind",
                    st.depth
                )));
            }
            st.push_new(room.clone(), payload);
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
        let st = self.inner.lock();
        Ok(st.dead.iter().take(max).map(|d| d.letter.clone()).collect())
    }

    async fn backlog(&self) -> Result<Option<u64>, QueueError> {
        Ok(Some(self.depth() as u64))
    }

    async fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<usize, QueueError> {
        let replayed = {
            let mut st = self.inner.lock();
            let (chosen, kept): (VecDeque<DeadItem>, VecDeque<DeadItem>) =
                std::mem::take(&mut st.dead)
                    .into_iter()
                    .partition(|d| filter.matches(&d.letter.payload));
            st.dead = kept;
            let n = chosen.len();
            for d in chosen {
                st.push_new(d.room, d.letter.payload);
            }
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
                if !st.available.is_empty() {
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
        if st.available.is_empty() || max == 0 {
            return Vec::new();
        }
        self.take_ready(&mut st, max)
    }
}

impl MemoryConsumer {
    fn take_ready(&self, st: &mut State, max: usize) -> Vec<Delivery> {
        let settle: Arc<dyn Settle> = self.inner.clone();
        let taken = st.take(max);
        let mut out = Vec::with_capacity(taken.len());
        for (tag, item) in taken {
            out.push(Delivery::new(
                item.payload.clone(),
                item.attempts,
                Box::new(tag),
                settle.clone(),
            ));
            st.in_flight.insert(tag, item);
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
        {
            let mut st = self.lock();
            for t in tokens {
                if let Some(item) = st.in_flight.remove(&tag_of(t)) {
                    st.depth -= 1;
                    st.release(&item.room);
                }
            }
        }
        // A room whose last held message was acked may be ready for another consumer.
        self.wake.notify_waiters();
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
                self.push_dead(&mut st, item, reason);
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
        {
            let mut st = self.lock();
            if let Some(item) = st.in_flight.remove(&tag_of(token)) {
                self.push_dead(&mut st, item, reason);
            }
        }
        self.wake.notify_waiters();
        Ok(())
    }

    fn abandon(&self, token: Token) {
        {
            let mut st = self.lock();
            if let Some(item) = st.in_flight.remove(&tag_of(token)) {
                st.put_back(item);
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

    fn ids(batch: &[Delivery]) -> Vec<String> {
        batch
            .iter()
            .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
            .collect()
    }

    async fn publish_to(q: &MemoryQueue, room: &str, payload: &str) {
        let room = RoomId::parse(room).unwrap();
        q.publish(&room, payload.as_bytes().to_vec()).await.unwrap();
    }

    #[tokio::test]
    async fn rooms_are_parallel_and_each_room_serial() {
        let q = MemoryQueue::new(QueueOptions::default());
        for (room, m) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
            publish_to(&q, room, m).await;
        }
        let mut c1 = q.consumer().await.unwrap();
        let mut c2 = q.consumer().await.unwrap();
        let held = c1.receive(2).await.unwrap();
        assert_eq!(ids(&held), ["a1", "a2"], "a room is taken whole");
        let other = c2.receive(10).await.unwrap();
        assert_eq!(ids(&other), ["b1"]);
        publish_to(&q, "a", "a3").await;
        assert!(c2.try_receive(10).is_empty(), "room a is held by c1");
        let mut held = held.into_iter();
        held.next().unwrap().ack().await.unwrap();
        assert!(c2.try_receive(10).is_empty(), "a2 still holds room a");
        held.next().unwrap().ack().await.unwrap();
        assert_eq!(
            ids(&c2.try_receive(10)),
            ["a3"],
            "released once all settled"
        );
        Delivery::ack_all(other).await.unwrap();
    }

    #[tokio::test]
    async fn handed_back_messages_keep_their_order() {
        let q = MemoryQueue::new(QueueOptions::default());
        for m in ["r1", "r2", "r3"] {
            publish_to(&q, "r", m).await;
        }
        let mut c = q.consumer().await.unwrap();
        let batch = c.receive(10).await.unwrap();
        // A worker that died: its deliveries are dropped in any order.
        for d in batch.into_iter().rev() {
            drop(d);
        }
        let again = c.receive(10).await.unwrap();
        assert_eq!(ids(&again), ["r1", "r2", "r3"]);
        assert!(again.iter().all(|d| d.attempt == 2));
    }

    #[tokio::test]
    async fn a_retry_holds_its_room_until_it_is_delivered_again() {
        let q = MemoryQueue::new(QueueOptions::default());
        for m in ["x1", "x2"] {
            publish_to(&q, "x", m).await;
        }
        let mut c = q.consumer().await.unwrap();
        let first = c.receive(1).await.unwrap().pop().unwrap();
        first
            .retry(Duration::from_millis(200), "test")
            .await
            .unwrap();
        assert!(c.try_receive(10).is_empty(), "x2 waits behind x1's retry");
        let again = c.receive(10).await.unwrap();
        assert_eq!(ids(&again), ["x1", "x2"]);
        assert_eq!(again[0].attempt, 2);
        Delivery::ack_all(again).await.unwrap();
        assert_eq!(q.depth(), 0);
        assert!(
            q.inner.lock().lanes.is_empty(),
            "settled rooms leave no state"
        );
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
