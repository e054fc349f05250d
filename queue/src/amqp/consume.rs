//! Consuming the ingest queue on RabbitMQ: batched consumers over the partitions they
//! own that survive reconnections, and settlement (ack, delayed retry through TTL'd retry
//! queues, dead letters), always confirming a republish before acking the original so no
//! message is ever lost.

use super::balance::{Partition, Partitions};
use super::connection::{Link, Outgoing, json_properties};
use super::{header_u32, key_headers, key_of};
use crate::{Consumer, Delivery, Failed, QueueError, QueueOptions, Settle, Token};
use async_trait::async_trait;
use lapin::Acker;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use shared::message::MessageKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
                        out.push(wrap(d, o, &self.settle));
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

fn wrap(d: lapin::message::Delivery, o: &Partition, settle: &Arc<dyn Settle>) -> Delivery {
    let attempt = attempt_of(&d);
    o.outstanding.fetch_add(1, Ordering::AcqRel);
    let ticket = Ticket {
        key: key_of(d.properties.headers().as_ref()),
        acker: d.acker,
        _channel: o.sub.channel.clone(),
        queue: o.queue.clone(),
        _held: Held(o.outstanding.clone()),
    };
    Delivery::new(d.data, attempt, Token::Amqp(ticket), settle.clone())
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

/// Counts a delivery as outstanding on its partition until it is settled or dropped.
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A delivery's handle ([`Token::Amqp`]). It keeps its channel open so a dropped
/// consumer does not take the unsettled deliveries with it.
pub struct Ticket {
    /// The key its headers carry, passed on to its retries and dead letter.
    key: Option<MessageKey>,
    acker: Acker,
    _channel: Channel,
    /// The partition it came from, where its retries return.
    queue: Arc<str>,
    _held: Held,
}

struct Settler {
    link: Arc<Link>,
    max_attempts: u32,
    /// For `abandon`, which runs in `Drop` and may be outside any runtime context.
    runtime: tokio::runtime::Handle,
}

async fn ack_one(t: &Ticket) -> Result<(), QueueError> {
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
        let headers = courier_headers(f.attempt, f.reason, t.key.as_ref());
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
            Ok(()) => ack_one(&t).await,
            Err(e) => {
                self.requeue(t);
                Err(e)
            }
        }
    }

    /// Hands the delivery back to its queue at once.
    fn requeue(&self, t: Ticket) {
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
        for token in tokens {
            let acked = match token.into_amqp() {
                Ok(t) => ack_one(&t).await,
                Err(e) => Err(e),
            };
            if let Err(e) = acked {
                failed += 1;
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
        let queue = self.retry_queue(&t.queue, delay).await;
        self.move_to(t, queue, f).await
    }

    async fn dead_letter(&self, token: Token, f: Failed<'_>) -> Result<(), QueueError> {
        let t = token.into_amqp()?;
        let queue = Ok(self.link.names.dead.clone());
        self.move_to(t, queue, f).await
    }

    fn abandon(&self, token: Token) {
        if let Ok(t) = token.into_amqp() {
            self.requeue(t);
        }
    }
}
