//! How ingest consumers share the partitions: each room is processed by one consumer at a
//! time, and the rooms spread over every consumer.
//!
//! Every partition is a single-active-consumer queue and every consumer subscribes to
//! all of them, so the broker delivers each partition to exactly one consumer at a time
//! and always to some live one: when a consumer dies, the next in line takes over after
//! its unsettled messages went back, ahead of later ones. Balance is left to the
//! consumers: one that is active on more than its fair share (ceil(partitions / live
//! consumers), counted through the consumer count of `{prefix}.ingest.consumers`) closes
//! the subscription of an excess partition it holds nothing of and subscribes again,
//! which puts it at the back of that partition's line.

use super::connection::{Link, Session, rpc};
use super::subscribed::Subscribed;
use crate::QueueError;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use shared::sync::lock;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info};

/// How often a consumer checks its share.
const EVERY: Duration = Duration::from_secs(1);
/// A partition that delivered within this long counts as one this consumer is active on.
const ACTIVE_WINDOW: Duration = Duration::from_secs(3);

/// One consumer's subscriptions to the partitions.
pub(super) struct Partitions {
    link: Arc<Link>,
    prefetch: u16,
    /// One per partition, `None` until (re)subscribed.
    pub(super) subs: Vec<Option<Partition>>,
    /// Its subscription to the consumers queue, which makes it count as live.
    presence: Option<Subscribed>,
    /// Notified whenever a delivery arrives on any partition.
    pub(super) wake: Arc<Notify>,
    next: Instant,
}

/// This consumer's subscription to one partition.
pub(super) struct Partition {
    pub(super) queue: Arc<str>,
    pub(super) sub: Subscribed,
    /// Deliveries handed out and not yet settled: a partition is handed over only when
    /// there are none, so a later message of a room can never overtake one still in
    /// processing.
    pub(super) outstanding: Arc<Outstanding>,
    /// When it last delivered to this consumer.
    pub(super) last_delivery: Option<Instant>,
    /// Its consumer ended (channel closed, cancelled by the broker).
    pub(super) ended: bool,
}

impl Partition {
    fn active(&self, now: Instant) -> bool {
        self.last_delivery
            .is_some_and(|t| now.duration_since(t) < ACTIVE_WINDOW)
    }

    fn settled(&self) -> bool {
        self.outstanding.is_empty()
    }
}

/// The delivery tags of one subscription (one channel) handed out and not settled yet.
#[derive(Default)]
pub(super) struct Outstanding(std::sync::Mutex<BTreeSet<u64>>);

impl Outstanding {
    pub(super) fn hold(&self, tag: u64) {
        lock(&self.0).insert(tag);
    }

    pub(super) fn release(&self, tag: u64) {
        lock(&self.0).remove(&tag);
    }

    pub(super) fn is_empty(&self) -> bool {
        lock(&self.0).is_empty()
    }

    /// How many are at or below `tag`: what one ack with `multiple` up to it settles.
    pub(super) fn up_to(&self, tag: u64) -> usize {
        lock(&self.0).range(..=tag).count()
    }
}

impl Partitions {
    pub(super) fn new(link: Arc<Link>, prefetch: u16) -> Self {
        let subs = link.names.ingest.iter().map(|_| None).collect();
        Self {
            link,
            prefetch,
            subs,
            presence: None,
            wake: Arc::new(Notify::new()),
            next: Instant::now(),
        }
    }

    /// When the share is next checked.
    pub(super) fn due(&self) -> Instant {
        self.next
    }

    /// Checks at the next `balance`, because something changed.
    pub(super) fn check_soon(&mut self) {
        self.next = Instant::now();
    }

    /// Subscribes where it is not, and hands over partitions beyond its share.
    pub(super) async fn balance(&mut self) -> Result<(), QueueError> {
        self.next = Instant::now() + EVERY;
        let session = self.link.session()?;
        for n in 0..self.subs.len() {
            let usable = self.subs[n]
                .as_ref()
                .is_some_and(|p| !p.ended && p.sub.usable(&self.link));
            if !usable {
                self.subs[n] = None;
                self.subs[n] = Some(self.subscribe(&session, n).await?);
            }
        }
        let consumers = self.count_consumers(&session).await?;
        let share = self.subs.len().div_ceil(consumers.max(1));
        self.hand_over(&session, share).await
    }

    async fn subscribe(&self, session: &Session, n: usize) -> Result<Partition, QueueError> {
        let queue: Arc<str> = self.link.names.ingest[n].as_str().into();
        let ch = session.channel().await?;
        let wake = Some(self.wake.clone());
        let sub = Subscribed::start_with(session, ch, &queue, self.prefetch, wake).await?;
        debug!(%queue, "subscribed to an ingest partition");
        Ok(Partition {
            queue,
            sub,
            outstanding: Arc::new(Outstanding::default()),
            last_delivery: None,
            ended: false,
        })
    }

    async fn count_consumers(&mut self, session: &Session) -> Result<usize, QueueError> {
        let queue = self.link.names.consumers.as_str();
        if !self.presence.as_ref().is_some_and(|p| p.usable(&self.link)) {
            self.presence = None;
            let ch = session.channel().await?;
            // Not durable: every consumer declares it again after a broker restart.
            let declare = ch.queue_declare(
                queue.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            );
            rpc("declaring the consumers queue", declare).await?;
            self.presence = Some(Subscribed::start(session, ch, queue, 1).await?);
        }
        let ch = session.admin().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declare = ch.queue_declare(queue.into(), passive, FieldTable::default());
        let q = rpc("counting the ingest consumers", declare).await?;
        Ok(q.consumer_count() as usize)
    }

    /// While active on more than `share` partitions, re-subscribes to a settled one so
    /// the next consumer in its line becomes active there. Closing the channel first puts
    /// back what was prefetched, ahead of the partition's later messages.
    async fn hand_over(&mut self, session: &Session, share: usize) -> Result<(), QueueError> {
        let now = Instant::now();
        let active: Vec<usize> = (0..self.subs.len())
            .filter(|&n| self.subs[n].as_ref().is_some_and(|p| p.active(now)))
            .collect();
        let mut excess = active.len().saturating_sub(share);
        for n in active {
            if excess == 0 {
                break;
            }
            let Some(p) = self.subs[n].take_if(|p| p.settled()) else {
                continue;
            };
            info!(queue = %p.queue, share, "handing an ingest partition over to balance the consumers");
            p.sub.close("handing the partition over").await;
            self.subs[n] = Some(self.subscribe(session, n).await?);
            excess -= 1;
        }
        Ok(())
    }
}
