//! One client connection: connect, join, and the frames of each protocol.

use crate::cli::Protocol;
use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a received frame means to the generator.
pub enum Incoming<'a> {
    Message {
        id: &'a str,
        seq: Option<u64>,
    },
    Ack {
        id: &'a str,
    },
    Error {
        id: Option<&'a str>,
        code: String,
    },
    /// Engine.IO ping: answer with a pong.
    Ping,
    Other,
}

/// Opens a connection as `user` and joins `room`.
pub async fn open(
    url: &str,
    proto: Protocol,
    user: &str,
    room: &str,
    read_buffer: usize,
) -> anyhow::Result<Ws> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let full = match proto {
        Protocol::Courier => format!("{url}{sep}user={user}"),
        Protocol::Socketio => format!("{url}{sep}EIO=4&transport=websocket&user={user}"),
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    // TCP_NODELAY: a message is one small frame; Nagle would hold it back until the
    // previous one's ACK (up to a delayed-ACK timeout) and add that to the latency measured.
    let disable_nagle = true;
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(full.as_str(), Some(config), disable_nagle)
            .await
            .with_context(|| format!("connecting to {full}"))?;
    match proto {
        Protocol::Courier => {
            expect(&mut ws, |t| t.contains("\"hello\"")).await?;
            ws.send(Message::text(format!(
                r#"{{"type":"join","room":"{room}"}}"#
            )))
            .await?;
            expect(&mut ws, |t| t.contains("\"joined\"")).await?;
        }
        Protocol::Socketio => {
            expect(&mut ws, |t| t.starts_with('0')).await?;
            ws.send(Message::text("40")).await?;
            expect(&mut ws, |t| t.starts_with("40")).await?;
            ws.send(Message::text(format!(r#"42["join","{room}"]"#)))
                .await?;
            expect(&mut ws, |t| t.starts_with(r#"42["joined""#)).await?;
        }
    }
    Ok(ws)
}

/// Reads until a text frame satisfies `ok`; fails on close.
async fn expect(ws: &mut Ws, ok: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    while let Some(frame) = ws.next().await {
        match frame? {
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).await?,
            Message::Text(t) if ok(t.as_str()) => return Ok(()),
            Message::Text(t) if t.contains("\"error\"") => bail!("server said {t}"),
            Message::Close(c) => bail!("closed by the server: {c:?}"),
            _ => {}
        }
    }
    Err(anyhow!("connection ended during the handshake"))
}

/// The frame that sends one message. `body_json` is the body already escaped as a JSON
/// string literal, quotes included; `room` and `id` are the generator's own and need no
/// escaping.
pub fn send_frame(proto: Protocol, room: &str, id: &str, body_json: &str) -> Message {
    Message::text(match proto {
        Protocol::Courier => {
            format!(r#"{{"type":"send","room":"{room}","id":"{id}","body":{body_json}}}"#)
        }
        Protocol::Socketio => {
            format!(r#"42["send",{{"room":"{room}","id":"{id}","body":{body_json}}}]"#)
        }
    })
}

#[derive(Deserialize)]
struct CourierFrame<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(borrow)]
    id: Option<&'a str>,
    seq: Option<u64>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct IoPayload<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
}

/// Classifies a text frame.
pub fn classify(proto: Protocol, text: &str) -> Incoming<'_> {
    match proto {
        Protocol::Courier => match serde_json::from_str::<CourierFrame>(text) {
            Ok(f) => match (f.ty, f.id) {
                ("message", Some(id)) => Incoming::Message { id, seq: f.seq },
                ("ack", Some(id)) => Incoming::Ack { id },
                ("error", id) => Incoming::Error {
                    id,
                    code: f.code.unwrap_or_default(),
                },
                _ => Incoming::Other,
            },
            Err(_) => Incoming::Other,
        },
        Protocol::Socketio => {
            if text == "2" {
                return Incoming::Ping;
            }
            let Some(rest) = text.strip_prefix("42") else {
                return Incoming::Other;
            };
            match serde_json::from_str::<(&str, IoPayload)>(rest) {
                Ok(("message", IoPayload { id: Some(id) })) => Incoming::Message { id, seq: None },
                Ok(("ack", IoPayload { id: Some(id) })) => Incoming::Ack { id },
                _ => Incoming::Other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_frames_are_json_with_the_body_intact() {
        let body = "say \"hi\" \\ 👨‍👩‍👧\n\t`x`";
        let lit = serde_json::Value::from(body).to_string();
        let text = |m: Message| m.into_text().map(|t| t.to_string()).unwrap_or_default();
        let courier = text(send_frame(Protocol::Courier, "bench-1", "a.1.2.3", &lit));
        let v: serde_json::Value = serde_json::from_str(&courier).unwrap_or_default();
        assert_eq!(
            (v["body"].as_str(), v["id"].as_str()),
            (Some(body), Some("a.1.2.3"))
        );
        let io = text(send_frame(Protocol::Socketio, "bench-1", "a.1.2.3", &lit));
        let v: serde_json::Value = serde_json::from_str(&io[2..]).unwrap_or_default();
        assert_eq!(
            (v[0].as_str(), v[1]["body"].as_str()),
            (Some("send"), Some(body))
        );
    }

    #[test]
    fn deliveries_are_matched_by_id_whatever_the_body() {
        let frame =
            r#"{"type":"message","room":"r","seq":3,"id":"a.1.2.3","body":"\"}\\\n","from":"x"}"#;
        assert!(matches!(
            classify(Protocol::Courier, frame),
            Incoming::Message {
                id: "a.1.2.3",
                seq: Some(3)
            }
        ));
        let io = r#"42["message",{"room":"r","id":"a.1.2.3","from":"x","body":"\"]\u00e9"}]"#;
        assert!(matches!(
            classify(Protocol::Socketio, io),
            Incoming::Message {
                id: "a.1.2.3",
                seq: None
            }
        ));
    }
}
