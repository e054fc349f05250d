//! Types, configuration and the queue abstraction shared by the courier gateway and worker.

pub mod config;
pub mod ids;
pub mod message;
pub mod queue;
pub mod shutdown;
pub mod sqlite;
pub mod sync;
pub mod time;
pub mod url;

pub use ids::{ClientMsgId, GatewayId, RoomId, UserId};
pub use message::{Enriched, Envelope, StoredMessage};
pub use time::Timestamp;
