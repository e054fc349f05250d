//! The queue file's committer: a thread of its own that owns the write connection and
//! puts whatever was asked while the previous transaction was committing into the next
//! one (group commit).
//!
//! A group costs one hop: the first op wakes this thread, which runs every statement of
//! the group itself and answers each sender once. (sqlx's SQLite driver crossed to its
//! worker thread and back for every statement, about eight thread switches a group.)

use super::{BURY, DELETE, GROUP_MAX, HEADROOM, INSERT, PROBE, RETRY, Row, UNBURY, lock};
use crate::QueueError;
use shared::sqlite::OpenOptions;
use shared::sqlite::rusqlite::{self, Connection, Params, TransactionBehavior, params};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::error;

/// What the committer does, in the order asked.
pub(super) enum Op {
    Append {
        row: Row,
        done: oneshot::Sender<Result<(), QueueError>>,
    },
    /// Acked: no one waits, a row left behind by a crash is only delivered again. These
    /// are not sent: the committer takes them from the settled list.
    Remove(u64),
    Retry {
        id: u64,
        attempts: u32,
        available_at: i64,
        done: oneshot::Sender<Result<(), QueueError>>,
    },
    Bury {
        row: Row,
        attempts: u32,
        reason: String,
        done: oneshot::Sender<Result<(), QueueError>>,
    },
    /// A write of no message (and 64 KiB of headroom), to learn whether commits work again.
    Probe(oneshot::Sender<Result<(), QueueError>>),
    /// Moves dead letters back as fresh messages with the given ids.
    Unbury {
        rows: Vec<(i64, Row)>,
        done: oneshot::Sender<Result<(), QueueError>>,
    },
}

/// A statement that failed, and what it was doing (the start of the error's text).
struct Failed(&'static str, rusqlite::Error);

/// The committer thread's state.
struct Committer {
    options: OpenOptions,
    /// `None` after a failed commit, until the next group opens a fresh one.
    conn: Option<Connection>,
    /// Why the last commit failed, until one succeeds (read by readiness).
    failure: Arc<Mutex<Option<String>>>,
    /// Acked ids to delete with the next group (see `Journal::remove`).
    settled: Arc<Mutex<Vec<u64>>>,
}

/// How long acked rows may wait for a group to ride along with before they are deleted
/// on their own; also the committer's longest sleep.
const SETTLED_FLUSH: Duration = Duration::from_millis(200);

/// Starts the committer thread with its connection open, and returns where to send it
/// ops; it stops once every sender is dropped. The error says what failed.
pub(super) async fn start(
    options: OpenOptions,
    failure: Arc<Mutex<Option<String>>>,
    settled: Arc<Mutex<Vec<u64>>>,
) -> Result<mpsc::Sender<Op>, String> {
    let (opened, answer) = oneshot::channel();
    let (ops, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("queue-commit".into())
        .spawn(move || match options.open() {
            Ok(conn) => {
                let _ = opened.send(Ok(()));
                let conn = Some(conn);
                Committer {
                    options,
                    conn,
                    failure,
                    settled,
                }
                .run(&rx);
            }
            Err(e) => {
                let _ = opened.send(Err(e.to_string()));
            }
        })
        .map_err(|e| format!("cannot start the queue's committer thread: {e}"))?;
    match answer.await {
        Ok(Ok(())) => Ok(ops),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the queue's committer thread stopped while opening the file".into()),
    }
}

impl Committer {
    /// Commits what was asked, a group per transaction, until every sender is gone; then
    /// deletes what was settled last.
    fn run(mut self, rx: &mpsc::Receiver<Op>) {
        loop {
            let mut group = match rx.recv_timeout(SETTLED_FLUSH) {
                Ok(first) => vec![first],
                Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.commit_group(self.take_settled());
                    return;
                }
            };
            while group.len() < GROUP_MAX {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            group.extend(self.take_settled());
            self.commit_group(group);
        }
    }

    fn take_settled(&self) -> Vec<Op> {
        std::mem::take(&mut *lock(&self.settled))
            .into_iter()
            .map(Op::Remove)
            .collect()
    }

    fn commit_group(&mut self, group: Vec<Op>) {
        if group.is_empty() {
            return;
        }
        metrics::histogram!("courier_queue_commit_ops").record(group.len() as f64);
        let result = self.commit(&group);
        if let Err(e) = &result {
            error!(error = %e, ops = group.len(), "the queue file refused a commit; the senders get unavailable");
        }
        *lock(&self.failure) = result.clone().err();
        answer(group, &result);
    }

    /// One transaction for the whole group; the error names the file and what failed.
    fn commit(&mut self, group: &[Op]) -> Result<(), String> {
        let shown = self.options.path.display();
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self
                .options
                .open()
                .map_err(|e| format!("opening the queue file {shown}: {e}"))?,
        };
        // A panic must not take the thread (and with it every later commit) down: the
        // group fails like any other failed commit.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_group(&mut conn, group)
        }));
        match written {
            Ok(Ok(())) => {
                self.conn = Some(conn);
                Ok(())
            }
            // The connection's state is unknown after a failed commit (a full disk makes
            // SQLite roll back on its own): it is closed here (rolling back whatever is
            // left open) and the next group opens a fresh one.
            Ok(Err(Failed(what, e))) => Err(format!("{what} in {shown}: {e}")),
            Err(_) => Err(format!(
                "writing the queue file {shown}: the committer panicked"
            )),
        }
    }
}

/// Sends every waiting op the group's outcome.
fn answer(group: Vec<Op>, result: &Result<(), String>) {
    for op in group {
        let done = match op {
            Op::Append { done, .. }
            | Op::Retry { done, .. }
            | Op::Bury { done, .. }
            | Op::Unbury { done, .. }
            | Op::Probe(done) => done,
            Op::Remove(_) => continue,
        };
        let _ = done.send(result.clone().map_err(QueueError::Unavailable));
    }
}

fn write_group(conn: &mut Connection, group: &[Op]) -> Result<(), Failed> {
    // IMMEDIATE takes the write lock at once: while another connection writes (a purge
    // or a replay request from another process), this waits out the busy timeout at
    // BEGIN instead of failing mid-group when its read would have to become a write.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| Failed("starting a queue transaction", e))?;
    let now = shared::Timestamp::now().as_millis();
    for op in group {
        write_op(&tx, op, now)?;
    }
    tx.commit().map_err(|e| Failed("committing the queue", e))
}

/// The op's statements, one row each: with no round trip per statement, a cached
/// one-row statement costs about what a row of a multi-row one does.
fn write_op(conn: &Connection, op: &Op, now: i64) -> Result<(), Failed> {
    match op {
        Op::Append { row, .. } => insert(conn, row, "writing queued messages"),
        Op::Remove(id) => run(conn, DELETE, [*id as i64], "forgetting settled messages"),
        Op::Retry {
            id,
            attempts,
            available_at,
            ..
        } => run(
            conn,
            RETRY,
            params![*id as i64, i64::from(*attempts), available_at],
            "updating the queue",
        ),
        Op::Bury {
            row,
            attempts,
            reason,
            ..
        } => {
            let dead = params![
                row.room.as_str(),
                row.payload,
                i64::from(*attempts),
                reason,
                now
            ];
            run(conn, BURY, dead, "writing a dead letter")?;
            run(conn, DELETE, [row.id as i64], "updating the queue")
        }
        Op::Probe(_) => {
            run(conn, PROBE, [now], "updating the queue")?;
            run(conn, HEADROOM, [], "updating the queue")
        }
        Op::Unbury { rows, .. } => {
            for (dead, row) in rows {
                insert(conn, row, "writing a queued message")?;
                run(conn, UNBURY, [dead], "replaying a dead letter")?;
            }
            Ok(())
        }
    }
}

fn insert(conn: &Connection, row: &Row, what: &'static str) -> Result<(), Failed> {
    let values = params![row.id as i64, row.room.as_str(), row.payload];
    run(conn, INSERT, values, what)
}

fn run(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    what: &'static str,
) -> Result<(), Failed> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map(drop)
        .map_err(|e| Failed(what, e))
}
