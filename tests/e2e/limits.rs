//! Bounds: rate limits, frame size, slow readers, replay truncation, rooms per connection.

use crate::helpers::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn commands_beyond_the_rate_are_refused_and_the_connection_stays() {
    let g = TestGateway::start_with(|c| {
        c.limits.rate_per_sec = 20.0;
        c.limits.rate_burst = 50;
    })
    .await;
    let mut a = g.client("alice").await;
    for i in 0..80 {
        a.send(json!({"type":"ping","ref":format!("p{i}")})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..80 {
        let v = a.recv().await;
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(v["code"], "rate_limited");
                assert!(v["ref"].as_str().unwrap().starts_with('p'));
                limited += 1;
            }
            _ => panic!("{v}"),
        }
    }
    assert!((50..=55).contains(&pongs), "the burst passes: {pongs}");
    assert_eq!(pongs + limited, 80);
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(json!({"type":"ping"})).await;
    assert_eq!(
        a.recv().await["type"],
        "pong",
        "usable again once tokens refill"
    );
}

#[tokio::test]
async fn a_frame_over_64k_closes_with_1009() {
    let g = TestGateway::start().await;
    let mut a = g.client("alice").await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(64 * 1024));
    a.send_raw(Message::text(big)).await;
    assert_eq!(a.closed().await, 1009);
    // Others are unaffected.
    let mut b = g.client("bob").await;
    b.send(json!({"type":"ping"})).await;
    assert_eq!(b.recv().await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_cannot_keep_up_is_closed_with_1008_and_others_lose_nothing() {
    let g = TestGateway::start_with(|c| c.limits.outbound_buffer = 64).await;
    let mut slow = Client::connect_small_buffer(g.addr, &g.ws_url("?user=slow")).await;
    slow.join("busy").await;
    let mut fast = g.client("fast").await;
    fast.join("busy").await;
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let fast_reader = {
        let target = target.clone();
        tokio::spawn(async move {
            let mut next = 1;
            while next <= target.load(Ordering::SeqCst) {
                let m = fast.message("busy").await;
                assert_eq!(m["seq"], next, "the fast reader sees everything in order");
                next += 1;
            }
        })
    };
    let closes_before = slow_closes(&g).await;
    // ~4 KiB messages, 100 at a time, until the slow reader's socket and buffer are full.
    let body = "y".repeat(4000);
    let mut posted = 0u64;
    while slow_closes(&g).await == closes_before {
        assert!(posted < 10_000, "the slow reader was never closed");
        let mut batch = tokio::task::JoinSet::new();
        for i in posted..posted + 100 {
            let url = g.url("/api/rooms/busy/messages");
            let body = json!({"id":format!("b{i}"),"from":"pusher","body":body});
            batch.spawn(async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(API_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            });
        }
        batch.join_all().await;
        posted += 100;
    }
    target.store(posted, Ordering::SeqCst);
    assert_eq!(slow.closed().await, 1008);
    tokio::time::timeout(WAIT * 4, fast_reader)
        .await
        .expect("fast reader done")
        .unwrap();
}

async fn slow_closes(g: &TestGateway) -> u64 {
    g.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("courier_slow_consumer_closes_total "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[tokio::test]
async fn more_than_500_missing_replays_the_newest_500_and_says_truncated() {
    let g = TestGateway::start().await;
    let store = g.store().await;
    let room = shared::RoomId::parse("deep").unwrap();
    let batch: Vec<store::NewMessage> = (1..=620)
        .map(|i| store::NewMessage {
            room: room.clone(),
            id: shared::ClientMsgId::parse(&format!("d{i}")).unwrap(),
            from: shared::UserId::parse("seed").unwrap(),
            body: format!("n{i}"),
            sent_at: shared::Timestamp::now(),
            enriched: Default::default(),
            trace: None,
            event: Default::default(),
        })
        .collect();
    store.store_batch(&batch).await.unwrap();
    let mut a = g.client("alice").await;
    let j = a.join_since("deep", 10).await;
    assert_eq!(
        (j["head"].as_u64(), j["truncated"].as_bool()),
        (Some(620), Some(true))
    );
    for seq in 121..=620 {
        assert_eq!(a.message("deep").await["seq"], seq);
    }
    assert!(a.quiet_for(Duration::from_millis(300)).await);
    a.send(json!({"type":"history","room":"deep","before":121,"limit":200}))
        .await;
    let h = a.recv_type("history").await;
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(
        (msgs.len(), msgs[0]["seq"].as_u64()),
        (120, Some(1)),
        "older ones page through history"
    );
}

#[tokio::test]
async fn rooms_per_connection_are_bounded() {
    let g = TestGateway::start_with(|c| c.limits.max_rooms_per_connection = 2).await;
    let mut a = g.client("alice").await;
    a.join("r1").await;
    a.join("r2").await;
    a.send(json!({"type":"join","room":"r3"})).await;
    assert_eq!(a.recv().await["code"], "bad_request");
    a.join("r1").await;
}
