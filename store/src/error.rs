//! The store's error type, and which of its errors are worth a retry.

use shared::sqlite::rusqlite::{self, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened at start; names the URL (password hidden).
    #[error("cannot connect to store at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// PostgreSQL.
    #[error("store: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store's connection thread is gone (shutting down).
    #[error("store: {0}")]
    Gone(#[from] shared::sqlite::Gone),
    #[error("store holds corrupt data: {0}")]
    Corrupt(String),
    /// The last write failed for a reason outside any message (disk full, I/O): the
    /// store answers reads but cannot take messages.
    #[error("store writes are failing: {0}")]
    WritesFailing(String),
}

impl Error {
    /// True when trying the same thing again later may succeed (the store is away, busy
    /// or overloaded) rather than this message being at fault.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::WritesFailing(_) | Self::Gone(_) => true,
            Self::Postgres(sqlx::Error::Database(db)) => {
                // Class 40: serialization failure, deadlock.
                db.code().is_some_and(|c| c.starts_with("40")) || self.is_outage()
            }
            Self::Postgres(
                sqlx::Error::RowNotFound
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::TypeNotFound { .. }
                | sqlx::Error::Encode(_),
            ) => false,
            Self::Postgres(_) => true,
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    || self.is_outage()
            }
            Self::Sqlite(_) => false,
            Self::Connect { .. } | Self::Corrupt(_) => false,
        }
    }

    /// True when the store itself is out of order (no space, I/O errors, the connection
    /// gone), as opposed to a conflict or a bad message: writes fail for every message
    /// until it is repaired, so the process reports itself not ready meanwhile.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::WritesFailing(_) | Self::Gone(_) => true,
            // PostgreSQL: classes 08 (connection), 53 (resources: disk full, out of
            // memory), 57 (shutdown), 58 (I/O).
            Self::Postgres(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| ["08", "53", "57", "58"].iter().any(|p| c.starts_with(p))),
            Self::Postgres(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                ErrorCode::OutOfMemory
                    | ErrorCode::ReadOnly
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
            ),
            _ => false,
        }
    }
}
