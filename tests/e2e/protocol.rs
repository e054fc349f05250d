//! One test per row of the WebSocket contract: hello, join, leave, send, history, ping,
//! errors, and the message event.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn hello_is_the_first_frame() {
    let g = TestGateway::start().await;
    let mut c = Client::connect(&g.ws_url("?user=alice")).await;
    let hello = c.recv().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["user"], "alice");
    assert_eq!(
        hello["session"].as_str().unwrap().len(),
        36,
        "a uuid: {hello}"
    );
    assert!(hello["gateway"].as_str().unwrap().starts_with("gw-"));
}

#[tokio::test]
async fn join_answers_joined_with_head_and_again_when_repeated() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    a.send(json!({"type":"join","room":"lobby","ref":"j1"}))
        .await;
    let j = a.recv().await;
    assert_eq!(
        j,
        json!({"type":"joined","room":"lobby","head":0,"read":0,"unread":0,"ref":"j1"})
    );
    assert_eq!(a.say("lobby", "c-1", "first").await["type"], "ack");
    a.message("lobby").await;
    let again = a.join("lobby").await;
    assert_eq!(again["head"], 1);
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "re-join replays nothing already seen"
    );
}

#[tokio::test]
async fn send_is_acked_and_delivered_enriched_to_every_member() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    let mut b = g.client("bob").await;
    a.join("lobby").await;
    b.join("lobby").await;
    a.send(json!({"type":"send","room":"lobby","id":"c-1","ref":"s1","body":"hi @bob see https://example.org #rust"})).await;
    let ack = a.recv_type("ack").await;
    assert_eq!(
        ack,
        json!({"type":"ack","room":"lobby","id":"c-1","ref":"s1"})
    );
    for c in [&mut a, &mut b] {
        let m = c.message("lobby").await;
        assert_eq!(m["seq"], 1);
        assert_eq!(m["id"], "c-1");
        assert_eq!(m["from"], "alice");
        assert_eq!(m["body"], "hi @bob see https://example.org #rust");
        let sent_at = m["sent_at"].as_str().unwrap();
        assert!(
            sent_at.ends_with('Z') && sent_at.len() == 24,
            "RFC 3339 with ms: {sent_at}"
        );
        assert_eq!(m["enriched"]["mentions"], json!(["bob"]));
        assert_eq!(m["enriched"]["hashtags"], json!(["rust"]));
        assert_eq!(m["enriched"]["links"], json!(["https://example.org"]));
        assert_eq!(m["enriched"]["flagged"], false);
        assert!(
            m["enriched"].get("lang").is_some(),
            "lang is present, possibly null"
        );
    }
}

#[tokio::test]
async fn language_and_moderation_reach_every_reader() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    a.say(
        "lobby",
        "en",
        "I think we should meet tomorrow morning to discuss the new project plan",
    )
    .await;
    assert_eq!(a.message("lobby").await["enriched"]["lang"], "eng");
    a.say("lobby", "rude", "you are a fucking idiot").await;
    let m = a.message("lobby").await;
    assert_eq!(m["enriched"]["flagged"], true);
    assert!(!m["body"].as_str().unwrap().contains("fucking"), "{m}");
    // Nowhere else shows the original either: history and the HTTP API.
    a.send(json!({"type":"history","room":"lobby"})).await;
    let h = a.recv_type("history").await;
    assert!(!h.to_string().contains("fucking"));
    let api: serde_json::Value = reqwest::Client::new()
        .get(g.url("/api/rooms/lobby/messages"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!api.to_string().contains("fucking"));
    assert_eq!(api["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn join_since_replays_then_goes_live_without_seam() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    for i in 1..=5 {
        a.say("lobby", &format!("m{i}"), &format!("message {i}"))
            .await;
    }
    for _ in 1..=5 {
        a.message("lobby").await;
    }
    let mut b = g.client("bob").await;
    let j = b.join_since("lobby", 2).await;
    assert_eq!(j["head"], 5);
    assert!(j.get("truncated").is_none());
    for seq in 3..=5 {
        assert_eq!(b.message("lobby").await["seq"], seq);
    }
    a.say("lobby", "m6", "live").await;
    assert_eq!(b.message("lobby").await["seq"], 6);
    assert!(b.quiet_for(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn leave_answers_left_and_stops_messages() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    let mut b = g.client("bob").await;
    a.join("lobby").await;
    b.join("lobby").await;
    b.send(json!({"type":"leave","room":"lobby","ref":"l"}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type":"left","room":"lobby","ref":"l"})
    );
    a.say("lobby", "after", "bob is gone").await;
    a.message("lobby").await;
    assert!(
        b.quiet_for(Duration::from_millis(400)).await,
        "no messages after leaving"
    );
    let e = b.say("lobby", "x", "not a member").await;
    assert_eq!(e["code"], "not_joined");
}

#[tokio::test]
async fn history_pages_oldest_first_with_limits() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    for i in 1..=60 {
        a.say("lobby", &format!("h{i}"), &format!("n{i}")).await;
    }
    for _ in 1..=60 {
        a.message("lobby").await;
    }
    let seqs = |v: &serde_json::Value| -> Vec<u64> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    a.send(json!({"type":"history","room":"lobby","ref":"h"}))
        .await;
    let h = a.recv_type("history").await;
    assert_eq!(h["ref"], "h");
    assert_eq!(
        seqs(&h),
        (11..=60).collect::<Vec<_>>(),
        "default: the newest 50"
    );
    assert_eq!(h["messages"][0]["type"], "message");
    a.send(json!({"type":"history","room":"lobby","before":11,"limit":3}))
        .await;
    assert_eq!(seqs(&a.recv_type("history").await), [8, 9, 10]);
    a.send(json!({"type":"history","room":"lobby","limit":1000}))
        .await;
    assert_eq!(
        seqs(&a.recv_type("history").await).len(),
        60,
        "limit is capped at 200"
    );
    a.send(json!({"type":"history","room":"elsewhere","ref":"x"}))
        .await;
    let e = a.recv_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("not_joined"), Some("x"))
    );
}

#[tokio::test]
async fn ping_answers_pong() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv().await, json!({"type":"pong"}));
    a.send(json!({"type":"ping","ref":"p"})).await;
    assert_eq!(a.recv().await, json!({"type":"pong","ref":"p"}));
}

#[tokio::test]
async fn bad_requests_get_codes_and_the_connection_stays_usable() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    let cases = [
        ("not json".to_owned(), "bad_request"),
        (r#"{"room":"lobby"}"#.to_owned(), "bad_request"),
        (r#"{"type":"dance"}"#.to_owned(), "bad_request"),
        (r#"{"type":"join"}"#.to_owned(), "bad_request"),
        (
            r#"{"type":"join","room":"no spaces"}"#.to_owned(),
            "bad_request",
        ),
        (
            r#"{"type":"join","room":"lobby","since":"x"}"#.to_owned(),
            "bad_request",
        ),
        (
            format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(65)),
            "bad_request",
        ),
        (
            r#"{"type":"send","room":"lobby","id":"e1","body":"hi"}"#.to_owned(),
            "not_joined",
        ),
    ];
    for (frame, code) in cases {
        a.send_raw(tokio_tungstenite::tungstenite::Message::text(frame.clone()))
            .await;
        let e = a.recv().await;
        assert_eq!(e["type"], "error", "{frame}");
        assert_eq!(e["code"], code, "{frame}: {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    a.send_raw(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .await;
    assert_eq!(a.recv().await["code"], "bad_request");
    a.join("lobby").await;
    let e = a.say("lobby", "e2", "").await;
    assert_eq!(e["code"], "bad_request");
    a.send(json!({"type":"send","room":"lobby","id":"e3","ref":"r3","body":"x".repeat(4097)}))
        .await;
    let e = a.recv_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str(), e["ref"].as_str()),
        (Some("too_large"), Some("e3"), Some("r3"))
    );
    assert_eq!(
        a.say("lobby", "ok", &"é".repeat(2048)).await["type"],
        "ack",
        "4096 bytes is fine"
    );
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv_type("pong").await["type"], "pong");
}

#[tokio::test]
async fn repeated_send_is_acked_again_but_stored_and_delivered_once() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    for _ in 0..3 {
        assert_eq!(a.say("lobby", "same", "once please").await["type"], "ack");
    }
    assert_eq!(a.message("lobby").await["seq"], 1);
    assert!(
        a.quiet_for(Duration::from_millis(500)).await,
        "delivered once"
    );
    let store = g.store().await;
    let room = shared::RoomId::parse("lobby").unwrap();
    assert_eq!(store.head(&room).await.unwrap(), 1);
    // Another sender may use the same id: the key is (room, from, id).
    let mut b = g.client("bob").await;
    b.join("lobby").await;
    b.say("lobby", "same", "mine").await;
    assert_eq!(b.message("lobby").await["seq"], 2);
}
