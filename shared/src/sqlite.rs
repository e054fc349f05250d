//! SQLite connections on threads of their own: a whole unit of work is one hop.
//!
//! sqlx's SQLite driver sends every statement to its connection's worker thread and waits
//! for the answer; under load those hops (two thread switches each, six or more per
//! transaction) were about a fifth of the gateway's CPU. Here the caller hands over a
//! closure that runs the whole transaction on the connection's thread, and awaits one
//! answer.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

pub use rusqlite;
use rusqlite::Connection;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The connection's thread has stopped: the process is shutting down, or a job panicked
/// in a way that took the thread with it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the SQLite connection thread `{0}` has stopped")]
pub struct Gone(pub String);

/// A connection could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot open the SQLite file {path}: {reason}")]
pub struct OpenError {
    pub path: String,
    pub reason: String,
}

/// How to open a connection, and what to run on every new one.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub path: PathBuf,
    /// `PRAGMA synchronous = FULL` (an fsync per commit) rather than `NORMAL`.
    pub sync_full: bool,
    /// How long a statement waits for another connection's write lock.
    pub busy_timeout: Duration,
    /// Read-only connections never take the write lock.
    pub read_only: bool,
    /// The WAL is copied back by [`Checkpoints`], not by the commit that crosses SQLite's
    /// threshold: the connection's own checkpoint waits until the WAL holds
    /// [`FALLBACK_CHECKPOINT_PAGES`], only a bound in case the background ones fall behind.
    pub background_checkpoints: bool,
}

/// The WAL size (pages) at which a connection with background checkpoints checkpoints on
/// its own after all (SQLite's default is 1,000).
pub const FALLBACK_CHECKPOINT_PAGES: u32 = 10_000;

impl OpenOptions {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            sync_full: false,
            busy_timeout: Duration::from_secs(5),
            read_only: false,
            background_checkpoints: false,
        }
    }

    /// Opens a connection in WAL mode (readers beside the one writer), creating the file.
    pub fn open(&self) -> rusqlite::Result<Connection> {
        use rusqlite::OpenFlags;
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        flags |= if self.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        };
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        if !self.read_only {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        let sync = if self.sync_full { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync)?;
        if self.background_checkpoints {
            conn.pragma_update(None, "wal_autocheckpoint", FALLBACK_CHECKPOINT_PAGES)?;
        }
        // Statements are prepared once per connection and kept; the store and the queue
        // use a dozen or so shapes.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

/// One SQLite connection owned by one thread. Cheap to clone; the thread ends and the
/// connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
    name: std::sync::Arc<str>,
}

impl Db {
    /// Opens the connection on a new thread called `name`; the error names the file.
    pub async fn open(name: &str, options: OpenOptions) -> Result<Self, OpenError> {
        let shown = options.path.display().to_string();
        let fail = |reason: String| OpenError {
            path: shown.clone(),
            reason,
        };
        let (opened, answer) = oneshot::channel();
        let (jobs, queue) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut conn = match options.open() {
                    Ok(c) => {
                        let _ = opened.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                serve(&mut conn, &queue);
            });
        if let Err(e) = spawned {
            return Err(fail(format!("cannot start its thread: {e}")));
        }
        match answer.await {
            Ok(Ok(())) => Ok(Self {
                jobs,
                name: name.into(),
            }),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(_) => Err(fail("its thread stopped while opening it".into())),
        }
    }

    /// Runs `work` on the connection's thread and returns what it returns.
    pub async fn call<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R, Gone> {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = done.send(work(conn));
        });
        self.jobs.send(job).map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())
    }

    fn gone(&self) -> Gone {
        Gone(self.name.to_string())
    }
}

/// Copies a file's WAL back into it every `every`, on a connection of its own, so no
/// commit pays for it. Left to SQLite, the commit that crosses the WAL threshold does it,
/// with its fsyncs, and every message of that group waits: measured at W1, one of those
/// stalls every half second, some over 30 ms. Stops when dropped.
pub struct Checkpoints(tokio::task::JoinHandle<()>);

impl Checkpoints {
    /// Opens the checkpointing connection on a thread called `name`.
    pub async fn start(
        name: &str,
        options: OpenOptions,
        every: Duration,
    ) -> Result<Self, OpenError> {
        let db = Db::open(name, options).await?;
        Ok(Self(tokio::spawn(checkpoints(db, every))))
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn checkpoints(db: Db, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let done = db
            .call(|conn| conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)"))
            .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                thread = %db.name,
                error = %e,
                "background WAL checkpoint failed; retrying at the next tick (the connections' own checkpoint at {FALLBACK_CHECKPOINT_PAGES} pages bounds the WAL meanwhile)"
            ),
            Err(_) => return,
        }
    }
}

/// Runs jobs in order until every handle is dropped. A job that panics loses only its
/// own answer (its caller sees [`Gone`]); the connection goes on serving the next.
fn serve(conn: &mut Connection, queue: &mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)));
        if ran.is_err() {
            tracing::error!(
                thread = std::thread::current().name().unwrap_or("sqlite"),
                "a SQLite job panicked; its caller gets an error, the connection serves on"
            );
            // A transaction the job left open must not swallow the next job's work.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_in_order_and_survives_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open("test-db", OpenOptions::new(&dir.path().join("t.db")))
            .await
            .unwrap();
        db.call(|c| c.execute_batch("CREATE TABLE t (v INTEGER)"))
            .await
            .unwrap()
            .unwrap();
        let panicked = db
            .call(|c| {
                c.execute_batch("BEGIN; INSERT INTO t VALUES (1)").unwrap();
                panic!("boom")
            })
            .await;
        assert!(
            panicked.is_err(),
            "the caller of a panicking job gets an error"
        );
        let n: i64 = db
            .call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "the panicking job's open transaction was rolled back");
    }

    #[tokio::test]
    async fn background_checkpoints_copy_the_wal_back_so_commits_need_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = OpenOptions::new(&dir.path().join("c.db"));
        options.background_checkpoints = true;
        let db = Db::open("test-writer", options.clone()).await.unwrap();
        let pages: u32 = db
            .call(|c| c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            pages, FALLBACK_CHECKPOINT_PAGES,
            "commits leave the WAL alone"
        );
        // More WAL frames than SQLite's default threshold (1,000), fewer than ours.
        db.call(|c| {
            c.execute_batch("CREATE TABLE t (v BLOB)")?;
            for _ in 0..1_500 {
                c.execute("INSERT INTO t VALUES (zeroblob(3000))", [])?;
            }
            Ok::<_, rusqlite::Error>(())
        })
        .await
        .unwrap()
        .unwrap();
        let file = dir.path().join("c.db");
        let size = || std::fs::metadata(&file).unwrap().len();
        assert!(
            size() < 100_000,
            "no commit checkpointed ({} bytes)",
            size()
        );
        let checkpoints = Checkpoints::start("test-checkpoint", options, Duration::from_millis(20))
            .await
            .unwrap();
        for _ in 0..100 {
            if size() > 1_500 * 3000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(checkpoints);
        assert!(
            size() > 1_500 * 3000,
            "the background checkpoint copied the rows into the file ({} bytes)",
            size()
        );
    }

    #[tokio::test]
    async fn open_names_what_failed() {
        let err = Db::open(
            "test-db",
            OpenOptions::new(Path::new("/nonexistent-dir/x/y.db")),
        )
        .await
        .err()
        .expect("no such folder");
        assert!(err.to_string().contains("unable to open"), "{err}");
    }
}
