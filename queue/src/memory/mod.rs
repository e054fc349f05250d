//! The embedded queue: in process, scheduled by room lanes ([`super::lanes`]), either
//! volatile (`QUEUE_URL=memory`) or durable (`QUEUE_URL=sqlite://PATH`, every message
//! kept in a [`Journal`] from its publish until it is settled). It is also the reference
//! implementation the contract tests hold every other backend to.

use super::journal::{Journal, Row};
use super::lanes::{DeadItem, Item, State};
use super::{
    Admin, Consume, Consumer, DeadLetter, DeadLetterFilter, Delivery, DeliveryBus, Failed,
    FeedEvent, Frame, Publish, QueueError, QueueOptions, RoomSet, Settle, Subscription, Token,
};
use async_trait::async_trait;
use shared::ids::{GatewayId, RoomId};
use shared::message::{MessageKey, StoredMessage};
use shared::sync::lock;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// How often the owner of a durable queue looks for replays other processes asked for.
const REPLAY_POLL: Duration = Duration::from_secs(1);

/// An in-process broker with the same settlement rules as the real ones.
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

struct Inner {
    opts: QueueOptions,
    state: Mutex<State>,
    wake: Notify,
    subscribers: Mutex<Vec<Subscriber>>,
    /// The durable queue's file; `None` for the volatile one.
    journal: Option<Journal>,
}

struct Subscriber {
    rooms: Arc<Mutex<HashSet<RoomId>>>,
    tx: mpsc::Sender<FeedEvent>,
}

impl MemoryQueue {
    /// The volatile queue: whatever it holds is lost with the process.
    pub fn new(opts: QueueOptions) -> Self {
        Self::with_journal(opts, None)
    }

    fn with_journal(opts: QueueOptions, journal: Option<Journal>) -> Self {
        Self {
            inner: Arc::new(Inner {
                opts,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                subscribers: Mutex::new(Vec::new()),
                journal,
            }),
        }
    }

    /// The durable queue in the SQLite file at `path`: what it still holds from before
    /// (a crash, a stop) is delivered again first, in publish order. When another process
    /// owns the file (a running gateway), this handle only serves the dead-letter
    /// commands.
    pub async fn open_durable(
        path: &Path,
        sync_full: bool,
        opts: QueueOptions,
    ) -> Result<Self, QueueError> {
        let journal = Journal::open(path, sync_full).await?;
        let owner = journal.is_owner();
        let rows = if owner {
            journal.load().await?
        } else {
            Vec::new()
        };
        let queue = Self::with_journal(opts, Some(journal));
        {
            let mut st = queue.inner.lock();
            let now_ms = shared::Timestamp::now().as_millis();
            let now = Instant::now();
            for row in rows {
                let wait = u64::try_from(row.available_at - now_ms).unwrap_or(0);
                let due = (wait > 0).then(|| now + Duration::from_millis(wait));
                let item = Item {
                    room: row.room,
                    order: row.id,
                    payload: row.payload,
                    key: None,
                    attempts: row.attempts,
                };
                st.restore(item, due);
            }
            if st.depth > 0 {
                tracing::info!(messages = st.depth, path = %path.display(), "delivering again what the queue file still holds");
            }
        }
        if owner {
            tokio::spawn(serve_replay_requests(Arc::downgrade(&queue.inner)));
        }
        Ok(queue)
    }

    /// Messages waiting or in flight (the backlog an autoscaler would read).
    pub fn depth(&self) -> usize {
        self.inner.lock().depth
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn full(&self, depth: usize) -> QueueError {
        let kind = if self.journal.is_some() {
            "queue"
        } else {
            "in-memory queue"
        };
        QueueError::Unavailable(format!(
            "{kind} is full ({depth} messages, MEMORY_QUEUE_CAPACITY); workers are behind"
        ))
    }

    /// The owner's journal, or why there is none.
    fn owner(&self) -> Option<&Journal> {
        self.journal.as_ref().filter(|j| j.is_owner())
    }

    fn push_dead(&self, st: &mut State, item: Item, reason: &str) {
        st.release(&item.room);
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
                key: item.key,
                attempts: item.attempts,
                reason: reason.to_owned(),
            },
        });
    }

    /// Moves the selected dead letters of the journal back onto the queue.
    async fn unbury(
        &self,
        journal: &Journal,
        filter: Option<&DeadLetterFilter>,
    ) -> Result<usize, QueueError> {
        let dead = journal.dead_to_replay(filter).await?;
        if dead.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(i64, Row)> = {
            let mut st = self.lock();
            dead.into_iter()
                .map(|(dead_id, room, payload)| {
                    let id = st.next_order();
                    (dead_id, Row { id, room, payload })
                })
                .collect()
        };
        journal.unbury(rows.clone()).await?;
        let n = rows.len();
        {
            let mut st = self.lock();
            for (_, row) in rows {
                fresh(&mut st, row.id, row.room, row.payload, None);
            }
        }
        self.wake.notify_waiters();
        Ok(n)
    }
}

/// Queues a replayed dead letter as a fresh message: counted, every attempt ahead of it.
fn fresh(st: &mut State, order: u64, room: RoomId, payload: Vec<u8>, key: Option<MessageKey>) {
    st.depth += 1;
    st.insert(Item {
        room,
        order,
        payload,
        key,
        attempts: 0,
    });
}

/// Replays dead letters that `worker dlq replay` asked for from another process.
async fn serve_replay_requests(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(REPLAY_POLL).await;
        let Some(inner) = inner.upgrade() else { return };
        let Some(journal) = inner.owner() else { return };
        match inner.unbury(journal, None).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(replayed = n, "replayed dead letters as asked"),
            Err(e) => {
                tracing::warn!(error = %e, "replaying requested dead letters failed; retrying")
            }
        }
    }
}

#[async_trait]
impl Publish for MemoryQueue {
    async fn publish(&self, key: &MessageKey, payload: Vec<u8>) -> Result<(), QueueError> {
        let inner = &self.inner;
        let room = &key.room;
        let reserved = inner.lock().reserve(inner.opts.memory_capacity);
        let order = reserved.map_err(|depth| inner.full(depth))?;
        if let Some(journal) = &inner.journal {
            // Acked only once the row is committed.
            if let Err(e) = journal.append(Row::new(order, room, &payload)).await {
                inner.lock().depth -= 1;
                return Err(e);
            }
        }
        inner.lock().insert(Item {
            room: room.clone(),
            order,
            payload,
            key: Some(key.clone()),
            attempts: 0,
        });
        inner.wake.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Consume for MemoryQueue {
    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(MemoryConsumer {
            inner: self.inner.clone(),
        }))
    }
}

#[async_trait]
impl DeliveryBus for MemoryQueue {
    async fn fan_out(&self, messages: &[Arc<StoredMessage>]) -> Result<(), QueueError> {
        let targets: Vec<(Arc<Mutex<HashSet<RoomId>>>, mpsc::Sender<FeedEvent>)> = {
            let mut subs = lock(&self.inner.subscribers);
            subs.retain(|s| !s.tx.is_closed());
            subs.iter()
                .map(|s| (s.rooms.clone(), s.tx.clone()))
                .collect()
        };
        // Serialized once, whatever the number of gateways and members.
        let frames: Vec<Frame> = messages.iter().map(|m| Frame::of(m)).collect();
        for (rooms, tx) in targets {
            for f in &frames {
                let bound = lock(&rooms).contains(&f.room);
                // A closed receiver is a gateway that went away: nothing is owed to it.
                if bound && tx.send(FeedEvent::Message(f.clone())).await.is_err() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// To every subscription, bound to the room or not: they are all in this process,
    /// and one that is not bound drops a cached entry it would otherwise keep to its TTL.
    async fn announce(&self, room: &RoomId) -> Result<(), QueueError> {
        let targets: Vec<mpsc::Sender<FeedEvent>> = {
            let mut subs = lock(&self.inner.subscribers);
            subs.retain(|s| !s.tx.is_closed());
            subs.iter().map(|s| s.tx.clone()).collect()
        };
        for tx in targets {
            // A closed receiver is a gateway that went away: nothing is owed to it.
            let _ = tx.send(FeedEvent::RoomChanged(room.clone())).await;
        }
        Ok(())
    }

    async fn subscribe(&self, _gateway: &GatewayId) -> Result<Subscription, QueueError> {
        let (tx, rx) = mpsc::channel(self.inner.opts.delivery_buffer.max(1));
        let rooms = Arc::new(Mutex::new(HashSet::new()));
        lock(&self.inner.subscribers).push(Subscriber {
            rooms: rooms.clone(),
            tx,
        });
        Ok(Subscription {
            rooms: Box::new(RoomSet(rooms)),
            events: rx,
        })
    }
}

#[async_trait]
impl Admin for MemoryQueue {
    async fn ping(&self) -> Result<(), QueueError> {
        match &self.inner.journal {
            Some(j) => j.ping().await,
            None => Ok(()),
        }
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        if let Some(j) = &self.inner.journal {
            return j.dead_letters(max).await;
        }
        let st = self.inner.lock();
        Ok(st.dead.iter().take(max).map(|d| d.letter.clone()).collect())
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        Ok(self.depth() as u64)
    }

    async fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<usize, QueueError> {
        match &self.inner.journal {
            Some(j) if j.is_owner() => return self.inner.unbury(j, Some(filter)).await,
            // The running gateway owns the file: it replays them within a second.
            Some(j) => {
                let chosen = j.dead_to_replay(Some(filter)).await?;
                let ids: Vec<i64> = chosen.iter().map(|(id, _, _)| *id).collect();
                j.request_replay(&ids).await?;
                return Ok(ids.len());
            }
            None => {}
        }
        let replayed = {
            let mut st = self.inner.lock();
            let (chosen, kept): (Vec<DeadItem>, Vec<DeadItem>) = std::mem::take(&mut st.dead)
                .into_iter()
                .partition(|d| filter.matches(d.letter.key.as_ref(), &d.letter.payload));
            st.dead = kept.into();
            let replayed = chosen.len();
            for d in chosen {
                let order = st.next_order();
                fresh(&mut st, order, d.room, d.letter.payload, d.letter.key);
            }
            replayed
        };
        self.inner.wake.notify_waiters();
        Ok(replayed)
    }

    async fn purge_dead_letters(&self) -> Result<usize, QueueError> {
        if let Some(j) = &self.inner.journal {
            return j.purge().await;
        }
        let mut st = self.inner.lock();
        let n = st.dead.len();
        st.dead.clear();
        Ok(n)
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
                Token::Memory(tag),
                settle.clone(),
            ));
            st.in_flight.insert(tag, item);
        }
        out
    }
}

#[async_trait]
impl Settle for Inner {
    fn max_attempts(&self) -> u32 {
        self.opts.max_attempts
    }

    async fn ack(&self, tokens: Vec<Token>) -> Result<(), QueueError> {
        let mut settled = Vec::with_capacity(tokens.len());
        {
            let mut st = self.lock();
            for t in tokens {
                if let Some(item) = st.in_flight.remove(&t.into_memory()?) {
                    st.release(&item.room);
                    settled.push(item.order);
                }
            }
        }
        if let Some(j) = &self.journal {
            j.remove(settled);
        }
        // A room whose last held message was acked may be ready for another consumer.
        self.wake.notify_waiters();
        Ok(())
    }

    async fn retry(&self, token: Token, _: Failed<'_>, delay: Duration) -> Result<(), QueueError> {
        let tag = token.into_memory()?;
        let Some(item) = self.lock().in_flight.remove(&tag) else {
            return Ok(());
        };
        if let Some(j) = &self.journal {
            let at = shared::Timestamp::now().as_millis() + delay.as_millis() as i64;
            if let Err(e) = j.retry(item.order, item.attempts, at).await {
                self.lock().put_back(item);
                self.wake.notify_waiters();
                return Err(e);
            }
        }
        self.lock().delay(tag, item, Instant::now() + delay);
        self.wake.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, token: Token, f: Failed<'_>) -> Result<(), QueueError> {
        let item = self.lock().in_flight.remove(&token.into_memory()?);
        match item {
            Some(item) => self.bury(item, f.reason).await,
            None => Ok(()),
        }
    }

    fn abandon(&self, token: Token) {
        let Ok(tag) = token.into_memory() else { return };
        {
            let mut st = self.lock();
            if let Some(item) = st.in_flight.remove(&tag) {
                st.put_back(item);
            }
        }
        self.wake.notify_waiters();
    }
}

impl Inner {
    /// Moves a held message to the dead letters (in the journal when durable); on a
    /// journal failure it goes back to its place instead.
    async fn bury(&self, item: Item, reason: &str) -> Result<(), QueueError> {
        if let Some(j) = &self.journal {
            if let Err(e) = j
                .bury(
                    Row::new(item.order, &item.room, &item.payload),
                    item.attempts,
                    reason,
                )
                .await
            {
                self.lock().put_back(item);
                self.wake.notify_waiters();
                return Err(e);
            }
            self.lock().release(&item.room);
        } else {
            let mut st = self.lock();
            self.push_dead(&mut st, item, reason);
        }
        self.wake.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
