//! The default topology (the gateway with embedded workers, the durable SQLite queue and
//! the SQLite store, all under `data/`) keeps every acked message across a crash: the
//! gateway gets SIGKILL during bursts from many connections, is started again on the same
//! folder, and every message that was acked is stored exactly once, in each sender's
//! order.

use crate::cluster::Proc;
use crate::helpers::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const ROUNDS: usize = 20;
const CONNECTIONS: usize = 24;
/// Inside the default rate limit's burst (50), with the join.
const BURST: usize = 45;
const KILL_AFTER_ACKS: usize = 300;

/// Nothing but the listen address and the log format: the defaults are under test.
fn gateway(name: &str, dir: &Path) -> Proc {
    let env = [("BIND".to_owned(), "127.0.0.1:0".to_owned())];
    Proc::spawn_in(name, "gateway", &env, Some(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bursts_loses_no_acked_message_and_stores_each_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway("gateway-0", dir.path());
    let store_url = format!("sqlite://{}/data/chat.db", dir.path().display());
    for round in 0..ROUNDS {
        let room = format!("crash-{round}");
        let acked = burst_until_killed(&mut gw, &room).await;
        let total: usize = acked.values().map(Vec::len).sum();
        assert!(total >= KILL_AFTER_ACKS, "round {round}: only {total} acks");
        gw = gateway(&format!("gateway-{}", round + 1), dir.path());
        check_room(&store_url, &room, &acked)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}\ngateway log:\n{}", gw.log_text()));
    }
}

/// Every connection pipelines its burst; the gateway is killed once enough acks came
/// back. Returns, per sender, the indices of its messages that were acked.
async fn burst_until_killed(gw: &mut Proc, room: &str) -> HashMap<String, Vec<usize>> {
    let addr = gw.addr.unwrap();
    let acks = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let user = format!("u{c}");
        let mut client = Client::connect(&format!("ws://{addr}/ws?user={user}")).await;
        client.join(room).await;
        let (room, acks) = (room.to_owned(), acks.clone());
        tasks.push(tokio::spawn(async move {
            let Client { sink, rx } = &mut client;
            for n in 0..BURST {
                let body = format!("#{n} from {user}: €12.50 for order 5318008 🙂");
                let frame =
                    json!({"type":"send","room":room,"id":format!("{user}-{n}"),"body":body});
                use futures_util::SinkExt;
                if sink
                    .send(tokio_tungstenite::tungstenite::Message::text(
                        frame.to_string(),
                    ))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let mut acked = Vec::new();
            while let Some(v) = rx.next_or_gone().await {
                if v["type"] == "ack" {
                    let id = v["id"].as_str().unwrap();
                    acked.push(id.rsplit('-').next().unwrap().parse::<usize>().unwrap());
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
            (user, acked)
        }));
    }
    let deadline = Instant::now() + WAIT;
    while acks.load(Ordering::Relaxed) < KILL_AFTER_ACKS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gw.kill9();
    let mut out = HashMap::new();
    for t in tasks {
        let (user, acked) = t.await.unwrap();
        out.insert(user, acked);
    }
    out
}

/// Waits until every acked message is stored, then checks each is there once and each
/// sender's messages are in send order.
async fn check_room(
    store_url: &str,
    room: &str,
    acked: &HashMap<String, Vec<usize>>,
) -> Result<(), String> {
    let store = store::Store::connect(store_url, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let room_id = shared::RoomId::parse(room).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored = read_room(&store, &room_id).await?;
        let mut per_sender: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for (from, id) in &stored {
            if !seen.insert((from.clone(), id.clone())) {
                return Err(format!("{from}/{id} is stored twice"));
            }
            let n = id.rsplit('-').next().unwrap().parse::<usize>().unwrap();
            per_sender.entry(from.clone()).or_default().push(n);
        }
        let missing: Vec<String> = acked
            .iter()
            .flat_map(|(user, ns)| {
                let have = per_sender.get(user).cloned().unwrap_or_default();
                ns.iter()
                    .filter(move |n| !have.contains(n))
                    .map(move |n| format!("{user}-{n}"))
            })
            .collect();
        if missing.is_empty() {
            for (user, ns) in &per_sender {
                if !ns.windows(2).all(|w| w[0] < w[1]) {
                    return Err(format!(
                        "{user}'s messages are stored out of send order: {ns:?}"
                    ));
                }
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} acked messages never stored after the restart, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (from, id) of every stored message of `room`, in `seq` order.
async fn read_room(
    store: &store::Store,
    room: &shared::RoomId,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut since = 0;
    loop {
        let page = store
            .after(room, since, 200)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        since = last.seq;
        out.extend(
            page.iter()
                .map(|m| (m.from.as_str().to_owned(), m.id.as_str().to_owned())),
        );
    }
    Ok(out)
}
