//! Contract tests every queue backend must pass: the in-memory queue runs them in unit
//! tests, and the broker backends run the very same functions against real brokers.

use super::{Consumer, Delivery, Queue, QueueOptions, Settled};
use shared::ids::{ClientMsgId, GatewayId, RoomId, UserId};
use shared::message::{Enriched, Envelope, StoredMessage};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// Options used by the contract: short waits, few attempts.
pub fn options() -> QueueOptions {
    QueueOptions {
        max_attempts: 3,
        receive_wait: Duration::from_millis(300),
        memory_capacity: 10_000,
        delivery_buffer: 1024,
    }
}

/// Runs every contract case against fresh queues from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn(QueueOptions) -> Fut,
    Fut: Future<Output = Arc<dyn Queue>>,
{
    run_unordered(&make).await;
    a_room_is_held_by_one_consumer(make(options()).await).await;
}

/// Every case but per-room serial consumption, for a backend that documents it does not
/// keep each room in one consumer at a time (SQS standard queues).
pub async fn run_unordered<F, Fut>(make: F)
where
    F: Fn(QueueOptions) -> Fut,
    Fut: Future<Output = Arc<dyn Queue>>,
{
    publish_receive_ack(make(options()).await).await;
    batches_hold_every_message_once(make(options()).await).await;
    try_receive_does_not_wait_and_loses_nothing(make(options()).await).await;
    retry_redelivers_after_its_delay(make(options()).await).await;
    dead_letters_after_max_attempts(make(options()).await).await;
    dead_letter_now(make(options()).await).await;
    dead_letters_replay_and_purge(make(options()).await).await;
    abandoned_delivery_comes_back(make(options()).await).await;
    fan_out_follows_bindings(make(options()).await).await;
    an_announced_room_change_reaches_its_members(make(options()).await).await;
}

pub fn envelope(room: &str, id: &str) -> Envelope {
    let mut env = Envelope::message(
        RoomId::parse(room).unwrap(),
        UserId::parse("contract").unwrap(),
        ClientMsgId::parse(id).unwrap(),
        format!("body of {id}"),
        GatewayId::from_string("gw-contract".into()),
    );
    env.trace = None;
    env
}

async fn publish(q: &dyn Queue, room: &str, id: &str) {
    let env = envelope(room, id);
    q.publish(&env.key(), env.to_json())
        .await
        .expect("publish is confirmed");
}

/// Receives until `n` deliveries arrived or `within` passed.
pub async fn collect(c: &mut dyn Consumer, n: usize, within: Duration) -> Vec<Delivery> {
    let end = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < end {
        out.extend(c.receive(n - out.len()).await.expect("receive"));
    }
    out
}

fn id_of(d: &Delivery) -> String {
    Envelope::from_json(&d.payload)
        .unwrap()
        .id
        .as_str()
        .to_owned()
}

async fn publish_receive_ack(q: Arc<dyn Queue>) {
    for i in 0..3 {
        publish(&*q, "room-a", &format!("m{i}")).await;
    }
    let mut c = q.consumer().await.unwrap();
    let got = collect(&mut *c, 3, Duration::from_secs(10)).await;
    let ids: Vec<String> = got.iter().map(id_of).collect();
    assert_eq!(
        ids,
        ["m0", "m1", "m2"],
        "one room's messages come in publish order"
    );
    assert!(
        got.iter().all(|d| d.attempt == 1),
        "first delivery is attempt 1"
    );
    Delivery::ack_all(got).await.unwrap();
    let again = collect(&mut *c, 1, Duration::from_millis(1500)).await;
    assert!(again.is_empty(), "acked messages are gone: {again:?}");
}

async fn batches_hold_every_message_once(q: Arc<dyn Queue>) {
    for i in 0..25 {
        publish(&*q, &format!("room-{}", i % 3), &format!("b{i}")).await;
    }
    let mut c = q.consumer().await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let end = Instant::now() + Duration::from_secs(15);
    while seen.len() < 25 && Instant::now() < end {
        let batch = c.receive(10).await.unwrap();
        assert!(batch.len() <= 10, "a batch holds at most what was asked");
        for d in &batch {
            assert!(seen.insert(id_of(d)), "no message twice while unacked");
        }
        Delivery::ack_all(batch).await.unwrap();
    }
    assert_eq!(seen.len(), 25);
}

/// `try_receive` tops up a batch: it answers at once, with at most what was asked, in
/// order, never a message twice; a backend may answer nothing (SQS), and then `receive`
/// still has everything.
async fn try_receive_does_not_wait_and_loses_nothing(q: Arc<dyn Queue>) {
    for i in 0..5 {
        publish(&*q, "room-t", &format!("t{i}")).await;
    }
    let mut c = q.consumer().await.unwrap();
    let mut got = collect(&mut *c, 1, Duration::from_secs(10)).await;
    assert!(c.try_receive(0).is_empty(), "zero asked, zero given");
    // Let a broker's prefetch bring the rest to the consumer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let more = c.try_receive(2);
    assert!(
        // Well under the receive wait (300 ms): it did not block for messages.
        started.elapsed() < Duration::from_millis(250),
        "try_receive waited {:?}",
        started.elapsed()
    );
    assert!(more.len() <= 2, "at most what was asked: {}", more.len());
    got.extend(more);
    // Settle what is held first: a FIFO queue (SQS) keeps a room's later messages back
    // while an earlier one is in flight.
    let mut ids: Vec<String> = got.iter().map(id_of).collect();
    let rest = 5 - got.len();
    Delivery::ack_all(got).await.unwrap();
    let rest = collect(&mut *c, rest, Duration::from_secs(10)).await;
    ids.extend(rest.iter().map(id_of));
    Delivery::ack_all(rest).await.unwrap();
    assert_eq!(
        ids,
        ["t0", "t1", "t2", "t3", "t4"],
        "every message once, in order"
    );
}

async fn retry_redelivers_after_its_delay(q: Arc<dyn Queue>) {
    publish(&*q, "room-r", "r1").await;
    let mut c = q.consumer().await.unwrap();
    let d = collect(&mut *c, 1, Duration::from_secs(10))
        .await
        .pop()
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        d.retry(Duration::from_secs(1), "test").await.unwrap(),
        Settled::Retrying
    );
    let again = collect(&mut *c, 1, Duration::from_secs(10))
        .await
        .pop()
        .expect("redelivered");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "not before its delay"
    );
    assert_eq!(id_of(&again), "r1");
    assert_eq!(again.attempt, 2);
    again.ack().await.unwrap();
}

async fn dead_letters_after_max_attempts(q: Arc<dyn Queue>) {
    publish(&*q, "room-d", "poison").await;
    let mut c = q.consumer().await.unwrap();
    for attempt in 1..=3 {
        let d = collect(&mut *c, 1, Duration::from_secs(10))
            .await
            .pop()
            .expect("delivered");
        assert_eq!(d.attempt, attempt);
        let expected = if attempt < 3 {
            Settled::Retrying
        } else {
            Settled::DeadLettered
        };
        assert_eq!(
            d.retry(Duration::from_millis(100), "always fails")
                .await
                .unwrap(),
            expected
        );
    }
    let after = collect(&mut *c, 1, Duration::from_millis(1500)).await;
    assert!(after.is_empty(), "a dead letter is not delivered again");
    let dead = wait_dead(&*q, 1).await;
    assert_eq!(
        Envelope::from_json(&dead[0].payload).unwrap().id.as_str(),
        "poison"
    );
}

async fn dead_letter_now(q: Arc<dyn Queue>) {
    publish(&*q, "room-x", "bad").await;
    let mut c = q.consumer().await.unwrap();
    let d = collect(&mut *c, 1, Duration::from_secs(10))
        .await
        .pop()
        .unwrap();
    d.dead_letter("malformed").await.unwrap();
    assert_eq!(wait_dead(&*q, 1).await.len(), 1);
    assert!(
        collect(&mut *c, 1, Duration::from_millis(1500))
            .await
            .is_empty()
    );
}

async fn dead_letters_replay_and_purge(q: Arc<dyn Queue>) {
    use super::DeadLetterFilter;
    for id in ["x1", "x2", "x3"] {
        publish(&*q, "room-dlq", id).await;
    }
    let mut c = q.consumer().await.unwrap();
    for d in collect(&mut *c, 3, Duration::from_secs(10)).await {
        d.dead_letter("operator test").await.unwrap();
    }
    let dead = wait_dead(&*q, 3).await;
    assert!(
        dead.iter()
            .all(|d| d.key().is_some_and(|k| k.room.as_str() == "room-dlq")),
        "a dead letter names its key (kept, or read from its envelope)"
    );
    let n = q
        .replay_dead_letters(&DeadLetterFilter::Ids(vec!["x2".into()]))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let back = collect(&mut *c, 1, Duration::from_secs(10))
        .await
        .pop()
        .expect("replayed");
    assert_eq!(
        (id_of(&back).as_str(), back.attempt),
        ("x2", 1),
        "a replay starts afresh"
    );
    back.ack().await.unwrap();
    assert_eq!(wait_dead(&*q, 2).await.len(), 2);
    assert_eq!(q.purge_dead_letters().await.unwrap(), 2);
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    assert!(
        collect(&mut *c, 1, Duration::from_millis(1500))
            .await
            .is_empty(),
        "purged, not replayed"
    );
}

async fn wait_dead(q: &dyn Queue, n: usize) -> Vec<super::DeadLetter> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let dead = q.dead_letters(100).await.unwrap();
        if dead.len() >= n || Instant::now() > end {
            assert_eq!(dead.len(), n, "dead letters");
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn abandoned_delivery_comes_back(q: Arc<dyn Queue>) {
    publish(&*q, "room-c", "crash").await;
    let mut c = q.consumer().await.unwrap();
    let d = collect(&mut *c, 1, Duration::from_secs(10))
        .await
        .pop()
        .unwrap();
    drop(d); // a worker that died holding it
    let again = collect(&mut *c, 1, Duration::from_secs(10))
        .await
        .pop()
        .expect("redelivered");
    assert_eq!(id_of(&again), "crash");
    assert!(again.attempt >= 2);
    again.ack().await.unwrap();
}

/// Like a FIFO queue's message group, a room is handed to one consumer at a time: while
/// one of its messages is unsettled, no other consumer gets the room's later messages,
/// which then come in publish order. This is what keeps each sender's order.
async fn a_room_is_held_by_one_consumer(q: Arc<dyn Queue>) {
    for i in 0..3 {
        publish(&*q, "room-h", &format!("h{i}")).await;
    }
    let mut a = q.consumer().await.unwrap();
    let first = collect(&mut *a, 1, Duration::from_secs(10)).await;
    assert_eq!(first.iter().map(id_of).collect::<Vec<_>>(), ["h0"]);
    let mut b = q.consumer().await.unwrap();
    let stolen = collect(&mut *b, 2, Duration::from_millis(1500)).await;
    assert!(
        stolen.is_empty(),
        "another consumer got a held room's later messages: {:?}",
        stolen.iter().map(id_of).collect::<Vec<_>>()
    );
    drop(b);
    Delivery::ack_all(first).await.unwrap();
    let rest = collect(&mut *a, 2, Duration::from_secs(10)).await;
    let ids: Vec<String> = rest.iter().map(id_of).collect();
    Delivery::ack_all(rest).await.unwrap();
    assert_eq!(ids, ["h1", "h2"], "the rest, in publish order");
}

fn stored(room: &str, seq: u64) -> Arc<StoredMessage> {
    let env = envelope(room, &format!("s{seq}"));
    Arc::new(StoredMessage::plain(
        env.room,
        seq,
        env.id,
        env.from,
        env.body,
        env.sent_at,
        Enriched::default(),
        None,
    ))
}

async fn fan_out_follows_bindings(q: Arc<dyn Queue>) {
    let r1 = RoomId::parse("fan-1").unwrap();
    let r2 = RoomId::parse("fan-2").unwrap();
    let mut a = q
        .subscribe(&GatewayId::from_string("gw-a".into()))
        .await
        .unwrap();
    let mut b = q
        .subscribe(&GatewayId::from_string("gw-b".into()))
        .await
        .unwrap();
    a.rooms.bind(&r1).await.unwrap();
    b.rooms.bind(&r1).await.unwrap();
    b.rooms.bind(&r2).await.unwrap();
    q.fan_out(&[stored("fan-1", 1), stored("fan-2", 1)])
        .await
        .unwrap();
    let wait = Duration::from_secs(5);
    let got_a = timeout(wait, a.events.recv())
        .await
        .unwrap()
        .unwrap()
        .message()
        .unwrap();
    assert_eq!((got_a.room.as_str(), got_a.seq), ("fan-1", 1));
    let mut got_b = Vec::new();
    for _ in 0..2 {
        let m = timeout(wait, b.events.recv())
            .await
            .unwrap()
            .unwrap()
            .message()
            .unwrap();
        got_b.push((m.room.as_str().to_owned(), m.seq));
    }
    got_b.sort();
    assert_eq!(got_b, [("fan-1".to_owned(), 1), ("fan-2".to_owned(), 1)]);
    assert!(
        timeout(Duration::from_millis(500), a.events.recv())
            .await
            .is_err(),
        "a gateway gets only rooms it bound"
    );
    a.rooms.unbind(&r1).await.unwrap();
    q.fan_out(&[stored("fan-1", 2)]).await.unwrap();
    let m = timeout(wait, b.events.recv())
        .await
        .unwrap()
        .unwrap()
        .message()
        .unwrap();
    assert_eq!(m.seq, 2);
    assert!(
        timeout(Duration::from_millis(500), a.events.recv())
            .await
            .is_err(),
        "unbound rooms stop arriving"
    );
}

/// A room change reaches a subscription bound to the room, among its messages; whether
/// one not bound to it hears of it too is the backend's choice.
async fn an_announced_room_change_reaches_its_members(q: Arc<dyn Queue>) {
    let room = RoomId::parse("changed-1").unwrap();
    let mut a = q
        .subscribe(&GatewayId::from_string("gw-announce".into()))
        .await
        .unwrap();
    a.rooms.bind(&room).await.unwrap();
    q.announce(&room).await.unwrap();
    q.fan_out(&[stored("changed-1", 1)]).await.unwrap();
    let wait = Duration::from_secs(5);
    let mut changed = false;
    let mut message = false;
    while !(changed && message) {
        match timeout(wait, a.events.recv()).await.unwrap().unwrap() {
            super::FeedEvent::RoomChanged(r) => {
                assert_eq!(r, room);
                changed = true;
            }
            super::FeedEvent::Message(m) => {
                assert_eq!((m.room.as_str(), m.seq), ("changed-1", 1));
                message = true;
            }
            super::FeedEvent::Interrupted => {}
        }
    }
}
