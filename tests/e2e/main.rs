//! End-to-end tests: the real gateway (with embedded workers, the in-memory queue and
//! SQLite) on 127.0.0.1:0, driven by real WebSocket and HTTP clients. One module per
//! area of the wire contract in docs/protocol.md.

mod cluster;
mod helpers;

mod access;
mod browser;
mod crash;
mod docs;
mod edge;
mod events;
mod exhaustion;
mod failures;
mod http;
mod identity;
mod limits;
mod nginx;
mod ordering;
mod packing;
mod presence;
mod protocol;
mod queue_contract;
mod removal;
mod replies;
mod scale_out;
mod sqs;
mod store_backends;
mod store_events;
