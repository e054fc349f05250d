//! The queue contract against RabbitMQ (`TEST_AMQP_URL`, default
//! amqp://guest:guest@127.0.0.1:5672/%2f), and RabbitMQ's recovery when the broker drops
//! every connection. The embedded queues pass the same contract in their unit tests.

use queue::amqp::{AmqpQueue, Settings};
use queue::{
    Admin, Consume, DeliveryBus, FeedEvent, Publish, Queue, QueueError, QueueOptions, contract,
};
use shared::{Enriched, GatewayId, RoomId, StoredMessage};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};

/// Held by every test that talks to the broker: `rabbitmqctl close_all_connections`
/// closes every connection on it, other tests' included.
pub static BROKER_FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RECOVERY: Duration = Duration::from_secs(10);

fn broker_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Opens the queues and exchanges of an `amqp://` URL.
pub async fn open(url: &str, opts: &QueueOptions) -> Result<AmqpQueue, QueueError> {
    AmqpQueue::open(&Settings::parse(url)?, opts).await
}

/// A fresh RabbitMQ queue under its own `ct-…` prefix, so parallel runs never collide.
pub async fn connect(opts: QueueOptions) -> Arc<AmqpQueue> {
    let url = broker_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let prefix = format!("ct-{}", &GatewayId::generate().as_str()[3..]);
    let q = open(&format!("{url}{sep}prefix={prefix}"), &opts)
        .await
        .expect("RabbitMQ must be running for these tests (set TEST_AMQP_URL)");
    assert_eq!(q.prefix(), prefix);
    Arc::new(q)
}

/// Runs `case` to completion (panicking or not), then deletes everything `queues`
/// declared, then reports the case's outcome.
pub async fn cleaning_up<F>(queues: Arc<Mutex<Vec<Arc<AmqpQueue>>>>, case: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(case).await;
    let made: Vec<Arc<AmqpQueue>> = std::mem::take(&mut *queues.lock().unwrap());
    for q in made {
        let end = Instant::now() + RECOVERY;
        while let Err(e) = q.destroy().await {
            assert!(Instant::now() < end, "cleaning up {}: {e}", q.prefix());
            sleep(Duration::from_millis(100)).await;
        }
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "rabbitmq"),
    ignore = "needs RabbitMQ: --features courier-tests/rabbitmq (scripts/test.sh)"
)]
async fn rabbitmq_passes_the_contract() {
    let _faults = BROKER_FAULTS.lock().await;
    let made = Arc::new(Mutex::new(Vec::new()));
    let registry = made.clone();
    let case = contract::run_all(move |opts| {
        let registry = registry.clone();
        async move {
            let q = connect(opts).await;
            registry.lock().unwrap().push(q.clone());
            q as Arc<dyn Queue>
        }
    });
    cleaning_up(made, case).await;
}

/// The arguments RabbitMQ holds for `queue` (`rabbitmqctl list_queues`), as (key, value).
pub fn declared_arguments(queue: &str) -> Vec<(String, serde_json::Value)> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            "/",
            "name",
            "arguments",
            "--formatter",
            "json",
        ])
        .output()
        .expect("rabbitmqctl runs where RabbitMQ does");
    let queues: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .unwrap_or_else(|| panic!("{queue} is not declared"));
    q["arguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap().to_owned(), a[2].clone()))
        .collect()
}

/// Since RabbitMQ 4.0, a quorum queue without a dead-letter target drops a message
/// returned more than 20 times (its default delivery limit). The ingest partitions carry
/// their own limit, far above any MAX_ATTEMPTS, and dead-letter past it, at least once.
/// RabbitMQ 4 cannot run here (it needs Erlang 26; Debian bookworm has 25 and RabbitMQ
/// 3.10), so the declared arguments are checked, and the behaviour past the limit on 3.10,
/// which has both settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "rabbitmq"),
    ignore = "needs RabbitMQ: --features courier-tests/rabbitmq (scripts/test.sh)"
)]
async fn rabbitmq_partitions_dead_letter_past_their_delivery_limit_instead_of_dropping() {
    let made = Arc::new(Mutex::new(Vec::new()));
    let registry = made.clone();
    let case = async move {
        let q = connect(contract::options()).await;
        registry.lock().unwrap().push(q.clone());
        let partition = format!("{}.ingest.0", q.prefix());
        let args = declared_arguments(&partition);
        let arg = |k: &str| {
            args.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(arg("x-delivery-limit"), Some(1000.into()), "{args:?}");
        assert!(
            arg("x-delivery-limit").unwrap().as_u64().unwrap() > 100,
            "above MAX_ATTEMPTS' range"
        );
        assert_eq!(arg("x-dead-letter-strategy"), Some("at-least-once".into()));
        assert_eq!(arg("x-overflow"), Some("reject-publish".into()));
        assert_eq!(arg("x-dead-letter-exchange"), Some("".into()));
        assert_eq!(
            arg("x-dead-letter-routing-key"),
            Some(format!("{}.dead", q.prefix()).into())
        );
        assert_eq!(arg("x-single-active-consumer"), Some(true.into()));

        // A message whose consumers keep dying: returned to the queue again and again.
        let env = contract::envelope("room-limit", "returned");
        q.publish(&env.key(), env.to_json()).await.unwrap();
        let mut c = q.consumer().await.unwrap();
        let mut returns = 0;
        loop {
            let got = contract::collect(&mut *c, 1, Duration::from_secs(2)).await;
            let Some(d) = got.into_iter().next() else {
                break;
            };
            assert!(returns <= 1000, "delivered past its limit");
            returns += 1;
            drop(d); // a consumer that died holding it: back to the queue
        }
        assert!(returns >= 1000, "delivered {returns} times only");
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(
            dead.len(),
            1,
            "past the limit it is a dead letter, not gone"
        );
        assert!(dead[0].reason.contains("RabbitMQ"), "{}", dead[0].reason);
    };
    cleaning_up(made, case).await;
}

#[tokio::test]
async fn rabbitmq_connect_failure_names_the_url_without_its_password() {
    let url = "amqp://guest:secret@127.0.0.1:1/%2f?prefix=ct-refused";
    let err = open(url, &contract::options())
        .await
        .err()
        .expect("nothing listens on port 1");
    match &err {
        QueueError::Connect { url, .. } => {
            assert_eq!(url, "amqp://guest:***@127.0.0.1:1/%2f?prefix=ct-refused")
        }
        other => panic!("expected a Connect error, got {other:?}"),
    }
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "rabbitmq"),
    ignore = "needs RabbitMQ: --features courier-tests/rabbitmq (scripts/test.sh)"
)]
async fn rabbitmq_reconnects_after_the_broker_closes_connections() {
    let _faults = BROKER_FAULTS.lock().await;
    let q = connect(contract::options()).await;
    cleaning_up(Arc::new(Mutex::new(vec![q.clone()])), reconnect_case(q)).await;
}

async fn publish(q: &AmqpQueue, id: &str) -> Result<(), QueueError> {
    let env = contract::envelope("rc-room", id);
    q.publish(&env.key(), env.to_json()).await
}

fn stored(seq: u64) -> Arc<StoredMessage> {
    let env = contract::envelope("rc-room", &format!("f{seq}"));
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

async fn reconnect_case(q: Arc<AmqpQueue>) {
    let room = RoomId::parse("rc-room").unwrap();
    let mut consumer = q.consumer().await.unwrap();
    let mut feed = q
        .subscribe(&GatewayId::from_string("gw-rc".into()))
        .await
        .unwrap();
    feed.rooms.bind(&room).await.unwrap();
    publish(&q, "before").await.unwrap();
    let got = contract::collect(&mut *consumer, 1, RECOVERY).await;
    assert_eq!(got.len(), 1, "delivered before the fault");
    queue::Delivery::ack_all(got).await.unwrap();

    let refused = publish_through_a_fault(&q).await;
    assert!(
        refused > 0,
        "publishing while the connection is down is refused"
    );

    publish(&q, "after").await.unwrap();
    assert!(
        receive_until(&mut *consumer, "after").await,
        "the consumer resumed"
    );

    let first = timeout(RECOVERY, feed.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, FeedEvent::Interrupted), "got {first:?}");
    q.fan_out(&[stored(7)]).await.unwrap();
    let m = timeout(RECOVERY, feed.events.recv())
        .await
        .unwrap()
        .unwrap()
        .message()
        .expect("a message after the interruption");
    assert_eq!((m.room.as_str(), m.seq), ("rc-room", 7));
}

/// Publishes every 20 ms while every broker connection is closed, until publishing works
/// again; returns how many publishes were refused. Each refusal must be `Unavailable` and
/// quick (nothing hangs on a dead connection).
async fn publish_through_a_fault(q: &AmqpQueue) -> usize {
    let fault = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl")
            .args(["close_all_connections", "test"])
            .output()
    });
    let started = Instant::now();
    let mut refused = 0;
    let mut n = 0;
    loop {
        n += 1;
        let t = Instant::now();
        match publish(q, &format!("during-{n}")).await {
            Ok(()) if fault.is_finished() => break,
            Ok(()) => {}
            Err(QueueError::Unavailable(reason)) => {
                assert!(
                    t.elapsed() < Duration::from_secs(3),
                    "a refusal took {:?}: {reason}",
                    t.elapsed()
                );
                refused += 1;
            }
            Err(e) => panic!("publishing during a fault: {e}"),
        }
        assert!(
            started.elapsed() < RECOVERY * 2,
            "publishing did not recover ({refused} refused)"
        );
        sleep(Duration::from_millis(20)).await;
    }
    let out = fault.await.unwrap().expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused
}

/// Receives (acking everything) until the message `id` arrives; receive errors while the
/// consumer re-opens must be `Unavailable`.
async fn receive_until(consumer: &mut dyn queue::Consumer, id: &str) -> bool {
    let end = Instant::now() + RECOVERY;
    while Instant::now() < end {
        match consumer.receive(100).await {
            Ok(batch) => {
                let found = batch.iter().any(|d| {
                    shared::Envelope::from_json(&d.payload).is_ok_and(|e| e.id.as_str() == id)
                });
                // Acks of deliveries from before the reconnect may fail; they come back.
                let _ = queue::Delivery::ack_all(batch).await;
                if found {
                    return true;
                }
            }
            Err(QueueError::Unavailable(_)) => sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("receiving after a fault: {e}"),
        }
    }
    false
}
