//! Presence and typing (issue 13): `member` events once per user however many tabs and
//! gateways, `presence` that agrees on every gateway within 2 s, a killed gateway's users
//! offline within 30 s, `typing` relayed within 1 s and throttled, and none of it on the
//! ingest queue or in the store. In process on the embedded queue, and with real
//! gateways on RabbitMQ and on SQS (LocalStack) with no worker at all, so anything put on
//! the ingest queue would stay there.

use crate::cluster::{Backend, Cluster};
use crate::helpers::*;
use crate::queue_contract::BROKER_FAULTS;
use futures_util::SinkExt;
use serde_json::{Value, json};
use shared::RoomId;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// The promise for presence to agree everywhere after a change.
const AGREE_WITHIN: Duration = Duration::from_secs(2);
/// The promise for a typing signal to reach the other members.
const TYPING_WITHIN: Duration = Duration::from_secs(1);
/// The promise for a killed gateway's users to go offline elsewhere.
const KILLED_WITHIN: Duration = Duration::from_secs(30);

/// `GET /api/rooms/{room}/presence` on the gateway at `addr`.
async fn presence_http(addr: SocketAddr, room: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/api/rooms/{room}/presence"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Waits until every gateway in `addrs` lists exactly `users` in `room`.
async fn agree(addrs: &[SocketAddr], room: &str, users: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    let want = json!({"room": room, "users": users});
    loop {
        let mut all = true;
        let mut seen = Vec::new();
        for a in addrs {
            let got = presence_http(*a, room).await;
            all &= got == want;
            seen.push(got);
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presence did not agree on {want} within {within:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `member` events about `user` that `c` got, up to the answer of a ping.
async fn member_events(c: &mut Client, user: &str) -> Vec<String> {
    c.frames_until_pong()
        .await
        .into_iter()
        .filter(|v| v["type"] == "member" && v["user"] == user)
        .map(|v| v["state"].as_str().unwrap().to_owned())
        .collect()
}

/// The next `member` event about `user`, which must come within `within`.
async fn member_event(c: &mut Client, user: &str, within: Duration) -> Value {
    let pred = |v: &Value| v["type"] == "member" && v["user"] == user;
    timeout(within, c.recv_where(pred))
        .await
        .unwrap_or_else(|_| panic!("no member event about {user} within {within:?}"))
}

/// Closes a client the way a browser tab does.
async fn close(mut c: Client) {
    let _ = c.sink.close().await;
}

/// The `typing` events `c` got, up to the answer of a ping.
async fn typing_events(c: &mut Client) -> Vec<Value> {
    let frames = c.frames_until_pong().await;
    frames
        .into_iter()
        .filter(|v| v["type"] == "typing")
        .collect()
}

/// `typist` types in `room`: `watcher` gets it within 1 s, a second one within 2 s is
/// dropped, the typist's own connections never see it, and after 2 s it goes again.
async fn typing_is_relayed_and_throttled(
    typist: &mut Client,
    own_tab: &mut Client,
    watcher: &mut Client,
    room: &str,
    who: &str,
) {
    let sent = Instant::now();
    typist.send(json!({"type":"typing","room":room})).await;
    let pred = |v: &Value| v["type"] == "typing";
    let got = timeout(TYPING_WITHIN, watcher.recv_where(pred))
        .await
        .expect("typing reaches the other members within 1 s");
    assert_eq!(got, json!({"type":"typing","room":room,"user":who}));
    for _ in 0..5 {
        typist.send(json!({"type":"typing","room":room})).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        typing_events(watcher).await.is_empty(),
        "throttled to one per 2 s"
    );
    assert!(
        typing_events(typist).await.is_empty(),
        "not echoed to the typist"
    );
    assert!(
        typing_events(own_tab).await.is_empty(),
        "nor to their other tabs"
    );
    // Again once 2 s have passed since the first was taken (its arrival, which a loaded
    // machine may delay a little: tried until it goes).
    tokio::time::sleep(
        (sent + Duration::from_millis(2000)).saturating_duration_since(Instant::now()),
    )
    .await;
    // Each try waits the promised second for it, so no second one is let through.
    let deadline = sent + Duration::from_secs(6);
    loop {
        typist.send(json!({"type":"typing","room":room})).await;
        if timeout(TYPING_WITHIN, watcher.recv_where(pred))
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "typing goes again after 2 s");
    }
}

#[tokio::test]
async fn presence_member_events_and_typing_on_one_gateway() {
    let g = TestGateway::start().await;
    let mut alice = g.client("alice").await;
    assert_eq!(alice.join("lobby").await["type"], "joined");
    let (mut bob1, mut bob2) = (g.client("bob").await, g.client("bob").await);
    assert_eq!(bob1.join("lobby").await["type"], "joined");
    assert_eq!(bob2.join("lobby").await["type"], "joined");
    let online = member_event(&mut alice, "bob", AGREE_WITHIN).await;
    assert_eq!(
        online,
        json!({"type":"member","room":"lobby","user":"bob","state":"online"})
    );
    assert!(
        member_events(&mut alice, "bob").await.is_empty(),
        "one online for two tabs"
    );
    assert!(
        member_events(&mut bob1, "bob").await.is_empty(),
        "not told of himself"
    );

    alice
        .send(json!({"type":"presence","room":"lobby","ref":"p1"}))
        .await;
    let reply = alice.recv_where(|v| v["ref"] == "p1").await;
    assert_eq!(
        reply,
        json!({"type":"presence","room":"lobby","users":["alice","bob"],"ref":"p1"})
    );
    agree(&[g.addr], "lobby", &["alice", "bob"], AGREE_WITHIN).await;
    assert_eq!(
        presence_http(g.addr, "empty-room").await,
        json!({"room":"empty-room","users":[]})
    );

    typing_is_relayed_and_throttled(&mut bob1, &mut bob2, &mut alice, "lobby", "bob").await;
    bob1.send(json!({"type":"typing","room":"elsewhere","ref":"t"}))
        .await;
    let refused = bob1.recv_where(|v| v["ref"] == "t").await;
    assert_eq!(refused["code"], "not_joined", "{refused}");

    close(bob1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        member_events(&mut alice, "bob").await.is_empty(),
        "one tab left: still online"
    );
    agree(&[g.addr], "lobby", &["alice", "bob"], AGREE_WITHIN).await;
    bob2.send(json!({"type":"leave","room":"lobby"})).await;
    let offline = member_event(&mut alice, "bob", AGREE_WITHIN).await;
    assert_eq!(offline["state"], "offline");
    agree(&[g.addr], "lobby", &["alice"], AGREE_WITHIN).await;

    let store = g.store().await;
    assert_eq!(
        store.head(&RoomId::parse("lobby").unwrap()).await.unwrap(),
        0
    );
    assert!(g.metrics().await.contains("courier_typing_relayed_total"));
}

#[tokio::test]
async fn typing_counts_against_the_rate_limit() {
    let g = TestGateway::start_with(|c| {
        c.limits.rate_per_sec = 1.0;
        c.limits.rate_burst = 5;
    })
    .await;
    let mut bob = g.client("bob").await;
    assert_eq!(bob.join("lobby").await["type"], "joined");
    for i in 0..10 {
        bob.send(json!({"type":"typing","room":"lobby","ref":format!("t{i}")}))
            .await;
    }
    let limited = bob.recv_where(|v| v["type"] == "error").await;
    assert_eq!(limited["code"], "rate_limited", "{limited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn two_tabs_on_two_gateways_are_one_online_and_one_offline() {
    let _faults = BROKER_FAULTS.lock().await;
    across_two_gateways(Backend::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_two_tabs_on_two_gateways_are_one_online_and_one_offline() {
    across_two_gateways(Backend::Sqs).await;
}

/// Alice on gateway 0, carol on gateway 1, bob with a tab on each; no worker runs.
async fn across_two_gateways(backend: Backend) {
    let c = Cluster::start_on(backend, 2, 0, &[]).await;
    let addrs = [c.addr(0), c.addr(1)];
    let (mut alice, mut carol) = (c.client(0, "alice").await, c.client(1, "carol").await);
    assert_eq!(alice.join("team").await["type"], "joined");
    assert_eq!(carol.join("team").await["type"], "joined");
    agree(&addrs, "team", &["alice", "carol"], AGREE_WITHIN).await;

    let (mut bob0, mut bob1) = (c.client(0, "bob").await, c.client(1, "bob").await);
    assert_eq!(bob0.join("team").await["type"], "joined");
    assert_eq!(bob1.join("team").await["type"], "joined");
    agree(&addrs, "team", &["alice", "bob", "carol"], AGREE_WITHIN).await;
    for watcher in [&mut alice, &mut carol] {
        assert_eq!(
            member_event(watcher, "bob", AGREE_WITHIN).await["state"],
            "online"
        );
    }
    bob0.send(json!({"type":"presence","room":"team","ref":"p"}))
        .await;
    let reply = bob0.recv_where(|v| v["ref"] == "p").await;
    assert_eq!(reply["users"], json!(["alice", "bob", "carol"]));

    // Bob types on gateway 0: carol on gateway 1 sees it, his tab there does not.
    typing_is_relayed_and_throttled(&mut bob0, &mut bob1, &mut carol, "team", "bob").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        typing_events(&mut alice).await.len(),
        2,
        "the first and the one 2 s later"
    );

    close(bob0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agree(&addrs, "team", &["alice", "bob", "carol"], AGREE_WITHIN).await;
    close(bob1).await;
    agree(&addrs, "team", &["alice", "carol"], AGREE_WITHIN).await;
    for watcher in [&mut alice, &mut carol] {
        assert_eq!(
            member_event(watcher, "bob", AGREE_WITHIN).await["state"],
            "offline"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            member_events(watcher, "bob").await.is_empty(),
            "one online and one offline: {}",
            c.logs()
        );
    }

    // Nothing of it was queued for a worker (none runs: it would still be there) or stored.
    let queue = c.queue().await;
    assert_eq!(queue.backlog().await.unwrap(), 0);
    let store = c.store().await;
    assert_eq!(
        store.head(&RoomId::parse("team").unwrap()).await.unwrap(),
        0
    );
    c.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn a_killed_gateways_users_go_offline_within_30_s() {
    let _faults = BROKER_FAULTS.lock().await;
    killed_gateway(Backend::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_a_killed_gateways_users_go_offline_within_30_s() {
    killed_gateway(Backend::Sqs).await;
}

/// Bob on gateway 1, which is killed with SIGKILL; alice on gateway 0 sees him go, with
/// the default TTL.
async fn killed_gateway(backend: Backend) {
    let mut c = Cluster::start_on(backend, 2, 0, &[]).await;
    let mut alice = c.client(0, "alice").await;
    assert_eq!(alice.join("ops").await["type"], "joined");
    let mut bob = c.client(1, "bob").await;
    assert_eq!(bob.join("ops").await["type"], "joined");
    assert_eq!(
        member_event(&mut alice, "bob", AGREE_WITHIN).await["state"],
        "online"
    );
    // Long enough for a snapshot or two to have gone out.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let killed = Instant::now();
    c.gateways[1].kill9();
    // Polled with pings: a frame read waits 15 s at most.
    loop {
        let events = member_events(&mut alice, "bob").await;
        if !events.is_empty() {
            assert_eq!(events, ["offline"]);
            break;
        }
        assert!(
            killed.elapsed() <= KILLED_WITHIN,
            "bob still online: {}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = killed.elapsed();
    assert!(took <= KILLED_WITHIN, "offline after {took:?}");
    assert_eq!(
        presence_http(c.addr(0), "ops").await,
        json!({"room":"ops","users":["alice"]})
    );
    eprintln!("a killed gateway's user went offline after {took:?}");
    drop(bob);
    c.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "rabbitmq"),
    ignore = "needs RabbitMQ: --features courier-tests/rabbitmq (scripts/test.sh)"
)]
async fn the_rabbitmq_signal_lane_reaches_every_gateway_in_order_and_is_bounded() {
    use queue::{Signal, SignalKind, SignalLane};
    let _faults = BROKER_FAULTS.lock().await;
    let prefix = format!("sig-{}", unique_suffix());
    let url = format!("{}?prefix={prefix}", crate::cluster::amqp_base_url());
    let q = crate::queue_contract::open(&url, &queue::QueueOptions::default())
        .await
        .unwrap();
    let gw = |g: &str| shared::GatewayId::from_string(g.into());
    let mut a = SignalLane::subscribe(&q, &gw("gw-a"), 64).await.unwrap();
    let mut b = SignalLane::subscribe(&q, &gw("gw-b"), 64).await.unwrap();
    let signals: Vec<Signal> = (1..=40)
        .map(|seq| Signal {
            gateway: gw("gw-a"),
            seq,
            kind: SignalKind::Typing {
                room: RoomId::parse("lobby").unwrap(),
                user: shared::UserId::parse("alice").unwrap(),
            },
        })
        .collect();
    q.publish(&signals[..25]).await.unwrap();
    q.publish(&signals[25..]).await.unwrap();
    for rx in [&mut a, &mut b] {
        for want in 1..=40 {
            let got = timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("every signal, to every gateway")
                .unwrap();
            assert_eq!(got, signals[want - 1]);
        }
    }
    let args = crate::queue_contract::declared_arguments(&format!("{prefix}.signals.gw-a"));
    assert!(
        args.contains(&("x-max-length".into(), json!(64))),
        "{args:?}"
    );
    assert!(
        args.contains(&("x-overflow".into(), json!("drop-head"))),
        "{args:?}"
    );
    drop((a, b));
    q.destroy().await.unwrap();
}
