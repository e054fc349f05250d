//! Unit tests of the embedded queue, volatile and durable.

use super::*;
use crate::Queue;
use std::sync::atomic::Ordering;

#[tokio::test]
async fn memory_queue_passes_the_contract() {
    super::super::contract::run_all(|opts| async move {
        Arc::new(MemoryQueue::new(opts)) as Arc<dyn Queue>
    })
    .await;
}

fn ids(batch: &[Delivery]) -> Vec<String> {
    batch
        .iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect()
}

/// A key whose id is the payload.
fn key(room: &str, id: &str) -> MessageKey {
    MessageKey {
        room: RoomId::parse(room).unwrap(),
        from: shared::ids::UserId::parse("tester").unwrap(),
        id: shared::ids::ClientMsgId::parse(id).unwrap(),
    }
}

async fn publish_to(q: &MemoryQueue, room: &str, payload: &str) {
    let key = key(room, payload);
    q.publish(&key, payload.as_bytes().to_vec()).await.unwrap();
}

#[tokio::test]
async fn dead_letters_keep_the_key_they_were_published_with() {
    let q = MemoryQueue::new(QueueOptions::default());
    // Not an envelope: only the kept key can select it by id.
    publish_to(&q, "r", "k1").await;
    let mut c = q.consumer().await.unwrap();
    let d = c.receive(1).await.unwrap().pop().unwrap();
    d.dead_letter("refused").await.unwrap();
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead[0].key, Some(key("r", "k1")));
    let only = DeadLetterFilter::Ids(vec!["k1".into()]);
    assert_eq!(q.replay_dead_letters(&only).await.unwrap(), 1);
}

#[tokio::test]
async fn rooms_are_parallel_and_each_room_serial() {
    let q = MemoryQueue::new(QueueOptions::default());
    for (room, m) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
        publish_to(&q, room, m).await;
    }
    let mut c1 = q.consumer().await.unwrap();
    let mut c2 = q.consumer().await.unwrap();
    let held = c1.receive(2).await.unwrap();
    assert_eq!(ids(&held), ["a1", "a2"], "a room is taken whole");
    let other = c2.receive(10).await.unwrap();
    assert_eq!(ids(&other), ["b1"]);
    publish_to(&q, "a", "a3").await;
    assert!(c2.try_receive(10).is_empty(), "room a is held by c1");
    let mut held = held.into_iter();
    held.next().unwrap().ack().await.unwrap();
    assert!(c2.try_receive(10).is_empty(), "a2 still holds room a");
    held.next().unwrap().ack().await.unwrap();
    assert_eq!(
        ids(&c2.try_receive(10)),
        ["a3"],
        "released once all settled"
    );
    Delivery::ack_all(other).await.unwrap();
}

#[tokio::test]
async fn handed_back_messages_keep_their_order() {
    let q = MemoryQueue::new(QueueOptions::default());
    for m in ["r1", "r2", "r3"] {
        publish_to(&q, "r", m).await;
    }
    let mut c = q.consumer().await.unwrap();
    let batch = c.receive(10).await.unwrap();
    // A worker that died: its deliveries are dropped in any order.
    for d in batch.into_iter().rev() {
        drop(d);
    }
    let again = c.receive(10).await.unwrap();
    assert_eq!(ids(&again), ["r1", "r2", "r3"]);
    assert!(again.iter().all(|d| d.attempt == 2));
}

#[tokio::test]
async fn a_retry_holds_its_room_until_it_is_delivered_again() {
    let q = MemoryQueue::new(QueueOptions::default());
    for m in ["x1", "x2"] {
        publish_to(&q, "x", m).await;
    }
    let mut c = q.consumer().await.unwrap();
    let first = c.receive(1).await.unwrap().pop().unwrap();
    first
        .retry(Duration::from_millis(200), "test")
        .await
        .unwrap();
    assert!(c.try_receive(10).is_empty(), "x2 waits behind x1's retry");
    let again = c.receive(10).await.unwrap();
    assert_eq!(ids(&again), ["x1", "x2"]);
    assert_eq!(again[0].attempt, 2);
    Delivery::ack_all(again).await.unwrap();
    assert_eq!(q.depth(), 0);
    assert!(q.inner.lock().rooms() == 0, "settled rooms leave no state");
}

#[tokio::test]
async fn the_durable_queue_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    super::super::contract::run_all(|opts| {
        let path = dir
            .path()
            .join(format!("q{}.db", n.fetch_add(1, Ordering::Relaxed)));
        async move {
            Arc::new(MemoryQueue::open_durable(&path, false, opts).await.unwrap()) as Arc<dyn Queue>
        }
    })
    .await;
}

/// Publishes a message to a room of its own, which returns only once everything asked
/// of the journal before it (acks included) is committed.
async fn barrier(q: &MemoryQueue) {
    publish_to(q, "barrier", "barrier").await;
}

#[tokio::test]
async fn what_the_file_holds_comes_back_after_a_crash_in_publish_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    {
        let q = MemoryQueue::open_durable(&path, false, QueueOptions::default())
            .await
            .unwrap();
        for (room, m) in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3")] {
            publish_to(&q, room, m).await;
        }
        let mut c = q.consumer().await.unwrap();
        let batch = c.receive(2).await.unwrap();
        assert_eq!(ids(&batch), ["a1", "a2", "a3"][..2]);
        let mut batch = batch.into_iter();
        batch.next().unwrap().ack().await.unwrap();
        barrier(&q).await;
        // The process dies here, a2 in flight: dropping it changes only what is in
        // memory, so the file is left as a crash leaves it.
        drop(batch);
    }
    let q = MemoryQueue::open_durable(&path, false, QueueOptions::default())
        .await
        .unwrap();
    assert_eq!(q.depth(), 4, "a2, b1, a3 and the barrier");
    let mut c = q.consumer().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        let batch = c.receive(10).await.unwrap();
        got.extend(ids(&batch));
        Delivery::ack_all(batch).await.unwrap();
    }
    got.retain(|m| m != "barrier");
    assert_eq!(
        got,
        ["a2", "a3", "b1"],
        "room a in order, a1 acked for good"
    );
}

#[tokio::test]
async fn retries_and_dead_letters_are_kept_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let opts = QueueOptions {
        max_attempts: 2,
        ..QueueOptions::default()
    };
    {
        let q = MemoryQueue::open_durable(&path, false, opts.clone())
            .await
            .unwrap();
        publish_to(&q, "r", "later").await;
        publish_to(&q, "d", "poison").await;
        let mut c = q.consumer().await.unwrap();
        for d in c.receive(10).await.unwrap() {
            if d.payload == b"later" {
                d.retry(Duration::from_secs(60), "not yet").await.unwrap();
            } else {
                d.dead_letter("malformed").await.unwrap();
            }
        }
    }
    let q = MemoryQueue::open_durable(&path, false, opts).await.unwrap();
    assert_eq!(q.depth(), 1, "the retry waits for its time, still counted");
    let mut c = q.consumer().await.unwrap();
    assert!(c.try_receive(10).is_empty(), "not before its delay");
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].payload.as_slice(), dead[0].reason.as_str()),
        (&b"poison"[..], "malformed")
    );
}

#[tokio::test]
async fn another_process_reads_dead_letters_and_asks_the_owner_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let owner = MemoryQueue::open_durable(&path, false, QueueOptions::default())
        .await
        .unwrap();
    publish_to(&owner, "x", "bad").await;
    let mut c = owner.consumer().await.unwrap();
    let d = c.receive(1).await.unwrap().pop().unwrap();
    d.dead_letter("store refused").await.unwrap();

    let other = MemoryQueue::open_durable(&path, false, QueueOptions::default())
        .await
        .unwrap();
    let err = other
        .publish(&key("x", "nope"), b"nope".to_vec())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("owned by another process"),
        "{err}"
    );
    assert_eq!(other.dead_letters(10).await.unwrap().len(), 1);
    assert_eq!(
        other
            .replay_dead_letters(&DeadLetterFilter::All)
            .await
            .unwrap(),
        1
    );
    // The owner moves it back within its poll.
    let back = tokio::time::timeout(Duration::from_secs(5), c.receive(1))
        .await
        .unwrap()
        .unwrap();
    let back = if back.is_empty() {
        c.receive(1).await.unwrap()
    } else {
        back
    };
    assert_eq!(ids(&back), ["bad"]);
    assert_eq!(back[0].attempt, 1, "a replay starts afresh");
    assert!(owner.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn publish_refuses_when_full() {
    let q = MemoryQueue::new(QueueOptions {
        memory_capacity: 2,
        ..QueueOptions::default()
    });
    q.publish(&key("r", "1"), b"1".to_vec()).await.unwrap();
    q.publish(&key("r", "2"), b"2".to_vec()).await.unwrap();
    let err = q.publish(&key("r", "3"), b"3".to_vec()).await.unwrap_err();
    assert!(matches!(err, QueueError::Unavailable(_)), "{err}");
    assert_eq!(q.depth(), 2);
}
