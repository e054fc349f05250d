//! Failures: a full queue, store refusals (transient and poison), restarts, shutdown,
//! and services that cannot be reached at start.

use crate::helpers::*;
use queue::{DeliveryBus, Queue, QueueError, QueueOptions, memory::MemoryQueue};
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Opens the database (running migrations) and installs a trigger written in SQL.
async fn with_trigger(db_url: &str, sql: &str) {
    drop(
        store::Store::connect(db_url, Default::default())
            .await
            .unwrap(),
    );
    exec_sql(db_url, sql).await;
}

const POISON: &str = "CREATE TRIGGER poison BEFORE INSERT ON messages \
    WHEN NEW.body LIKE '%poison-pill%' \
    BEGIN SELECT RAISE(ABORT, 'poison pill refused by the test trigger'); END";

#[tokio::test]
async fn a_poison_message_ends_in_the_dead_letter_place_and_the_room_flows_on() {
    let (_dir, db) = temp_db();
    with_trigger(&db, POISON).await;
    let g = TestGateway::start_on(&db, |c| {
        c.queue.max_attempts = 3;
        c.worker.retry_delay_ms = 50;
    })
    .await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    assert_eq!(
        a.say("lobby", "p1", "this is a poison-pill").await["type"],
        "ack"
    );
    for i in 1..=5 {
        a.say("lobby", &format!("ok{i}"), "fine").await;
    }
    for seq in 1..=5 {
        let m = a.message("lobby").await;
        assert_eq!(m["seq"], seq);
        assert_ne!(m["id"], "p1");
    }
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let m = g.metrics().await;
        if m.lines()
            .any(|l| l.starts_with("courier_dead_letters_total{reason=\"failed\"}"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "dead letter never counted:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "the poison message is never delivered"
    );
    a.say("lobby", "ok6", "still flowing").await;
    assert_eq!(a.message("lobby").await["seq"], 6);
}

/// The durable embedded queue keeps its dead letters in its file; `worker dlq` lists them
/// while the gateway runs, and a replay it asks for is done by the gateway.
#[tokio::test]
async fn embedded_dead_letters_are_listed_and_replayed_with_worker_dlq() {
    let (dir, db) = temp_db();
    let queue_url = format!("sqlite://{}/queue.db", dir.path().display());
    with_trigger(&db, POISON).await;
    let g = TestGateway::start_on(&db, |c| {
        c.queue.queue_url = queue_url.clone();
        c.queue.max_attempts = 2;
        c.worker.retry_delay_ms = 50;
    })
    .await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    assert_eq!(a.say("lobby", "p1", "a poison-pill").await["type"], "ack");
    let dlq = |args: &[&str]| {
        let out = Command::new(bin("worker"))
            .env_clear()
            .env("QUEUE_URL", &queue_url)
            .arg("dlq")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "worker dlq {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let end = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let listed = dlq(&["list"]);
        if !listed.is_empty() || tokio::time::Instant::now() > end {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["id"].as_str(), line["room"].as_str()),
        (Some("p1"), Some("lobby"))
    );
    assert_eq!(line["attempts"], 2);
    // The cause is fixed; the running gateway replays it.
    exec_sql(&g.db_url, "DROP TRIGGER poison").await;
    assert!(dlq(&["replay", "--all"]).contains("replayed 1"));
    let m = a.message("lobby").await;
    assert_eq!((m["id"].as_str(), m["seq"].as_u64()), (Some("p1"), Some(1)));
    assert!(
        dlq(&["list"]).is_empty(),
        "replayed, so gone from the dead letters"
    );
}

#[tokio::test]
async fn a_store_that_refuses_for_a_while_gets_retries_not_a_drop() {
    let (_dir, db) = temp_db();
    let until = shared::Timestamp::now().as_millis() / 1000 + 2;
    let flaky = format!(
        "CREATE TRIGGER flaky BEFORE INSERT ON messages \
         WHEN NEW.body = 'flaky' AND CAST(strftime('%s','now') AS INTEGER) < {until} \
         BEGIN SELECT RAISE(ABORT, 'not yet'); END"
    );
    with_trigger(&db, &flaky).await;
    let g = TestGateway::start_on(&db, |c| {
        c.queue.max_attempts = 10;
        c.worker.retry_delay_ms = 200;
    })
    .await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    a.say("lobby", "f", "flaky").await;
    let m = a.message("lobby").await;
    assert_eq!((m["id"].as_str(), m["seq"].as_u64()), (Some("f"), Some(1)));
    let metrics = g.metrics().await;
    assert!(
        metrics.contains("courier_worker_retries_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_queue_answers_unavailable_and_the_same_id_succeeds_later() {
    let (_dir, db) = temp_db();
    with_trigger(&db, POISON).await;
    let g = TestGateway::start_on(&db, |c| {
        c.queue.memory_queue_capacity = 1;
        c.queue.max_attempts = 2;
        c.worker.retry_delay_ms = 1500;
    })
    .await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    assert_eq!(
        a.say("lobby", "p", "poison-pill holds the only slot").await["type"],
        "ack"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = a.say("lobby", "n1", "no room on the queue").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unavailable"), Some("n1"))
    );
    // Once the poison message is dead-lettered the slot frees; the retry goes through.
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let r = a.say("lobby", "n1", "no room on the queue").await;
        if r["type"] == "ack" {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "never accepted: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.message("lobby").await["id"], "n1");
}

#[tokio::test]
async fn a_restarted_gateway_replays_history_from_sqlite() {
    let (_dir, db) = temp_db();
    let mut g = TestGateway::start_on(&db, |_| {}).await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    for i in 1..=3 {
        a.say("lobby", &format!("m{i}"), &format!("before restart {i}"))
            .await;
        a.message("lobby").await;
    }
    g.stop().await;
    let g2 = TestGateway::start_on(&db, |_| {}).await;
    let mut b = g2.client("bob").await;
    let j = b.join_since("lobby", 0).await;
    assert_eq!(j["head"], 3);
    for seq in 1..=3 {
        let m = b.message("lobby").await;
        assert_eq!(
            (m["seq"].as_u64(), m["body"].as_str()),
            (Some(seq), Some(format!("before restart {seq}").as_str()))
        );
    }
    b.say("lobby", "m4", "after").await;
    assert_eq!(b.message("lobby").await["seq"], 4);
}

#[tokio::test]
async fn stopping_tells_clients_1012_and_processes_what_was_acked() {
    let (_dir, db) = temp_db();
    let mut g = TestGateway::start_on(&db, |_| {}).await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    for i in 0..50 {
        a.send(json!({"type":"send","room":"lobby","id":format!("s{i}"),"body":"drain me"}))
            .await;
    }
    let mut acked = 0;
    while acked < 50 {
        if a.recv().await["type"] == "ack" {
            acked += 1;
        }
    }
    let stopping = tokio::spawn(async move {
        g.stop().await;
    });
    assert_eq!(a.closed().await, 1012);
    stopping.await.unwrap();
    let store = store::Store::connect(&db, Default::default())
        .await
        .unwrap();
    let room = shared::RoomId::parse("lobby").unwrap();
    assert_eq!(
        store.head(&room).await.unwrap(),
        50,
        "every acked message was stored before exit"
    );
}

#[test]
fn unreachable_services_at_start_exit_non_zero_naming_the_url() {
    // The default queue is a file under data/: keep it out of the source tree.
    let dir = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(bin("gateway"));
        cmd.env_clear()
            .env("BIND", "127.0.0.1:0")
            .current_dir(dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&[(
        "DATABASE_URL",
        "postgres://courier:hunter2@127.0.0.1:1/chat",
    )]);
    assert!(!ok);
    assert!(
        err.contains("postgres://courier:***@127.0.0.1:1/chat"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    let (ok, err) = run(&[("QUEUE_URL", "kafka://nope")]);
    assert!(!ok);
    assert!(err.contains("kafka://nope"), "{err}");

    let worker_dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("worker"))
        .env_clear()
        .current_dir(worker_dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the gateway's embedded queue"), "{err}");
    let created = worker_dir.path().join("data").exists();
    assert!(!created, "a refused worker creates no file");
}

/// An enrichment stage with a bug: it panics on one body.
struct Crash;

impl worker::enrich::Stage for Crash {
    fn name(&self) -> &'static str {
        "crash"
    }

    fn apply(&self, draft: &mut worker::enrich::Draft<'_>) {
        if draft.original.contains("crash-me") {
            panic!("the test stage crashed on purpose");
        }
    }
}

/// The in-memory queue's delivery bus, except that its first fan-out panics (a bug
/// after the store).
struct PanicOnce {
    inner: Arc<dyn Queue>,
    panicked: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl DeliveryBus for PanicOnce {
    async fn fan_out(&self, messages: &[Arc<shared::StoredMessage>]) -> Result<(), QueueError> {
        if !self
            .panicked
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("the test fan-out crashed on purpose");
        }
        self.inner.fan_out(messages).await
    }
    async fn subscribe(&self, g: &shared::GatewayId) -> Result<queue::Subscription, QueueError> {
        self.inner.subscribe(g).await
    }
    async fn announce(&self, room: &shared::RoomId) -> Result<(), QueueError> {
        self.inner.announce(room).await
    }
}

async fn stored_ids(store: &store::Store, room: &str) -> Vec<String> {
    let room = shared::RoomId::parse(room).unwrap();
    let page = store.after(&room, 0, 100).await.unwrap();
    page.iter().map(|m| m.id.as_str().to_owned()).collect()
}

async fn publish_bodies(queue: &dyn Queue, room: &str, messages: &[(&str, &str)]) {
    for (id, body) in messages {
        let mut env = queue::contract::envelope(room, id);
        env.body = (*body).into();
        queue.publish(&env.key(), env.to_json()).await.unwrap();
    }
}

/// A panic in one message's enrichment costs that message only (dead-lettered, the room
/// flows on); a panic elsewhere ends the worker loop, which is started again and counted,
/// and its batch comes back and is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_cost_one_message_at_most_and_a_crashed_worker_loop_starts_again() {
    let metrics = telemetry::metrics_handle();
    let (_dir, db) = temp_db();
    let store = store::Store::connect(&db, Default::default())
        .await
        .unwrap();
    let opts = QueueOptions {
        max_attempts: 3,
        receive_wait: Duration::from_millis(200),
        ..QueueOptions::default()
    };
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(opts));
    let mut settings = config(&db).worker;
    settings.workers = 1;
    let mut w = worker::Worker::new(queue.clone(), store.clone(), settings);
    w.bus = Arc::new(PanicOnce {
        inner: queue.clone(),
        panicked: false.into(),
    });
    w.enrich = Arc::new(worker::enrich::Pipeline::new(vec![
        Box::new(Crash),
        Box::new(worker::enrich::Links::new()),
    ]));
    let (stop, sd) = shared::shutdown::channel();
    let running = tokio::spawn(w.run(sd));
    let messages = [
        ("c1", "please crash-me"),
        ("f1", "fine"),
        ("f2", "€4.50"),
        ("f3", "ok 👍"),
    ];
    publish_bodies(&*queue, "crashy", &messages).await;
    let end = tokio::time::Instant::now() + WAIT;
    while stored_ids(&store, "crashy").await.len() < 3 {
        assert!(tokio::time::Instant::now() < end, "the room never flowed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stored_ids(&store, "crashy").await,
        ["f1", "f2", "f3"],
        "each once"
    );
    let dead = queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("panicked"), "{}", dead[0].reason);
    assert!(dead[0].payload.windows(2).any(|w| w == b"c1"));
    // The fan-out panics just after the commit the loop above waited for, so the restart
    // is counted a moment later: wait for it rather than race it.
    let restarts = || {
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("courier_worker_restarts_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    while restarts() < 1.0 {
        assert!(
            tokio::time::Instant::now() < end,
            "the restart is never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The restarted loop goes on working.
    publish_bodies(&*queue, "crashy", &[("f4", "still here")]).await;
    while stored_ids(&store, "crashy").await.len() < 4 {
        assert!(
            tokio::time::Instant::now() < end + WAIT,
            "the new loop does not consume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.fire();
    running.await.unwrap().unwrap();
}

/// A tmpfs of `mb` MiB mounted for one test (needs root, as the test command runs);
/// unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mb: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test command runs as root)"
        );
        Self(dir)
    }

    /// Fills the file system to the last byte; the returned file frees it when removed.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

async fn readyz(g: &TestGateway) -> u16 {
    reqwest::get(g.url("/readyz"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A store on a full disk is an outage, not a bad message: sends are still acked (the
/// queue is elsewhere), `/readyz` answers 503 while writes fail, and once space is back
/// every acked message is stored, once, in order, within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "root"),
    ignore = "needs root (tmpfs mounts): --features courier-tests/root (scripts/test.sh)"
)]
async fn a_full_disk_under_the_store_is_waited_out_and_nothing_acked_is_lost() {
    let disk = Tmpfs::mount(4);
    let db = format!("sqlite://{}/chat.db", disk.0.path().display());
    let queue_dir = tempfile::tempdir().unwrap();
    let queue_url = format!("sqlite://{}/queue.db", queue_dir.path().display());
    let g = TestGateway::start_on(&db, |c| {
        c.queue.queue_url = queue_url.clone();
        c.worker.retry_delay_ms = 50;
    })
    .await;
    let mut a = g.client("alice").await;
    a.join("full").await;
    assert_eq!(
        a.say("full", "m0", "before the disk fills").await["type"],
        "ack"
    );
    a.message("full").await;
    let filler = disk.fill();
    for i in 1..150 {
        let body = format!("#{i}: order 199215 costs €12.50 — {}", "x".repeat(400));
        assert_eq!(a.say("full", &format!("m{i}"), &body).await["type"], "ack");
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while readyz(&g).await != 503 {
        assert!(
            tokio::time::Instant::now() < end,
            "/readyz stayed 200 while writes fail"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_file(filler).unwrap();
    let store = g.store().await;
    let room = shared::RoomId::parse("full").unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.head(&room).await.unwrap() < 150 || readyz(&g).await != 200 {
        assert!(
            tokio::time::Instant::now() < end,
            "no recovery within 10 s of space returning"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids = Vec::new();
    for since in [0, 100] {
        for m in store.after(&room, since, 100).await.unwrap() {
            ids.push(m.id.as_str().to_owned());
        }
    }
    let want: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
    assert_eq!(ids, want, "every acked message, once, in send order");
}

/// The durable queue's file on a full disk: a `send` is refused with `unavailable` (never
/// acked and then lost), `/readyz` answers 503, and both recover once space is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "root"),
    ignore = "needs root (tmpfs mounts): --features courier-tests/root (scripts/test.sh)"
)]
async fn a_full_disk_under_the_queue_refuses_sends_until_space_returns() {
    let disk = Tmpfs::mount(4);
    let queue_url = format!("sqlite://{}/queue.db", disk.0.path().display());
    let (_dir, db) = temp_db();
    let g = TestGateway::start_on(&db, |c| c.queue.queue_url = queue_url.clone()).await;
    let mut a = g.client("alice").await;
    a.join("q").await;
    let filler = disk.fill();
    let body = format!("order 5318008, {}", "y".repeat(3000));
    // A send can still be committed into WAL space the file already has (the background
    // checkpoint lets the WAL start over); it is refused once a commit needs new space.
    // Whatever was acked must arrive after all.
    let mut acked = Vec::new();
    let (refused_id, refused) = loop {
        let id = format!("r{}", acked.len() + 1);
        let reply = a.say("q", &id, &body).await;
        if reply["type"] != "ack" {
            break (id, reply);
        }
        acked.push(id);
        assert!(acked.len() < 200, "a full disk never refused a send");
    };
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{refused}"
    );
    assert_eq!(readyz(&g).await, 503);
    std::fs::remove_file(filler).unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while readyz(&g).await != 200 {
        assert!(tokio::time::Instant::now() < end, "/readyz did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        a.say("q", &refused_id, &body).await["type"],
        "ack",
        "the same id goes through now"
    );
    for id in acked.iter().chain([&refused_id]) {
        assert_eq!(
            &a.message("q").await["id"],
            id.as_str(),
            "acked before: {acked:?}"
        );
    }
}
