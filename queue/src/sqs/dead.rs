//! The dead-letter queue: listing (receive with a short visibility, then hand every
//! message back at once), replaying onto the ingest queue, purging.
//!
//! Dead letters the worker moved carry their attempts and reason as attributes and a
//! message group of their own; those the redrive policy moved (a worker kept crashing
//! on them) carry neither and keep their room as group, so FIFO lists at most 10 of one
//! room per call while they are held.

use super::codec::{self, ATTEMPTS, Body, GROUP, REASON};
use super::connection::{CALL_TIMEOUT, call, secs};
use super::{Shared, batch};
use crate::{DeadLetter, DeadLetterFilter, QueueError, envelope_key};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use shared::message::MessageKey;
use std::collections::HashSet;
use std::time::Duration;

/// How long a listed dead letter stays hidden if the lister dies before handing it back.
const LIST_HOLD: Duration = Duration::from_secs(10);
/// How long a dead letter being replayed or purged stays hidden.
const WORK_HOLD: Duration = Duration::from_secs(60);
/// The first receive long-polls this long (a short poll may miss messages on a standard
/// queue); later ones do not wait.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Bound of the messages one replay or purge looks at.
const MOST: usize = 1_000_000;

async fn receive(
    s: &Shared,
    n: usize,
    wait: Duration,
    hold: Duration,
) -> Result<Vec<Message>, QueueError> {
    let out = call(
        "receiving from the dead-letter queue",
        wait + CALL_TIMEOUT,
        s.sqs
            .receive_message()
            .queue_url(&s.topology.dead)
            .max_number_of_messages(i32::try_from(n.clamp(1, 10)).unwrap_or(10))
            .wait_time_seconds(secs(wait))
            .visibility_timeout(secs(hold))
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names("All")
            .send(),
    )
    .await?;
    Ok(out.messages.unwrap_or_default())
}

fn describe(s: &Shared, m: &Message) -> DeadLetter {
    let redrive = s.topology.redrive_max.unwrap_or(0);
    DeadLetter {
        payload: codec::payload_of(m),
        key: codec::key_of(m),
        attempts: codec::attr(m, ATTEMPTS)
            .and_then(|n| n.parse().ok())
            .unwrap_or(redrive),
        reason: codec::attr(m, REASON).map(str::to_owned).unwrap_or_else(|| {
            format!("received {redrive} times without being settled (the queue's redrive policy moved it)")
        }),
    }
}

fn sent_at(m: &Message) -> u64 {
    m.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|t| t.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Up to `max` dead letters, oldest first; they stay in the queue.
pub(super) async fn list(s: &Shared, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
    let mut got: Vec<Message> = Vec::new();
    let mut seen = HashSet::new();
    let mut wait = FIRST_WAIT;
    let listed = loop {
        if got.len() >= max {
            break Ok(());
        }
        match receive(s, max - got.len(), wait, LIST_HOLD).await {
            Ok(batch) if batch.is_empty() => break Ok(()),
            Ok(batch) => {
                got.extend(
                    batch
                        .into_iter()
                        .filter(|m| seen.insert(m.message_id().unwrap_or_default().to_owned())),
                );
            }
            Err(e) => break Err(e),
        }
        wait = Duration::ZERO;
    };
    let receipts: Vec<String> = got
        .iter()
        .filter_map(|m| m.receipt_handle().map(str::to_owned))
        .collect();
    release(s, &receipts).await;
    listed?;
    got.sort_by_key(sent_at);
    Ok(got.iter().map(|m| describe(s, m)).collect())
}

/// Puts the matching dead letters back on the ingest queue as fresh messages (their
/// receive count starts again at 1) and deletes them from the dead-letter queue.
pub(super) async fn replay(s: &Shared, filter: &DeadLetterFilter) -> Result<usize, QueueError> {
    let mut kept: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    let mut replayed = 0;
    let mut wait = FIRST_WAIT;
    let outcome = loop {
        let batch = match receive(s, 10, wait, WORK_HOLD).await {
            Ok(b) => b,
            Err(e) => break Err(e),
        };
        wait = Duration::ZERO;
        let mut new = 0;
        let mut done = Vec::new();
        let mut failed = None;
        for m in batch {
            let Some(receipt) = m.receipt_handle().map(str::to_owned) else {
                continue;
            };
            let id = m.message_id().unwrap_or_default().to_owned();
            if !seen.insert(id.clone()) || seen.len() > MOST {
                kept.push(receipt);
                continue;
            }
            new += 1;
            let payload = codec::payload_of(&m);
            let key = codec::key_of(&m);
            if !filter.matches(key.as_ref(), &payload) || failed.is_some() {
                kept.push(receipt);
                continue;
            }
            // Dead letters from before keys were kept: their envelope has it.
            let key = key.or_else(|| envelope_key(&payload));
            match requeue(s, &m, &id, &payload, key.as_ref()).await {
                Ok(()) => done.push(receipt),
                Err(e) => {
                    kept.push(receipt);
                    failed = Some(e);
                }
            }
        }
        replayed += done.len();
        if let Err(e) = delete(s, &done).await {
            break Err(e);
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if new == 0 {
            break Ok(());
        }
    };
    release(s, &kept).await;
    if replayed > 0 {
        tracing::info!(replayed, "replayed dead letters onto the ingest queue");
    }
    outcome.map(|()| replayed)
}

/// Sends a dead letter back to the ingest queue, in its room's group. Its deduplication
/// id is new (the original's may still be within SQS's five-minute window) but fixed per
/// dead letter, so a replay repeated after a crash is dropped by SQS.
async fn requeue(
    s: &Shared,
    m: &Message,
    id: &str,
    payload: &[u8],
    key: Option<&MessageKey>,
) -> Result<(), QueueError> {
    let body = Body::encode(payload);
    let mut send = s
        .sqs
        .send_message()
        .queue_url(&s.topology.ingest)
        .message_body(body.text.clone())
        .set_message_attributes(codec::attributes(&body, key));
    if s.settings.fifo {
        let group = codec::attr(m, GROUP)
            .map(str::to_owned)
            .or_else(|| {
                m.attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
            })
            .unwrap_or_else(|| "replayed".to_owned());
        send = send
            .message_group_id(group)
            .message_deduplication_id(format!("replay-{id}"));
    }
    call("replaying a dead letter", CALL_TIMEOUT, send.send()).await?;
    Ok(())
}

/// Deletes every dead letter; returns how many there were.
pub(super) async fn purge(s: &Shared) -> Result<usize, QueueError> {
    let mut purged = 0;
    let mut wait = FIRST_WAIT;
    while purged < MOST {
        let batch = receive(s, 10, wait, WORK_HOLD).await?;
        if batch.is_empty() {
            break;
        }
        wait = Duration::ZERO;
        let receipts: Vec<String> = batch
            .iter()
            .filter_map(|m| m.receipt_handle().map(str::to_owned))
            .collect();
        delete(s, &receipts).await?;
        purged += receipts.len();
    }
    tracing::info!(purged, "purged the dead-letter queue");
    Ok(purged)
}

async fn delete(s: &Shared, receipts: &[String]) -> Result<(), QueueError> {
    batch::delete(&s.sqs, &s.topology.dead, receipts.to_vec())
        .await
        .map_err(|(_, e)| e)
}

/// Makes held dead letters visible again at once (best effort: otherwise they come back
/// when their hold ends).
async fn release(s: &Shared, receipts: &[String]) {
    if let Err(e) = batch::set_visibility(&s.sqs, &s.topology.dead, receipts, 0).await {
        tracing::debug!(error = %e, "handing dead letters back failed; they reappear when their hold ends");
    }
}
