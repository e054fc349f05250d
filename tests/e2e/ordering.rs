//! The ordering promise under load: every member sees the room's seq 1..=N exactly once,
//! in order, with several workers finishing messages out of order; duplicates never
//! become second messages.

use crate::helpers::*;
use serde_json::json;
use std::collections::HashSet;

/// Reads until `want` messages of `room` and `acks` acks arrived; checks the sequence.
async fn read_all(c: &mut Reader, room: &str, want: u64, acks: usize) -> HashSet<(String, String)> {
    let mut next = 1;
    let mut seen = HashSet::new();
    let mut acked = 0;
    while next <= want || acked < acks {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("message") => {
                assert_eq!(v["room"], room);
                assert_eq!(
                    v["seq"].as_u64(),
                    Some(next),
                    "gapless, in order, once: {v}"
                );
                let key = (
                    v["from"].as_str().unwrap().to_owned(),
                    v["id"].as_str().unwrap().to_owned(),
                );
                assert!(seen.insert(key), "a message delivered twice: {v}");
                next += 1;
            }
            Some("ack") => acked += 1,
            _ => panic!("unexpected frame {v}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_clients_two_hundred_messages_each_see_one_to_a_thousand_in_order() {
    let g = TestGateway::start_with(|c| {
        c.worker.workers = 4;
        c.worker.batch_size = 16;
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = g.client(&format!("user{i}")).await;
        c.join("prop").await;
        clients.push(c);
    }
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let Client { sink, rx } = &mut c;
            let sending = async {
                for n in 0..200 {
                    send(sink, json!({"type":"send","room":"prop","id":format!("u{i}-{n}"),"body":format!("{i}:{n}")})).await;
                }
            };
            tokio::join!(sending, read_all(rx, "prop", 1000, 200)).1
        }));
    }
    for t in tasks {
        let seen = t.await.unwrap();
        assert_eq!(seen.len(), 1000);
    }
    let room = shared::RoomId::parse("prop").unwrap();
    assert_eq!(g.store().await.head(&room).await.unwrap(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_storm_stores_nothing_twice() {
    let g = TestGateway::start_with(|c| {
        c.worker.workers = 4;
        c.worker.batch_size = 8;
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = g.client(&format!("storm{i}")).await;
        c.join("storm").await;
        clients.push(c);
    }
    let mut tasks = Vec::new();
    for mut c in clients {
        tasks.push(tokio::spawn(async move {
            let Client { sink, rx } = &mut c;
            // Every id three times, interleaved, without waiting for acks.
            let sending = async {
                for round in 0..3 {
                    for n in 0..100 {
                        let body = format!("round {round}");
                        send(
                            sink,
                            json!({"type":"send","room":"storm","id":format!("d{n}"),"body":body}),
                        )
                        .await;
                    }
                }
            };
            tokio::join!(sending, read_all(rx, "storm", 500, 300)).1
        }));
    }
    // The HTTP API repeats some of the same (from, id) pairs.
    for n in 0..100 {
        let r = g
            .post(
                "storm",
                json!({"id":format!("d{n}"),"from":"storm0","body":"api"}),
            )
            .await;
        assert_eq!(r.status(), 202);
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().len(), 500);
    }
    let store = g.store().await;
    let room = shared::RoomId::parse("storm").unwrap();
    assert_eq!(
        store.head(&room).await.unwrap(),
        500,
        "5 senders × 100 ids, each stored once"
    );
    let all = store.after(&room, 0, 200).await.unwrap();
    assert!(
        all.iter().all(|m| m.body == "round 0" || m.body == "api"),
        "stored under its first send"
    );
}
