//! Consuming the ingest queue on RabbitMQ: batched consumers over the partitions they
//! own that survive reconnections, and settlement (ack, delayed retry through TTL'd retry
//! queues, dead letters), always confirming a republish before acking the original so no
//! message is ever lost.

use super::balance::{Outstanding, Partition, Partitions};
use super::connection::{Link, Outgoing, json_properties};
use super::publish::parts_of;
use super::{header_u32, key_headers, key_of};
use crate::{Consumer, Delivery, Failed, QueueError, QueueOptions, Settle, Token, envelope_key};
use async_trait::async_trait;
use lapin::Acker;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use shared::message::MessageKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Failed attempts so far, set on every republish to a retry or dead-letter queue.
pub(super) const ATTEMPTS: &str = "x-courier-attempts";
pub(super) const REASON: &str = "x-courier-reason";
/// Returns so far, set by quorum queues on redeliveries after a consumer died.
pub(super) const DELIVERY_COUNT: &str = "x-delivery-count";
/// Per partition: the trait does not pass the batch size; this covers batches up to 100
/// twice over.
const PREFETCH: u16 = 200;

/// The headers of a retry or dead letter: ours, and the key the original carried.
fn courier_headers(attempt: u32, reason: &str, key: Option<&MessageKey>) -> FieldTable {
    let mut h = FieldTable::default();
    h.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(attempt.into()));
    h.insert(REASON.into(), AMQPValue::LongString(reason.into()));
    if let Some(key) = key {
        key_headers(&mut h, key);
    }
    h
}

/// 1 + the failed attempts this message has had, counted by us across retries and by
/// the quorum queue across consumer crashes.
fn attempt_of(d: &lapin::message::Delivery) -> u32 {
    let headers = d.properties.headers().as_ref();
    let retried = header_u32(headers, ATTEMPTS).unwrap_or(0);
    // A classic queue (the fallback) only says "redelivered", not how often.
    let returned = header_u32(headers, DELIVERY_COUNT).unwrap_or(u32::from(d.redelivered));
    retried.saturating_add(returned).saturating_add(1)
}

/// A consumer of the ingest partitions (those the broker makes it active on), that
/// subscribes again on the current connection after a loss.
pub(super) struct AmqpConsumer {
    wait: Duration,
    settle: Arc<dyn Settle>,
    parts: Partitions,
    /// Which partition a batch starts with, so a busy one cannot starve the others.
    turn: usize,
}

impl AmqpConsumer {
    pub(super) async fn open(link: Arc<Link>, opts: &QueueOptions) -> Result<Self, QueueError> {
        let settle = Arc::new(Settler {
            link: link.clone(),
            max_attempts: opts.max_attempts,
            runtime: tokio::runtime::Handle::current(),
        });
        let mut consumer = Self {
            wait: opts.receive_wait,
            settle,
            parts: Partitions::new(link, PREFETCH),
            turn: 0,
        };
        consumer.parts.balance().await?;
        Ok(consumer)
    }

    /// What the partitions have buffered, up to `max`.
    fn drain(&mut self, max: usize) -> Vec<Delivery> {
        let mut out = Vec::new();
        let total = self.parts.subs.len();
        self.turn = self.turn.wrapping_add(1);
        let now = Instant::now();
        let mut ended = false;
        for k in 0..total {
            let Some(o) = self.parts.subs[(self.turn + k) % total].as_mut() else {
                continue;
            };
            if o.ended {
                continue;
            }
            o.sub.redrain();
            while out.len() < max {
                match o.sub.rx.try_recv() {
                    Ok(Ok(Some(d))) => {
                        o.last_delivery = Some(now);
                        out.extend(wrap(d, o, &self.settle));
                    }
                    Err(TryRecvError::Empty) => break,
                    // The consumer ended: the next balance subscribes again.
                    other => {
                        let reason = match other {
                            Ok(Err(e)) => e.to_string(),
                            _ => "cancelled or closed".into(),
                        };
                        warn!(queue = %o.queue, %reason, "an ingest partition's consumer ended");
                        o.ended = true;
                        ended = true;
                        break;
                    }
                }
            }
        }
        if ended {
            self.parts.check_soon();
        }
        out
    }
}

/// The deliveries of one broker message: itself, or each envelope of a packed one
/// ([`super::publish`]), all settled through one [`Whole`].
fn wrap(d: lapin::message::Delivery, o: &Partition, settle: &Arc<dyn Settle>) -> Vec<Delivery> {
    let attempt = attempt_of(&d);
    let headers = d.properties.headers().as_ref();
    let packed = parts_of(headers, &d.data).map(|p| p.into_iter().map(<[u8]>::to_vec).collect());
    // Parts of a packed message take their key from their envelope when it is needed.
    let key = if packed.is_some() {
        None
    } else {
        key_of(headers)
    };
    let parts: Vec<Vec<u8>> = packed.unwrap_or_else(|| vec![d.data]);
    o.outstanding.hold(d.delivery_tag);
    let whole = Arc::new(Whole {
        tag: d.delivery_tag,
        acker: d.acker,
        _channel: o.sub.channel.clone(),
        queue: o.queue.clone(),
        held: Held(o.outstanding.clone(), d.delivery_tag),
        open: AtomicUsize::new(parts.len()),
        back: AtomicBool::new(false),
    });
    parts
        .into_iter()
        .map(|payload| {
            let ticket = Ticket {
                key: key.clone(),
                whole: whole.clone(),
            };
            Delivery::new(payload, attempt, Token::Amqp(ticket), settle.clone())
        })
        .collect()
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + self.wait;
        loop {
            if Instant::now() >= self.parts.due() {
                self.parts.balance().await?;
            }
            let got = self.drain(max.max(1));
            if !got.is_empty() {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Ok(got);
            }
            let until = deadline.min(self.parts.due());
            let _ = tokio::time::timeout_at(until, self.parts.wake.notified()).await;
        }
    }

    fn try_receive(&mut self, max: usize) -> Vec<Delivery> {
        if max == 0 {
            return Vec::new();
        }
        self.drain(max)
    }
}

/// Keeps a delivery's tag outstanding on its subscription until it is settled or dropped.
struct Held(Arc<Outstanding>, u64);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// A delivery's handle ([`Token::Amqp`]): one envelope of a broker message.
pub struct Ticket {
    /// The key it travels under, passed on to its retries and dead letter; from the
    /// headers of a message of one, from the envelope of a packed one's part.
    key: Option<MessageKey>,
    whole: Arc<Whole>,
}

/// One broker message and what is left to settle of it. It keeps its channel open so a
/// dropped consumer does not take the unsettled deliveries with it.
struct Whole {
    /// Its delivery tag on its channel, for acking many at once.
    tag: u64,
    acker: Acker,
    _channel: Channel,
    /// The partition it came from, where its retries return.
    queue: Arc<str>,
    held: Held,
    /// Parts not settled yet: the message is acked when the last one is.
    open: AtomicUsize,
    /// A part was handed back: then the whole message goes back instead (the parts
    /// already stored are found stored when it returns).
    back: AtomicBool,
}

impl Ticket {
    /// Settles this part; the whole message once it was the last one open.
    fn done(self) -> Option<Arc<Whole>> {
        (self.whole.open.fetch_sub(1, Ordering::AcqRel) == 1).then_some(self.whole)
    }

    /// Hands this part back; the whole message once it was the last one open.
    fn back(self) -> Option<Arc<Whole>> {
        self.whole.back.store(true, Ordering::Release);
        self.done()
    }
}

struct Settler {
    link: Arc<Link>,
    max_attempts: u32,
    /// For `abandon`, which runs in `Drop` and may be outside any runtime context.
    runtime: tokio::runtime::Handle,
}

async fn ack_one(t: &Whole) -> Result<(), QueueError> {
    match t.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(QueueError::Unavailable(
            "ack failed: the delivery's channel closed; the broker redelivers it".into(),
        )),
        Err(e) => Err(super::unavailable(
            "ack failed; the broker redelivers it",
            e,
        )),
    }
}

/// Tickets grouped by the partition they came from, in delivery order.
fn by_partition(tickets: Vec<Arc<Whole>>) -> Vec<Vec<Arc<Whole>>> {
    let mut groups: Vec<Vec<Arc<Whole>>> = Vec::new();
    for t in tickets {
        match groups.iter_mut().find(|g| g[0].queue == t.queue) {
            Some(g) => g.push(t),
            None => groups.push(vec![t]),
        }
    }
    groups
}

/// True when `group`, all on one channel, holds every delivery of it not yet settled up
/// to the group's highest tag: then one ack with `multiple` settles exactly them (the
/// broker acks every delivery up to a tag on that channel). Later deliveries, still in
/// processing (the next batch), have higher tags and are left alone.
fn everything_outstanding(group: &[Arc<Whole>]) -> bool {
    let channel = group[0]._channel.id();
    let Some(last) = group.iter().map(|t| t.tag).max() else {
        return false;
    };
    group.iter().all(|t| t._channel.id() == channel) && group[0].held.0.up_to(last) == group.len()
}

/// One ack for the whole group: a single broker command (and, on a quorum queue, one
/// log entry) instead of one per message.
async fn ack_up_to(group: &[Arc<Whole>]) -> Result<(), QueueError> {
    let last = group
        .iter()
        .max_by_key(|t| t.tag)
        .expect("a group is not empty");
    let everything_so_far = BasicAckOptions { multiple: true };
    match last.acker.ack(everything_so_far).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(QueueError::Unavailable(
            "ack failed: the deliveries' channel closed; the broker redelivers them".into(),
        )),
        Err(e) => Err(super::unavailable(
            "ack failed; the broker redelivers them",
            e,
        )),
    }
}

impl Settler {
    /// Publishes a copy to `queue` (confirmed), with the attempts, the reason and its key
    /// as headers, then acks the original; on a failed publish the original goes back
    /// to the queue instead.
    async fn move_to(
        &self,
        t: Ticket,
        queue: Result<String, QueueError>,
        f: Failed<'_>,
    ) -> Result<(), QueueError> {
        let key = t.key.clone().or_else(|| envelope_key(f.payload));
        let headers = courier_headers(f.attempt, f.reason, key.as_ref());
        let published = match (queue, self.link.session()) {
            (Ok(queue), Ok(session)) => {
                session
                    .publish_confirmed(vec![Outgoing {
                        exchange: "",
                        routing_key: &queue,
                        payload: f.payload,
                        properties: json_properties(true).with_headers(headers),
                        mandatory: true,
                    }])
                    .await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        match published {
            Ok(()) => match t.done() {
                Some(whole) => self.finish(whole).await,
                None => Ok(()),
            },
            Err(e) => {
                if let Some(whole) = t.back() {
                    self.requeue(whole);
                }
                Err(e)
            }
        }
    }

    /// Acks a message whose parts are all settled, or hands it back if one was.
    async fn finish(&self, whole: Arc<Whole>) -> Result<(), QueueError> {
        if whole.back.load(Ordering::Acquire) {
            self.requeue(whole);
            return Ok(());
        }
        ack_one(&whole).await
    }

    /// Hands the delivery back to its queue at once.
    fn requeue(&self, t: Arc<Whole>) {
        // A closed channel already gave it back; nothing else to do on failure.
        self.runtime.spawn(async move {
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            let _ = t.acker.nack(requeue).await;
        });
    }

    async fn retry_queue(&self, partition: &str, delay: Duration) -> Result<String, QueueError> {
        let session = self.link.session()?;
        let ms = u64::try_from(delay.as_millis())
            .unwrap_or(u64::MAX)
            .min(u32::MAX.into());
        self.link.retry_queue(&session, partition, ms).await
    }
}

#[async_trait]
impl Settle for Settler {
    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    async fn ack(&self, tokens: Vec<Token>) -> Result<(), QueueError> {
        let total = tokens.len();
        let mut failed = 0usize;
        let mut last = None;
        let mut complete = Vec::with_capacity(total);
        for token in tokens {
            match token.into_amqp() {
                Ok(t) => complete.extend(t.done()),
                Err(e) => {
                    failed += 1;
                    last = Some(e);
                }
            }
        }
        let (back, tickets): (Vec<_>, Vec<_>) = complete
            .into_iter()
            .partition(|w| w.back.load(Ordering::Acquire));
        for whole in back {
            self.requeue(whole);
        }
        for group in by_partition(tickets) {
            let acked = match group.as_slice() {
                [] => Ok(()),
                [one] => ack_one(one).await,
                _ if everything_outstanding(&group) => ack_up_to(&group).await,
                _ => {
                    let mut result = Ok(());
                    for t in &group {
                        if let Err(e) = ack_one(t).await {
                            result = Err(e);
                        }
                    }
                    result
                }
            };
            if let Err(e) = acked {
                failed += group.len();
                last = Some(e);
            }
        }
        match last {
            None => Ok(()),
            Some(e) => {
                debug!(failed, total, error = %e, "acks failed; the broker redelivers those messages");
                Err(e)
            }
        }
    }

    async fn retry(&self, token: Token, f: Failed<'_>, delay: Duration) -> Result<(), QueueError> {
        let t = token.into_amqp()?;
        let queue = self.retry_queue(&t.whole.queue, delay).await;
        self.move_to(t, queue, f).await
    }

    async fn dead_letter(&self, token: Token, f: Failed<'_>) -> Result<(), QueueError> {
        let t = token.into_amqp()?;
        let queue = Ok(self.link.names.dead.clone());
        self.move_to(t, queue, f).await
    }

    fn abandon(&self, token: Token) {
        if let Some(whole) = token.into_amqp().ok().and_then(Ticket::back) {
            self.requeue(whole);
        }
    }
}
