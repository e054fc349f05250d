//! Read state: one cursor per (user, room) that only moves forward, exact `unread`
//! counts after sends, edits, deletes and reads from two devices, the `read` frame on
//! the user's other connection (on the other gateway on RabbitMQ), and "seen by" through
//! `reads` (the command, and the coalesced frames members get).

use super::*;
use std::time::Duration;
use tokio::time::timeout;

#[tokio::test]
async fn embedded_unread_counts_are_exact_across_two_devices_and_the_cursor_never_goes_back() {
    on_embedded(|site| async move { two_devices(&site).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn rabbitmq_unread_counts_are_exact_across_two_devices_and_the_cursor_never_goes_back() {
    on_rabbitmq(|site| async move { two_devices(&site).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_unread_counts_are_exact_across_two_devices_and_the_cursor_never_goes_back() {
    on_sqs(|site| async move { two_devices(&site).await }).await;
}

/// Sends `read` and returns the reply.
async fn read(c: &mut Client, room: &str, seq: u64) -> Value {
    let r = format!("rd-{}", unique_suffix());
    c.send(json!({"type":"read","room":room,"seq":seq,"ref":r}))
        .await;
    c.recv_where(|v| v["ref"] == r.as_str()).await
}

fn read_frame(room: &str, seq: u64, unread: u64) -> Value {
    json!({"type":"read","room":room,"seq":seq,"unread":unread})
}

/// The `read` and `unread` a fresh connection of `user` is told when it joins.
async fn joined_state(site: &Site, g: usize, user: &str, room: &str) -> (u64, u64) {
    let (_, joined) = site.member(g, user, room).await;
    (
        joined["read"].as_u64().unwrap(),
        joined["unread"].as_u64().unwrap(),
    )
}

/// The `read` frames `c` got, up to the answer of a ping.
async fn read_frames(c: &mut Client) -> Vec<Value> {
    let frames = c.frames_until_pong().await;
    frames.into_iter().filter(|v| v["type"] == "read").collect()
}

async fn two_devices(site: &Site) {
    let room = fresh_room("unread");
    let (mut phone, joined) = site.member(0, "alice", &room).await;
    assert_eq!(
        (joined["read"].as_u64(), joined["unread"].as_u64()),
        (Some(0), Some(0))
    );
    let (mut laptop, _) = site.member(1, "alice", &room).await;
    let (mut bob, _) = site.member(0, "bob", &room).await;
    // 1..=6: bob, bob, bob, bob, alice, bob.
    let bodies = [
        "Price: $19.99 🛒",
        "Цена: 1 499 ₽",
        "価格は¥2,980です",
        "🍕🍕 at 20:00?",
    ];
    for (i, body) in bodies.iter().enumerate() {
        acked(&bob.say(&room, &format!("b-{i}"), body).await);
    }
    acked(&phone.say(&room, "a-1", "ok 👌 bis später").await);
    acked(&bob.say(&room, "b-4", "שלום, 120 ₪ לחודש").await);
    assert_eq!(seq(&entry(&mut laptop, &room, "b-4").await), 6);
    let r = read(&mut phone, &room, 2).await;
    assert_eq!(r["seq"], 2);
    assert_eq!(r["unread"], 3, "b-2, b-3, b-4; a-1 is alice's own: {r}");
    let other = timeout(Duration::from_secs(5), laptop.recv_type("read")).await;
    assert_eq!(
        other.expect("the other device hears of it"),
        read_frame(&room, 2, 3)
    );
    later_changes(site, &room, [phone, laptop, bob]).await;
}

/// After alice read up to 2 on her phone: bob's delete, edit and reply, alice's
/// reaction, and reads from the laptop behind and beyond the head.
async fn later_changes(site: &Site, room: &str, clients: [Client; 3]) {
    let [mut phone, mut laptop, mut bob] = clients;
    let room = room.to_owned();
    // A deleted message no longer counts, edits and reactions never do, and a reply is a
    // message like any other.
    acked(&ask(&mut bob, delete(&room, "d-1", 3)).await);
    acked(&ask(&mut bob, edit(&room, "e-1", 4, "🍕🍕 at 20:30?")).await);
    acked(&ask(&mut phone, react(&room, "r-1", 4, "🍕", false)).await);
    let reply =
        json!({"type":"send","room":room,"id":"b-5","body":"Deal: 2 × 9,50 €","reply_to":4});
    acked(&ask(&mut bob, reply).await);
    assert_eq!(seq(&entry(&mut phone, &room, "b-5").await), 10);
    assert_eq!(
        joined_state(site, 1, "alice", &room).await,
        (2, 3),
        "b-3 gone, b-5 new"
    );
    // Behind the cursor: it stays, and nobody is told anything.
    let r = read(&mut laptop, &room, 1).await;
    assert_eq!(
        r,
        json!({"type":"read","room":room,"seq":2,"unread":3,"ref":r["ref"]})
    );
    assert!(
        read_frames(&mut phone).await.is_empty(),
        "a cursor that did not move"
    );
    // Beyond the head: clamped to it.
    let r = read(&mut laptop, &room, 1_000).await;
    assert_eq!(
        (r["seq"].as_u64(), r["unread"].as_u64()),
        (Some(10), Some(0))
    );
    let other = timeout(Duration::from_secs(5), phone.recv_type("read")).await;
    assert_eq!(other.expect("relayed"), read_frame(&room, 10, 0));
    acked(&bob.say(&room, "b-6", "Gute Nacht 🌙").await);
    entry(&mut phone, &room, "b-6").await;
    assert_eq!(joined_state(site, 0, "alice", &room).await, (10, 1));
    assert_eq!(
        joined_state(site, 1, "bob", &room).await,
        (0, 1),
        "a-1 is bob's only unread"
    );
    seen_by(&mut bob, &room).await;
}

/// Bob sees how far alice read: from `reads`, and from the coalesced frames.
async fn seen_by(bob: &mut Client, room: &str) {
    bob.send(json!({"type":"reads","room":room,"ref":"sb"}))
        .await;
    let reads = bob.recv_where(|v| v["ref"] == "sb").await;
    assert_eq!(
        reads,
        json!({"type":"reads","room":room,"reads":{"alice":10},"ref":"sb"})
    );
    // Live: within a throttle period (1 s) of the move, alice at 10 at last.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = timeout(left, bob.recv_type("reads"))
            .await
            .expect("a reads frame with alice at 10 within 5 s");
        assert!(frame.get("ref").is_none());
        if frame["reads"]["alice"] == 10 {
            return;
        }
        assert_eq!(frame["reads"]["alice"], 2, "the earlier move: {frame}");
    }
}
