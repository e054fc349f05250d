//! Store tests: gapless seq under concurrent writers, idempotent batches, reads, room
//! settings.
//! The same functions run against SQLite and PostgreSQL.

use crate::helpers::*;
use shared::{ClientMsgId, RoomId, Timestamp, UserId};
use std::collections::HashSet;
use store::{NewMessage, RoomSettings, Stored};

fn msg(room: &str, from: &str, id: &str) -> NewMessage {
    NewMessage {
        room: RoomId::parse(room).unwrap(),
        id: ClientMsgId::parse(id).unwrap(),
        from: UserId::parse(from).unwrap(),
        body: format!("body {id}"),
        sent_at: Timestamp::now(),
        enriched: Default::default(),
        trace: None,
        event: Default::default(),
    }
}

pub async fn concurrent_writers_leave_no_gap(url: &str) {
    let store = store::Store::connect(url, Default::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..25 {
                let batch: Vec<NewMessage> = (0..4)
                    .map(|k| {
                        msg(
                            if k % 2 == 0 { "even" } else { "odd" },
                            &format!("w{w}"),
                            &format!("b{b}-{k}"),
                        )
                    })
                    .collect();
                s.store_batch(&batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for room in ["even", "odd"] {
        let r = RoomId::parse(room).unwrap();
        assert_eq!(store.head(&r).await.unwrap(), 200);
        let mut seqs = Vec::new();
        let mut after = 0;
        loop {
            let page = store.after(&r, after, 200).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            seqs.extend(page.iter().map(|m| m.seq));
        }
        assert_eq!(
            seqs,
            (1..=200).collect::<Vec<_>>(),
            "{room}: gapless and unique"
        );
    }
}

pub async fn batches_are_idempotent(url: &str) {
    let store = store::Store::connect(url, Default::default())
        .await
        .unwrap();
    let first = store
        .store_batch(&[
            msg("idem", "a", "1"),
            msg("idem", "a", "2"),
            msg("idem", "a", "1"),
        ])
        .await
        .unwrap();
    assert!(matches!(first[0], Stored::New(ref m) if m.seq == 1));
    assert!(matches!(first[1], Stored::New(ref m) if m.seq == 2));
    assert!(
        matches!(first[2], Stored::Duplicate(ref m) if m.seq == 1),
        "{:?}",
        first[2]
    );
    let again = store
        .store_batch(&[msg("idem", "a", "2"), msg("idem", "b", "1")])
        .await
        .unwrap();
    assert!(matches!(again[0], Stored::Duplicate(ref m) if m.seq == 2 && m.body == "body 2"));
    assert!(
        matches!(again[1], Stored::New(ref m) if m.seq == 3),
        "another sender, same id"
    );
    let twice = store
        .store_batch(&[msg("idem", "a", "1"), msg("idem", "a", "1")])
        .await
        .unwrap();
    assert!(
        twice
            .iter()
            .all(|o| matches!(o, Stored::Duplicate(m) if m.seq == 1)),
        "a stored key repeated within a batch: {twice:?}"
    );
    let r = RoomId::parse("idem").unwrap();
    let before: Vec<u64> = store
        .before(&r, Some(3), 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(before, [1, 2]);
    let newest: Vec<u64> = store
        .before(&r, None, 2)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(newest, [2, 3]);
    assert_eq!(
        store.head(&RoomId::parse("empty").unwrap()).await.unwrap(),
        0
    );
    let ids: HashSet<String> = store
        .after(&r, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m.from, m.id))
        .collect();
    assert_eq!(ids.len(), 3);
}

/// A batch over several rooms numbers each room's messages in input order, after what
/// the room held, and the returned entries say so; a room's counter moves only by what
/// was stored (the one-statement path on PostgreSQL, and its fallback on a repeat).
pub async fn batch_seqs_follow_input_order(url: &str) {
    let store = store::Store::connect(url, Default::default())
        .await
        .unwrap();
    store.store_batch(&[msg("ord-b", "x", "0")]).await.unwrap();
    let batch = [
        msg("ord-a", "u", "1"),
        msg("ord-b", "u", "1"),
        msg("ord-a", "v", "1"),
        msg("ord-b", "v", "1"),
        msg("ord-a", "u", "2"),
    ];
    let seqs = |out: &[Stored]| -> Vec<(String, u64, String)> {
        out.iter()
            .map(|o| {
                let m = o.message().unwrap();
                (m.room.to_string(), m.seq, m.body.clone())
            })
            .collect()
    };
    let first = store.store_batch(&batch).await.unwrap();
    assert!(
        first.iter().all(|o| matches!(o, Stored::New(_))),
        "{first:?}"
    );
    let expect = [
        ("ord-a", 1, "body 1"),
        ("ord-b", 2, "body 1"),
        ("ord-a", 2, "body 1"),
        ("ord-b", 3, "body 1"),
        ("ord-a", 3, "body 2"),
    ]
    .map(|(r, s, b)| (r.to_owned(), s, b.to_owned()));
    assert_eq!(seqs(&first), expect);
    for (room, seq, _) in &expect {
        let r = RoomId::parse(room).unwrap();
        let stored = store.after(&r, seq - 1, 1).await.unwrap();
        assert_eq!(stored[0].seq, *seq, "{room}");
    }
    // The same batch with one new message: the repeats come back as they were, and the
    // new one follows the room's last seq with no gap.
    let mut again = batch.to_vec();
    again.push(msg("ord-b", "w", "1"));
    let out = store.store_batch(&again).await.unwrap();
    assert!(
        out[..5].iter().all(|o| matches!(o, Stored::Duplicate(_))),
        "{out:?}"
    );
    assert!(
        matches!(out[5], Stored::New(ref m) if m.seq == 4),
        "{:?}",
        out[5]
    );
    assert_eq!(
        store.head(&RoomId::parse("ord-a").unwrap()).await.unwrap(),
        3
    );
    assert_eq!(
        store.head(&RoomId::parse("ord-b").unwrap()).await.unwrap(),
        4
    );
}

pub async fn room_settings_are_kept(url: &str) {
    let store = store::Store::connect(url, Default::default())
        .await
        .unwrap();
    let user = |s: &str| UserId::parse(s).unwrap();
    let room = RoomId::parse("team-7:ops").unwrap();
    assert_eq!(
        store.room_settings(&room).await.unwrap(),
        RoomSettings::default(),
        "never configured: public, no members"
    );
    assert!(!store.is_member(&room, &user("alice")).await.unwrap());
    let put = store
        .put_room(
            &room,
            true,
            &[user("bob"), user("Zed"), user("alice"), user("bob")],
        )
        .await
        .unwrap();
    assert!(put.private);
    assert_eq!(
        put.members,
        [user("Zed"), user("alice"), user("bob")],
        "byte order"
    );
    assert_eq!(store.room_settings(&room).await.unwrap(), put);
    assert!(store.add_member(&room, &user("carol")).await.unwrap());
    assert!(
        !store.add_member(&room, &user("carol")).await.unwrap(),
        "already"
    );
    assert!(store.remove_member(&room, &user("Zed")).await.unwrap());
    assert!(
        !store.remove_member(&room, &user("Zed")).await.unwrap(),
        "gone"
    );
    assert!(store.is_member(&room, &user("carol")).await.unwrap());
    assert!(!store.is_member(&room, &user("Zed")).await.unwrap());
    let replaced = store.put_room(&room, false, &[user("dave")]).await.unwrap();
    assert_eq!(
        replaced,
        RoomSettings {
            private: false,
            members: vec![user("dave")]
        },
        "put replaces privacy and the whole list"
    );
    let other = RoomId::parse("other").unwrap();
    assert_eq!(
        store.room_settings(&other).await.unwrap(),
        RoomSettings::default()
    );
}

#[tokio::test]
async fn sqlite_concurrent_writers_leave_no_gap() {
    let (_dir, url) = temp_db();
    concurrent_writers_leave_no_gap(&url).await;
}

#[tokio::test]
async fn sqlite_batches_are_idempotent() {
    let (_dir, url) = temp_db();
    batches_are_idempotent(&url).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_concurrent_writers_leave_no_gap() {
    let db = TempPostgres::create().await;
    concurrent_writers_leave_no_gap(&db.url).await;
}

#[tokio::test]
async fn sqlite_batch_seqs_follow_input_order() {
    let (_dir, url) = temp_db();
    batch_seqs_follow_input_order(&url).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_batch_seqs_follow_input_order() {
    let db = TempPostgres::create().await;
    batch_seqs_follow_input_order(&db.url).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_batches_are_idempotent() {
    let db = TempPostgres::create().await;
    batches_are_idempotent(&db.url).await;
}

#[tokio::test]
async fn sqlite_room_settings_are_kept() {
    let (_dir, url) = temp_db();
    room_settings_are_kept(&url).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_room_settings_are_kept() {
    let db = TempPostgres::create().await;
    room_settings_are_kept(&db.url).await;
}

pub async fn rooms_of_lists_private_rooms_and_direct_rooms_with_messages(url: &str) {
    let store = store::Store::connect(url, Default::default())
        .await
        .unwrap();
    let user = |s: &str| UserId::parse(s).unwrap();
    let room = |s: &str| RoomId::parse(s).unwrap();
    let alice = user("alice");
    store
        .put_room(&room("zeta"), true, std::slice::from_ref(&alice))
        .await
        .unwrap();
    store
        .put_room(&room("Alpha"), true, std::slice::from_ref(&alice))
        .await
        .unwrap();
    // Public, though alice is listed: not a private room of hers.
    store
        .put_room(&room("open"), false, std::slice::from_ref(&alice))
        .await
        .unwrap();
    store
        .put_room(&room("other"), true, &[user("bob")])
        .await
        .unwrap();
    // No message yet: not listed.
    store
        .put_room(&room("dm:alice:zoe"), true, &[])
        .await
        .unwrap();
    let batch = [
        msg("dm:alice:bob", "alice", "1"),
        msg("dm:Carl:alice", "Carl", "2"),
        msg("dm:bob:carol", "bob", "3"),
        msg("dm:alice_x:bob", "bob", "4"),
        msg("dm:bob:xalice", "bob", "5"),
        msg("lobby", "alice", "6"),
    ];
    store.store_batch(&batch).await.unwrap();
    let names = |rooms: Vec<RoomId>| -> Vec<String> {
        rooms.iter().map(|r| r.as_str().to_owned()).collect()
    };
    assert_eq!(
        names(store.rooms_of(&alice, 200).await.unwrap()),
        ["Alpha", "dm:Carl:alice", "dm:alice:bob", "zeta"],
        "byte order"
    );
    assert_eq!(
        names(store.rooms_of(&alice, 2).await.unwrap()),
        ["Alpha", "dm:Carl:alice"],
        "the limit keeps the first by byte order"
    );
    assert!(
        store
            .rooms_of(&user("nobody"), 200)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_rooms_of_lists_private_rooms_and_direct_rooms_with_messages() {
    let (_dir, url) = temp_db();
    rooms_of_lists_private_rooms_and_direct_rooms_with_messages(&url).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_rooms_of_lists_private_rooms_and_direct_rooms_with_messages() {
    let db = TempPostgres::create().await;
    rooms_of_lists_private_rooms_and_direct_rooms_with_messages(&db.url).await;
}
