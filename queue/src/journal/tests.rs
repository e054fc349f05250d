//! The journal's own failure handling: what a refused commit tells its senders and
//! readiness, and that the committer recovers on a fresh connection.

use super::*;
use std::time::Duration;

/// Commits of message rows (and probes) fail while the table `broken` holds a row: a
/// stand-in for a full disk that a test can switch off.
fn break_writes(path: &Path) -> Connection {
    let conn = OpenOptions::new(path).open().unwrap();
    conn.execute_batch(
        "CREATE TABLE broken (x INTEGER);
         INSERT INTO broken VALUES (1);
         CREATE TRIGGER fail_messages BEFORE INSERT ON queue_messages
           WHEN EXISTS (SELECT 1 FROM broken) BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;
         CREATE TRIGGER fail_probes BEFORE INSERT ON queue_health
           WHEN EXISTS (SELECT 1 FROM broken) BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    )
    .unwrap();
    conn
}

fn room() -> RoomId {
    RoomId::parse("r").unwrap()
}

#[tokio::test]
async fn a_refused_commit_fails_its_senders_and_readiness_until_a_probe_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let journal = Journal::open(&path, false).await.unwrap();
    assert!(journal.is_owner());
    journal.append(Row::new(1, &room(), b"kept")).await.unwrap();
    journal.ping().await.unwrap();

    let breaker = break_writes(&path);
    let err = journal
        .append(Row::new(2, &room(), b"refused"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, QueueError::Unavailable(_)), "{err}");
    assert!(text.contains("writing queued messages in"), "{text}");
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(text.contains("disk on fire"), "{text}");
    let err = journal.ping().await.unwrap_err();
    assert!(
        err.to_string().contains("updating the queue"),
        "a probe write: {err}"
    );

    breaker.execute_batch("DELETE FROM broken").unwrap();
    journal.ping().await.unwrap();
    assert!(
        lock(&journal.failure).is_none(),
        "cleared by the probe's commit"
    );
    journal
        .append(Row::new(2, &room(), b"accepted"))
        .await
        .unwrap();
    let ids: Vec<u64> = journal.load().await.unwrap().iter().map(|q| q.id).collect();
    assert_eq!(ids, [1, 2], "the refused group left nothing behind");
}

#[tokio::test]
async fn a_refused_op_fails_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let journal = Journal::open(&path, true).await.unwrap();
    journal.append(Row::new(1, &room(), b"one")).await.unwrap();
    // Holding the write lock stalls the committer at the BEGIN of the probe's group, so
    // what is sent meanwhile (the remove and both appends) makes up the next group.
    let mut blocker = OpenOptions::new(&path).open().unwrap();
    let tx = blocker
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON queue_messages
           WHEN CAST(NEW.payload AS TEXT) = 'refused'
           BEGIN SELECT RAISE(ABORT, 'refused'); END;",
    )
    .unwrap();
    let r = room();
    let stalled = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        journal.remove([1]);
        tokio::join!(
            journal.append(Row::new(2, &r, b"fine")),
            journal.append(Row::new(3, &r, b"refused")),
        )
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.commit().unwrap();
    };
    let (probed, (fine, refused), ()) = tokio::join!(journal.ask(Op::Probe), stalled, release);
    probed.unwrap();
    assert!(refused.is_err() && fine.is_err(), "{fine:?} {refused:?}");
    let ids: Vec<u64> = journal.load().await.unwrap().iter().map(|q| q.id).collect();
    assert_eq!(ids, [1], "nothing of the refused group was committed");
    journal.append(Row::new(4, &room(), b"four")).await.unwrap();
}

#[tokio::test]
async fn opening_what_is_not_a_database_names_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let Err(err) = Journal::open(dir.path(), false).await else {
        panic!("a directory is not a queue file");
    };
    let QueueError::Connect { url, reason } = &err else {
        panic!("{err}");
    };
    assert_eq!(url, &format!("sqlite://{}", dir.path().display()));
    assert!(reason.contains("unable to open"), "{reason}");
}

#[tokio::test]
async fn a_second_process_reads_but_does_not_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let owner = Journal::open(&path, false).await.unwrap();
    owner.append(Row::new(1, &room(), b"m")).await.unwrap();
    owner
        .bury(Row::new(1, &room(), b"m"), 3, "poison")
        .await
        .unwrap();
    let other = Journal::open(&path, false).await.unwrap();
    assert!(!other.is_owner());
    let err = other.append(Row::new(2, &room(), b"x")).await.unwrap_err();
    assert!(
        err.to_string().contains("owned by another process"),
        "{err}"
    );
    let dead = other
        .dead_to_replay(Some(&DeadLetterFilter::All))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    other.request_replay(&[dead[0].0]).await.unwrap();
    let asked = owner.dead_to_replay(None).await.unwrap();
    assert_eq!(asked.len(), 1, "the owner sees the request");
    owner
        .unbury(vec![(asked[0].0, Row::new(7, &room(), &asked[0].2))])
        .await
        .unwrap();
    assert!(other.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(other.purge().await.unwrap(), 0);
    let ids: Vec<u64> = owner.load().await.unwrap().iter().map(|q| q.id).collect();
    assert_eq!(ids, [7]);
}

#[tokio::test]
async fn settled_rows_go_with_no_group_to_ride_along_with() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("queue.db"), false)
        .await
        .unwrap();
    journal
        .append(Row::new(1, &room(), b"acked"))
        .await
        .unwrap();
    journal
        .append(Row::new(2, &room(), b"pending"))
        .await
        .unwrap();
    journal.remove([1]);
    // Nothing else is published: the committer deletes on its own within SETTLED_FLUSH.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ids: Vec<u64> = journal.load().await.unwrap().iter().map(|q| q.id).collect();
    assert_eq!(ids, [2], "the acked row is gone, the pending one stays");
}
