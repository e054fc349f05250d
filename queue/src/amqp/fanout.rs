//! Fan-out on RabbitMQ: each worker batch of processed messages goes to the topic
//! exchange as one packed body ([`crate::frames`]) with routing key `batches`, which
//! every gateway's feed ([`super::feed`]) binds and filters to the rooms it has members
//! in. One publish and one delivery per gateway per batch, instead of one per message
//! and gateway, is what the broker's CPU goes by (docs/benchmarks.md).
//!
//! A room change goes on the room's own route `room.{room}`, so it reaches exactly the
//! gateways with members in the room (the others read fresh settings when someone joins).

use super::connection::{Link, Outgoing, json_properties};
use crate::frames;
use crate::{Announcement, QueueError};
use lapin::BasicProperties;
use shared::ids::RoomId;
use shared::message::StoredMessage;
use std::sync::Arc;

pub(super) fn routing_key(room: &RoomId) -> String {
    format!("room.{room}")
}

/// The route of packed batches, which every gateway's feed binds.
pub(super) const BATCHES: &str = "batches";

/// Largest packed body: a worker batch (at most 1,000 messages of at most 4 KiB of text,
/// ~6x that escaped) takes a few of these at most.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// One confirmed, transient publish per packed body, to every gateway.
pub(super) async fn fan_out(
    link: &Link,
    messages: &[Arc<StoredMessage>],
) -> Result<(), QueueError> {
    if messages.is_empty() {
        return Ok(());
    }
    let session = link.session()?;
    let bodies = frames::pack(messages, MAX_BATCH_BYTES);
    let outgoing = bodies
        .iter()
        .map(|body| Outgoing {
            exchange: &link.names.delivery,
            routing_key: BATCHES,
            payload: body,
            properties: ndjson_properties(),
            // No gateway running means nobody to deliver to, which is fine.
            mandatory: false,
        })
        .collect();
    session.publish_confirmed(outgoing).await
}

/// One publish per message on its room's route: what versions before packing sent and
/// read (`QUEUE_URL` `pack=off`, for a rolling upgrade from them).
pub(super) async fn fan_out_each(
    link: &Link,
    messages: &[Arc<StoredMessage>],
) -> Result<(), QueueError> {
    if messages.is_empty() {
        return Ok(());
    }
    let session = link.session()?;
    let mut bodies = Vec::with_capacity(messages.len());
    for m in messages {
        let body = serde_json::to_vec(&**m)
            .map_err(|e| QueueError::Unavailable(format!("serializing a message: {e}")))?;
        bodies.push((routing_key(&m.room), body));
    }
    let outgoing = bodies
        .iter()
        .map(|(key, body)| Outgoing {
            exchange: &link.names.delivery,
            routing_key: key,
            payload: body,
            properties: json_properties(false),
            mandatory: false,
        })
        .collect();
    session.publish_confirmed(outgoing).await
}

fn ndjson_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/x-ndjson".into())
        .with_delivery_mode(1)
}

/// Publishes a room change on the room's route; not persistent (it is worth nothing once
/// the gateways' caches would have expired anyway), but confirmed.
pub(super) async fn announce(link: &Link, room: &RoomId) -> Result<(), QueueError> {
    let session = link.session()?;
    let body = Announcement::encode(room)?;
    let key = routing_key(room);
    let outgoing = vec![Outgoing {
        exchange: &link.names.delivery,
        routing_key: &key,
        payload: &body,
        properties: json_properties(false),
        mandatory: false,
    }];
    session.publish_confirmed(outgoing).await
}
