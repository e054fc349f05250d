//! The dead-letter queue: listing it, and the operator actions on it (replay selected
//! messages onto the ingest queue, or purge them all).

use super::connection::{Link, Outgoing, json_properties, rpc};
use super::consume::{ATTEMPTS, DELIVERY_COUNT, REASON};
use super::publish::{BATCH, parts_of};
use super::{header_string, header_u32, key_headers, key_of};
use crate::{DeadLetter, DeadLetterFilter, QueueError, envelope_key};
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable};

/// Most dead letters one replay looks at; run it again for more.
const MAX_SCAN: usize = 100_000;

/// Republishes each selected dead letter to the ingest queue (confirmed) before acking it
/// off the dead-letter queue; the others are left where they were.
pub(super) async fn replay(link: &Link, filter: &DeadLetterFilter) -> Result<usize, QueueError> {
    let session = link.session()?;
    // Unselected messages stay unacked on this channel and go back when it closes.
    let ch = session.channel().await?;
    let mut replayed = 0;
    for _ in 0..MAX_SCAN {
        let got = rpc(
            "reading the dead-letter queue",
            ch.basic_get(
                link.names.dead.as_str().into(),
                BasicGetOptions { no_ack: false },
            ),
        )
        .await?;
        let Some(m) = got else { break };
        let headers = m.delivery.properties.headers().as_ref();
        let kept = key_of(headers);
        let parts = parts_of(headers, &m.delivery.data);
        // A packed message (the broker moves one here past its delivery limit) goes back
        // whole when any of its envelopes is selected.
        let selected = match &parts {
            Some(parts) => parts.iter().any(|p| filter.matches(None, p)),
            None => filter.matches(kept.as_ref(), &m.delivery.data),
        };
        if !selected {
            continue;
        }
        // Back to the room's partition, so it is processed in line with the room, with
        // its key (dead letters from before carry none: their envelope has it).
        let key = match &parts {
            Some(parts) => envelope_key(parts[0]),
            None => kept.or_else(|| envelope_key(&m.delivery.data)),
        };
        let room = key.as_ref().map(|k| k.room.as_str()).unwrap_or_default();
        let mut headers = FieldTable::default();
        match (&parts, &key) {
            (Some(parts), _) => {
                let n = i64::try_from(parts.len()).unwrap_or(i64::MAX);
                headers.insert(BATCH.into(), AMQPValue::LongLongInt(n));
            }
            (None, Some(key)) => key_headers(&mut headers, key),
            (None, None) => {}
        }
        session
            .publish_confirmed(vec![Outgoing {
                exchange: "",
                routing_key: link.names.ingest_of(room),
                payload: &m.delivery.data,
                properties: json_properties(true).with_headers(headers),
                mandatory: true,
            }])
            .await?;
        rpc(
            "acking a replayed dead letter",
            m.delivery.acker.ack(BasicAckOptions::default()),
        )
        .await?;
        replayed += 1;
    }
    let _ = ch.close(200, "dead letters replayed".into()).await;
    Ok(replayed)
}

pub(super) async fn purge(link: &Link) -> Result<usize, QueueError> {
    let session = link.session()?;
    let ch = session.admin().await?;
    let n = rpc(
        "purging the dead-letter queue",
        ch.queue_purge(
            link.names.dead.as_str().into(),
            QueuePurgeOptions::default(),
        ),
    )
    .await?;
    Ok(n as usize)
}

/// Lists dead letters by fetching them unacked on a throwaway channel; closing it puts
/// every one of them back where it was.
pub(super) async fn dead_letters(link: &Link, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
    let session = link.session()?;
    let ch = session.channel().await?;
    let listed = fetch_unacked(&ch, &link.names.dead, max).await;
    let _ = ch.close(200, "dead letters listed".into()).await;
    listed
}

async fn fetch_unacked(
    ch: &Channel,
    queue: &str,
    max: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    let mut out = Vec::new();
    while out.len() < max {
        let got = rpc(
            "reading the dead-letter queue",
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
        )
        .await?;
        let Some(m) = got else { break };
        let headers = m.delivery.properties.headers().as_ref();
        // Past the delivery limit the broker moves a message itself, with its own headers.
        let by_broker = header_string(headers, "x-first-death-reason")
            .map(|r| format!("moved here by RabbitMQ ({r}): returned to the queue too often"));
        let attempts = header_u32(headers, ATTEMPTS)
            .or_else(|| header_u32(headers, DELIVERY_COUNT))
            .unwrap_or(0);
        let reason = header_string(headers, REASON)
            .or(by_broker)
            .unwrap_or_default();
        match parts_of(headers, &m.delivery.data) {
            // Each envelope of a packed message is listed as a dead letter of its own.
            Some(parts) => out.extend(parts.into_iter().map(|p| DeadLetter {
                attempts,
                reason: reason.clone(),
                key: envelope_key(p),
                payload: p.to_vec(),
            })),
            None => out.push(DeadLetter {
                attempts,
                reason,
                key: key_of(headers),
                payload: m.delivery.data,
            }),
        }
    }
    out.truncate(max);
    Ok(out)
}
