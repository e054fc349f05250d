//! The HTTP API's room settings: make a room private, list and change its members.
//!
//! The API acts for the operator: it may configure any room but a direct room (`dm:A:B`),
//! which is private to its two users by its name and has nothing to configure. Every
//! change drops the room from this gateway's cache of settings (see `access`) and is
//! announced to every gateway, which removes members no longer allowed (see `changes`).

use crate::access::{check_name, direct_pair, settings_of};
use crate::api::{authorize, read_body};
use crate::app::App;
use crate::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use shared::{RoomId, UserId};
use std::sync::Arc;
use store::RoomSettings;

/// A room name from the path: valid, and a well-formed `dm:` name if it is one.
fn room(raw: &str) -> Result<RoomId, ApiError> {
    let room = RoomId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_name(&room)?;
    Ok(room)
}

/// A room that may be configured: not a direct room.
fn configurable(raw: &str) -> Result<RoomId, ApiError> {
    let room = room(raw)?;
    if direct_pair(&room)?.is_some() {
        return Err(ApiError::bad_request(
            "a direct room is private to its two users and cannot be configured",
        ));
    }
    Ok(room)
}

fn user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|_| ApiError::bad_request("user must match [A-Za-z0-9_.:-]{1,64}"))
}

fn settings_json(room: &RoomId, s: &RoomSettings) -> Json<Value> {
    Json(json!({ "room": room, "private": s.private, "members": s.members }))
}

/// `GET /api/rooms/{room}`: `{"room","private","members"}`; a room never configured is
/// public with no members.
pub async fn get_room(
    State(app): State<Arc<App>>,
    Path(raw_room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let room = room(&raw_room)?;
    let settings = settings_of(&app.store, &room)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(settings_json(&room, &settings))
}

/// `GET /api/rooms/{room}/presence`: `{"room","users"}`, as the `presence` reply (with
/// `"truncated":true` when the list was cut at the cap).
pub async fn get_presence(
    State(app): State<Arc<App>>,
    Path(raw_room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let room = room(&raw_room)?;
    let (users, truncated) = app.presence.users(&room);
    let mut body = json!({ "room": room, "users": users });
    if truncated {
        body["truncated"] = Value::Bool(true);
    }
    Ok(Json(body))
}

/// `PUT /api/rooms/{room}` with `{"private":bool,"members":[...]}`: replaces the room's
/// settings and answers them as `GET` does.
pub async fn put_room(
    State(app): State<Arc<App>>,
    Path(raw_room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let room = configurable(&raw_room)?;
    let body = read_body(&app, body).await?;
    let (private, members) = parse_settings(&body)?;
    let stored = app.store.put_room(&room, private, &members).await;
    // Dropped and announced whatever the outcome: a failed write may still have committed.
    app.access.invalidate(&room);
    crate::changes::announce(&app, &room).await;
    let settings = stored.map_err(|e| ApiError::store(&e))?;
    tracing::info!(%room, private, members = settings.members.len(), "room configured");
    Ok(settings_json(&room, &settings))
}

/// `{"private":bool,"members":[user,...]}`; `members` may be left out (none).
fn parse_settings(body: &[u8]) -> Result<(bool, Vec<UserId>), ApiError> {
    let shape = "the body must be a JSON object {\"private\":bool,\"members\":[user names]}";
    let v: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| ApiError::bad_request(shape))?;
    let private = match v.get("private") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("private must be true or false")),
        None => return Err(ApiError::bad_request("missing private")),
    };
    let members = match v.get("members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|m| {
                m.as_str()
                    .ok_or_else(|| ApiError::bad_request(shape))
                    .and_then(user)
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "members must be an array of user names",
            ));
        }
    };
    Ok((private, members))
}

/// `PUT /api/rooms/{room}/members/{user}`: adds one member (204, also when already one).
pub async fn put_member(
    State(app): State<Arc<App>>,
    Path((raw_room, raw_user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    change_member(&app, &raw_room, &raw_user, &headers, true).await
}

/// `DELETE /api/rooms/{room}/members/{user}`: removes one member (204, also when not one).
pub async fn delete_member(
    State(app): State<Arc<App>>,
    Path((raw_room, raw_user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    change_member(&app, &raw_room, &raw_user, &headers, false).await
}

async fn change_member(
    app: &App,
    raw_room: &str,
    raw_user: &str,
    headers: &HeaderMap,
    add: bool,
) -> Result<StatusCode, ApiError> {
    authorize(app, headers)?;
    let room = configurable(raw_room)?;
    let user = user(raw_user)?;
    let changed = if add {
        app.store.add_member(&room, &user).await
    } else {
        app.store.remove_member(&room, &user).await
    };
    app.access.invalidate(&room);
    crate::changes::announce(app, &room).await;
    let changed = changed.map_err(|e| ApiError::store(&e))?;
    tracing::info!(%room, %user, add, changed, "room member changed");
    Ok(StatusCode::NO_CONTENT)
}
