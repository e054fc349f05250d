//! What every courier process shares: the wire types that cross processes (ids, the
//! queue envelope, the stored message, time), shutdown and backoff, the SQLite thread
//! the store and the embedded queue run on, and small helpers (locks, URLs).

pub mod event;
pub mod ids;
pub mod message;
pub mod runtime;
pub mod shutdown;
pub mod sqlite;
pub mod sync;
pub mod time;
pub mod url;

pub use event::{EventKind, Reactions};
pub use ids::{ClientMsgId, GatewayId, RoomId, UserId};
pub use message::{Enriched, Envelope, StoredMessage};
pub use time::Timestamp;
