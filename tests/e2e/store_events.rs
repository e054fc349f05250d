//! Edits, deletes, reactions and read cursors in the store, on SQLite and PostgreSQL:
//! the rules the batch transaction enforces, and the property that any client applying
//! the log by `shared::event::RoomState` ends with the store's latest state.

use crate::helpers::{TempPostgres, temp_db};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use shared::event::{EventKind, RoomState};
use shared::{ClientMsgId, RoomId, StoredMessage, Timestamp, UserId};
use store::{EventFields, NewMessage, Refusal, Store, Stored};

fn entry(room: &str, from: &str, id: &str, body: &str, event: EventFields) -> NewMessage {
    NewMessage {
        room: RoomId::parse(room).unwrap(),
        id: ClientMsgId::parse(id).unwrap(),
        from: UserId::parse(from).unwrap(),
        body: body.to_owned(),
        sent_at: Timestamp::now(),
        enriched: Default::default(),
        trace: None,
        event,
    }
}

fn kind(kind: EventKind, target: u64) -> EventFields {
    EventFields {
        kind,
        target: Some(target),
        ..Default::default()
    }
}

fn react(target: u64, emoji: &str, remove: bool) -> EventFields {
    EventFields {
        emoji: Some(emoji.into()),
        remove,
        ..kind(EventKind::Reaction, target)
    }
}

fn seqs(outcomes: &[Stored]) -> Vec<Option<u64>> {
    outcomes
        .iter()
        .map(|o| o.message().map(|m| m.seq))
        .collect()
}

async fn all(store: &Store, room: &str) -> Vec<StoredMessage> {
    let room = RoomId::parse(room).unwrap();
    store.after(&room, 0, 1000).await.unwrap()
}

pub async fn events_change_their_targets(url: &str) {
    let store = Store::connect(url, Default::default()).await.unwrap();
    let r = "events";
    let first = store
        .store_batch(&[
            entry(
                r,
                "alice",
                "m1",
                "Prix : 4,50 € 🎉 https://example.org/a?b=c",
                Default::default(),
            ),
            entry(
                r,
                "bob",
                "m2",
                "привет мир",
                EventFields {
                    reply_to: Some(1),
                    ..Default::default()
                },
            ),
            // A reaction to a message earlier in the same batch.
            entry(r, "bob", "r1", "", react(1, "👍", false)),
        ])
        .await
        .unwrap();
    assert_eq!(seqs(&first), [Some(1), Some(2), Some(3)]);
    let second = store
        .store_batch(&[
            entry(r, "alice", "e1", "Prix : 5,00 €", kind(EventKind::Edit, 1)),
            entry(r, "bob", "e2", "hijack", kind(EventKind::Edit, 1)),
            entry(r, "zoe", "r2", "", react(1, "👍", false)),
            entry(r, "bob", "r3", "", react(1, "👍", true)),
            entry(r, "bob", "r4", "", react(1, "🇫🇷", false)),
            entry(r, "bob", "d1", "", kind(EventKind::Delete, 1)),
            entry(r, "alice", "e3", "again", kind(EventKind::Edit, 99)),
            entry(r, "alice", "e4", "not a message", kind(EventKind::Edit, 3)),
            // The same id again in one batch: the first's outcome.
            entry(r, "zoe", "r2", "", react(1, "👍", false)),
        ])
        .await
        .unwrap();
    assert_eq!(
        seqs(&second),
        [
            Some(4),
            None,
            Some(5),
            Some(6),
            Some(7),
            None,
            None,
            None,
            Some(5)
        ]
    );
    assert_eq!(second[1], Stored::Refused(Refusal::NotAuthor(1)));
    assert_eq!(second[5], Stored::Refused(Refusal::NotAuthor(1)));
    assert_eq!(second[6], Stored::Refused(Refusal::Missing(99)));
    assert_eq!(second[7], Stored::Refused(Refusal::NotAMessage(3)));
    let log = all(&store, r).await;
    let m1 = &log[0];
    assert_eq!(m1.body, "Prix : 5,00 €");
    assert!(m1.edited_at.is_some());
    let names = |e: &str| -> Vec<String> {
        m1.reactions[e]
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect()
    };
    assert_eq!(names("👍"), ["zoe"]);
    assert_eq!(names("🇫🇷"), ["bob"]);
    assert_eq!(log[1].reply_to, Some(1), "a reply keeps what it answers");
    assert_eq!(log[3].kind, EventKind::Edit);
    assert_eq!(log[3].body, "Prix : 5,00 €");
    // A repeat of a stored event is a duplicate, however later.
    let again = store
        .store_batch(&[entry(
            r,
            "alice",
            "e1",
            "Prix : 5,00 €",
            kind(EventKind::Edit, 1),
        )])
        .await
        .unwrap();
    assert!(matches!(&again[0], Stored::Duplicate(m) if m.seq == 4));
    // The author deletes: body, enrichment, reactions and the edits' bodies are cleared,
    // and nothing more may change it.
    let del = store
        .store_batch(&[
            entry(r, "alice", "d2", "", kind(EventKind::Delete, 1)),
            entry(r, "alice", "e5", "too late", kind(EventKind::Edit, 1)),
            entry(r, "bob", "r5", "", react(1, "👍", false)),
        ])
        .await
        .unwrap();
    assert_eq!(seqs(&del), [Some(8), None, None]);
    assert_eq!(del[1], Stored::Refused(Refusal::Deleted(1)));
    let log = all(&store, r).await;
    assert!(log[0].deleted && log[0].body.is_empty() && log[0].reactions.is_empty());
    assert_eq!(log[3].body, "", "the edit's text is gone too");
    let room = RoomId::parse(r).unwrap();
    assert_eq!(store.message(&room, 1).await.unwrap().unwrap(), log[0]);
    assert_eq!(store.message(&room, 42).await.unwrap(), None);
    assert_eq!(store.head(&room).await.unwrap(), 8, "refusals take no seq");
    // The operator may delete anyone's message.
    let moderated = EventFields {
        moderated: true,
        ..kind(EventKind::Delete, 2)
    };
    let op = store
        .store_batch(&[entry(r, "bob", "op-1", "", moderated)])
        .await
        .unwrap();
    assert_eq!(seqs(&op), [Some(9)]);
    assert!(all(&store, r).await[1].deleted);
    // One batch whose events name messages of two rooms, with reactions already there.
    let (a, b) = ("events-a", "events-b");
    let first = [
        entry(a, "alice", "a1", "hej 👋", Default::default()),
        entry(b, "bob", "b1", "שלום", Default::default()),
        entry(a, "bob", "ra", "", react(1, "👍", false)),
        entry(b, "alice", "rb", "", react(1, "👀", false)),
    ];
    store.store_batch(&first).await.unwrap();
    let both = store
        .store_batch(&[
            entry(b, "zoe", "rb2", "", react(1, "👀", false)),
            entry(a, "zoe", "ra2", "", react(1, "👍", false)),
        ])
        .await
        .unwrap();
    assert_eq!(seqs(&both), [Some(3), Some(3)]);
    for (room, emoji) in [(a, "👍"), (b, "👀")] {
        let users: Vec<String> = all(&store, room).await[0].reactions[emoji]
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        assert_eq!(users.len(), 2, "{room}: {users:?}");
        assert_eq!(users[1], "zoe", "{room}: each room's earlier reaction kept");
    }
}

pub async fn read_cursors_only_move_forward(url: &str) {
    let store = Store::connect(url, Default::default()).await.unwrap();
    let r = "reads";
    let room = RoomId::parse(r).unwrap();
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    let batch: Vec<NewMessage> = (1..=6)
        .map(|i| {
            let from = if i % 3 == 0 { "alice" } else { "bob" };
            entry(
                r,
                from,
                &format!("m{i}"),
                &format!("n° {i} ☎ +44 20 7946 0958"),
                Default::default(),
            )
        })
        .collect();
    store.store_batch(&batch).await.unwrap();
    // bob's 1, 2, 4, 5 are unread to alice; her own 3 and 6 are not.
    assert_eq!(store.read_cursor(&room, &alice).await.unwrap(), 0);
    assert_eq!(store.unread(&room, &alice, 0).await.unwrap(), 4);
    assert_eq!(store.mark_read(&room, &alice, 2).await.unwrap(), 2);
    assert_eq!(
        store.mark_read(&room, &alice, 1).await.unwrap(),
        2,
        "never back"
    );
    assert_eq!(store.unread(&room, &alice, 2).await.unwrap(), 2);
    assert_eq!(
        store.mark_read(&room, &alice, 1000).await.unwrap(),
        6,
        "at most the head"
    );
    store
        .store_batch(&[
            entry(r, "bob", "d", "", kind(EventKind::Delete, 4)),
            entry(r, "bob", "m7", "new", Default::default()),
            entry(r, "bob", "x", "", react(7, "👀", false)),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.unread(&room, &alice, 6).await.unwrap(),
        1,
        "events are not unread"
    );
    assert_eq!(
        store.unread(&room, &bob, 0).await.unwrap(),
        2,
        "alice's 3 and 6"
    );
    store.mark_read(&room, &bob, 5).await.unwrap();
    let reads = store.reads(&room, 100).await.unwrap();
    assert_eq!(reads, [(alice.clone(), 6), (bob.clone(), 5)]);
    assert_eq!(store.reads(&room, 1).await.unwrap(), [(alice, 6)]);
}

/// One step a client might take.
#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    Edit(usize, u64),
    Delete(usize, u64, bool),
    React(usize, u64, usize, bool),
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const EMOJI: [&str; 3] = ["👍", "❤️", "🇯🇵"];

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS.len();
    let target = 1..12u64;
    prop_oneof![
        3 => user.clone().prop_map(Op::Send),
        2 => (user.clone(), target.clone()).prop_map(|(u, t)| Op::Edit(u, t)),
        1 => (user.clone(), target.clone(), any::<bool>()).prop_map(|(u, t, m)| Op::Delete(u, t, m)),
        4 => (user, target, 0..3usize, any::<bool>()).prop_map(|(u, t, e, r)| Op::React(u, t, e, r)),
    ]
}

fn to_entry(room: &str, n: usize, op: &Op) -> NewMessage {
    let (user, body, event) = match *op {
        Op::Send(u) => (u, format!("msg {n} — ☕ 3,20 €"), EventFields::default()),
        Op::Edit(u, t) => (u, format!("edit {n} 編集"), kind(EventKind::Edit, t)),
        Op::Delete(u, t, moderated) => (
            u,
            String::new(),
            EventFields {
                moderated,
                ..kind(EventKind::Delete, t)
            },
        ),
        Op::React(u, t, e, remove) => (u, String::new(), react(t, EMOJI[e], remove)),
    };
    entry(room, USERS[user], &format!("op-{n}"), &body, event)
}

/// The store's latest state of every message of `room`.
async fn latest(store: &Store, room: &str) -> RoomState {
    let mut state = RoomState::default();
    for m in all(store, room)
        .await
        .iter()
        .filter(|m| m.kind.is_message())
    {
        state.apply(m);
    }
    state
}

async fn one_case(
    store: &Store,
    room: &str,
    ops: &[Op],
    splits: &[usize],
    since: u64,
) -> Result<(), TestCaseError> {
    let entries: Vec<NewMessage> = ops
        .iter()
        .enumerate()
        .map(|(n, o)| to_entry(room, n, o))
        .collect();
    // Live: a client that applies what each batch fanned out, as it was.
    let mut live = RoomState::default();
    let mut rest = &entries[..];
    for &cut in splits.iter().chain(std::iter::once(&usize::MAX)) {
        let (now, later) = rest.split_at(cut.min(rest.len()));
        for o in store.store_batch(now).await.unwrap() {
            if let Stored::New(m) = o {
                live.apply(&m);
            }
        }
        rest = later;
    }
    let want = latest(store, room).await;
    prop_assert_eq!(&live, &want, "live events vs the store");
    // Replay: the latest state up to `since` (an older history page), then everything
    // after it as a `join` with `since` replays it.
    let log = all(store, room).await;
    let mut replayed = RoomState::default();
    for m in log.iter().filter(|m| m.seq <= since && m.kind.is_message()) {
        replayed.apply(m);
    }
    for m in log.iter().filter(|m| m.seq > since) {
        replayed.apply(m);
    }
    prop_assert_eq!(&replayed, &want, "replay from {} vs the store", since);
    Ok(())
}

pub fn any_sequence_of_events_replays_to_the_store_state(url: &str, cases: u32) {
    let handle = tokio::runtime::Handle::current();
    let store =
        tokio::task::block_in_place(|| handle.block_on(Store::connect(url, Default::default())))
            .unwrap();
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let case = AtomicCase::default();
    let strategy = (
        prop::collection::vec(op(), 1..40),
        prop::collection::vec(1..6usize, 0..6),
        0..12u64,
    );
    runner
        .run(&strategy, |(ops, splits, since)| {
            let room = format!("prop-{}", case.next());
            tokio::task::block_in_place(|| {
                handle.block_on(one_case(&store, &room, &ops, &splits, since))
            })
        })
        .unwrap();
}

/// A fresh room name per case (proptest runs the closure many times, shrinking too).
#[derive(Default)]
struct AtomicCase(std::sync::atomic::AtomicU64);

impl AtomicCase {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::test]
async fn sqlite_events_change_their_targets() {
    let (_dir, url) = temp_db();
    events_change_their_targets(&url).await;
}

#[tokio::test]
async fn sqlite_read_cursors_only_move_forward() {
    let (_dir, url) = temp_db();
    read_cursors_only_move_forward(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_any_sequence_of_events_replays_to_the_store_state() {
    let (_dir, url) = temp_db();
    any_sequence_of_events_replays_to_the_store_state(&url, 128);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_events_change_their_targets() {
    let db = TempPostgres::create().await;
    events_change_their_targets(&db.url).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_read_cursors_only_move_forward() {
    let db = TempPostgres::create().await;
    read_cursors_only_move_forward(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_any_sequence_of_events_replays_to_the_store_state() {
    let db = TempPostgres::create().await;
    any_sequence_of_events_replays_to_the_store_state(&db.url, 48);
}
