//! A gateway's feed on RabbitMQ: its own exclusive queue, bound to the packed batches
//! every gateway gets (filtered here to the rooms it has members in) and to the rooms'
//! own routes (room changes, and messages from workers of older versions), consumed,
//! and re-created (bindings included) after a reconnection.

use super::connection::{Link, rpc};
use super::fanout::{BATCHES, routing_key};
use super::subscribed::Subscribed;
use crate::{Announcement, FeedEvent, QueueError, RoomBinding, Subscription, frames};
use async_trait::async_trait;
use lapin::Channel;
use lapin::options::{BasicAckOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shared::ids::{GatewayId, RoomId};
use shared::shutdown::backoff;
use shared::sync::lock;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tracing::{info, warn};

/// How often an idle feed checks its channel (lapin reports most losses sooner).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Re-opening a feed backs off to at most this, so it resumes soon after the broker.
const REOPEN_CAP: Duration = Duration::from_secs(1);
/// Deliveries acked at once (ack `multiple`), far below the prefetch so the broker never
/// waits on an ack; what is left is acked within `ACK_FLUSH`. Acking each time the feed
/// ran dry cost the broker one ack per worker batch and gateway.
const ACK_EVERY: usize = 64;
const ACK_FLUSH: Duration = Duration::from_millis(50);

pub(super) async fn subscribe(
    link: Arc<Link>,
    gateway: &GatewayId,
    buffer: usize,
) -> Result<Subscription, QueueError> {
    let buffer = buffer.max(1);
    let feed = Arc::new(Feed {
        queue: link.names.gateway(gateway),
        link,
        prefetch: u16::try_from(buffer).unwrap_or(u16::MAX),
        state: Mutex::new(FeedState::default()),
        bound: std::sync::Mutex::new(HashSet::new()),
    });
    let live = feed.open().await?;
    let (tx, rx) = mpsc::channel(buffer);
    tokio::spawn(run(feed.clone(), live, tx));
    Ok(Subscription {
        rooms: Box::new(Binding { feed }),
        events: rx,
    })
}

/// One gateway's delivery queue.
struct Feed {
    link: Arc<Link>,
    queue: String,
    prefetch: u16,
    /// Held across broker calls so binds and re-opens never interleave.
    state: Mutex<FeedState>,
    /// The rooms whose messages are handed on: those bound, read for every message.
    bound: std::sync::Mutex<HashSet<RoomId>>,
}

#[derive(Default)]
struct FeedState {
    rooms: BTreeSet<RoomId>,
    channel: Option<Channel>,
}

impl FeedState {
    fn live_channel(&self) -> Option<Channel> {
        self.channel.clone().filter(|c| c.status().connected())
    }
}

impl Feed {
    /// Declares the queue on the current connection, binds every room, starts consuming.
    async fn open(&self) -> Result<Subscribed, QueueError> {
        let mut st = self.state.lock().await;
        let session = self.link.session()?;
        let ch = session.channel().await?;
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        rpc(
            "declaring the gateway's delivery queue",
            ch.queue_declare(self.queue.as_str().into(), options, FieldTable::default()),
        )
        .await?;
        self.bind_key(&ch, BATCHES).await?;
        for room in &st.rooms {
            self.bind_on(&ch, room).await?;
        }
        let sub = Subscribed::start(&session, ch.clone(), &self.queue, self.prefetch).await?;
        st.channel = Some(ch);
        Ok(sub)
    }

    async fn bind_on(&self, ch: &Channel, room: &RoomId) -> Result<(), QueueError> {
        self.bind_key(ch, &routing_key(room)).await
    }

    async fn bind_key(&self, ch: &Channel, key: &str) -> Result<(), QueueError> {
        rpc(
            "binding a route to the gateway's delivery queue",
            ch.queue_bind(
                self.queue.as_str().into(),
                self.link.names.delivery.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    }

    /// Closing the channel cancels the consumer, which deletes the auto-delete queue.
    async fn close(&self) {
        if let Some(ch) = self.state.lock().await.channel.take() {
            let _ = ch.close(200, "delivery feed closed".into()).await;
        }
    }
}

/// Forwards deliveries until the receiver goes away, re-opening the feed (and reporting
/// the gap with `Interrupted`) whenever the broker connection drops.
async fn run(feed: Arc<Feed>, mut live: Subscribed, tx: mpsc::Sender<FeedEvent>) {
    loop {
        match forward(&feed, &mut live, &tx).await {
            None => break,
            Some(reason) => {
                warn!(queue = %feed.queue, %reason, "the delivery feed was interrupted; re-opening it")
            }
        }
        live = match reopen(&feed, &tx).await {
            Some(l) => l,
            None => break,
        };
        info!(queue = %feed.queue, "the delivery feed resumed");
        if tx.send(FeedEvent::Interrupted).await.is_err() {
            break;
        }
    }
    drop(live);
    feed.close().await;
}

/// Returns `None` when the receiver is gone, or why the consumer ended.
async fn forward(
    feed: &Feed,
    live: &mut Subscribed,
    tx: &mpsc::Sender<FeedEvent>,
) -> Option<String> {
    let mut check = tokio::time::interval(CHECK_EVERY);
    let mut changes = feed.link.changes();
    let mut unacked = 0usize;
    // The last delivery handed over and not acked yet: acking it acks all before it.
    let mut last: Option<lapin::Acker> = None;
    let mut flush = tokio::time::interval(ACK_FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return None,
            _ = flush.tick(), if last.is_some() => {
                unacked = 0;
                if let Some(e) = ack_through(last.take()).await {
                    return Some(e);
                }
                continue;
            }
            _ = check.tick() => {
                live.redrain();
                if !live.usable(&feed.link) {
                    return Some("its channel closed".into());
                }
                continue;
            }
            _ = changes.changed() => {
                if !live.usable(&feed.link) {
                    return Some("the connection dropped".into());
                }
                continue;
            }
            d = live.rx.recv() => d,
        };
        let d = match next {
            Some(Ok(Some(d))) => d,
            Some(Ok(None)) => return Some("cancelled by the broker".into()),
            Some(Err(e)) => return Some(e.to_string()),
            None => return Some("closed".into()),
        };
        for event in decode(feed, &d.data) {
            if tx.send(event).await.is_err() {
                return None;
            }
        }
        // Acking only after the hand-over keeps the broker's prefetch as backpressure.
        unacked += 1;
        last = Some(d.acker);
        if unacked >= ACK_EVERY {
            unacked = 0;
            if let Some(e) = ack_through(last.take()).await {
                return Some(e);
            }
        }
    }
}

/// Acks `last` and every delivery before it; the failure, if any.
async fn ack_through(last: Option<lapin::Acker>) -> Option<String> {
    let everything_so_far = BasicAckOptions { multiple: true };
    match last?.ack(everything_so_far).await {
        Ok(_) => None,
        Err(e) => Some(format!("ack failed: {e}")),
    }
}

/// The bound rooms' messages of a packed batch, or a room change (see
/// [`Announcement`]); nothing for anything else.
fn decode(feed: &Feed, data: &[u8]) -> Vec<FeedEvent> {
    match frames::unpack(data) {
        Ok(mut list) => {
            let bound = lock(&feed.bound);
            list.retain(|f| bound.contains(&f.room));
            list.into_iter().map(FeedEvent::Message).collect()
        }
        Err(e) => match Announcement::decode(data) {
            Some(room) => vec![FeedEvent::RoomChanged(room)],
            None => {
                warn!(queue = %feed.queue, error = %e, "dropping an undecodable delivery");
                Vec::new()
            }
        },
    }
}

async fn reopen(feed: &Feed, tx: &mpsc::Sender<FeedEvent>) -> Option<Subscribed> {
    let mut failures = 0u32;
    loop {
        match feed.open().await {
            Ok(live) => return Some(live),
            // Expected while the broker is away; say so now and then, not every second.
            Err(e) if failures > 0 && failures.is_multiple_of(10) => {
                warn!(queue = %feed.queue, error = %e, attempt = failures + 1, "re-opening the delivery feed failed; retrying")
            }
            Err(_) => {}
        }
        let delay = backoff(failures, Duration::from_millis(100), REOPEN_CAP);
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = tx.closed() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

struct Binding {
    feed: Arc<Feed>,
}

#[async_trait]
impl RoomBinding for Binding {
    async fn bind(&self, room: &RoomId) -> Result<(), QueueError> {
        let mut st = self.feed.state.lock().await;
        if st.rooms.contains(room) {
            return Ok(());
        }
        let ch = st
            .live_channel()
            .ok_or_else(|| QueueError::Unavailable("the delivery feed is reconnecting".into()))?;
        self.feed.bind_on(&ch, room).await?;
        st.rooms.insert(room.clone());
        lock(&self.feed.bound).insert(room.clone());
        Ok(())
    }

    async fn unbind(&self, room: &RoomId) -> Result<(), QueueError> {
        let mut st = self.feed.state.lock().await;
        if !st.rooms.remove(room) {
            return Ok(());
        }
        lock(&self.feed.bound).remove(room);
        // While disconnected there is nothing to undo: the re-opened queue binds only
        // the rooms still in the set.
        let Some(ch) = st.live_channel() else {
            return Ok(());
        };
        rpc(
            "unbinding a room",
            ch.queue_unbind(
                self.feed.queue.as_str().into(),
                self.feed.link.names.delivery.as_str().into(),
                routing_key(room).into(),
                FieldTable::default(),
            ),
        )
        .await
    }
}
