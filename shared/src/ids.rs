//! Validated identifiers: room and user names, client message ids, gateway instance ids.
//!
//! Every name that crosses the wire is checked once, at the edge, and then carried as a
//! newtype so the rest of the code cannot mix a room up with a user.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest room or user name, in bytes (the alphabet is ASCII).
pub const MAX_NAME_LEN: usize = 64;
/// Longest client message id (`id` of a `send`), in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Why a name was refused; the text is shown to clients as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must match [A-Za-z0-9_.:-]{{1,64}}")]
pub struct InvalidName {
    pub what: &'static str,
}

/// True when `s` matches `[A-Za-z0-9_.:-]{1,64}`, the alphabet of room and user names.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// `as_str`, and `Display` and `Debug` as the bare string, for a newtype around
/// `Arc<str>`.
macro_rules! str_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}

/// Deserializes through `parse`, so what arrives is checked as what a client sends.
macro_rules! parsed_deserialize {
    ($name:ident) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` against the name alphabet.
            pub fn parse(s: &str) -> Result<Self, InvalidName> {
                if is_valid_name(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(InvalidName { what: $what })
                }
            }
        }

        str_newtype!($name);
        parsed_deserialize!($name);
    };
}

name_type!(
    /// A room name: `[A-Za-z0-9_.:-]{1,64}`.
    RoomId,
    "room"
);
name_type!(
    /// A user name: `[A-Za-z0-9_.:-]{1,64}`.
    UserId,
    "user"
);

/// The sender's idempotency key for one message (`id` of a `send`): 1 to 128 bytes of
/// printable text without control characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientMsgId(Arc<str>);

/// Why a client message id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("id must be 1 to 128 bytes without control characters")]
pub struct InvalidClientMsgId;

impl ClientMsgId {
    pub fn parse(s: &str) -> Result<Self, InvalidClientMsgId> {
        if s.is_empty() || s.len() > MAX_CLIENT_ID_LEN || s.chars().any(char::is_control) {
            return Err(InvalidClientMsgId);
        }
        Ok(Self(Arc::from(s)))
    }
}

str_newtype!(ClientMsgId);
parsed_deserialize!(ClientMsgId);

/// Identifies one running gateway process (`gw-` and 8 hex digits); appears in `hello`
/// and in every envelope the gateway publishes.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GatewayId(Arc<str>);

impl GatewayId {
    /// A fresh random id for a process that is starting.
    pub fn generate() -> Self {
        let u = uuid::Uuid::new_v4().simple().to_string();
        Self(Arc::from(format!("gw-{}", &u[..8])))
    }

    pub fn from_string(s: String) -> Self {
        Self(Arc::from(s))
    }
}

str_newtype!(GatewayId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_alphabet() {
        for ok in ["a", "lobby", "A-b_c.d:e", &"x".repeat(64)] {
            assert!(RoomId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "é", "a/b", &"x".repeat(65), "semi;colon"] {
            assert_eq!(RoomId::parse(bad).unwrap_err().what, "room", "{bad}");
        }
    }

    #[test]
    fn client_ids_reject_controls_and_length() {
        assert!(ClientMsgId::parse("c-1").is_ok());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse("a\nb").is_err());
        assert!(ClientMsgId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<RoomId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<RoomId>("\"not ok\"").is_err());
        assert!(serde_json::from_str::<UserId>("\"bob\"").is_ok());
    }
}
