//! The Rust in-memory broadcast reference: what a WebSocket fan-out costs with no queue, no
//! store and no enrichment. Same protocol subset as courier (hello, join, send → ack +
//! message with a per-room seq, ping), the same small socket buffers, each message
//! serialized once and shared by every recipient.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Frames waiting for one slow client before it is dropped.
const OUTBOUND: usize = 256;

#[derive(Default)]
struct Room {
    seq: u64,
    members: HashMap<u64, mpsc::Sender<Utf8Bytes>>,
}

#[derive(Default)]
struct Hub {
    rooms: Mutex<HashMap<String, Room>>,
    next: AtomicU64,
}

pub async fn serve(bind: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/ws", get(upgrade))
        .with_state(Arc::new(Hub::default()));
    let listener = tokio::net::TcpListener::bind(bind).await?;
    println!("listening on {}", listener.local_addr()?);
    // TCP_NODELAY on every accepted socket: a frame goes out at once instead of waiting
    // for the ACK of the previous one (Nagle), which would add to the latency measured.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("TCP_NODELAY not set on an accepted connection: {e}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[derive(Deserialize)]
struct Who {
    user: Option<String>,
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    who: axum::extract::Query<Who>,
    ws: WebSocketUpgrade,
) -> Response {
    let user = who.0.user.unwrap_or_else(|| "guest".into());
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .on_upgrade(move |s| connection(hub, user, s))
}

#[derive(Deserialize)]
struct Command {
    #[serde(rename = "type")]
    ty: String,
    room: Option<String>,
    id: Option<String>,
    body: Option<String>,
}

async fn connection(hub: Arc<Hub>, user: String, socket: WebSocket) {
    let me = hub.next.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(OUTBOUND);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(Message::Text(frame)).await.is_err() {
                break;
            }
        }
    });
    let hello = json!({"type":"hello","user":user,"session":me.to_string(),"gateway":"reference"});
    let _ = tx.send(hello.to_string().into()).await;
    let mut joined = Vec::new();
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(cmd) = serde_json::from_str::<Command>(&text) else {
            continue;
        };
        let reply = match (cmd.ty.as_str(), cmd.room) {
            ("join", Some(room)) => {
                let mut rooms = hub.rooms.lock().unwrap();
                let r = rooms.entry(room.clone()).or_default();
                r.members.insert(me, tx.clone());
                joined.push(room.clone());
                json!({"type":"joined","room":room,"head":r.seq})
            }
            ("send", Some(room)) => {
                let id = cmd.id.unwrap_or_default();
                let _ = tx
                    .send(json!({"type":"ack","room":room,"id":id}).to_string().into())
                    .await;
                broadcast(&hub, &room, &id, &user, &cmd.body.unwrap_or_default());
                continue;
            }
            ("ping", _) => json!({"type":"pong"}),
            _ => {
                json!({"type":"error","code":"bad_request","message":"unsupported by the reference"})
            }
        };
        if tx.send(reply.to_string().into()).await.is_err() {
            break;
        }
    }
    let mut rooms = hub.rooms.lock().unwrap();
    for room in joined {
        if let Some(r) = rooms.get_mut(&room) {
            r.members.remove(&me);
        }
    }
    drop(rooms);
    writer.abort();
}

/// Serializes once, then hands every member the same bytes; a full member is dropped.
fn broadcast(hub: &Hub, room: &str, id: &str, from: &str, body: &str) {
    let mut rooms = hub.rooms.lock().unwrap();
    let Some(r) = rooms.get_mut(room) else { return };
    r.seq += 1;
    let frame: Utf8Bytes = json!({"type":"message","room":room,"seq":r.seq,"id":id,"from":from,
        "body":body,"sent_at":now_rfc3339()})
    .to_string()
    .into();
    r.members.retain(|_, m| m.try_send(frame.clone()).is_ok());
}

/// RFC 3339 UTC with milliseconds, like courier's `sent_at`.
fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}
