//! RabbitMQ packing: concurrent sends to one partition share broker messages, each
//! envelope is still settled on its own (ack, retry, dead letter, hand back), and
//! processes with `pack=off` (a rolling upgrade from before packing) interoperate.

use crate::queue_contract::{BROKER_FAULTS, cleaning_up, connect, open};
use queue::amqp::AmqpQueue;
use queue::{Admin, Consume, Delivery, DeliveryBus, FeedEvent, Publish, Settled, contract};
use shared::{Envelope, GatewayId, RoomId, StoredMessage};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};

const WITHIN: Duration = Duration::from_secs(10);

/// Publishes `n` envelopes to `room` all at once; each returns once confirmed.
async fn publish_at_once(q: &Arc<AmqpQueue>, room: &str, n: usize) -> BTreeSet<String> {
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..n {
        let (q, env) = (q.clone(), contract::envelope(room, &format!("p{i}")));
        sends.spawn(async move { q.publish(&env.key(), env.to_json()).await });
    }
    while let Some(done) = sends.join_next().await {
        done.unwrap().expect("every send is confirmed");
    }
    (0..n).map(|i| format!("p{i}")).collect()
}

fn id_of(d: &Delivery) -> String {
    Envelope::from_json(&d.payload)
        .expect("each delivery is one envelope")
        .id
        .as_str()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "rabbitmq"),
    ignore = "needs RabbitMQ: --features courier-tests/rabbitmq (scripts/test.sh)"
)]
async fn rabbitmq_packs_concurrent_sends_and_settles_each_envelope_alone() {
    let _faults = BROKER_FAULTS.lock().await;
    let q = connect(contract::options()).await;
    let case = {
        let q = q.clone();
        async move {
            let ids = publish_at_once(&q, "packed-room", 200).await;
            let on_broker = q.backlog().await.unwrap();
            assert!(
                on_broker < 200,
                "200 concurrent sends took {on_broker} broker messages: none were packed"
            );
            let mut c = q.consumer().await.unwrap();
            let got = contract::collect(&mut *c, 200, WITHIN).await;
            let seen: BTreeSet<String> = got.iter().map(id_of).collect();
            assert_eq!(seen, ids, "every envelope is delivered once, on its own");

            // One retried, one dead-lettered, the rest acked.
            let mut got = got.into_iter();
            let retried = got.next().unwrap();
            let retried_id = id_of(&retried);
            let dead = got.next().unwrap();
            let dead_id = id_of(&dead);
            let settled = retried.retry(Duration::from_millis(200), "test").await;
            assert_eq!(settled.unwrap(), Settled::Retrying);
            dead.dead_letter("poison").await.unwrap();
            Delivery::ack_all(got.collect()).await.unwrap();

            let again = contract::collect(&mut *c, 2, Duration::from_secs(3)).await;
            let again_ids: Vec<String> = again.iter().map(id_of).collect();
            assert_eq!(
                again_ids,
                [retried_id],
                "only the retried envelope comes back"
            );
            assert_eq!(again[0].attempt, 2);
            Delivery::ack_all(again).await.unwrap();
            let letters = q.dead_letters(10).await.unwrap();
            assert_eq!(letters.len(), 1);
            let key = letters[0].key.as_ref().expect("its key, from its envelope");
            assert_eq!(key.id.as_str(), dead_id);
            assert_eq!(letters[0].reason, "poison");
            let rest = contract::collect(&mut *c, 1, Duration::from_secs(2)).await;
            assert!(rest.is_empty(), "acked envelopes do not come back");
        }
    };
    cleaning_up(Arc::new(Mutex::new(vec![q])), case).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "rabbitmq"),
    ignore = "needs RabbitMQ: --features courier-tests/rabbitmq (scripts/test.sh)"
)]
async fn rabbitmq_a_handed_back_envelope_brings_its_message_back_and_nothing_is_lost() {
    let _faults = BROKER_FAULTS.lock().await;
    let q = connect(contract::options()).await;
    let case = {
        let q = q.clone();
        async move {
            let ids = publish_at_once(&q, "back-room", 100).await;
            let mut c = q.consumer().await.unwrap();
            let mut got = contract::collect(&mut *c, 100, WITHIN).await;
            assert_eq!(got.len(), 100);
            // A worker that died holding one envelope: its broker message goes back
            // whole once the others of it are settled.
            drop(got.remove(37));
            Delivery::ack_all(got).await.unwrap();
            let mut seen = BTreeSet::new();
            let end = Instant::now() + WITHIN;
            while Instant::now() < end {
                let back = contract::collect(&mut *c, 100, Duration::from_secs(2)).await;
                if back.is_empty() {
                    break;
                }
                seen.extend(back.iter().map(id_of));
                Delivery::ack_all(back).await.unwrap();
            }
            assert!(!seen.is_empty(), "the handed-back envelope came back");
            assert!(seen.is_subset(&ids));
            assert_eq!(q.backlog().await.unwrap(), 0);
        }
    };
    cleaning_up(Arc::new(Mutex::new(vec![q])), case).await;
}

/// A worker's fan-out stage acks a stored batch while its loop already holds the next:
/// one `multiple` ack must settle exactly the earlier batch, never the later one, and
/// never an earlier delivery still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "rabbitmq"),
    ignore = "needs RabbitMQ: --features courier-tests/rabbitmq (scripts/test.sh)"
)]
async fn rabbitmq_acking_a_batch_leaves_the_held_ones_before_and_after_it() {
    let _faults = BROKER_FAULTS.lock().await;
    let q = connect(contract::options()).await;
    let case = {
        let q = q.clone();
        async move {
            // One at a time, so each is its own broker message with its own tag.
            for i in 0..21 {
                let env = contract::envelope("held-room", &format!("h{i:02}"));
                q.publish(&env.key(), env.to_json()).await.unwrap();
            }
            let mut c = q.consumer().await.unwrap();
            let mut first = contract::collect(&mut *c, 11, WITHIN).await;
            let later = contract::collect(&mut *c, 10, WITHIN).await;
            assert_eq!((first.len(), later.len()), (11, 10));
            let earliest = first.remove(0);
            let acked: BTreeSet<String> = first.iter().map(id_of).collect();
            Delivery::ack_all(first).await.unwrap();
            // The earliest and the later batch were held through that ack: handed back
            // (a worker that died), all of them return, and nothing acked does.
            let mut expected: BTreeSet<String> = later.iter().map(id_of).collect();
            expected.insert(id_of(&earliest));
            drop(earliest);
            drop(later);
            let back = contract::collect(&mut *c, 11, WITHIN).await;
            let back_ids: BTreeSet<String> = back.iter().map(id_of).collect();
            assert_eq!(
                back_ids, expected,
                "held deliveries come back, acked ones do not"
            );
            assert!(back_ids.is_disjoint(&acked));
            assert!(back.iter().all(|d| d.attempt >= 2));
            Delivery::ack_all(back).await.unwrap();
            let rest = contract::collect(&mut *c, 1, Duration::from_secs(2)).await;
            assert!(rest.is_empty(), "everything is settled: {}", rest.len());
        }
    };
    cleaning_up(Arc::new(Mutex::new(vec![q])), case).await;
}

fn stored(room: &str, seq: u64) -> Arc<StoredMessage> {
    let env = contract::envelope(room, &format!("s{seq}"));
    let v = serde_json::json!({
        "room": env.room, "seq": seq, "id": env.id, "from": env.from, "body": "packed 🎉\nline",
        "sent_at": env.sent_at, "enriched": shared::Enriched::default(),
    });
    Arc::new(serde_json::from_value(v).unwrap())
}

/// A gateway of this version reads what workers send with and without packing, and a
/// worker with `pack=off` publishes envelopes one per broker message, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "rabbitmq"),
    ignore = "needs RabbitMQ: --features courier-tests/rabbitmq (scripts/test.sh)"
)]
async fn rabbitmq_processes_with_and_without_packing_work_together() {
    let _faults = BROKER_FAULTS.lock().await;
    let packed = connect(contract::options()).await;
    let url = format!(
        "amqp://guest:guest@127.0.0.1:5672/%2f?prefix={}&pack=off",
        packed.prefix()
    );
    let single = Arc::new(open(&url, &contract::options()).await.unwrap());
    let case = {
        let (packed, single) = (packed.clone(), single.clone());
        async move {
            let room = RoomId::parse("mixed-room").unwrap();
            let mut feed = packed
                .subscribe(&GatewayId::from_string("gw-mixed".into()))
                .await
                .unwrap();
            feed.rooms.bind(&room).await.unwrap();
            let other = stored("not-bound-here", 1);
            packed
                .fan_out(&[
                    stored("mixed-room", 1),
                    other.clone(),
                    stored("mixed-room", 2),
                ])
                .await
                .unwrap();
            single
                .fan_out(&[stored("mixed-room", 3), other])
                .await
                .unwrap();
            let mut seqs = Vec::new();
            while seqs.len() < 3 {
                let event = timeout(WITHIN, feed.events.recv()).await.unwrap().unwrap();
                if let FeedEvent::Message(f) = event {
                    assert_eq!(f.room, room, "only bound rooms reach the gateway");
                    assert_eq!(f.decode().unwrap().body, "packed 🎉\nline");
                    seqs.push(f.seq);
                }
            }
            assert_eq!(seqs, [1, 2, 3]);

            let ids = publish_at_once(&single, "single-room", 30).await;
            assert_eq!(
                single.backlog().await.unwrap(),
                30,
                "one broker message each"
            );
            let mut c = packed.consumer().await.unwrap();
            let got = contract::collect(&mut *c, 30, WITHIN).await;
            assert_eq!(got.iter().map(id_of).collect::<BTreeSet<_>>(), ids);
            Delivery::ack_all(got).await.unwrap();
            sleep(Duration::from_millis(200)).await;
        }
    };
    // One prefix: cleaning up `packed` deletes what `single` used too.
    drop(single);
    cleaning_up(Arc::new(Mutex::new(vec![packed])), case).await;
}
