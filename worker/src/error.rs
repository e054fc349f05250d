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
}

impl Error {
    /// True when trying the same thing again later may succeed (the service is away,
    /// busy or overloaded) rather than this message being at fault.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Queue(_) => true,
            Self::Store(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
                // SQLite: BUSY, LOCKED and their extended codes. PostgreSQL: classes 08
                // (connection), 40 (serialization, deadlock), 53 (resources), 57 (shutdown).
                matches!(&*c, "5" | "6" | "261" | "262" | "517")
                    || ["08", "40", "53", "57"].iter().any(|p| c.starts_with(p))
            }),
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
}
