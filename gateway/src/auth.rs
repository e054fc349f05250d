//! Who a WebSocket client is: a JWT's `sub`, a development `?user=`, or a generated guest.
//!
//! A token comes in `?token=`, in `Authorization: Bearer`, or (browsers cannot set headers
//! on a WebSocket) as a `bearer.<token>` entry of `Sec-WebSocket-Protocol`, offered beside
//! [`SUBPROTOCOL`], which is what the server answers with. A refused token gets one generic
//! answer; why it was refused goes to the log, where an operator needs it and an attacker
//! does not see it.

use crate::access::RoomClaim;
use crate::config::GatewayConfig;
use crate::error::ApiError;
use axum::http::HeaderMap;
use axum::http::header::SEC_WEBSOCKET_PROTOCOL;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use shared::UserId;

/// The subprotocol the gateway speaks and answers with when a client offers it.
pub const SUBPROTOCOL: &str = "courier";
/// Prefix of the `Sec-WebSocket-Protocol` entry that carries a token.
const PROTOCOL_TOKEN_PREFIX: &str = "bearer.";
/// What every refused token is told.
const REFUSED: &str = "invalid or expired token";

/// How identities are established, fixed at start.
#[derive(Clone)]
pub enum Identity {
    /// `JWT_SECRET` is set: a valid HS256 token is required.
    Jwt(Box<(DecodingKey, Validation)>),
    /// Development: `?user=NAME` or a generated `guest-` name.
    Open,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Room names and `prefix*` patterns the token is limited to (see `access`).
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

impl Identity {
    pub fn new(config: &GatewayConfig) -> Self {
        let Some(secret) = config.jwt_secret.as_deref() else {
            return Identity::Open;
        };
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        validation.leeway = 5;
        validation.validate_nbf = true;
        match config.jwt_audience.as_deref() {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // Identity providers put their own audience in every token.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = config.jwt_issuer.as_deref() {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Identity::Jwt(Box::new((
            DecodingKey::from_secret(secret.as_bytes()),
            validation,
        )))
    }

    /// Resolves the user of an upgrade request and the rooms its token is limited to
    /// (none without a `rooms` claim), or the 401 to answer instead.
    pub fn user(
        &self,
        token: Option<&str>,
        user: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(UserId, Option<RoomClaim>), ApiError> {
        match self {
            Identity::Jwt(jwt) => {
                let (key, validation) = &**jwt;
                let token = token
                    .or_else(|| bearer(headers))
                    .or_else(|| protocol_token(headers))
                    .ok_or_else(|| {
                        ApiError::unauthorized(
                            "a token is required: ?token=, Authorization: Bearer, or bearer.<token> in Sec-WebSocket-Protocol",
                        )
                    })?;
                let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
                    tracing::info!(reason = ?e.kind(), "token refused");
                    ApiError::unauthorized(REFUSED)
                })?;
                let user = UserId::parse(&data.claims.sub).map_err(|_| {
                    tracing::info!(reason = "sub is not a valid user name", "token refused");
                    ApiError::unauthorized(REFUSED)
                })?;
                Ok((user, data.claims.rooms.as_deref().map(RoomClaim::new)))
            }
            Identity::Open => match user {
                Some(name) => UserId::parse(name)
                    .map(|u| (u, None))
                    .map_err(|_| ApiError::unauthorized("user must match [A-Za-z0-9_.:-]{1,64}")),
                None => Ok((guest(), None)),
            },
        }
    }
}

/// `guest-` and 64 random bits in hex: guessing another guest's name is out of reach.
fn guest() -> UserId {
    // A v4 uuid is random but for its version (bits 76..80) and variant (62..64).
    let r = uuid::Uuid::new_v4().as_u128();
    let bits = (((r >> 80) as u64) << 16) | (r as u64 & 0xffff);
    UserId::parse(&format!("guest-{bits:016x}")).expect("guest names are valid")
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The token of a `bearer.<token>` entry of `Sec-WebSocket-Protocol`.
fn protocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(PROTOCOL_TOKEN_PREFIX))
        .filter(|t| !t.is_empty())
}

/// Constant-time comparison, so response timing does not reveal how much of a token matched.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_differ_and_carry_16_hex_digits() {
        let (a, b) = (guest(), guest());
        assert_ne!(a, b);
        let hex = a.as_str().strip_prefix("guest-").unwrap();
        assert!(hex.len() == 16 && hex.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_token_rides_in_the_subprotocol_header() {
        let mut h = HeaderMap::new();
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            "courier, bearer.a.b.c".parse().unwrap(),
        );
        assert_eq!(protocol_token(&h), Some("a.b.c"));
        h.insert(SEC_WEBSOCKET_PROTOCOL, "courier".parse().unwrap());
        assert_eq!(protocol_token(&h), None);
    }
}
