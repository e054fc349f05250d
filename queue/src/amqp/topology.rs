//! The RabbitMQ topology: the names of everything one prefix owns, declaring the
//! exchanges and queues (ingest partitions, their retry queues, dead letters), their
//! depth, and deleting them.

use super::connection::{Link, Session, rpc};
use super::unavailable;
use crate::QueueError;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use shared::ids::GatewayId;
use shared::sync::lock;
use std::sync::atomic::Ordering;
use tracing::{info, warn};

/// The names of everything one prefix owns.
#[derive(Clone, Debug)]
pub(super) struct Names {
    pub(super) prefix: String,
    /// `{prefix}.ingest.{n}` for n in 0..partitions.
    pub(super) ingest: Vec<String>,
    /// A queue that never holds a message: each ingest consumer subscribes to it, so its
    /// consumer count is the number of live ingest consumers.
    pub(super) consumers: String,
    pub(super) dead: String,
    pub(super) delivery: String,
}

impl Names {
    pub(super) fn new(prefix: String, partitions: u16) -> Self {
        Self {
            ingest: (0..partitions)
                .map(|n| format!("{prefix}.ingest.{n}"))
                .collect(),
            consumers: format!("{prefix}.ingest.consumers"),
            dead: format!("{prefix}.dead"),
            delivery: format!("{prefix}.delivery"),
            prefix,
        }
    }

    /// The ingest partition that carries `room`'s messages.
    pub(super) fn ingest_of(&self, room: &str) -> &str {
        &self.ingest[partition_of(room, self.ingest.len())]
    }

    /// The retry queue of one delay for one partition: expired messages go back to the
    /// partition they came from, so a room's retries stay in its partition.
    pub(super) fn retry(&self, partition: &str, delay_ms: u64) -> String {
        format!("{partition}.retry.{delay_ms}")
    }

    pub(super) fn gateway(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}", self.prefix)
    }
}

/// The partition of `room` among `partitions`: FNV-1a of its name, the same in every
/// process and every version, so a room's messages always meet in one partition.
pub fn partition_of(room: &str, partitions: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % partitions.max(1) as u64) as usize
}

/// Returns of one message to an ingest partition before the broker dead-letters it.
pub(super) const DELIVERY_LIMIT: i32 = 1000;

impl Link {
    /// Declares what every process needs, with the same arguments every time (a
    /// mismatch would be refused with PRECONDITION_FAILED).
    pub(super) async fn declare_topology(&self, session: &Session) -> Result<(), QueueError> {
        let ch = session.channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let delivery = self.names.delivery.as_str();
        rpc(
            "declaring the delivery exchange",
            ch.exchange_declare(
                delivery.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            ),
        )
        .await?;
        rpc(
            "declaring the dead-letter queue",
            ch.queue_declare(
                self.names.dead.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            ),
        )
        .await?;
        let mut ch = ch;
        for name in &self.names.ingest {
            ch = self.declare_ingest(session, ch, name).await?;
        }
        let _ = ch.close(200, "topology declared".into()).await;
        Ok(())
    }

    async fn declare_ingest(
        &self,
        session: &Session,
        ch: Channel,
        name: &str,
    ) -> Result<Channel, QueueError> {
        if !self.classic_ingest.load(Ordering::Relaxed) {
            let mut args = self.ingest_arguments();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            // RabbitMQ 4 gives quorum queues a delivery limit of 20 and drops a message
            // past it when there is no dead-letter target. Returns (a consumer died, a
            // delivery was handed back) count toward it; courier's own retries republish
            // and do not. So: a limit far above any MAX_ATTEMPTS (at most 100), and past
            // it the message is dead-lettered, at least once, never dropped.
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(DELIVERY_LIMIT),
            );
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            // At-least-once dead-lettering requires it (there is no length limit).
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
            match ch
                .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
                .await
            {
                Ok(_) => return Ok(ch),
                // Only a refusal of this declaration (a channel error) means "no quorum
                // queue here"; a lost connection must not change the queue kind.
                Err(e) if e.is_amqp_soft_error() && session.connected() => {
                    warn!(queue = name, error = %e, "the broker refused a quorum ingest queue; using a durable classic queue");
                    self.classic_ingest.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(unavailable("declaring the ingest queue", e)),
            }
        }
        // The refusal closed that channel.
        let ch = session.channel().await?;
        rpc(
            "declaring the ingest queue",
            ch.queue_declare(
                name.into(),
                QueueDeclareOptions::durable(),
                self.ingest_arguments(),
            ),
        )
        .await?;
        Ok(ch)
    }

    /// What every ingest partition is declared with, whatever its kind: one consumer at a
    /// time, and what the broker itself rejects goes to the dead-letter queue.
    fn ingest_arguments(&self) -> FieldTable {
        let mut args = single_active_consumer();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(self.names.dead.as_str().into()),
        );
        args
    }

    /// Declares the retry queue of `delay_ms` for the ingest `partition` once per session
    /// and returns its name. Expired messages are dead-lettered back onto that partition;
    /// one TTL per queue keeps expiry in FIFO order.
    pub(super) async fn retry_queue(
        &self,
        session: &Session,
        partition: &str,
        delay_ms: u64,
    ) -> Result<String, QueueError> {
        let name = self.names.retry(partition, delay_ms);
        if lock(&session.retry_declared).contains(&name) {
            return Ok(name);
        }
        let mut args = FieldTable::default();
        let ttl = i64::try_from(delay_ms).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(partition.into()),
        );
        let ch = session.admin().await?;
        rpc(
            "declaring a retry queue",
            ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args),
        )
        .await?;
        lock(&session.retry_declared).insert(name.clone());
        lock(&self.retry_queues).insert(name.clone());
        Ok(name)
    }

    pub(super) async fn destroy(&self) -> Result<(), QueueError> {
        let session = self.session()?;
        let ch = session.channel().await?;
        let mut queues = self.names.ingest.clone();
        queues.push(self.names.consumers.clone());
        queues.push(self.names.dead.clone());
        queues.extend(lock(&self.retry_queues).iter().cloned());
        for q in &queues {
            rpc(
                "deleting a queue",
                ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
            )
            .await?;
        }
        let exchange = self.names.delivery.as_str();
        let deleting = ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default());
        rpc("deleting the delivery exchange", deleting).await?;
        let _ = ch.close(200, "destroyed".into()).await;
        info!(prefix = %self.names.prefix, queues = queues.len(), "deleted the topology");
        Ok(())
    }
}

/// Ingest partitions deliver to one consumer at a time, whoever else subscribes: this
/// is what makes a room serial. (Quorum queues ignore exclusive consumers.)
fn single_active_consumer() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    args
}

/// Ready messages on every ingest partition.
pub(super) async fn ingest_depth(link: &Link) -> Result<u64, QueueError> {
    let mut total = 0;
    for n in 0..link.names.ingest.len() {
        total += partition_depth(link, n).await?;
    }
    Ok(total)
}

/// Ready messages on partition `n` (a passive declare, so also a cheap round trip).
pub(super) async fn partition_depth(link: &Link, n: usize) -> Result<u64, QueueError> {
    let session = link.session()?;
    let ch = session.admin().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = rpc(
        "inspecting the ingest queue",
        ch.queue_declare(
            link.names.ingest[n].as_str().into(),
            passive,
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(queue.message_count().into())
}
