//! The worker crate's error type.

use shared::queue::QueueError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A service could not be reached at start; names the URL (password hidden).
    #[error("cannot connect to {what} at {url}: {reason}")]
    Connect {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("store holds corrupt data: {0}")]
    Corrupt(String),
    /// The last write failed for a reason outside any message (disk full, I/O): the
    /// store answers reads but cannot take messages.
    #[error("store writes are failing: {0}")]
    WritesFailing(String),
}

impl Error {
    /// True when trying the same thing again later may succeed (the service is away,
    /// busy or overloaded) rather than this message being at fault.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Queue(_) | Self::WritesFailing(_) => true,
            Self::Store(sqlx::Error::Database(db)) => {
                db.code().is_some_and(|c| {
                    // SQLite: BUSY, LOCKED and their extended codes. PostgreSQL: class 40
                    // (serialization, deadlock).
                    matches!(&*c, "5" | "6" | "261" | "262" | "517") || c.starts_with("40")
                }) || self.is_outage()
            }
            Self::Store(
                sqlx::Error::RowNotFound
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::TypeNotFound { .. }
                | sqlx::Error::Encode(_),
            ) => false,
            Self::Store(_) => true,
            Self::Connect { .. } | Self::Config(_) | Self::Corrupt(_) => false,
        }
    }

    /// True when the store itself is out of order (no space, I/O errors, the connection
    /// gone), as opposed to a conflict or a bad message: writes fail for every message
    /// until it is repaired, so the process reports itself not ready meanwhile.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::WritesFailing(_) => true,
            Self::Store(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
                let sqlite = c.parse::<u32>().ok().map(|n| n & 0xff);
                // SQLite: NOMEM, READONLY, IOERR (and its extended codes), CORRUPT's
                // neighbour FULL, CANTOPEN. PostgreSQL: classes 08 (connection), 53
                // (resources: disk full, out of memory), 57 (shutdown), 58 (I/O).
                matches!(sqlite, Some(7 | 8 | 10 | 13 | 14))
                    || ["08", "53", "57", "58"].iter().any(|p| c.starts_with(p))
            }),
            Self::Store(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }
}
