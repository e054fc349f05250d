//! Publishing on RabbitMQ: each ingest partition has one publishing task that takes what
//! the gateway's connections queued for it and puts it on the partition as one
//! confirmed, persistent message: alone, as it always was, when one is waiting; packed
//! (newline-delimited envelopes, `x-courier-batch: n`) when several are. A persistent
//! publish to a quorum queue is a replicated, fsynced log entry: under load a handful of
//! those per partition replaces one per message, and every caller still returns only
//! once the broker confirmed its message.
//!
//! The caller waits its turn: a group is published while earlier ones await their
//! confirms (at most `in_flight` per partition), so at low rates a message goes out at
//! once and the group grows only with the load. Groups leave in the order their messages
//! were queued, so one sender's messages keep their order.

use super::connection::{Link, json_properties, rpc};
use super::key_headers;
use crate::QueueError;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use shared::message::MessageKey;
use std::sync::{Arc, OnceLock};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The header of a packed ingest message: how many envelopes it holds.
pub(super) const BATCH: &str = "x-courier-batch";
/// Most envelopes, and bytes, packed into one ingest message.
pub(super) const MAX_GROUP: usize = 64;
const MAX_GROUP_BYTES: usize = 256 * 1024;
/// Messages queued for one partition's publisher before callers wait.
const QUEUED: usize = 4096;

/// The envelopes of a packed ingest message, `None` for a message of one.
pub(super) fn parts_of<'a>(headers: Option<&FieldTable>, data: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    if super::header_u32(headers, BATCH).is_none_or(|n| n <= 1) {
        return None;
    }
    let parts: Vec<&[u8]> = data
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .collect();
    // A packed message without a line is handed on whole, for the worker to refuse.
    (!parts.is_empty()).then_some(parts)
}

/// One message waiting for its partition's publisher.
struct Pending {
    key: MessageKey,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), QueueError>>,
}

/// The partitions' publishers, started on first use.
pub(super) struct Publishers {
    link: Arc<Link>,
    /// Whether several messages may share one broker message (`QUEUE_URL` `pack`).
    pack: bool,
    /// Groups of one partition awaiting their confirms at once (`QUEUE_URL` `in_flight`).
    in_flight: usize,
    queues: OnceLock<Vec<mpsc::Sender<Pending>>>,
}

impl Publishers {
    pub(super) fn new(link: Arc<Link>, pack: bool, in_flight: usize) -> Self {
        Self {
            link,
            pack,
            in_flight,
            queues: OnceLock::new(),
        }
    }

    /// Puts one envelope on its room's partition; Ok once the broker confirmed it.
    pub(super) async fn publish(
        &self,
        key: &MessageKey,
        payload: Vec<u8>,
    ) -> Result<(), QueueError> {
        let queues = self.queues.get_or_init(|| {
            (0..self.link.names.ingest.len())
                .map(|n| {
                    let (tx, rx) = mpsc::channel(QUEUED);
                    tokio::spawn(run(self.link.clone(), n, self.pack, self.in_flight, rx));
                    tx
                })
                .collect()
        });
        let n = super::topology::partition_of(key.room.as_str(), queues.len());
        let (done, confirmed) = oneshot::channel();
        let pending = Pending {
            key: key.clone(),
            payload,
            done,
        };
        queues[n]
            .send(pending)
            .await
            .map_err(|_| QueueError::Closed)?;
        confirmed.await.map_err(|_| {
            QueueError::Unavailable("the partition's publisher stopped before a confirm".into())
        })?
    }
}

/// A partition's publisher: until every sender is gone, takes what is queued (up to a
/// group), publishes it, and hands the confirm to a waiter of its own.
async fn run(
    link: Arc<Link>,
    n: usize,
    pack: bool,
    in_flight: usize,
    mut rx: mpsc::Receiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(in_flight));
    let max = if pack { MAX_GROUP } else { 1 };
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        let mut bytes = group[0].payload.len();
        while group.len() < max && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.payload.len() + 1;
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("courier_publish_group_size").record(group.len() as f64);
        let confirm = publish_group(&link, n, &group).await;
        tokio::spawn(async move {
            let result = match confirm {
                Ok(confirm) => confirmed(confirm).await,
                Err(e) => Err(e),
            };
            for p in group {
                let _ = p.done.send(result.clone());
            }
            drop(permit);
        });
    }
}

/// Sends the group as one message; returns the pending confirm.
async fn publish_group(
    link: &Link,
    n: usize,
    group: &[Pending],
) -> Result<lapin::PublisherConfirm, QueueError> {
    let session = link.session()?;
    let mut headers = FieldTable::default();
    let packed;
    let (payload, properties): (&[u8], BasicProperties) = match group {
        [one] => {
            key_headers(&mut headers, &one.key);
            (&one.payload, json_properties(true).with_headers(headers))
        }
        _ => {
            packed = group
                .iter()
                .map(|p| p.payload.as_slice())
                .collect::<Vec<_>>()
                .join(&b'\n');
            let count = i64::try_from(group.len()).unwrap_or(i64::MAX);
            headers.insert(BATCH.into(), AMQPValue::LongLongInt(count));
            let properties = BasicProperties::default()
                .with_content_type("application/x-ndjson".into())
                .with_delivery_mode(2)
                .with_headers(headers);
            (&packed, properties)
        }
    };
    let ch = session.publisher().await?;
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let publishing = ch.basic_publish(
        "".into(),
        link.names.ingest[n].as_str().into(),
        options,
        payload,
        properties,
    );
    rpc("publishing", publishing).await
}

async fn confirmed(confirm: lapin::PublisherConfirm) -> Result<(), QueueError> {
    match rpc("waiting for the publish confirm", confirm).await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(QueueError::Unavailable(format!(
            "the broker could not route the message to {:?}: {}",
            returned.delivery.routing_key.as_str(),
            returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(QueueError::Unavailable(
            "the broker refused the message (nack)".into(),
        )),
        Confirmation::NotRequested => Err(QueueError::Unavailable(
            "the publish channel is not in confirm mode".into(),
        )),
    }
}
