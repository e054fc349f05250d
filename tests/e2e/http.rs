//! The HTTP API and the operations endpoints.

use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn api_requires_the_bearer_token() {
    let g = TestGateway::start().await;
    let http = reqwest::Client::new();
    let url = g.url("/api/rooms/lobby/messages");
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(
        http.get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(&url)
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn api_refuses_everything_without_api_token() {
    let g = TestGateway::start_with(|c| c.api_token = None).await;
    let r = reqwest::Client::new()
        .get(g.url("/api/rooms/lobby/messages"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn posted_messages_flow_like_a_clients_and_read_back() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    let r = g
        .post(
            "lobby",
            json!({"id":"api-1","from":"backend","body":"deploy done #ops"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"room":"lobby","id":"api-1"})
    );
    let m = a.message("lobby").await;
    assert_eq!(
        (m["from"].as_str(), m["seq"].as_u64()),
        (Some("backend"), Some(1))
    );
    assert_eq!(m["enriched"]["hashtags"], json!(["ops"]));
    for i in 2..=4 {
        g.post(
            "lobby",
            json!({"id":format!("api-{i}"),"from":"backend","body":"x"}),
        )
        .await;
        a.message("lobby").await;
    }
    let read = |q: &str| {
        let url = g.url(&format!("/api/rooms/lobby/messages{q}"));
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["room"], "lobby");
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(read("").await, [1, 2, 3, 4]);
    assert_eq!(read("?since=2").await, [3, 4]);
    assert_eq!(read("?since=1&limit=2").await, [2, 3]);
}

#[tokio::test]
async fn api_bad_input_gets_400_with_codes() {
    let g = TestGateway::start().await;
    let cases = [
        ("lobby", json!({"id":"1","from":"x"}), "bad_request"),
        (
            "lobby",
            json!({"id":"1","from":"not valid","body":"b"}),
            "bad_request",
        ),
        (
            "lobby",
            json!({"id":"1","from":"x","body":""}),
            "bad_request",
        ),
        (
            "lobby",
            json!({"id":"1","from":"x","body":"z".repeat(4097)}),
            "too_large",
        ),
        (
            "bad%20room",
            json!({"id":"1","from":"x","body":"b"}),
            "bad_request",
        ),
        ("lobby", json!(["not", "an", "object"]), "bad_request"),
    ];
    for (room, body, code) in cases {
        let r = g.post(room, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], code, "{body}: {v}");
        assert!(v["message"].is_string());
    }
    let r = reqwest::Client::new()
        .get(g.url("/api/rooms/lobby/messages?since=-1"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing of that was stored.
    let room = shared::RoomId::parse("lobby").unwrap();
    assert_eq!(g.store().await.head(&room).await.unwrap(), 0);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let g = TestGateway::start().await;
    let r = reqwest::get(g.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(g.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["ready"], true);
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    a.say("lobby", "m", "hello").await;
    a.message("lobby").await;
    let text = g.metrics().await;
    for name in [
        "courier_connections",
        "courier_commands_total",
        "courier_acks_total",
        "courier_deliveries_total",
        "courier_publish_seconds",
        "courier_worker_batch_size",
        "courier_worker_messages_total",
        "courier_ingest_backlog",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}
