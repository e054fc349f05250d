//! Replies the gateway builds always fit the connection: `history` pages and HTTP pages
//! are cut by bytes (the client pages on), bodies with control characters are refused at
//! the edge, an invalid UTF-8 text frame closes with 1007, and guests get 64 random bits.

use crate::helpers::*;
// The largest frame the gateway builds (docs/protocol.md, "Frames"): 256 KiB.
use gateway::page::MAX_SERVER_FRAME;
use serde_json::{Value, json};
use shared::{ClientMsgId, RoomId, Timestamp, UserId};
use std::collections::HashSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Text in many scripts with numbers, prices and emoji, cut to exactly `bytes` UTF-8 bytes
/// (padded with digits where a character would not fit).
pub fn realistic_body(n: usize, bytes: usize) -> String {
    const PARTS: [&str; 9] = [
        "Order №5318008 ships for €12.50 at 09:45 ",
        "注文番号 42 は明日届きます 🚚 ",
        "مرحبا، الاجتماع الساعة 3 مساءً ",
        "Γειά σου κόσμε, τιμή 7,99 € ",
        "नमस्ते दुनिया, कमरा 9 ",
        "👍🏽🎉 +1 (555) 010-4477 ",
        "#release @bob https://example.org/p?id=77 ",
        "Привет! Встреча в 18:30, кабинет 214 ",
        "שלום, 120 ₪ לחודש ",
    ];
    let mut s = format!("#{n} ");
    let mut i = n;
    loop {
        let part = PARTS[i % PARTS.len()];
        if s.len() + part.len() > bytes {
            break;
        }
        s.push_str(part);
        i += 1;
    }
    while s.len() < bytes {
        s.push(char::from(b'0' + (s.len() % 10) as u8));
    }
    s
}

/// Stores `bodies` in `room` directly, as the workers would have.
async fn seed(g: &TestGateway, room: &str, bodies: &[String]) {
    let room = RoomId::parse(room).unwrap();
    let batch: Vec<store::NewMessage> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| store::NewMessage {
            room: room.clone(),
            id: ClientMsgId::parse(&format!("seed-{i}")).unwrap(),
            from: UserId::parse("seeder").unwrap(),
            body: body.clone(),
            sent_at: Timestamp::now(),
            enriched: Default::default(),
            trace: None,
            event: Default::default(),
        })
        .collect();
    g.store().await.store_batch(&batch).await.unwrap();
}

/// Pages a room's `history` from the newest down; every reply is checked to fit and to
/// leave the connection open. Returns the seqs and bodies, oldest first.
async fn page_all(c: &mut Client, room: &str, limit: u64) -> (Vec<u64>, Vec<String>, usize) {
    let (mut seqs, mut bodies, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut before: Option<u64> = None;
    loop {
        let mut cmd = json!({"type":"history","room":room,"limit":limit,"ref":format!("h{pages}")});
        if let Some(b) = before {
            cmd["before"] = json!(b);
        }
        c.send(cmd).await;
        let reply = match c.recv_or_close().await {
            Ok(v) => v,
            Err(code) => panic!("a history reply closed the connection with {code}"),
        };
        assert_eq!(reply["type"], "history", "{reply}");
        assert!(
            reply.to_string().len() <= MAX_SERVER_FRAME,
            "the reply fits the largest frame"
        );
        let msgs = reply["messages"].as_array().unwrap();
        pages += 1;
        if msgs.is_empty() {
            break;
        }
        for (i, m) in msgs.iter().enumerate().rev() {
            seqs.insert(0, m["seq"].as_u64().unwrap());
            bodies.insert(0, m["body"].as_str().unwrap().to_owned());
            if i > 0 {
                assert_eq!(msgs[i - 1]["seq"].as_u64().unwrap() + 1, seqs[0]);
            }
        }
        before = Some(seqs[0]);
        if seqs[0] == 1 {
            break;
        }
    }
    (seqs, bodies, pages)
}

#[tokio::test]
async fn a_history_page_of_200_messages_of_4000_bytes_is_cut_to_fit_and_pages_on() {
    let g = TestGateway::start().await;
    let bodies: Vec<String> = (0..200).map(|i| realistic_body(i, 4000)).collect();
    seed(&g, "big", &bodies).await;
    let mut a = g.client("alice").await;
    assert_eq!(a.join("big").await["head"], 200);

    let (seqs, got, pages) = page_all(&mut a, "big", 200).await;
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<_>>(),
        "each message once, in order"
    );
    assert_eq!(got, bodies);
    assert!(pages > 1, "200 messages of 4000 bytes do not fit one frame");
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv_type("pong").await["type"], "pong");

    // A replay on join goes through the same writer, one frame per message.
    let mut b = g.client("bob").await;
    b.join_since("big", 0).await;
    for seq in 1..=200 {
        assert_eq!(b.message("big").await["seq"], seq);
    }
}

#[tokio::test]
async fn an_http_page_of_200_messages_of_4000_bytes_is_cut_to_fit_and_pages_on() {
    let g = TestGateway::start().await;
    let bodies: Vec<String> = (0..200).map(|i| realistic_body(i + 7, 4000)).collect();
    seed(&g, "big", &bodies).await;
    let http = reqwest::Client::new();
    let (mut since, mut got, mut pages) = (0u64, Vec::new(), 0);
    loop {
        let url = g.url(&format!("/api/rooms/big/messages?since={since}&limit=200"));
        let r = http.get(url).bearer_auth(API_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.len() <= MAX_SERVER_FRAME, "{} bytes", text.len());
        let page: Value = serde_json::from_str(&text).unwrap();
        let msgs = page["messages"].as_array().unwrap();
        pages += 1;
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
            since += 1;
            assert_eq!(m["seq"], since, "oldest first, no gap");
            got.push(m["body"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(got, bodies);
    assert!(pages > 2, "cut into several pages: {pages}");
}

#[tokio::test]
async fn messages_of_4096_control_characters_escaped_six_times_page_without_closing() {
    let g = TestGateway::start().await;
    // Stored before bodies were checked for control characters: each escapes to \u0001,
    // six bytes, so eleven of them would be a 270 KB frame.
    let bodies: Vec<String> = (0..11)
        .map(|i| {
            let c = char::from(1 + (i % 7) as u8);
            std::iter::repeat_n(c, 4096).collect()
        })
        .collect();
    seed(&g, "ctl", &bodies).await;
    let mut a = g.client("alice").await;
    a.join("ctl").await;
    let (seqs, got, _) = page_all(&mut a, "ctl", 11).await;
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
    assert_eq!(got, bodies);
}

#[tokio::test]
async fn a_body_with_nul_or_another_control_character_is_bad_request_on_websocket_and_http() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    let refused = [
        "price\u{0}€12.50",
        "bell \u{7} 42",
        "escape \u{1b}[31m red",
        "delete \u{7f} key",
        "next line \u{85} (C1)",
        "🙂\u{1f}",
    ];
    for (i, body) in refused.iter().enumerate() {
        let id = format!("bad-{i}");
        let r = a.say("lobby", &id, body).await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{body:?}: {r}"
        );
        let http = g
            .post(
                "lobby",
                json!({"id":format!("http-{id}"),"from":"backend","body":body}),
            )
            .await;
        assert_eq!(http.status(), 400, "{body:?}");
        assert_eq!(http.json::<Value>().await.unwrap()["error"], "bad_request");
    }
    // Tab, line feed and carriage return are text.
    let fine = "Total:\t€12.50\r\nДоставка 🚚\n#ops";
    assert_eq!(a.say("lobby", "ok-1", fine).await["type"], "ack");
    assert_eq!(a.message("lobby").await["body"], fine);
    assert_eq!(
        g.post("lobby", json!({"id":"ok-2","from":"backend","body":fine}))
            .await
            .status(),
        202
    );
    assert_eq!(
        a.message("lobby").await["seq"],
        2,
        "only the good ones were stored"
    );
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    let mut bytes = br#"{"type":"ping","x":""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bytes.extend_from_slice(br#""}"#);
    let frame = Frame::message(bytes, OpCode::Data(Data::Text), true);
    a.send_raw(Message::Frame(frame)).await;
    assert_eq!(a.closed().await, 1007);
    let mut b = g.client("bob").await;
    b.send(json!({"type":"ping"})).await;
    assert_eq!(b.recv().await["type"], "pong", "others are unaffected");
}

#[tokio::test]
async fn guests_get_64_random_bits() {
    let g = TestGateway::start().await;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let mut c = Client::connect(&g.ws_url("")).await;
        let hello = c.recv().await;
        let user = hello["user"].as_str().unwrap().to_owned();
        let hex = user.strip_prefix("guest-").expect("a guest name");
        assert_eq!(hex.len(), 16, "{user}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{user}");
        assert!(seen.insert(user), "no repeat");
    }
}
