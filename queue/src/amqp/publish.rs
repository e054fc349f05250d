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
//! once and the group grows only with the load; while sends keep coming, `linger_ms`
//! also lets a group wait that long for company, trading that much latency for fewer
//! broker messages (a send after a quiet spell never waits). Groups leave in the order
//! their messages were queued, so one sender's messages keep their order.

use super::connection::{Link, json_properties, rpc};
use super::key_headers;
use crate::QueueError;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use shared::message::MessageKey;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The header of a packed ingest message: how many envelopes it holds.
pub(super) const BATCH: &str = "x-courier-batch";
/// Most envelopes, and bytes, packed into one ingest message.
pub(super) const MAX_GROUP: usize = 64;
const MAX_GROUP_BYTES: usize = 256 * 1024;
/// Messages queued for one partition's publisher before callers wait.
const QUEUED: usize = 4096;
/// A partition counts as busy, and a group lingers, when the last group left less than
/// this many lingers ago: a lone send after a quiet spell goes out at once.
const BUSY_GAPS: u32 = 4;

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
    /// Groups of one partition awaiting their confirms at once (`QUEUE_URL` `in_flight`),
    /// and how long a group waits for company (`linger_ms`).
    shape: (usize, Duration),
    queues: OnceLock<Vec<mpsc::Sender<Pending>>>,
}

impl Publishers {
    pub(super) fn new(link: Arc<Link>, pack: bool, shape: (usize, Duration)) -> Self {
        Self {
            link,
            pack,
            shape,
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
                    tokio::spawn(run(self.link.clone(), n, self.pack, self.shape, rx));
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
    (in_flight, linger): (usize, Duration),
    mut rx: mpsc::Receiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(in_flight));
    let max = if pack { MAX_GROUP } else { 1 };
    let linger = if pack { linger } else { Duration::ZERO };
    // When the last group left: lingering pays only while sends keep coming.
    let mut last: Option<tokio::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let busy = last.is_some_and(|t| t.elapsed() < linger * BUSY_GAPS);
        let group = gather(
            &mut rx,
            first,
            max,
            if busy { linger } else { Duration::ZERO },
        )
        .await;
        last = Some(tokio::time::Instant::now());
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

/// `first` and what else is queued, up to a group; when that is not a full group, also
/// what arrives within `linger` of now.
async fn gather(
    rx: &mut mpsc::Receiver<Pending>,
    first: Pending,
    max: usize,
    linger: Duration,
) -> Vec<Pending> {
    let deadline = tokio::time::Instant::now() + linger;
    let mut bytes = first.payload.len();
    let mut group = vec![first];
    while group.len() < max && bytes < MAX_GROUP_BYTES {
        let next = match rx.try_recv() {
            Ok(p) => Some(p),
            Err(_) if linger.is_zero() => None,
            Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten(),
        };
        let Some(p) = next else { break };
        bytes += p.payload.len() + 1;
        group.push(p);
    }
    group
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ids::{ClientMsgId, RoomId, UserId};

    fn pending(id: &str) -> Pending {
        Pending {
            key: MessageKey {
                room: RoomId::parse("r").unwrap(),
                from: UserId::parse("u").unwrap(),
                id: ClientMsgId::parse(id).unwrap(),
            },
            payload: id.as_bytes().to_vec(),
            done: oneshot::channel().0,
        }
    }

    fn ids(group: &[Pending]) -> Vec<String> {
        group.iter().map(|p| p.key.id.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_linger_a_group_is_what_is_already_queued() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(pending("2")).await.unwrap();
        let group = gather(&mut rx, pending("1"), MAX_GROUP, Duration::ZERO).await;
        assert_eq!(ids(&group), ["1", "2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_linger_waits_for_sends_until_its_deadline_and_no_longer() {
        let (tx, mut rx) = mpsc::channel(8);
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            tx.send(pending("2")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(pending("3")).await.unwrap();
        });
        let started = tokio::time::Instant::now();
        let group = gather(&mut rx, pending("1"), MAX_GROUP, Duration::from_millis(8)).await;
        assert_eq!(
            ids(&group),
            ["1", "2"],
            "the send 13 ms in waits for the next group"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(8));
        sender.await.unwrap();
        assert_eq!(ids(&[rx.recv().await.unwrap()]), ["3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_group_does_not_linger() {
        let (tx, mut rx) = mpsc::channel(8);
        for id in ["2", "3"] {
            tx.send(pending(id)).await.unwrap();
        }
        let started = tokio::time::Instant::now();
        let group = gather(&mut rx, pending("1"), 3, Duration::from_millis(50)).await;
        assert_eq!(ids(&group), ["1", "2", "3"]);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
