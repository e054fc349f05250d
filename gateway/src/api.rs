//! The HTTP API: post a message as a backend, read a room's messages, delete one as the
//! operator (moderation); room settings: `rooms_api`.

use crate::app::App;
use crate::auth::{bearer, same_secret};
use crate::error::ApiError;
use crate::page::{Keep, PAGE_BUDGET, page_json};
use crate::protocol::{CommandError, ErrorCode, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shared::event::EventKind;
use shared::message::check_body;
use shared::{ClientMsgId, RoomId, UserId};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = app.config.api_token.as_deref() else {
        return Err(ApiError::unauthorized(
            "the HTTP API is disabled on this gateway (API_TOKEN is not set)",
        ));
    };
    match bearer(headers) {
        Some(given) if same_secret(given, expected) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("wrong API token")),
        None => Err(ApiError::unauthorized(
            "send Authorization: Bearer <API_TOKEN>",
        )),
    }
}

/// A room name from the path; a malformed `dm:` name is refused like a bad name.
fn room(raw: &str) -> Result<RoomId, ApiError> {
    let room = RoomId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    crate::access::check_name(&room)?;
    Ok(room)
}

fn string_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    match v.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
        None => Err(ApiError::bad_request(format!("missing {name}"))),
    }
}

/// `POST /api/rooms/{room}/messages` with `{"id","from","body"}` and optionally
/// `"reply_to":S` (a seq of the room): 202 once on the queue.
pub async fn post_message(
    State(app): State<Arc<App>>,
    Path(raw_room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&app, &headers)?;
    let room = room(&raw_room)?;
    let body = read_body(&app, body).await?;
    let v: Value = serde_json::from_slice(&body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            ApiError::bad_request("the body must be a JSON object with id, from and body")
        })?;
    let id = ClientMsgId::parse(string_field(&v, "id")?)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let from = UserId::parse(string_field(&v, "from")?)
        .map_err(|_| ApiError::bad_request("from must match [A-Za-z0-9_.:-]{1,64}"))?;
    let text = string_field(&v, "body")?;
    check_body(text).map_err(CommandError::from)?;
    let reply_to = reply_to(&app, &room, &v).await?;
    let mut env = app.envelope(room.clone(), from, id.clone(), text.to_owned());
    env.reply_to = reply_to;
    app.publish(env).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "room": room, "id": id })),
    ))
}

/// The optional `reply_to` of a posted message: a seq of the room, 1 to its head.
async fn reply_to(app: &App, room: &RoomId, v: &Value) -> Result<Option<u64>, ApiError> {
    let to = match v.get("reply_to") {
        None | Some(Value::Null) => return Ok(None),
        Some(n) => n.as_u64().ok_or_else(|| {
            ApiError::bad_request("reply_to must be a seq of the room (a positive integer)")
        })?,
    };
    let head = app
        .store
        .head(room)
        .await
        .map_err(|e| ApiError::store(&e))?;
    if !(1..=head).contains(&to) {
        return Err(ApiError::bad_request(format!(
            "reply_to {to} is not a message of {room} (its seqs are 1 to {head})"
        )));
    }
    Ok(Some(to))
}

/// `DELETE /api/rooms/{room}/messages/{seq}`: the operator takes message `seq` back
/// (moderation), whoever wrote it. 202 `{"room","seq","id"}` once the delete event is on
/// the queue (`id`: the event's, `op-` and a UUID); it then flows as a client's delete,
/// with `from` the message's author and `"moderated":true`. 404 when the room has no
/// such seq; 400 when it is not a message (an event) or is deleted already.
pub async fn delete_message(
    State(app): State<Arc<App>>,
    Path((raw_room, raw_seq)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&app, &headers)?;
    let room = room(&raw_room)?;
    let seq: u64 = raw_seq
        .parse()
        .map_err(|_| ApiError::bad_request("seq must be a non-negative integer"))?;
    let target = app
        .store
        .message(&room, seq)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("{room} has no message {seq}"),
            )
        })?;
    if !target.kind.is_message() {
        return Err(ApiError::bad_request(format!(
            "seq {seq} is a {}, not a message",
            target.kind.as_str()
        )));
    }
    if target.deleted {
        return Err(ApiError::bad_request(format!("message {seq} was deleted")));
    }
    let id = ClientMsgId::parse(&format!("op-{}", uuid::Uuid::new_v4()))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut env = app.envelope(room.clone(), target.from, id.clone(), String::new());
    env.kind = EventKind::Delete;
    env.target = Some(seq);
    env.moderated = true;
    app.publish(env).await?;
    tracing::info!(%room, seq, %id, "message deleted through the HTTP API");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "room": room, "seq": seq, "id": id })),
    ))
}

/// The request body, within the frame limit and the HTTP header timeout (a body sent a
/// byte at a time would otherwise hold the connection for as long as it likes).
pub(crate) async fn read_body(app: &App, body: Body) -> Result<Bytes, ApiError> {
    let within = app.config.limits.http_header_timeout();
    match tokio::time::timeout(within, axum::body::to_bytes(body, crate::ws::MAX_FRAME)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::TooLarge,
                    "request bodies are limited to 64 KiB",
                ))
            } else {
                tracing::debug!(error = %e, "reading a request body failed");
                Err(ApiError::bad_request("the request body could not be read"))
            }
        }
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BadRequest,
            "the request body did not arrive in time",
        )),
    }
}

/// `GET /api/rooms/{room}/messages?since=N&limit=L`: messages with seq > since, oldest
/// first, cut to the oldest that fit one page (the caller pages on with `since`).
pub async fn get_messages(
    State(app): State<Arc<App>>,
    Path(raw_room): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let room = room(&raw_room)?;
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        params
            .get(name)
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("{name} must be a non-negative integer"))
                })
            })
            .transpose()
    };
    let since = number("since")?.unwrap_or(0);
    let limit = match number("limit")? {
        None => HISTORY_DEFAULT_LIMIT,
        Some(0) => return Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => n.min(u64::from(HISTORY_MAX_LIMIT)) as u32,
    };
    let messages = app
        .store
        .after(&room, since, limit)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let room = serde_json::to_string(&room).map_err(|_| ApiError::bad_request("bad room"))?;
    let fixed = r#"{"room":,"messages":}"#.len() + room.len();
    let (page, _) = page_json(&messages, PAGE_BUDGET.saturating_sub(fixed), Keep::Oldest);
    let body = format!(r#"{{"room":{room},"messages":{page}}}"#);
    let json = HeaderValue::from_static("application/json");
    Ok(([(header::CONTENT_TYPE, json)], body).into_response())
}
