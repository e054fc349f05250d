//! The queue file's committer: the one task that writes it, one transaction per group of
//! whatever was asked while the previous transaction was committing.

use super::{BURY, DELETE, GROUP_MAX, PROBE, RETRY, ROWS_PER_INSERT, UNBURY, lock};
use crate::ids::RoomId;
use crate::queue::QueueError;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{AssertSqlSafe, Connection, Sqlite, Transaction};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

/// What the committer does, in the order asked.
pub(super) enum Op {
    Append {
        id: u64,
        room: RoomId,
        payload: Vec<u8>,
        done: oneshot::Sender<Result<(), QueueError>>,
    },
    /// Acked: no one waits, a row left behind by a crash is only delivered again.
    Remove(u64),
    Retry {
        id: u64,
        attempts: u32,
        available_at: i64,
        done: oneshot::Sender<Result<(), QueueError>>,
    },
    Bury {
        id: u64,
        room: RoomId,
        payload: Vec<u8>,
        attempts: u32,
        reason: String,
        done: oneshot::Sender<Result<(), QueueError>>,
    },
    /// A write that carries nothing, to learn whether commits work again.
    Probe(oneshot::Sender<Result<(), QueueError>>),
    /// Moves dead letters back as fresh messages with the given ids.
    Unbury {
        rows: Vec<(i64, u64, RoomId, Vec<u8>)>,
        done: oneshot::Sender<Result<(), QueueError>>,
    },
}

/// Commits what was asked, a group per transaction, until every sender is gone.
pub(super) async fn commit_loop(
    pool: SqlitePool,
    mut rx: mpsc::UnboundedReceiver<Op>,
    failure: Arc<Mutex<Option<String>>>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        metrics::histogram!("courier_queue_commit_ops").record(group.len() as f64);
        let result = commit(&pool, &group).await;
        if let Err(e) = &result {
            error!(error = %e, ops = group.len(), "the queue file refused a commit; the senders get unavailable");
        }
        *lock(&failure) = result.clone().err();
        for op in group {
            let answer = result.clone().map_err(QueueError::Unavailable);
            match op {
                Op::Append { done, .. }
                | Op::Retry { done, .. }
                | Op::Bury { done, .. }
                | Op::Unbury { done, .. }
                | Op::Probe(done) => {
                    let _ = done.send(answer);
                }
                Op::Remove(_) => {}
            }
        }
    }
}

async fn commit(pool: &SqlitePool, group: &[Op]) -> Result<(), String> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| format!("opening the queue file: {e}"))?;
    let result = commit_on(&mut conn, group).await;
    if result.is_err() {
        // Its transaction state is unknown after a failed commit (a full disk makes
        // SQLite roll back on its own): never reuse it.
        conn.close_on_drop();
    }
    result
}

async fn commit_on(conn: &mut SqliteConnection, group: &[Op]) -> Result<(), String> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| format!("starting a queue transaction: {e}"))?;
    insert_appends(&mut tx, group).await?;
    remove_settled(&mut tx, group).await?;
    let now = crate::Timestamp::now().as_millis();
    for op in group {
        let done = match op {
            Op::Append { .. } | Op::Remove(_) => continue,
            Op::Probe(_) => sqlx::query(PROBE).bind(now).execute(&mut *tx).await,
            Op::Retry {
                id,
                attempts,
                available_at,
                ..
            } => {
                sqlx::query(RETRY)
                    .bind(*id as i64)
                    .bind(i64::from(*attempts))
                    .bind(*available_at)
                    .execute(&mut *tx)
                    .await
            }
            Op::Bury {
                id,
                room,
                payload,
                attempts,
                reason,
                ..
            } => {
                sqlx::query(BURY)
                    .bind(room.as_str())
                    .bind(payload.as_slice())
                    .bind(i64::from(*attempts))
                    .bind(reason.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| format!("writing a dead letter: {e}"))?;
                sqlx::query(DELETE).bind(*id as i64).execute(&mut *tx).await
            }
            Op::Unbury { rows, .. } => {
                for (dead, id, room, payload) in rows {
                    insert_one(&mut tx, *id, room, payload).await?;
                    sqlx::query(UNBURY)
                        .bind(*dead)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| format!("replaying a dead letter: {e}"))?;
                }
                continue;
            }
        };
        done.map_err(|e| format!("updating the queue: {e}"))?;
    }
    tx.commit()
        .await
        .map_err(|e| format!("committing the queue: {e}"))
}

/// The group's new messages, in multi-row statements.
async fn insert_appends(tx: &mut Transaction<'_, Sqlite>, group: &[Op]) -> Result<(), String> {
    let appends: Vec<(u64, &RoomId, &[u8])> = group
        .iter()
        .filter_map(|op| match op {
            Op::Append {
                id, room, payload, ..
            } => Some((*id, room, payload.as_slice())),
            _ => None,
        })
        .collect();
    for chunk in appends.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from("INSERT INTO queue_messages (id, room, payload) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?)");
        }
        // Cached: the one-row statement (light traffic) and the full one (heavy); the
        // sizes between are too many to cache.
        let cached = chunk.len() == 1 || chunk.len() == ROWS_PER_INSERT;
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(cached);
        for (id, room, payload) in chunk {
            q = q.bind(*id as i64).bind(room.as_str()).bind(*payload);
        }
        q.execute(&mut **tx)
            .await
            .map_err(|e| format!("writing queued messages: {e}"))?;
    }
    Ok(())
}

/// The group's acked rows, in multi-row statements (one statement per row was most of the
/// durable queue's cost under load).
async fn remove_settled(tx: &mut Transaction<'_, Sqlite>, group: &[Op]) -> Result<(), String> {
    let ids: Vec<i64> = group
        .iter()
        .filter_map(|op| match op {
            Op::Remove(id) => Some(*id as i64),
            _ => None,
        })
        .collect();
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        let marks = vec!["?"; chunk.len()].join(",");
        let sql = format!("DELETE FROM queue_messages WHERE id IN ({marks})");
        let cached = chunk.len() == 1 || chunk.len() == ROWS_PER_INSERT;
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(cached);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut **tx)
            .await
            .map_err(|e| format!("forgetting settled messages: {e}"))?;
    }
    Ok(())
}

async fn insert_one(
    tx: &mut Transaction<'_, Sqlite>,
    id: u64,
    room: &RoomId,
    payload: &[u8],
) -> Result<(), String> {
    sqlx::query("INSERT INTO queue_messages (id, room, payload) VALUES ($1, $2, $3)")
        .bind(id as i64)
        .bind(room.as_str())
        .bind(payload)
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| format!("writing a queued message: {e}"))
}
