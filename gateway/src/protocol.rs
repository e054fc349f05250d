//! The WebSocket wire contract: parsing client commands and shaping server events.
//!
//! Commands are parsed by hand from a JSON object so that every refusal can name the
//! field at fault and still echo the command's `ref` and `id` back to the client.

use serde::Serialize;
use serde_json::{Map, Value};
use shared::ids::{ClientMsgId, GatewayId, RoomId, UserId};
use shared::message::{BodyError, StoredMessage, check_body};
/// Longest `ref` a client may attach to a command.
pub const MAX_REF_LEN: usize = 64;
/// Default and largest page of `history`.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
pub const HISTORY_MAX_LIMIT: u32 = 200;
/// How many missing messages a `join` with `since` replays at most.
pub const REPLAY_MAX: u64 = 500;
/// Most rooms a `rooms` reply lists: one bounded store query per command.
pub const ROOMS_LIST_MAX: u32 = 200;

/// The error codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    /// Not allowed here: a room the user may not use (private, direct, token `rooms`),
    /// or an upgrade from an origin outside `ALLOWED_ORIGINS`.
    Forbidden,
    NotJoined,
    TooLarge,
    RateLimited,
    Unavailable,
    /// HTTP API only: missing or wrong bearer token.
    Unauthorized,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::NotJoined => "not_joined",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// A command refused before or while it ran; becomes one `error` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<String>,
    pub id: Option<String>,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reference: None,
            id: None,
        }
    }

    pub fn to_event(&self) -> ServerEvent<'_> {
        ServerEvent::Error {
            code: self.code,
            message: &self.message,
            reference: self.reference.as_deref(),
            id: self.id.as_deref(),
        }
    }
}

/// A body refused by the contract's rule: `too_large` when it is too long, else
/// `bad_request`, with the rule's own text.
impl From<BodyError> for CommandError {
    fn from(e: BodyError) -> Self {
        let code = match e {
            BodyError::TooLarge(_) => ErrorCode::TooLarge,
            BodyError::Empty | BodyError::ControlCharacter => ErrorCode::BadRequest,
        };
        Self::new(code, e.to_string())
    }
}

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
            Self::History { .. } => "history",
            Self::Rooms => "rooms",
            Self::Ping => "ping",
            Self::Typing { .. } => "typing",
            Self::Presence { .. } => "presence",
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
        return Err(CommandError::new(
            ErrorCode::BadRequest,
            "every frame must be one JSON object",
        ));
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
        "send" => {
            let room = room(obj)?;
            let id = match obj.get("id") {
                Some(Value::String(s)) => ClientMsgId::parse(s).map_err(|e| bad(e.to_string()))?,
                Some(_) => return Err(bad("id must be a string")),
                None => return Err(bad("missing id")),
            };
            let body = match obj.get("body") {
                Some(Value::String(s)) => s,
                Some(_) => return Err(bad("body must be a string")),
                None => return Err(bad("missing body")),
            };
            check_body(body)?;
            Command::Send {
                room,
                id,
                body: body.clone(),
            }
        }
        "history" => {
            let limit = match opt_u64(obj, "limit")? {
                None => HISTORY_DEFAULT_LIMIT,
                Some(0) => return Err(bad("limit must be at least 1")),
                Some(n) => n.min(u64::from(HISTORY_MAX_LIMIT)) as u32,
            };
            Command::History {
                room: room(obj)?,
                before: opt_u64(obj, "before")?,
                limit,
            }
        }
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

fn bad(message: impl Into<String>) -> CommandError {
    CommandError::new(ErrorCode::BadRequest, message)
}

fn room(obj: &Map<String, Value>) -> Result<RoomId, CommandError> {
    match obj.get("room") {
        Some(Value::String(s)) => RoomId::parse(s).map_err(|e| bad(e.to_string())),
        Some(_) => Err(bad("room must be a string")),
        None => Err(bad("missing room")),
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

/// Everything the server sends, except `message`, which is [`StoredMessage`] itself.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerEvent<'a> {
    Hello {
        user: &'a UserId,
        session: &'a str,
        gateway: &'a GatewayId,
    },
    Joined {
        room: &'a RoomId,
        head: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse_command(text).unwrap_err().code
    }

    #[test]
    fn parses_every_command() {
        let r = parse_command(r#"{"type":"join","room":"lobby","since":3,"ref":"r1"}"#).unwrap();
        assert_eq!(r.reference.as_deref(), Some("r1"));
        assert!(matches!(r.command, Command::Join { since: Some(3), .. }));
        let r = parse_command(r#"{"type":"send","room":"lobby","id":"c-1","body":"hi"}"#).unwrap();
        assert!(matches!(r.command, Command::Send { .. }));
        let r = parse_command(r#"{"type":"history","room":"lobby","limit":999}"#).unwrap();
        assert!(matches!(
            r.command,
            Command::History {
                limit: 200,
                before: None,
                ..
            }
        ));
        assert_eq!(
            parse_command(r#"{"type":"ping"}"#).unwrap().command,
            Command::Ping
        );
        assert_eq!(
            parse_command(r#"{"type":"typing","room":"lobby"}"#)
                .unwrap()
                .command,
            Command::Typing {
                room: RoomId::parse("lobby").unwrap()
            }
        );
        let r = parse_command(r#"{"type":"presence","room":"lobby","ref":"p"}"#).unwrap();
        assert!(matches!(r.command, Command::Presence { .. }));
        assert_eq!(code(r#"{"type":"typing"}"#), ErrorCode::BadRequest);
        let r = parse_command(r#"{"type":"rooms","ref":"r2"}"#).unwrap();
        assert_eq!(
            (r.command, r.reference.as_deref()),
            (Command::Rooms, Some("r2"))
        );
    }

    #[test]
    fn refuses_bad_input_with_codes() {
        assert_eq!(code("not json"), ErrorCode::BadRequest);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"room":"x"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"join","room":"a b"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"join","room":"a","since":-1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"send","room":"a","id":"1","body":""}"#),
            ErrorCode::BadRequest
        );
        let big = format!(
            r#"{{"type":"send","room":"a","id":"1","body":"{}"}}"#,
            "x".repeat(4097)
        );
        assert_eq!(code(&big), ErrorCode::TooLarge);
        let exact = format!(
            r#"{{"type":"send","room":"a","id":"1","body":"{}"}}"#,
            "é".repeat(2048)
        );
        assert!(parse_command(&exact).is_ok());
    }

    #[test]
    fn bodies_with_control_characters_are_bad_requests() {
        for body in [
            "a\\u0000b",
            "\\u001b[31m",
            "del \u{7f}",
            "c1 \u{85}",
            "\\u001f🙂",
        ] {
            let frame = format!(r#"{{"type":"send","room":"a","id":"1","body":"{body}"}}"#);
            assert_eq!(code(&frame), ErrorCode::BadRequest, "{body:?}");
        }
        let e = CommandError::from(BodyError::ControlCharacter);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(
            CommandError::from(BodyError::TooLarge(5000)).code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn errors_echo_ref_and_id() {
        let e = parse_command(r#"{"type":"send","room":"a","id":"c-9","ref":"r","body":""}"#)
            .unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("r"));
        assert_eq!(e.id.as_deref(), Some("c-9"));
        let long = format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(65));
        assert_eq!(code(&long), ErrorCode::BadRequest);
    }

    #[test]
    fn events_match_the_contract() {
        let room = RoomId::parse("lobby").unwrap();
        let ev = ServerEvent::Joined {
            room: &room,
            head: 7,
            truncated: false,
            reference: None,
        };
        assert_eq!(ev.to_json(), r#"{"type":"joined","room":"lobby","head":7}"#);
        let rooms = [room.clone()];
        let ev = ServerEvent::Rooms {
            rooms: &rooms,
            reference: Some("r"),
        };
        assert_eq!(
            ev.to_json(),
            r#"{"type":"rooms","rooms":["lobby"],"ref":"r"}"#
        );
        let bob = UserId::parse("bob").unwrap();
        let ev = ServerEvent::Member {
            room: &room,
            user: &bob,
            state: "online",
        };
        assert_eq!(
            ev.to_json(),
            r#"{"type":"member","room":"lobby","user":"bob","state":"online"}"#
        );
        let ev = ServerEvent::Typing {
            room: &room,
            user: &bob,
        };
        assert_eq!(
            ev.to_json(),
            r#"{"type":"typing","room":"lobby","user":"bob"}"#
        );
        let ev = ServerEvent::Presence {
            room: &room,
            users: std::slice::from_ref(&bob),
            truncated: false,
            reference: Some("p"),
        };
        assert_eq!(
            ev.to_json(),
            r#"{"type":"presence","room":"lobby","users":["bob"],"ref":"p"}"#
        );
        let e = CommandError::new(ErrorCode::NotJoined, "join first");
        assert_eq!(
            e.to_event().to_json(),
            r#"{"type":"error","code":"not_joined","message":"join first"}"#
        );
    }
}
