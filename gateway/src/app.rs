//! Process-wide state of a running gateway, and publishing onto the ingest queue.

use crate::auth::Identity;
use crate::config::GatewayConfig;
use crate::hub::Hub;
use crate::protocol::{CommandError, ErrorCode};
use queue::{Admin, DeliveryBus, Publish};
use shared::shutdown::Shutdown;
use shared::{ClientMsgId, Envelope, GatewayId, RoomId, UserId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;
use store::Store;

pub struct App {
    pub config: GatewayConfig,
    pub gateway: GatewayId,
    /// Sends go onto the ingest queue through this.
    pub publish: Arc<dyn Publish>,
    /// Readiness and the backlog gauge.
    pub admin: Arc<dyn Admin>,
    /// Room changes are announced to every gateway through this.
    pub bus: Arc<dyn DeliveryBus>,
    pub store: Store,
    /// Who may use which room, with its cache of room settings.
    pub access: Arc<crate::access::Access>,
    pub hub: Arc<Hub>,
    /// Who is in which room on any gateway, and typing (the signal lane).
    pub presence: Arc<crate::presence::Presence>,
    pub identity: Identity,
    /// Pages that may open `/ws` (`ALLOWED_ORIGINS`).
    pub origins: crate::origin::Origins,
    pub metrics: telemetry::Handle,
    pub shutdown: Shutdown,
    /// Open WebSocket connections.
    pub connections: AtomicUsize,
    pub next_conn: AtomicU64,
}

impl App {
    /// A plain message's envelope from this gateway (`Envelope::message`); a caller sets
    /// the event fields (kind, target, emoji, ...) on it before [`App::publish`].
    pub fn envelope(&self, room: RoomId, from: UserId, id: ClientMsgId, body: String) -> Envelope {
        Envelope::message(room, from, id, body, self.gateway.clone())
    }

    /// Puts one log entry (a message, an edit, a delete or a reaction) on the ingest
    /// queue; `Ok` only once the queue confirmed it. A refusal, an error or no
    /// confirmation in time is `unavailable`: retry with the same id.
    pub async fn publish(&self, env: Envelope) -> Result<(), CommandError> {
        let trace = env.trace.as_deref().unwrap_or_default();
        let started = Instant::now();
        let limit = self.config.limits.publish_timeout();
        let result =
            tokio::time::timeout(limit, self.publish.publish(&env.key(), env.to_json())).await;
        metrics::histogram!("courier_publish_seconds").record(started.elapsed().as_secs_f64());
        let kind = env.kind.as_str();
        let reason = match result {
            Ok(Ok(())) => {
                tracing::debug!(trace, room = %env.room, id = %env.id, from = %env.from, kind, "message published");
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no confirmation within {} ms", limit.as_millis()),
        };
        tracing::warn!(trace, room = %env.room, id = %env.id, kind, %reason, "publish failed");
        metrics::counter!("courier_publish_failures_total").increment(1);
        Err(CommandError::new(
            ErrorCode::Unavailable,
            "the queue did not confirm the message; retry with the same id",
        ))
    }
}
