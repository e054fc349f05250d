//! Live removal (issue 12, phase 2): a connection whose user may no longer use a room
//! (removed from its members, or the room made private without them) is taken out of
//! it within 2 s, on every gateway, with `{"type":"left","room":...,"reason":"removed"}`,
//! and gets nothing more of the room. The gateways' cached settings live far longer than
//! that here, so only the announced change can explain the removal.

use crate::cluster::{Backend, Cluster};
use crate::helpers::*;
use crate::queue_contract::BROKER_FAULTS;
use reqwest::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// Far beyond the 2 s of the promise.
const LONG_TTL_MS: u64 = 600_000;
/// The promise: removed within this of the API call.
const WITHIN: Duration = Duration::from_secs(2);

/// One HTTP API call to the gateway at `addr` with the API token; its status.
async fn api(addr: SocketAddr, method: Method, path: &str, body: Option<Value>) -> u16 {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(API_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Reads `c`'s frames until the removal from `room`, which must come by `deadline`;
/// before it only the room's earlier messages may arrive.
async fn removed_by(c: &mut Client, room: &str, deadline: Instant) {
    let reading = async {
        loop {
            let v = c.recv().await;
            if v["type"] == "left" {
                return v;
            }
            // Members coming online (presence) may come first too.
            if v["type"] == "member" {
                continue;
            }
            assert_eq!(v["type"], "message", "before the removal: {v}");
        }
    };
    let left = timeout(deadline.saturating_duration_since(Instant::now()), reading)
        .await
        .expect("removed within 2 s");
    assert_eq!(left, json!({"type":"left","room":room,"reason":"removed"}));
}

/// Every frame `c` gets up to the answer of a `ping`: none may be of `room`.
async fn saw_nothing_of(c: &mut Client, room: &str) {
    c.send(json!({"type":"ping","ref":"last"})).await;
    loop {
        let v = c.recv().await;
        assert_ne!(v["room"], room, "after its removal: {v}");
        if v["type"] == "pong" && v["ref"] == "last" {
            return;
        }
    }
}

/// `a` and `b` exchange a message each in `room`, and both get both.
async fn chat_on(a: &mut Client, b: &mut Client, room: &str, tag: &str) {
    for i in 0..2 {
        let id = format!("{tag}-{i}");
        let sender = if i == 0 { &mut *a } else { &mut *b };
        assert_eq!(sender.say(room, &id, &id).await["type"], "ack");
        assert_eq!(a.message(room).await["id"], id);
        assert_eq!(b.message(room).await["id"], id);
    }
}

fn forbidden_send(room: &str) -> Value {
    json!({"type":"send","room":room,"id":"late-1","body":"still here?","ref":"late"})
}

#[tokio::test]
async fn a_member_removed_through_the_api_is_taken_out_of_the_room_at_once() {
    let g = TestGateway::start_with(|c| c.limits.room_cache_ttl_ms = LONG_TTL_MS).await;
    let crew = json!({"private":true,"members":["alice","bob","carol"]});
    assert_eq!(
        api(g.addr, Method::PUT, "/api/rooms/crew", Some(crew)).await,
        200
    );
    let (mut alice, mut bob) = (g.client("alice").await, g.client("bob").await);
    let mut carol = g.client("carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(c.join("crew").await["type"], "joined");
    }
    chat_on(&mut alice, &mut bob, "crew", "before").await;

    let deadline = Instant::now() + WITHIN;
    let path = "/api/rooms/crew/members/carol";
    assert_eq!(api(g.addr, Method::DELETE, path, None).await, 204);
    removed_by(&mut carol, "crew", deadline).await;
    chat_on(&mut alice, &mut bob, "crew", "after").await;
    carol.send(forbidden_send("crew")).await;
    let refused = carol.recv_where(|v| v["ref"] == "late").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    saw_nothing_of(&mut carol, "crew").await;
    // The others are told carol went offline (presence: all they get besides the
    // earlier `online`s), and no `left`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let told = alice.frames_until_pong().await;
    assert!(
        told.iter().all(|v| v["type"] == "member"),
        "no left for members: {told:?}"
    );
    let offline = json!({"type":"member","room":"crew","user":"carol","state":"offline"});
    assert_eq!(told.last(), Some(&offline));

    // Added back, the same connection joins again and is live again.
    assert_eq!(api(g.addr, Method::PUT, path, None).await, 204);
    assert_eq!(carol.join("crew").await["type"], "joined");
    assert_eq!(
        alice.say("crew", "back-1", "welcome back").await["type"],
        "ack"
    );
    assert_eq!(carol.message("crew").await["body"], "welcome back");
}

#[tokio::test]
async fn making_a_public_room_private_removes_non_members() {
    let g = TestGateway::start_with(|c| c.limits.room_cache_ttl_ms = LONG_TTL_MS).await;
    let (mut alice, mut bob) = (g.client("alice").await, g.client("bob").await);
    let mut carol = g.client("carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(c.join("open").await["type"], "joined");
    }
    assert_eq!(
        alice.say("open", "o-1", "public still").await["type"],
        "ack"
    );
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(c.message("open").await["body"], "public still");
    }

    let deadline = Instant::now() + WITHIN;
    let private = json!({"private":true,"members":["alice","carol"]});
    assert_eq!(
        api(g.addr, Method::PUT, "/api/rooms/open", Some(private)).await,
        200
    );
    removed_by(&mut bob, "open", deadline).await;
    chat_on(&mut alice, &mut carol, "open", "private").await;
    saw_nothing_of(&mut bob, "open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn a_member_on_another_gateway_is_removed_within_two_seconds() {
    let _faults = BROKER_FAULTS.lock().await;
    removed_on_another_gateway(Backend::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_a_member_on_another_gateway_is_removed_within_two_seconds() {
    removed_on_another_gateway(Backend::Sqs).await;
}

async fn removed_on_another_gateway(backend: Backend) {
    let ttl = LONG_TTL_MS.to_string();
    let c = Cluster::start_on(backend, 2, 1, &[("ROOM_CACHE_TTL_MS", &ttl)]).await;
    let crew = json!({"private":true,"members":["alice","bob","carol"]});
    assert_eq!(
        api(c.addr(0), Method::PUT, "/api/rooms/crew", Some(crew)).await,
        200
    );
    let (mut alice, mut carol) = (c.client(0, "alice").await, c.client(1, "carol").await);
    let mut bob = c.client(1, "bob").await;
    for cl in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(cl.join("crew").await["type"], "joined");
    }
    chat_on(&mut alice, &mut carol, "crew", "before").await;
    for _ in 0..2 {
        assert_eq!(bob.message("crew").await["type"], "message");
    }

    // Through gateway A; bob is on gateway B, which cached the old settings.
    let deadline = Instant::now() + WITHIN;
    let path = "/api/rooms/crew/members/bob";
    assert_eq!(api(c.addr(0), Method::DELETE, path, None).await, 204);
    removed_by(&mut bob, "crew", deadline).await;
    chat_on(&mut alice, &mut carol, "crew", "after").await;
    bob.send(forbidden_send("crew")).await;
    let refused = bob.recv_where(|v| v["ref"] == "late").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    saw_nothing_of(&mut bob, "crew").await;
    c.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn a_private_room_across_two_gateways_is_closed_to_non_members() {
    let _faults = BROKER_FAULTS.lock().await;
    let c = Cluster::start_on(Backend::RabbitMq, 2, 1, &[]).await;
    let vault = json!({"private":true,"members":["alice","bob"]});
    assert_eq!(
        api(c.addr(0), Method::PUT, "/api/rooms/vault", Some(vault)).await,
        200
    );
    let (mut alice, mut bob) = (c.client(0, "alice").await, c.client(1, "bob").await);
    assert_eq!(alice.join("vault").await["type"], "joined");
    assert_eq!(bob.join("vault").await["type"], "joined");
    chat_on(&mut alice, &mut bob, "vault", "members").await;
    // A non-member on each gateway: every way in is refused, and nothing of the room,
    // before or after, reaches them.
    for gw in [0, 1] {
        let mut eve = c.client(gw, "eve").await;
        let tries = [
            json!({"type":"join","room":"vault","ref":"j"}),
            json!({"type":"join","room":"vault","since":0,"ref":"s"}),
            json!({"type":"history","room":"vault","ref":"h"}),
            json!({"type":"send","room":"vault","id":"e-1","body":"let me in","ref":"w"}),
        ];
        for cmd in tries {
            let r = cmd["ref"].clone();
            eve.send(cmd).await;
            let refused = eve.recv_where(|v| v["ref"] == r).await;
            assert_eq!(refused["code"], "forbidden", "gateway {gw}: {refused}");
        }
        chat_on(&mut alice, &mut bob, "vault", &format!("while-eve-{gw}")).await;
        saw_nothing_of(&mut eve, "vault").await;
    }
    c.destroy().await;
}
