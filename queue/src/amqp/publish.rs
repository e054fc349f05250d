//! Publishing on RabbitMQ: one confirmed, persistent publish to the room's ingest
//! partition, with the message's key in its headers.

use super::connection::{Link, Outgoing, json_properties};
use super::key_headers;
use crate::QueueError;
use lapin::types::FieldTable;
use shared::message::MessageKey;

pub(super) async fn publish(
    link: &Link,
    key: &MessageKey,
    payload: &[u8],
) -> Result<(), QueueError> {
    let session = link.session()?;
    let mut headers = FieldTable::default();
    key_headers(&mut headers, key);
    session
        .publish_confirmed(vec![Outgoing {
            exchange: "",
            routing_key: link.names.ingest_of(key.room.as_str()),
            payload,
            properties: json_properties(true).with_headers(headers),
            mandatory: true,
        }])
        .await
}
