//! Edits, deletes, reactions and replies: seen live by every member, rebuilt by a
//! replay from before the original message, shown in their latest state by `history`
//! and HTTP; refused with the contract's codes; idempotent by `id`.

use super::*;
use shared::StoredMessage;
use shared::event::RoomState;
use std::collections::BTreeMap;

#[tokio::test]
async fn embedded_edits_deletes_and_reactions_reach_everyone_live_and_after_a_replay() {
    on_embedded(|site| async move { everyone_sees_the_log(&site).await }).await;
}

#[tokio::test]
async fn embedded_only_authors_edit_or_delete_and_bad_targets_are_refused() {
    on_embedded(|site| async move { refusals(&site).await }).await;
}

#[tokio::test]
async fn embedded_repeated_ids_are_acked_again_and_stored_once() {
    on_embedded(|site| async move { repeated_ids(&site).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn rabbitmq_log_events_live_replayed_refused_and_idempotent() {
    on_rabbitmq(|site| async move {
        everyone_sees_the_log(&site).await;
        refusals(&site).await;
        repeated_ids(&site).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "sqs", feature = "postgres")),
    ignore = "needs SQS (LocalStack) and PostgreSQL: --features courier-tests/sqs,courier-tests/postgres (scripts/test.sh)"
)]
async fn sqs_log_events_live_replayed_refused_and_idempotent() {
    on_sqs(|site| async move {
        everyone_sees_the_log(&site).await;
        repeated_ids(&site).await;
    })
    .await;
}

/// The ids of the scenario's log entries, in the order they are sent.
const LOG: [&str; 9] = [
    "m-1", "m-2", "m-3", "e-1", "r-1", "r-2", "r-3", "r-4", "d-1",
];

/// Alice (gateway 0), Bob (gateway 1) and Carol (gateway 0) write a room's log: a
/// message each, a reply, an edit, reactions (one taken back) and a delete.
async fn write_the_log(site: &Site, room: &str) -> (Vec<Client>, u64, u64) {
    let (mut alice, _) = site.member(0, "alice", room).await;
    let (mut bob, _) = site.member(1, "bob", room).await;
    let (mut carol, _) = site.member(0, "carol", room).await;
    let (mut watch, _) = site.member(1, "watcher", room).await;
    acked(
        &alice
            .say(room, "m-1", "Brötchen 2,40 € 🥐, wer will?")
            .await,
    );
    let s1 = seq(&entry(&mut watch, room, "m-1").await);
    acked(
        &bob.say(room, "m-2", "Привет! 会議は15時から、部屋 214")
            .await,
    );
    let s2 = seq(&entry(&mut watch, room, "m-2").await);
    let reply = json!({"type":"send","room":room,"id":"m-3","reply_to":s1,
        "body":"Ich nehme zwei für 4,80 € 👍"});
    acked(&ask(&mut bob, reply).await);
    let fixed = "Brötchen 2,60 € 🥐 (neuer Preis) @bob";
    acked(&ask(&mut alice, edit(room, "e-1", s1, fixed)).await);
    acked(&ask(&mut bob, react(room, "r-1", s1, "👍", false)).await);
    acked(&ask(&mut carol, react(room, "r-2", s1, "👍", false)).await);
    acked(&ask(&mut carol, react(room, "r-3", s1, "🎉", false)).await);
    acked(&ask(&mut carol, react(room, "r-4", s1, "🎉", true)).await);
    acked(&ask(&mut bob, delete(room, "d-1", s2)).await);
    (vec![alice, bob, carol], s1, s2)
}

async fn everyone_sees_the_log(site: &Site) {
    let room = fresh_room("log");
    let (members, s1, s2) = write_the_log(site, &room).await;
    let mut live_state = None;
    for mut c in members {
        let log = log_until(&mut c, &room, "d-1").await;
        let ids: Vec<&str> = log.iter().map(|v| v["id"].as_str().unwrap()).collect();
        assert_eq!(ids, LOG, "every member gets every entry once, in order");
        let seqs: Vec<u64> = log.iter().map(seq).collect();
        assert_eq!(seqs, (s1..s1 + 9).collect::<Vec<_>>(), "gapless");
        check_live_entries(&log, s1, s2);
        live_state = Some(state_of(&log));
    }
    // A member joining with `since` from before the original message rebuilds the room.
    let mut dave = site.client(1, "dave").await;
    let joined = dave.join_since(&room, s1 - 1).await;
    assert_eq!(joined["head"], s1 + 8);
    let replay = log_until(&mut dave, &room, "d-1").await;
    assert_eq!(replay.len(), 9, "the replay holds every kind of entry");
    let replayed = state_of(&replay);
    let history = history(&mut dave, &room).await;
    assert_eq!(history.len(), 9, "history pages hold the whole log");
    let stored = state_of(&history);
    let http = state_of(&http_messages(site.addr(0), &room, s1 - 1).await);
    assert_eq!(replayed, stored, "replay and history agree");
    assert_eq!(http, stored, "HTTP and history agree");
    assert_eq!(
        live_state.unwrap(),
        stored,
        "live events end where the store is"
    );
    check_latest_state(&history, s1, s2);
}

/// The live frames carry each event's fields as docs/protocol.md lists them.
fn check_live_entries(log: &[Value], s1: u64, s2: u64) {
    let by_id: BTreeMap<&str, &Value> =
        log.iter().map(|v| (v["id"].as_str().unwrap(), v)).collect();
    assert!(
        by_id["m-1"].get("kind").is_none(),
        "a plain message has no kind"
    );
    assert_eq!(by_id["m-3"]["reply_to"], s1);
    let e = by_id["e-1"];
    assert_eq!(
        (e["kind"].as_str(), e["target"].as_u64()),
        (Some("edit"), Some(s1))
    );
    assert_eq!(e["body"], "Brötchen 2,60 € 🥐 (neuer Preis) @bob");
    assert_eq!(
        e["enriched"]["mentions"],
        json!(["bob"]),
        "an edit is enriched again"
    );
    assert_eq!(e["enriched"]["flagged"], false, "prices are not abuse");
    let r = by_id["r-4"];
    assert_eq!(r["kind"], "reaction");
    assert_eq!(
        (r["emoji"].as_str(), r["remove"].as_bool()),
        (Some("🎉"), Some(true))
    );
    assert_eq!(by_id["r-1"]["remove"], false);
    let d = by_id["d-1"];
    assert_eq!(
        (d["kind"].as_str(), d["target"].as_u64()),
        (Some("delete"), Some(s2))
    );
    assert_eq!(
        (d["from"].as_str(), d["body"].as_str()),
        (Some("bob"), Some(""))
    );
    assert!(d.get("moderated").is_none(), "the author's own delete");
}

/// `history` shows the messages in their latest state.
fn check_latest_state(history: &[Value], s1: u64, s2: u64) {
    let at = |s: u64| history.iter().find(|v| v["seq"] == s).unwrap();
    let m1 = at(s1);
    assert_eq!(m1["body"], "Brötchen 2,60 € 🥐 (neuer Preis) @bob");
    assert!(
        m1["edited_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{m1}"
    );
    assert_eq!(
        m1["reactions"],
        json!({"👍":["bob","carol"]}),
        "🎉 was taken back"
    );
    assert!(m1.get("deleted").is_none());
    let m2 = at(s2);
    assert_eq!(
        (m2["deleted"].as_bool(), m2["body"].as_str()),
        (Some(true), Some(""))
    );
    assert!(m2.get("reactions").is_none());
    assert_eq!(at(s1 + 2)["reply_to"], s1);
}

/// The messages a client ends with after applying `frames` in order.
fn state_of(frames: &[Value]) -> BTreeMap<u64, StoredMessage> {
    let mut room = RoomState::default();
    for f in frames {
        let m: StoredMessage = serde_json::from_value(f.clone())
            .unwrap_or_else(|e| panic!("{f} is not a message frame: {e}"));
        room.apply(&m);
    }
    room.messages().clone()
}

async fn refusals(site: &Site) {
    let room = fresh_room("refuse");
    let (mut alice, _) = site.member(0, "alice", &room).await;
    let (mut bob, _) = site.member(1, "bob", &room).await;
    acked(
        &alice
            .say(&room, "m-1", "Meeting moved to 15:30, room 4.12")
            .await,
    );
    let s1 = seq(&entry(&mut bob, &room, "m-1").await);
    let mut hijack = edit(&room, "e-bob", s1, "Meeting cancelled");
    hijack["ref"] = json!("x1");
    let e = ask(&mut bob, hijack).await;
    refused(&e, "forbidden");
    assert_eq!(
        (e["ref"].as_str(), e["id"].as_str()),
        (Some("x1"), Some("e-bob"))
    );
    refused(
        &ask(&mut bob, delete(&room, "d-bob", s1)).await,
        "forbidden",
    );
    refused(
        &ask(&mut alice, edit(&room, "e-9", s1 + 99, "x")).await,
        "bad_request",
    );
    let mut carol = site.client(0, "carol").await;
    refused(
        &ask(&mut carol, react(&room, "r-c", s1, "👀", false)).await,
        "not_joined",
    );
    refused(
        &ask(&mut alice, react(&room, "r-sp", s1, "a b", false)).await,
        "bad_request",
    );
    acked(&ask(&mut bob, react(&room, "r-1", s1, "👍🏽", false)).await);
    let sr = seq(&entry(&mut alice, &room, "r-1").await);
    refused(
        &ask(&mut alice, edit(&room, "e-r", sr, "x")).await,
        "bad_request",
    );
    refused(
        &ask(&mut bob, react(&room, "r-r", sr, "🙃", false)).await,
        "bad_request",
    );
    for to in [0, s1 + 99] {
        let send =
            json!({"type":"send","room":room,"id":format!("m-to-{to}"),"body":"re","reply_to":to});
        refused(&ask(&mut alice, send).await, "bad_request");
    }
    after_the_delete(site, &room, s1, alice, bob).await;
}

/// Once message `s1` is deleted, nothing more may change it.
async fn after_the_delete(site: &Site, room: &str, s1: u64, mut alice: Client, mut bob: Client) {
    let room = room.to_owned();
    acked(&ask(&mut alice, delete(&room, "d-1", s1)).await);
    entry(&mut bob, &room, "d-1").await;
    refused(
        &ask(&mut alice, edit(&room, "e-late", s1, "oops")).await,
        "bad_request",
    );
    refused(
        &ask(&mut bob, react(&room, "r-late", s1, "😢", false)).await,
        "bad_request",
    );
    refused(
        &ask(&mut bob, delete(&room, "d-bob2", s1)).await,
        "bad_request",
    );
    let stored = site.store().await;
    let room_id = shared::RoomId::parse(&room).unwrap();
    assert_eq!(
        stored.head(&room_id).await.unwrap(),
        s1 + 2,
        "nothing refused is stored"
    );
}

async fn repeated_ids(site: &Site) {
    let room = fresh_room("repeat");
    let (mut alice, _) = site.member(0, "alice", &room).await;
    let (mut bob, _) = site.member(1, "bob", &room).await;
    acked(
        &alice
            .say(&room, "m-1", "Total: ₹1,250.00 (incl. GST) 🧾")
            .await,
    );
    let s1 = seq(&entry(&mut bob, &room, "m-1").await);
    let fixed = "Total: ₹1,180.00 (incl. GST) 🧾";
    for _ in 0..2 {
        acked(&ask(&mut alice, edit(&room, "e-1", s1, fixed)).await);
        acked(&ask(&mut bob, react(&room, "r-1", s1, "❤️", false)).await);
        acked(
            &alice
                .say(&room, "m-1", "Total: ₹1,250.00 (incl. GST) 🧾")
                .await,
        );
    }
    acked(&ask(&mut alice, delete(&room, "d-1", s1)).await);
    // The retry after the delete was stored: its target is deleted now, and it is
    // still acked (the store keeps the first).
    entry(&mut bob, &room, "d-1").await;
    acked(&ask(&mut alice, delete(&room, "d-1", s1)).await);
    // So is a retry of the edit and of the reaction, whose target is deleted now; a new
    // change of the deleted message is refused.
    acked(&ask(&mut alice, edit(&room, "e-1", s1, fixed)).await);
    acked(&ask(&mut bob, react(&room, "r-1", s1, "❤️", false)).await);
    refused(
        &ask(&mut alice, delete(&room, "d-2", s1)).await,
        "bad_request",
    );
    acked(&alice.say(&room, "m-end", "done ✅").await);
    let log = log_until(&mut bob, &room, "m-end").await;
    let ids: Vec<&str> = log.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["e-1", "r-1", "m-end"],
        "after m-1 and d-1, each id once"
    );
    let stored: Vec<String> = history(&mut bob, &room)
        .await
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stored,
        ["m-1", "e-1", "r-1", "d-1", "m-end"],
        "stored once each"
    );
}

/// A rate-limit refusal of an edit, a delete or a reaction echoes its `id`, as for `send`.
#[tokio::test]
async fn rate_limited_log_events_echo_their_id() {
    let g = TestGateway::start_with(|c| {
        c.limits.rate_burst = 2;
        c.limits.rate_per_sec = 0.01;
    })
    .await;
    let mut a = g.client("alice").await;
    a.join("lobby").await;
    acked(&a.say("lobby", "m-1", "hi").await);
    for (cmd, id) in [
        (edit("lobby", "e-1", 1, "hey"), "e-1"),
        (delete("lobby", "d-1", 1), "d-1"),
        (react("lobby", "r-1", 1, "👋", false), "r-1"),
    ] {
        let e = ask(&mut a, cmd).await;
        refused(&e, "rate_limited");
        assert_eq!(e["id"], id);
    }
}
