//! The scale-out topology on real RabbitMQ and PostgreSQL: separate gateway and worker
//! processes, and the promises under faults (worker kill -9, broker connections closed,
//! poison messages, gateway SIGTERM). The `sqs_` variants run the same cases on SQS
//! (LocalStack, see sqs.rs); they do not take `BROKER_FAULTS`, which only guards
//! RabbitMQ-wide faults.

use crate::cluster::*;
use crate::helpers::*;
use crate::queue_contract::BROKER_FAULTS;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Reads `room` messages until seq `want`; asserts gapless order, returns the ids seen.
async fn read_room(c: &mut Reader, room: &str, from: u64, want: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = from;
    while next <= want {
        let m = c.message(room).await;
        assert_eq!(
            m["seq"].as_u64(),
            Some(next),
            "gapless, in order, once: {m}"
        );
        ids.push(format!(
            "{}/{}",
            m["from"].as_str().unwrap(),
            m["id"].as_str().unwrap()
        ));
        next += 1;
    }
    ids
}

/// Every (from, id) of a room in the store, with how often it appears.
async fn stored_keys(c: &Cluster, room: &str) -> BTreeMap<String, usize> {
    let store = c.store().await;
    let room = shared::RoomId::parse(room).unwrap();
    let mut keys = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.after(&room, after, 200).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for m in &page {
            *keys.entry(format!("{}/{}", m.from, m.id)).or_insert(0) += 1;
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn two_gateways_two_workers_everyone_sees_everything_once_in_order() {
    let _faults = BROKER_FAULTS.lock().await;
    everyone_sees_everything_once_in_order(Backend::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_two_gateways_two_workers_everyone_sees_everything_once_in_order() {
    everyone_sees_everything_once_in_order(Backend::Sqs).await;
}

async fn everyone_sees_everything_once_in_order(backend: Backend) {
    let c = Cluster::start_on(backend, 2, 2, &[]).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut cl = c.client(i % 2, &format!("u{i}")).await;
        cl.join("alpha").await;
        cl.join("beta").await;
        clients.push(cl);
    }
    let mut tasks = Vec::new();
    for (i, mut cl) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let Client { sink, rx } = &mut cl;
            let sending = async {
                for n in 0..60 {
                    let room = if n % 3 == 0 { "beta" } else { "alpha" };
                    send(sink, json!({"type":"send","room":room,"id":format!("m{n}"),"body":format!("{i}:{n}")})).await;
                }
            };
            let reading = async {
                let alpha = read_room(rx, "alpha", 1, 160).await;
                let beta = read_room(rx, "beta", 1, 80).await;
                (alpha, beta)
            };
            tokio::join!(sending, reading).1
        }));
    }
    for t in tasks {
        let (alpha, beta) = t.await.unwrap();
        assert_eq!(alpha.iter().collect::<HashSet<_>>().len(), 160);
        assert_eq!(beta.iter().collect::<HashSet<_>>().len(), 80);
    }
    c.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn a_worker_killed_mid_stream_loses_nothing_and_stores_nothing_twice() {
    let _faults = BROKER_FAULTS.lock().await;
    worker_killed_mid_stream(Backend::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_a_worker_killed_mid_stream_loses_nothing_and_stores_nothing_twice() {
    worker_killed_mid_stream(Backend::Sqs).await;
}

async fn worker_killed_mid_stream(backend: Backend) {
    let mut c = Cluster::start_on(backend, 2, 2, &[("BATCH_SIZE", "20")]).await;
    let mut watchers = Vec::new();
    for g in 0..2 {
        let mut w = c.client(g, &format!("watch{g}")).await;
        w.join("kill").await;
        watchers.push(tokio::spawn(async move {
            read_room(&mut w, "kill", 1, 2000).await
        }));
    }
    let mut acked = HashSet::new();
    for chunk in 0..40 {
        if chunk == 10 {
            c.workers[0].kill9();
        }
        if chunk == 25 {
            c.add_worker();
        }
        let mut batch = tokio::task::JoinSet::new();
        for n in chunk * 50..chunk * 50 + 50 {
            let url = format!("http://{}/api/rooms/kill/messages", c.addr(n % 2));
            batch.spawn(async move {
                let id = format!("k{n}");
                loop {
                    let r = reqwest::Client::new()
                        .post(&url)
                        .bearer_auth(API_TOKEN)
                        .json(&json!({"id":id,"from":"loader","body":format!("n{n}")}))
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 202 {
                        return id;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        acked.extend(batch.join_all().await);
    }
    for w in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("all delivered")
            .unwrap();
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2000);
    }
    let keys = stored_keys(&c, "kill").await;
    assert_eq!(keys.len(), 2000, "every acked id stored");
    assert!(keys.values().all(|n| *n == 1), "stored exactly once");
    assert!(
        acked
            .iter()
            .all(|id| keys.contains_key(&format!("loader/{id}")))
    );
    c.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn broker_connections_closed_under_traffic_everything_reconnects_and_nothing_acked_is_lost() {
    let _faults = BROKER_FAULTS.lock().await;
    let c = Cluster::start(2, 2, &[]).await;
    let mut watcher = c.client(1, "watcher").await;
    watcher.join("flap").await;
    let mut sender = c.client(0, "sender").await;
    sender.join("flap").await;
    let mut acked = Vec::new();
    for n in 0..300 {
        if n == 100 || n == 200 {
            let out = std::process::Command::new("rabbitmqctl")
                .args(["close_all_connections", "courier test: broker fault"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let id = format!("f{n}");
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = sender.say("flap", &id, "through the storm").await;
            if r["type"] == "ack" {
                acked.push(id.clone());
                break;
            }
            assert_eq!(r["code"], "unavailable", "{r}");
            assert!(
                tokio::time::Instant::now() < end,
                "never acked again:\n{}",
                c.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let seen = read_room(&mut watcher, "flap", 1, 300).await;
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 300);
    let keys = stored_keys(&c, "flap").await;
    assert!(
        acked
            .iter()
            .all(|id| keys.get(&format!("sender/{id}")) == Some(&1))
    );
    for g in 0..2 {
        assert_eq!(readyz(c.addr(g)).await, 200);
    }
    c.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn a_poison_message_is_dead_lettered_while_the_room_keeps_flowing() {
    let _faults = BROKER_FAULTS.lock().await;
    poison_message_while_the_room_flows(Backend::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_a_poison_message_is_dead_lettered_while_the_room_keeps_flowing() {
    poison_message_while_the_room_flows(Backend::Sqs).await;
}

async fn poison_message_while_the_room_flows(backend: Backend) {
    let c = Cluster::start_on(
        backend,
        1,
        0,
        &[("MAX_ATTEMPTS", "3"), ("RETRY_DELAY_MS", "100")],
    )
    .await;
    drop(c.store().await); // runs the migrations
    exec_sql(
        &c.db.url,
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.body LIKE '%poison-pill%' THEN RAISE EXCEPTION 'poison pill refused by the test trigger'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .await;
    let mut c = c;
    let metrics_addr = free_addr();
    c.add_worker_with(&[("METRICS_BIND", &metrics_addr)]);
    let mut a = c.client(0, "alice").await;
    a.join("room").await;
    assert_eq!(a.say("room", "bad", "a poison-pill").await["type"], "ack");
    for i in 1..=20 {
        a.say("room", &format!("ok{i}"), "fine").await;
    }
    let ids = read_room(&mut a, "room", 1, 20).await;
    assert!(!ids.contains(&"alice/bad".to_owned()));
    let q = c.queue().await;
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = q.dead_letters(10).await.unwrap();
        if !dead.is_empty() || tokio::time::Instant::now() > end {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(dead.len(), 1, "{}", c.logs());
    let env: Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(env["id"], "bad");
    assert_eq!(dead[0].attempts, 3);

    // The worker's own metrics listener counts it, and shows the backlog.
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("courier_dead_letters_total{reason=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("courier_ingest_backlog"), "{metrics}");

    // The operator inspects, fixes the cause, and replays: stored once, delivered in order.
    let (ok, out, err) = c.worker_cli(&["dlq", "list"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(out.lines().next().expect("one dead letter")).unwrap();
    assert_eq!(
        (listed["id"].as_str(), listed["attempts"].as_u64()),
        (Some("bad"), Some(3))
    );
    assert!(
        listed["reason"]
            .as_str()
            .unwrap()
            .contains("poison pill refused"),
        "{listed}"
    );
    exec_sql(&c.db.url, "DROP TRIGGER poison ON messages").await;
    let (ok, out, err) = c.worker_cli(&["dlq", "replay", "--id", "bad"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "replayed 1 dead letter(s) onto the ingest queue"
    );
    let m = a.message("room").await;
    assert_eq!(
        (m["seq"].as_u64(), m["id"].as_str()),
        (Some(21), Some("bad"))
    );
    let (ok, _, err) = c.worker_cli(&["dlq", "purge"]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, out, _) = c.worker_cli(&["dlq", "purge", "--yes"]);
    assert!(ok);
    assert_eq!(out.trim(), "purged 0 dead letter(s)");
    c.destroy().await;
}

/// A free loopback address for a listener a child process will open.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn sigterm_to_a_gateway_sends_its_clients_to_the_other_without_loss() {
    let _faults = BROKER_FAULTS.lock().await;
    sigterm_to_a_gateway(Backend::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_sigterm_to_a_gateway_sends_its_clients_to_the_other_without_loss() {
    sigterm_to_a_gateway(Backend::Sqs).await;
}

async fn sigterm_to_a_gateway(backend: Backend) {
    let mut c = Cluster::start_on(backend, 2, 2, &[]).await;
    let mut talker = c.client(1, "talker").await;
    talker.join("move").await;
    let mut mover = c.client(0, "mover").await;
    mover.join("move").await;
    let other = c.addr(1);
    let reading = tokio::spawn(async move {
        // Reads on gateway 0 until it closes, then resumes on gateway 1 with since.
        let mut last = 0;
        let mut ids = Vec::new();
        let code = loop {
            let v = match tokio::time::timeout(WAIT, mover.rx.recv_or_close())
                .await
                .expect("traffic")
            {
                Ok(v) => v,
                Err(code) => break code,
            };
            if v["type"] == "message" {
                assert_eq!(v["seq"].as_u64(), Some(last + 1));
                last += 1;
                ids.push(v["id"].as_str().unwrap().to_owned());
            }
        };
        assert_eq!(code, 1012);
        let mut again = Client::connect(&format!("ws://{other}/ws?user=mover")).await;
        again.recv().await;
        again.join_since("move", last).await;
        let rest = read_room(&mut again, "move", last + 1, 200).await;
        ids.extend(
            rest.into_iter()
                .map(|k| k.split('/').nth(1).unwrap().to_owned()),
        );
        ids
    });
    for n in 0..200 {
        if n == 80 {
            let status = c.gateways[0].terminate();
            assert!(
                status.success(),
                "gateway exits cleanly on SIGTERM: {status:?}"
            );
        }
        talker.say("move", &format!("t{n}"), "keep going").await;
    }
    let ids = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids.len(), 200);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
    c.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn while_the_broker_is_away_sends_are_unavailable_readyz_is_503_and_all_recovers() {
    let _faults = BROKER_FAULTS.lock().await;
    let c = Cluster::start(1, 1, &[]).await;
    let mut a = c.client(0, "alice").await;
    a.join("away").await;
    a.say("away", "before", "up").await;
    assert_eq!(a.message("away").await["seq"], 1);
    let rabbit = |action: &str| {
        let out = std::process::Command::new("rabbitmqctl")
            .arg(action)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rabbitmqctl {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rabbit("stop_app");
    let outage = async {
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while readyz(c.addr(0)).await != 503 {
            assert!(
                tokio::time::Instant::now() < end,
                "readyz still 200 10 s into the outage"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let e = a.say("away", "during", "down").await;
        assert_eq!(e["code"], "unavailable", "{e}");
    };
    let checked = tokio::time::timeout(Duration::from_secs(30), outage).await;
    rabbit("start_app");
    checked.expect("outage observed");
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while readyz(c.addr(0)).await != 200 {
        assert!(
            tokio::time::Instant::now() < end,
            "not ready 20 s after the broker returned:\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let r = a.say("away", "during", "down").await;
        if r["type"] == "ack" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "never acked after recovery: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.message("away").await["seq"], 2);
    c.destroy().await;
}
