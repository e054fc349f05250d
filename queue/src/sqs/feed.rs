//! The delivery role's receiving end: each gateway instance has its own standard queue
//! `PREFIX--gw-<id>`, long-polls it, keeps the messages of the rooms it bound and deletes
//! what it read. A heartbeat tag on the queue tells the sweepers it is alive.
//!
//! Whenever deliveries may have been missed the feed says `Interrupted`, so the hub
//! resyncs every member from the store: after receives failed for a while, when its
//! queue had to be re-created (a sweeper took it for dead), when it stalled longer than
//! the queue keeps messages, and once a minute after start (workers on AWS may list a new
//! queue late; the first window is covered by waiting before serving).

use super::codec;
use super::connection::{
    CALL_TIMEOUT, Failure, TAG_HEARTBEAT, TAG_PREFIX, TAG_ROLE, call, secs, unix_now,
};
use super::fanout::{DISCOVER_EVERY, unpack};
use super::topology::delete_queue;
use super::{Shared, batch};
use crate::{Announcement, FeedEvent, QueueError, RoomSet, Subscription};
use aws_sdk_sqs::types::QueueAttributeName;
use shared::ids::{GatewayId, RoomId};
use shared::shutdown::backoff;
use shared::sync::lock;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// SQS's longest long poll: an idle gateway costs one receive per 20 s.
const POLL: Duration = Duration::from_secs(20);
/// How long a delivery read but not yet deleted stays invisible. Short, because a long
/// poll cut by a network failure may still take messages on SQS's side; they come back
/// after this (the hub drops what it already has).
const VISIBILITY: Duration = Duration::from_secs(10);
/// How long a gateway queue keeps undelivered messages.
const RETENTION: Duration = Duration::from_secs(3600);
/// Re-opening after failures backs off to at most this.
const RETRY_CAP: Duration = Duration::from_secs(1);
/// The resync after start that covers a late listing of the new queue by workers.
const LATE_RESYNC: Duration = Duration::from_secs(60);

/// Creates this gateway's queue, waits until every worker's listing includes it, and
/// starts reading it.
pub(super) async fn subscribe(
    shared: Arc<Shared>,
    gateway: &GatewayId,
) -> Result<Subscription, QueueError> {
    let name = shared.names.gateway(gateway);
    let url = create(&shared, &name).await?;
    shared.directory.add_local(&name, &url);
    info!(queue = %name, "created this gateway's delivery queue; waiting for workers to list it");
    // Workers re-list gateway queues every DISCOVER_EVERY; a listing requested before
    // the queue existed is used for that long. Serving only after two periods means
    // every message stored after a client joins is sent here too.
    tokio::time::sleep(DISCOVER_EVERY * 2 + Duration::from_millis(500)).await;
    let rooms = Arc::new(Mutex::new(HashSet::new()));
    let (tx, rx) = mpsc::channel(shared.opts.delivery_buffer.max(1));
    let feed = Feed {
        shared,
        name,
        url,
        rooms: rooms.clone(),
        tx,
    };
    tokio::spawn(heartbeat(
        feed.shared.clone(),
        feed.url.clone(),
        feed.tx.clone(),
    ));
    tokio::spawn(late_resync(feed.tx.clone()));
    tokio::spawn(feed.run());
    Ok(Subscription {
        // Room interest is kept here: every gateway queue gets every room's messages.
        rooms: Box::new(RoomSet(rooms)),
        events: rx,
    })
}

/// Creates (or finds) a gateway queue, tagged with its role, prefix and a heartbeat.
/// Gateway queues are per instance, so they are created whatever `create` says.
async fn create(s: &Shared, name: &str) -> Result<String, QueueError> {
    let out = call(
        "creating the gateway's delivery queue",
        CALL_TIMEOUT,
        s.sqs
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                RETENTION.as_secs().to_string(),
            )
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                VISIBILITY.as_secs().to_string(),
            )
            .tags(TAG_ROLE, "gateway")
            .tags(TAG_PREFIX, &s.names.prefix)
            .tags(TAG_HEARTBEAT, unix_now().to_string())
            .send(),
    )
    .await?;
    out.queue_url()
        .map(str::to_owned)
        .ok_or_else(|| QueueError::Unavailable("SQS created a queue without a URL".into()))
}

struct Feed {
    shared: Arc<Shared>,
    name: String,
    url: String,
    rooms: Arc<Mutex<HashSet<RoomId>>>,
    tx: mpsc::Sender<FeedEvent>,
}

impl Feed {
    /// Reads until the subscription is dropped, then deletes the queue.
    async fn run(self) {
        let mut failures = 0u32;
        let mut missed = false;
        let mut last_poll = Instant::now();
        loop {
            if last_poll.elapsed() > RETENTION / 2 {
                // The hub held us up so long that messages may have expired unread.
                missed = true;
            }
            last_poll = Instant::now();
            // After a failure, a quick poll first: the gap is reported as soon as SQS
            // answers again, not at the end of a long poll.
            let wait = if missed { Duration::ZERO } else { POLL };
            let polled = tokio::select! {
                _ = self.tx.closed() => break,
                p = self.poll(wait) => p,
            };
            match polled {
                Ok(messages) => {
                    if failures > 0 {
                        info!(queue = %self.name, "the delivery feed resumed");
                    }
                    failures = 0;
                    if std::mem::take(&mut missed)
                        && self.tx.send(FeedEvent::Interrupted).await.is_err()
                    {
                        break;
                    }
                    if !self.forward(messages).await {
                        break;
                    }
                }
                Err(f) => {
                    missed = true;
                    if f.missing_queue {
                        warn!(queue = %self.name, "this gateway's delivery queue is gone (swept as dead?); re-creating it");
                        if let Err(e) = create(&self.shared, &self.name).await {
                            warn!(queue = %self.name, error = %e, "re-creating the delivery queue failed; retrying");
                        }
                    } else if failures.is_multiple_of(10) {
                        warn!(queue = %self.name, error = %f, attempt = failures + 1, "receiving deliveries failed; retrying");
                    }
                    let delay = backoff(failures, Duration::from_millis(100), RETRY_CAP);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = self.tx.closed() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.shared.directory.remove_local(&self.name);
        match delete_queue(&self.shared.sqs, &self.url).await {
            Ok(()) => info!(queue = %self.name, "deleted this gateway's delivery queue"),
            Err(e) => {
                debug!(queue = %self.name, error = %e, "deleting the delivery queue failed; the sweep will")
            }
        }
    }

    async fn poll(&self, wait: Duration) -> Result<Vec<aws_sdk_sqs::types::Message>, Failure> {
        let out = call(
            "receiving deliveries",
            wait + CALL_TIMEOUT,
            self.shared
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(secs(wait))
                .message_attribute_names("All")
                .send(),
        )
        .await?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Hands the bound rooms' messages to the hub, then deletes what was read. False
    /// when the subscription is gone.
    async fn forward(&self, messages: Vec<aws_sdk_sqs::types::Message>) -> bool {
        let mut receipts = Vec::with_capacity(messages.len());
        for m in &messages {
            let payload = codec::payload_of(m);
            match unpack(&payload) {
                Ok(list) => {
                    for frame in list {
                        let bound = lock(&self.rooms).contains(&frame.room);
                        if bound && self.tx.send(FeedEvent::Message(frame)).await.is_err() {
                            return false;
                        }
                    }
                }
                Err(e) => match Announcement::decode(&payload) {
                    Some(room) => {
                        if self.tx.send(FeedEvent::RoomChanged(room)).await.is_err() {
                            return false;
                        }
                    }
                    // Signals of the gateways' lane (`signals.rs`), not deliveries.
                    None if self.shared.signals.take(&payload) => {}
                    None => {
                        warn!(queue = %self.name, error = %e, "dropping an undecodable delivery")
                    }
                },
            }
            if let Some(r) = m.receipt_handle() {
                receipts.push(r.to_owned());
            }
        }
        if receipts.is_empty() {
            return true;
        }
        let deleted = batch::delete(&self.shared.sqs, &self.url, receipts).await;
        // Not deleted, they come again after VISIBILITY; the hub drops what it has.
        if let Err((_, e)) = deleted {
            debug!(queue = %self.name, error = %e, "deleting read deliveries failed");
        }
        true
    }
}

/// Refreshes the heartbeat tag every quarter of the gateway TTL while the feed lives.
async fn heartbeat(shared: Arc<Shared>, url: String, tx: mpsc::Sender<FeedEvent>) {
    let every = shared.settings.gateway_ttl / 4;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let tagged = call(
            "refreshing the gateway heartbeat",
            CALL_TIMEOUT,
            shared
                .sqs
                .tag_queue()
                .queue_url(&url)
                .tags(TAG_HEARTBEAT, unix_now().to_string())
                .send(),
        )
        .await;
        if let Err(e) = tagged {
            debug!(error = %e, "refreshing the gateway heartbeat failed");
        }
    }
}

/// One resync a minute after start, for workers that listed the new queue late.
async fn late_resync(tx: mpsc::Sender<FeedEvent>) {
    tokio::select! {
        _ = tx.closed() => {}
        _ = tokio::time::sleep(LATE_RESYNC) => {
            let _ = tx.send(FeedEvent::Interrupted).await;
        }
    }
}
