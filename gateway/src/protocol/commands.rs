//! Client commands: what each `type` carries, parsed field by field so a refusal names
//! the field at fault.

use super::{CommandError, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, MAX_REF_LEN, bad};
use serde_json::{Map, Value};
use shared::event::check_emoji;
use shared::ids::{ClientMsgId, RoomId};
use shared::message::check_body;

/// A parsed client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Join {
        room: RoomId,
        since: Option<u64>,
    },
    Leave {
        room: RoomId,
    },
    Send {
        room: RoomId,
        id: ClientMsgId,
        body: String,
        /// The `seq` of the room's message this one answers.
        reply_to: Option<u64>,
    },
    /// A new body for the sender's own message `target`.
    Edit {
        room: RoomId,
        id: ClientMsgId,
        target: u64,
        body: String,
    },
    /// The sender's own message `target` taken back.
    Delete {
        room: RoomId,
        id: ClientMsgId,
        target: u64,
    },
    /// An emoji on message `target`, or taken back from it (`remove`).
    React {
        room: RoomId,
        id: ClientMsgId,
        target: u64,
        emoji: String,
        remove: bool,
    },
    /// The user has read the room up to `seq`.
    Read {
        room: RoomId,
        seq: u64,
    },
    /// How far the room's members have read ("seen by").
    Reads {
        room: RoomId,
    },
    History {
        room: RoomId,
        before: Option<u64>,
        limit: u32,
    },
    /// The private rooms the user is a member of and their direct rooms with messages.
    Rooms,
    Ping,
    /// The user is typing in a room: relayed to the other members, never stored.
    Typing {
        room: RoomId,
    },
    /// Who has a connection in a room, on any gateway.
    Presence {
        room: RoomId,
    },
}

impl Command {
    /// The command's `type`, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Send { .. } => "send",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::React { .. } => "react",
            Self::Read { .. } => "read",
            Self::Reads { .. } => "reads",
            Self::History { .. } => "history",
            Self::Rooms => "rooms",
            Self::Ping => "ping",
            Self::Typing { .. } => "typing",
            Self::Presence { .. } => "presence",
        }
    }

    /// The idempotency key of a command that goes onto the queue: every reply to it,
    /// an error included, carries it back.
    pub fn id(&self) -> Option<&ClientMsgId> {
        match self {
            Self::Send { id, .. }
            | Self::Edit { id, .. }
            | Self::Delete { id, .. }
            | Self::React { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// A command with the `ref` its reply must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub reference: Option<String>,
}

/// Parses one text frame. On error, `ref` and `id` are filled in when they were readable.
pub fn parse_command(text: &str) -> Result<Request, CommandError> {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return Err(bad("every frame must be one JSON object"));
    };
    let id_echo = obj.get("id").and_then(Value::as_str).map(str::to_owned);
    let with_echo = |mut e: CommandError, reference: Option<String>| {
        e.reference = reference;
        e.id = id_echo.clone();
        e
    };
    let reference = match obj.get("ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.chars().count() <= MAX_REF_LEN => Some(r.clone()),
        Some(Value::String(_)) => {
            return Err(with_echo(bad("ref is longer than 64 characters"), None));
        }
        Some(_) => return Err(with_echo(bad("ref must be a string"), None)),
    };
    match parse_fields(&obj) {
        Ok(command) => Ok(Request { command, reference }),
        Err(e) => Err(with_echo(e, reference)),
    }
}

fn parse_fields(obj: &Map<String, Value>) -> Result<Command, CommandError> {
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(bad("type must be a string")),
        None => return Err(bad("missing type")),
    };
    Ok(match kind {
        "join" => Command::Join {
            room: room(obj)?,
            since: opt_u64(obj, "since")?,
        },
        "leave" => Command::Leave { room: room(obj)? },
        "send" => Command::Send {
            room: room(obj)?,
            id: id(obj)?,
            body: body(obj)?,
            reply_to: opt_seq(obj, "reply_to")?,
        },
        "edit" => Command::Edit {
            room: room(obj)?,
            id: id(obj)?,
            target: target(obj)?,
            body: body(obj)?,
        },
        "delete" => Command::Delete {
            room: room(obj)?,
            id: id(obj)?,
            target: target(obj)?,
        },
        "react" => react(obj)?,
        "read" => Command::Read {
            room: room(obj)?,
            seq: opt_u64(obj, "seq")?.ok_or_else(|| bad("missing seq"))?,
        },
        "reads" => Command::Reads { room: room(obj)? },
        "history" => history(obj)?,
        "rooms" => Command::Rooms,
        "ping" => Command::Ping,
        "typing" => Command::Typing { room: room(obj)? },
        "presence" => Command::Presence { room: room(obj)? },
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(format!("unknown type {shown:?}")));
        }
    })
}

fn react(obj: &Map<String, Value>) -> Result<Command, CommandError> {
    let (room, id, target) = (room(obj)?, id(obj)?, target(obj)?);
    let emoji = match obj.get("emoji") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad("emoji must be a string")),
        None => return Err(bad("missing emoji")),
    };
    check_emoji(emoji).map_err(bad)?;
    let remove = match obj.get("remove") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("remove must be true or false")),
    };
    Ok(Command::React {
        room,
        id,
        target,
        emoji: emoji.clone(),
        remove,
    })
}

fn history(obj: &Map<String, Value>) -> Result<Command, CommandError> {
    let limit = match opt_u64(obj, "limit")? {
        None => HISTORY_DEFAULT_LIMIT,
        Some(0) => return Err(bad("limit must be at least 1")),
        Some(n) => n.min(u64::from(HISTORY_MAX_LIMIT)) as u32,
    };
    Ok(Command::History {
        room: room(obj)?,
        before: opt_u64(obj, "before")?,
        limit,
    })
}

fn room(obj: &Map<String, Value>) -> Result<RoomId, CommandError> {
    match obj.get("room") {
        Some(Value::String(s)) => RoomId::parse(s).map_err(|e| bad(e.to_string())),
        Some(_) => Err(bad("room must be a string")),
        None => Err(bad("missing room")),
    }
}

fn id(obj: &Map<String, Value>) -> Result<ClientMsgId, CommandError> {
    match obj.get("id") {
        Some(Value::String(s)) => ClientMsgId::parse(s).map_err(|e| bad(e.to_string())),
        Some(_) => Err(bad("id must be a string")),
        None => Err(bad("missing id")),
    }
}

/// A message body, checked by the contract's body rule.
fn body(obj: &Map<String, Value>) -> Result<String, CommandError> {
    let body = match obj.get("body") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad("body must be a string")),
        None => return Err(bad("missing body")),
    };
    check_body(body)?;
    Ok(body.clone())
}

/// The `seq` an edit, a delete or a reaction changes: required, 1 or more.
fn target(obj: &Map<String, Value>) -> Result<u64, CommandError> {
    opt_seq(obj, "target")?.ok_or_else(|| bad("missing target"))
}

/// An optional `seq` of the room: 1 or more, as seqs start at 1.
fn opt_seq(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, CommandError> {
    match opt_u64(obj, field)? {
        Some(0) => Err(bad(format!(
            "{field} must be a seq of the room (1 or more)"
        ))),
        seq => Ok(seq),
    }
}

fn opt_u64(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, CommandError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("{field} must be a non-negative integer"))),
    }
}
