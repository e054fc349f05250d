//! The WebSocket wire contract: parsing client commands ([`commands`]) and shaping
//! server events ([`events`]).
//!
//! Commands are parsed by hand from a JSON object so that every refusal can name the
//! field at fault and still echo the command's `ref` and `id` back to the client.

mod commands;
mod events;
#[cfg(test)]
mod tests;

pub use commands::{Command, Request, parse_command};
pub use events::ServerEvent;

use serde::Serialize;
use shared::message::BodyError;

/// Longest `ref` a client may attach to a command.
pub const MAX_REF_LEN: usize = 64;
/// Default and largest page of `history`.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
pub const HISTORY_MAX_LIMIT: u32 = 200;
/// How many missing messages a `join` with `since` replays at most.
pub const REPLAY_MAX: u64 = 500;
/// Most rooms a `rooms` reply lists: one bounded store query per command.
pub const ROOMS_LIST_MAX: u32 = 200;
/// Most read cursors a `reads` reply lists (the most advanced ones): one bounded store
/// query, and a frame of a few KiB at most.
pub const READS_LIST_MAX: u32 = 100;

/// The error codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    /// Not allowed here: a room the user may not use (private, direct, token `rooms`),
    /// an edit or delete of someone else's message, or an upgrade from an origin outside
    /// `ALLOWED_ORIGINS`.
    Forbidden,
    NotJoined,
    TooLarge,
    RateLimited,
    Unavailable,
    /// HTTP API only: missing or wrong bearer token.
    Unauthorized,
    /// HTTP API only: the room has no message with that `seq`.
    NotFound,
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
            Self::NotFound => "not_found",
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

pub(crate) fn bad(message: impl Into<String>) -> CommandError {
    CommandError::new(ErrorCode::BadRequest, message)
}
