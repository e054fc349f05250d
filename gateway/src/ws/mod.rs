//! `GET /ws`: identity before the upgrade, then one reader and one writer per connection.

mod outbox;
mod session;
mod writer;

use crate::access::RoomClaim;
use crate::app::App;
use crate::error::ApiError;
use crate::page::MAX_SERVER_FRAME;
use crate::protocol::ServerEvent;
use crate::ratelimit::TokenBucket;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use session::{ReaderExit, Session};
use shared::UserId;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use writer::{Writer, WriterExit};

/// Largest WebSocket frame or message a client may send.
pub const MAX_FRAME: usize = 64 * 1024;
/// Socket buffer sizes: tungstenite's defaults cost 128 KiB per connection. The read
/// buffer is allocated up front for every connection, idle or not; commands are small,
/// and a larger frame (up to `MAX_FRAME`) is still read whole, in more than one read.
/// Frames written while more are queued for the same client collect in the write buffer
/// and leave in one socket write when the queue is empty (or this much has piled up).
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 8 * 1024;
/// tungstenite refuses a frame that does not fit beside what the write buffer holds
/// (at most `WRITE_BUFFER` when a frame is fed), and that refusal ends the connection:
/// the limit leaves room for the largest frame the server builds, and its header.
const MAX_WRITE_BUFFER: usize = WRITE_BUFFER + MAX_SERVER_FRAME + 1024;

#[derive(Deserialize)]
pub struct WsParams {
    token: Option<String>,
    user: Option<String>,
}

pub async fn upgrade(
    State(app): State<Arc<App>>,
    Query(params): Query<WsParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !app.origins.allows(&headers) {
        tracing::info!(origin = ?headers.get(axum::http::header::ORIGIN), "upgrade from an origin not in ALLOWED_ORIGINS refused");
        return Err(ApiError::forbidden(
            "this page's origin may not open /ws (ALLOWED_ORIGINS)",
        ));
    }
    let (user, claim) =
        app.identity
            .user(params.token.as_deref(), params.user.as_deref(), &headers)?;
    let max = app.config.limits.max_connections as usize;
    if app.connections.load(Ordering::Relaxed) >= max || app.shutdown.is_fired() {
        return Err(ApiError::unavailable(
            "this gateway is full or stopping; try another",
        ));
    }
    // A browser that offers subprotocols fails the handshake unless one is answered.
    Ok(ws
        .protocols([crate::auth::SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| serve(app, user, claim, socket)))
}

/// Counts a connection for as long as it lives.
struct Counted(Arc<App>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("courier_connections").decrement(1.0);
    }
}

async fn serve(app: Arc<App>, user: UserId, claim: Option<RoomClaim>, socket: WebSocket) {
    app.connections.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(app.clone());
    metrics::gauge!("courier_connections").increment(1.0);
    metrics::counter!("courier_connections_total").increment(1);
    let conn = app.next_conn.fetch_add(1, Ordering::Relaxed);
    let session_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(%user, conn, "client connected");

    let limits = &app.config.limits;
    let buffer = limits.outbound_buffer as usize;
    let (tx, mut rx) = mpsc::channel(buffer);
    let lagging = Arc::new(AtomicBool::new(false));
    let budget =
        outbox::Budget::new(usize::try_from(limits.outbound_buffer_bytes).unwrap_or(usize::MAX));
    let hello = ServerEvent::Hello {
        user: &user,
        session: &session_id,
        gateway: &app.gateway,
    };
    let hello = crate::hub::Outbound::Frame(hello.to_json().into());
    budget.reserve(outbox::cost(&hello)).await;
    let _ = tx.try_send(hello);

    let mut session = Session {
        app: app.clone(),
        user,
        claim: claim.map(Arc::new),
        conn,
        tx,
        lagging: lagging.clone(),
        budget: budget.clone(),
        joined: HashSet::new(),
        bucket: TokenBucket::new(limits.rate_per_sec, limits.rate_burst),
    };
    let (mut sink, mut stream) = socket.split();
    let intake = outbox::Intake::new(&mut rx, budget, lagging);
    let writer = Writer::new(&mut sink, intake, app.store.clone(), buffer);
    let exit = tokio::select! {
        r = session.read(&mut stream) => match r {
            ReaderExit::Gone => None,
            ReaderExit::Close(code, reason) => Some((code, reason)),
        },
        w = writer.run(app.shutdown.clone(), limits.heartbeat()) => match w {
            WriterExit::Drained | WriterExit::Broken => None,
            WriterExit::Close(code, reason) => Some((code, reason)),
        },
    };
    session.leave_all().await;
    match exit {
        Some((code, reason)) => writer::close(&mut sink, code, reason).await,
        // The client closed: finish the closing handshake it started.
        None => {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.close()).await;
        }
    }
    tracing::debug!(conn, ?exit, "client disconnected");
}
