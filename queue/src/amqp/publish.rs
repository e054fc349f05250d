//! Publishing on RabbitMQ: one confirmed, persistent publish to the room's ingest
//! partition.

use super::connection::{Link, Outgoing, json_properties};
use crate::QueueError;
use shared::ids::RoomId;

pub(super) async fn publish(link: &Link, room: &RoomId, payload: &[u8]) -> Result<(), QueueError> {
    let session = link.session()?;
    session
        .publish_confirmed(vec![Outgoing {
            exchange: "",
            routing_key: link.names.ingest_of(room.as_str()),
            payload,
            properties: json_properties(true),
            mandatory: true,
        }])
        .await
}
