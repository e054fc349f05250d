//! Fan-out on RabbitMQ: processed messages go to a topic exchange with routing key
//! `room.{room}`, from which each gateway's feed ([`super::feed`]) takes its rooms.
//! A room change goes the same way, so it reaches exactly the gateways with members in
//! the room (the others read fresh settings when someone joins).

use super::connection::{Link, Outgoing, json_properties};
use crate::{Announcement, QueueError};
use shared::ids::RoomId;
use shared::message::StoredMessage;
use std::sync::Arc;

pub(super) fn routing_key(room: &RoomId) -> String {
    format!("room.{room}")
}

pub(super) async fn fan_out(
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
            // A room no gateway has members in routes nowhere, which is fine.
            mandatory: false,
        })
        .collect();
    session.publish_confirmed(outgoing).await
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
