//! `GET /ws`: identity before the upgrade, then one reader and one writer per connection.

mod session;
mod writer;

use crate::app::App;
use crate::error::ApiError;
use crate::ratelimit::TokenBucket;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use session::{ReaderExit, Session};
use shared::UserId;
use shared::protocol::ServerEvent;
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
const MAX_WRITE_BUFFER: usize = 256 * 1024;

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
    let user = app
        .identity
        .user(params.token.as_deref(), params.user.as_deref(), &headers)?;
    let max = app.config.limits.max_connections as usize;
    if app.connections.load(Ordering::Relaxed) >= max || app.shutdown.is_fired() {
        return Err(ApiError::unavailable(
            "this gateway is full or stopping; try another",
        ));
    }
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| serve(app, user, socket)))
}

/// Counts a connection for as long as it lives.
struct Counted(Arc<App>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("courier_connections").decrement(1.0);
    }
}

async fn serve(app: Arc<App>, user: UserId, socket: WebSocket) {
    app.connections.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(app.clone());
    metrics::gauge!("courier_connections").increment(1.0);
    metrics::counter!("courier_connections_total").increment(1);
    let conn = app.next_conn.fetch_add(1, Ordering::Relaxed);
    let session_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(%user, conn, "client connected");

    let buffer = app.config.limits.outbound_buffer as usize;
    let (tx, mut rx) = mpsc::channel(buffer);
    let lagging = Arc::new(AtomicBool::new(false));
    let hello = ServerEvent::Hello {
        user: &user,
        session: &session_id,
        gateway: &app.gateway,
    };
    let _ = tx.try_send(crate::hub::Outbound::Frame(hello.to_json().into()));

    let limits = &app.config.limits;
    let mut session = Session {
        app: app.clone(),
        user,
        conn,
        tx,
        lagging: lagging.clone(),
        joined: HashSet::new(),
        bucket: TokenBucket::new(limits.rate_per_sec, limits.rate_burst),
    };
    let (mut sink, mut stream) = socket.split();
    let writer = Writer::new(&mut sink, app.store.clone(), lagging, buffer);
    let exit = tokio::select! {
        r = session.read(&mut stream) => match r {
            ReaderExit::Gone => None,
            ReaderExit::Close(code, reason) => Some((code, reason)),
        },
        w = writer.run(&mut rx, app.shutdown.clone(), limits.heartbeat()) => match w {
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
