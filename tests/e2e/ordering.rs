//! The ordering promise under load: every member sees the room's seq 1..=N exactly once,
//! in order, with several workers finishing messages out of order; duplicates never
//! become second messages; and each sender's messages are stored in the order it sent
//! them, on every queue backend.

use crate::cluster::{Backend, Cluster};
use crate::helpers::*;
use serde_json::json;
use std::collections::HashSet;
use std::net::SocketAddr;

/// Connections per round that pipeline into one room at the same time, and the sends
/// each makes without waiting for an ack.
const SENDERS: usize = 3;
const PIPELINED: usize = 50;

/// `c` (joined to `room`) sends `n` messages back to back without waiting: its acks come
/// back in send order, and the room stores them in send order (a member receives a
/// room's messages in `seq` order, so arrival order is storage order).
pub async fn pipelined_sends_keep_their_order(c: &mut Client, room: &str, tag: &str, n: usize) {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let Client { sink, rx } = c;
    let sending = async {
        for (i, id) in ids.iter().enumerate() {
            // Real chat text: numbers, prices and phone numbers must pass unharmed too.
            let body = format!("#{i} order 199215 costs €4.50, call +1 415 555 0132 🙂");
            send(sink, json!({"type":"send","room":room,"id":id,"body":body})).await;
        }
    };
    let reading = async {
        let (mut acks, mut stored, mut last_seq) = (Vec::new(), Vec::new(), 0);
        while acks.len() < n || stored.len() < n {
            let v = rx.recv().await;
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            match v["type"].as_str() {
                Some("ack") if id.starts_with(tag) => acks.push(id),
                Some("message") if v["room"] == room => {
                    let seq = v["seq"].as_u64().unwrap();
                    assert!(seq > last_seq, "seq order: {v}");
                    last_seq = seq;
                    if id.starts_with(tag) {
                        assert!(!v["enriched"]["flagged"].as_bool().unwrap(), "{v}");
                        stored.push(id);
                    }
                }
                Some("error") => panic!("a send failed: {v}"),
                _ => {}
            }
        }
        (acks, stored)
    };
    let ((), (acks, stored)) = tokio::join!(sending, reading);
    assert_eq!(acks, ids, "{tag}: acks come back in send order");
    assert_eq!(stored, ids, "{tag}: the room stored them in send order");
}

/// `SENDERS` connections pipeline into `room` at once; each one's order must hold.
async fn senders_pipeline_at_once(clients: Vec<Client>, room: &str) {
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let room = room.to_owned();
        tasks.push(tokio::spawn(async move {
            c.join(&room).await;
            pipelined_sends_keep_their_order(&mut c, &room, &format!("s{i}"), PIPELINED).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A backend posts `n` messages one after another for one `from`; a member sees them
/// stored in that order.
async fn posts_keep_their_order(watcher: &mut Client, gateway: SocketAddr, room: &str, n: usize) {
    watcher.join(room).await;
    let Client { rx, .. } = watcher;
    let posting = async {
        for i in 0..n {
            let body = json!({"id":format!("api-{i}"),"from":"backend","body":format!("deploy {i} took 12.5 s")});
            assert_eq!(post_message(gateway, room, body).await.status(), 202);
        }
    };
    let reading = async {
        let mut got = Vec::new();
        while got.len() < n {
            let v = rx.message(room).await;
            got.push(v["id"].as_str().unwrap().to_owned());
        }
        got
    };
    let ((), got) = tokio::join!(posting, reading);
    let want: Vec<String> = (0..n).map(|i| format!("api-{i}")).collect();
    assert_eq!(
        got, want,
        "HTTP posts are stored in the order they were made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sender_keeps_its_order_with_two_to_four_embedded_workers() {
    for workers in 2..=4 {
        let g = TestGateway::start_with(|c| {
            c.worker.workers = workers;
            // Small batches, so one sender's burst spans several batches and workers.
            c.worker.batch_size = 8;
            c.limits.rate_burst = 1000;
        })
        .await;
        for round in 0..5 {
            let mut clients = Vec::new();
            for i in 0..SENDERS {
                clients.push(g.client(&format!("w{workers}r{round}u{i}")).await);
            }
            senders_pipeline_at_once(clients, &format!("order-{round}")).await;
        }
        let mut watcher = g.client("watcher").await;
        posts_keep_their_order(&mut watcher, g.addr, "order-api", 200).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn each_sender_keeps_its_order_on_rabbitmq_with_four_consumers() {
    let _faults = crate::queue_contract::BROKER_FAULTS.lock().await;
    each_sender_keeps_its_order_on(Backend::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_each_sender_keeps_its_order_with_four_consumers() {
    each_sender_keeps_its_order_on(Backend::Sqs).await;
}

/// Two gateways and two workers of two consumer loops each.
async fn each_sender_keeps_its_order_on(backend: Backend) {
    let c = Cluster::start_on(backend, 2, 2, &[("WORKERS", "2"), ("BATCH_SIZE", "8")]).await;
    for round in 0..3 {
        let mut clients = Vec::new();
        for i in 0..SENDERS {
            clients.push(c.client(i % 2, &format!("r{round}u{i}")).await);
        }
        senders_pipeline_at_once(clients, &format!("order-{round}")).await;
    }
    let mut watcher = c.client(1, "watcher").await;
    posts_keep_their_order(&mut watcher, c.addr(0), "order-api", 200).await;
    c.destroy().await;
}

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
            // The other clients coming online: presence, not the room's log.
            Some("member") => {}
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
