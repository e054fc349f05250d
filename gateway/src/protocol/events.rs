//! What the server sends, except `message` (that is [`StoredMessage`] itself).

use super::ErrorCode;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use shared::ids::{ClientMsgId, GatewayId, RoomId, UserId};
use shared::message::StoredMessage;

/// Everything the server sends, except `message`, which is [`StoredMessage`] itself.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerEvent<'a> {
    Hello {
        user: &'a UserId,
        session: &'a str,
        gateway: &'a GatewayId,
    },
    /// `read` is the user's read cursor in the room and `unread` the exact number of
    /// others' messages (not deleted) after it; both always present.
    Joined {
        room: &'a RoomId,
        head: u64,
        read: u64,
        unread: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Left {
        room: &'a RoomId,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        /// `"removed"` when the server took the connection out of the room (it may no
        /// longer use it); absent on a leave the client asked for.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    Ack {
        room: &'a RoomId,
        id: &'a ClientMsgId,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// The user's read cursor after a `read` (the reply, with its `ref`), and the same
    /// frame (without) on the user's other connections joined to the room.
    Read {
        room: &'a RoomId,
        seq: u64,
        unread: u64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// Members' read cursors: the `reads` reply (the most advanced ones), or the cursors
    /// that moved lately (coalesced, `READS_THROTTLE_MS`).
    Reads {
        room: &'a RoomId,
        #[serde(serialize_with = "cursor_map")]
        reads: &'a [(UserId, u64)],
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    History {
        room: &'a RoomId,
        messages: &'a [StoredMessage],
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Rooms {
        rooms: &'a [RoomId],
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// A user's first connection joined the room on any gateway (`online`), or their
    /// last one left (`offline`).
    Member {
        room: &'a RoomId,
        user: &'a UserId,
        state: &'a str,
    },
    /// Another member is typing.
    Typing { room: &'a RoomId, user: &'a UserId },
    /// The `presence` reply: sorted; `truncated` when the room had more users than a
    /// gateway tracks (`PRESENCE_MAX_USERS_PER_ROOM`).
    Presence {
        room: &'a RoomId,
        users: &'a [UserId],
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl ServerEvent<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server events always serialize")
    }
}

/// `(user, seq)` pairs as the JSON object `{"alice":43}`, in the order given.
fn cursor_map<S: Serializer>(pairs: &&[(UserId, u64)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (user, seq) in pairs.iter() {
        map.serialize_entry(user, seq)?;
    }
    map.end()
}
