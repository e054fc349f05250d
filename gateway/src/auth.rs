//! Who a WebSocket client is: a JWT's `sub`, a development `?user=`, or a generated guest.

use crate::error::ApiError;
use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use shared::UserId;

/// How identities are established, fixed at start.
#[derive(Clone)]
pub enum Identity {
    /// `JWT_SECRET` is set: a valid HS256 token is required.
    Jwt(Box<(DecodingKey, Validation)>),
    /// Development: `?user=NAME` or a generated `guest-XXXX`.
    Open,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Identity {
    pub fn new(secret: Option<&str>) -> Self {
        match secret {
            Some(s) => {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.set_required_spec_claims(&["exp", "sub"]);
                validation.leeway = 5;
                Identity::Jwt(Box::new((
                    DecodingKey::from_secret(s.as_bytes()),
                    validation,
                )))
            }
            None => Identity::Open,
        }
    }

    /// Resolves the user of an upgrade request, or the 401 to answer instead.
    pub fn user(
        &self,
        token: Option<&str>,
        user: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<UserId, ApiError> {
        match self {
            Identity::Jwt(jwt) => {
                let (key, validation) = &**jwt;
                let token = token
                    .map(str::to_owned)
                    .or_else(|| bearer(headers).map(str::to_owned))
                    .ok_or_else(|| {
                        ApiError::unauthorized(
                            "a token is required: ?token= or Authorization: Bearer",
                        )
                    })?;
                let data = jsonwebtoken::decode::<Claims>(&token, key, validation)
                    .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
                UserId::parse(&data.claims.sub).map_err(|_| {
                    ApiError::unauthorized("token sub must match [A-Za-z0-9_.:-]{1,64}")
                })
            }
            Identity::Open => match user {
                Some(name) => UserId::parse(name)
                    .map_err(|_| ApiError::unauthorized("user must match [A-Za-z0-9_.:-]{1,64}")),
                None => {
                    let n = uuid::Uuid::new_v4().as_u128() as u16;
                    Ok(UserId::parse(&format!("guest-{n:04x}")).expect("guest names are valid"))
                }
            },
        }
    }
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

/// Constant-time comparison, so response timing does not reveal how much of a token matched.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
