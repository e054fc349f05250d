//! Publishing to the ingest queue through one background batcher: concurrent publishes
//! are gathered into `SendMessageBatch` calls of up to 10 entries (and 256 KiB), and each
//! caller's future resolves when SQS accepted *its* entry. A failed entry is retried a few
//! times when SQS says it may succeed later, and reported to its caller as `Unavailable`
//! otherwise; nothing is dropped.
//!
//! When no batch is in flight a publish is sent at once (no added latency when idle);
//! while batches are in flight new publishes wait up to `LINGER` for company.

use super::Shared;
use super::codec::{self, Body, MAX_BODY, dedup_id};
use super::connection::{CALL_TIMEOUT, call};
use crate::QueueError;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use shared::ids::RoomId;
use shared::message::MessageKey;
use shared::shutdown::backoff;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// Entries per `SendMessageBatch` (SQS's limit).
const BATCH: usize = 10;
/// Longest a publish waits for others to share its batch while batches are in flight.
const LINGER: Duration = Duration::from_millis(5);
/// `SendMessageBatch` calls in flight at once.
const IN_FLIGHT: usize = 16;
/// Publishes waiting for a batch; beyond it `publish` waits (backpressure).
const WAITING: usize = 10_000;
/// Tries of an entry SQS failed on its side (throttling, internal errors).
const ENTRY_TRIES: u32 = 4;
/// Longest a publish waits for its confirmation, all retries included.
const PUBLISH_LIMIT: Duration = Duration::from_secs(15);

/// The ingest side's handle on the batcher.
pub(super) struct Publisher {
    tx: mpsc::Sender<Pending>,
    fifo: bool,
}

struct Pending {
    room: RoomId,
    dedup: Option<String>,
    body: Body,
    attributes: Option<HashMap<String, MessageAttributeValue>>,
    done: oneshot::Sender<Result<(), QueueError>>,
}

impl Publisher {
    /// Starts the batcher; it stops when the publisher is dropped.
    pub(super) fn start(shared: &Arc<Shared>) -> Self {
        let (tx, rx) = mpsc::channel(WAITING);
        let target = Target {
            sqs: shared.sqs.clone(),
            url: shared.topology.ingest.clone(),
            fifo: shared.settings.fifo,
        };
        tokio::spawn(batcher(rx, Arc::new(target)));
        Self {
            tx,
            fifo: shared.settings.fifo,
        }
    }

    pub(super) async fn publish(
        &self,
        key: &MessageKey,
        payload: Vec<u8>,
    ) -> Result<(), QueueError> {
        let body = Body::encode(&payload);
        if body.len() > MAX_BODY {
            return Err(QueueError::Unavailable(format!(
                "the message is {} bytes as an SQS body; SQS takes at most {MAX_BODY}",
                body.len()
            )));
        }
        let (done, confirmed) = oneshot::channel();
        let pending = Pending {
            room: key.room.clone(),
            dedup: self.fifo.then(|| dedup_id(key)),
            attributes: codec::attributes(&body, Some(key)),
            body,
            done,
        };
        let outcome = tokio::time::timeout(PUBLISH_LIMIT, async {
            self.tx
                .send(pending)
                .await
                .map_err(|_| QueueError::Closed)?;
            confirmed.await.unwrap_or_else(|_| {
                Err(QueueError::Unavailable(
                    "the SQS publisher stopped before confirming".into(),
                ))
            })
        })
        .await;
        outcome.unwrap_or_else(|_| {
            Err(QueueError::Unavailable(format!(
                "SQS did not confirm the message within {PUBLISH_LIMIT:?}"
            )))
        })
    }
}

struct Target {
    sqs: Client,
    url: String,
    fifo: bool,
}

/// Gathers publishes into batches and sends each batch on its own task.
async fn batcher(mut rx: mpsc::Receiver<Pending>, target: Arc<Target>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.body.len();
        let mut batch = vec![first];
        // Busy (batches in flight): wait a moment for more. Idle: take what is there.
        let busy = slots.available_permits() < IN_FLIGHT;
        let until = Instant::now() + if busy { LINGER } else { Duration::ZERO };
        while batch.len() < BATCH {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(_) if busy => tokio::time::timeout_at(until, rx.recv())
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            let Some(p) = next else { break };
            if bytes + p.body.len() > MAX_BODY {
                carry = Some(p);
                break;
            }
            bytes += p.body.len();
            batch.push(p);
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            send(&target, batch).await;
            drop(slot);
        });
    }
}

/// Sends one batch and settles every caller in it.
async fn send(target: &Target, mut batch: Vec<Pending>) {
    for attempt in 0..ENTRY_TRIES {
        let entries: Vec<SendMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| entry(target.fifo, i, p))
            .collect();
        let sent = call(
            "sending to the ingest queue",
            CALL_TIMEOUT,
            target
                .sqs
                .send_message_batch()
                .queue_url(&target.url)
                .set_entries(Some(entries))
                .send(),
        )
        .await;
        let out = match sent {
            Ok(out) => out,
            // The SDK already retried the call: SQS is away. Answer now; the client
            // resends with the same id (deduplicated by SQS, and by the store).
            Err(f) => {
                let e = QueueError::from(f);
                for p in batch {
                    let _ = p.done.send(Err(QueueError::Unavailable(e.to_string())));
                }
                return;
            }
        };
        let mut slots: Vec<Option<Pending>> = batch.into_iter().map(Some).collect();
        for ok in out.successful() {
            if let Some(p) = index(ok.id()).and_then(|i| slots.get_mut(i)?.take()) {
                let _ = p.done.send(Ok(()));
            }
        }
        let mut again = Vec::new();
        for failed in out.failed() {
            let Some(p) = index(failed.id()).and_then(|i| slots.get_mut(i)?.take()) else {
                continue;
            };
            let why = format!(
                "SQS refused the message: {} {}",
                failed.code(),
                failed.message().unwrap_or_default()
            );
            if failed.sender_fault() || attempt + 1 == ENTRY_TRIES {
                let _ = p.done.send(Err(QueueError::Unavailable(why)));
            } else {
                tracing::debug!(reason = %why, attempt, "retrying a failed batch entry");
                again.push(p);
            }
        }
        // An entry SQS answered neither way: try it again rather than guess.
        again.extend(slots.into_iter().flatten());
        if again.is_empty() {
            return;
        }
        batch = again;
        tokio::time::sleep(backoff(
            attempt,
            Duration::from_millis(25),
            Duration::from_millis(500),
        ))
        .await;
    }
    for p in batch {
        let _ = p.done.send(Err(QueueError::Unavailable(
            "SQS did not accept the message after retries".into(),
        )));
    }
}

fn entry(fifo: bool, i: usize, p: &Pending) -> SendMessageBatchRequestEntry {
    let mut e = SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(p.body.text.clone())
        .set_message_attributes(p.attributes.clone());
    if fifo {
        e = e
            .message_group_id(p.room.as_str())
            .set_message_deduplication_id(p.dedup.clone());
    }
    e.build().expect("id and body are set")
}

fn index(id: &str) -> Option<usize> {
    id.parse().ok()
}
