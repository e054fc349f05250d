//! Connection supervision: one broker connection per process, watched by a task that
//! re-opens it with backoff (and re-declares the topology) whenever it drops, plus the
//! publishing both roles share (confirmed publishes, RPC timeouts).

use super::topology::Names;
use super::unavailable;
use crate::QueueError;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use shared::shutdown::backoff;
use std::collections::{BTreeSet, HashSet};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest any single broker round trip may take before the caller gets `Unavailable`,
/// so nothing hangs on a connection that died without a word.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
const WATCH_EVERY: Duration = Duration::from_millis(200);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The supervised connection and what is known about the topology.
pub(super) struct Link {
    url: String,
    redacted: String,
    pub(super) names: Names,
    /// The live session, `None` while reconnecting.
    state: watch::Sender<Option<Arc<Session>>>,
    generation: AtomicU64,
    /// Set once the broker refused a quorum ingest queue, so later sessions declare the
    /// kind that exists instead of failing the same way again.
    pub(super) classic_ingest: AtomicBool,
    /// Every retry queue declared, for `destroy`.
    pub(super) retry_queues: std::sync::Mutex<BTreeSet<String>>,
}

/// One broker connection and its long-lived channels.
pub(super) struct Session {
    pub(super) generation: u64,
    conn: Connection,
    publisher: Mutex<Option<Channel>>,
    admin: Mutex<Option<Channel>>,
    pub(super) retry_declared: std::sync::Mutex<HashSet<String>>,
}

impl Link {
    /// Connects once (failing with `Connect`), then leaves the connection to a supervisor.
    pub(super) async fn connect(
        url: String,
        redacted: String,
        names: Names,
        classic: bool,
    ) -> Result<Arc<Self>, QueueError> {
        let link = Arc::new(Self {
            url,
            redacted,
            names,
            state: watch::channel(None).0,
            generation: AtomicU64::new(0),
            classic_ingest: AtomicBool::new(classic),
            retry_queues: std::sync::Mutex::new(BTreeSet::new()),
        });
        let session = link
            .open_session()
            .await
            .map_err(|reason| QueueError::Connect {
                url: link.redacted.clone(),
                reason,
            })?;
        info!(url = %link.redacted, prefix = %link.names.prefix, "connected to RabbitMQ");
        link.state.send_replace(Some(session));
        tokio::spawn(supervise(Arc::downgrade(&link)));
        Ok(link)
    }

    /// The live session, or `Unavailable` at once while the connection is down.
    pub(super) fn session(&self) -> Result<Arc<Session>, QueueError> {
        match &*self.state.borrow() {
            Some(s) if s.connected() => Ok(s.clone()),
            _ => Err(QueueError::Unavailable(
                "not connected to RabbitMQ; reconnecting".into(),
            )),
        }
    }

    /// Changes whenever the connection is lost or replaced.
    pub(super) fn changes(&self) -> watch::Receiver<Option<Arc<Session>>> {
        self.state.subscribe()
    }

    fn is_connected(&self) -> bool {
        self.state.borrow().as_ref().is_some_and(|s| s.connected())
    }

    async fn open_session(&self) -> Result<Arc<Session>, String> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("courier {}", self.names.prefix).into());
        let conn = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(&self.url, props),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.explain(e.to_string())),
            Err(_) => return Err(self.explain(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        };
        let session = Arc::new(Session {
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            conn,
            publisher: Mutex::new(None),
            admin: Mutex::new(None),
            retry_declared: std::sync::Mutex::new(HashSet::new()),
        });
        self.declare_topology(&session)
            .await
            .map_err(|e| format!("declaring the topology failed: {e}"))?;
        Ok(session)
    }

    fn explain(&self, reason: String) -> String {
        if self.url.starts_with("amqps://") {
            format!("{reason} (this build has no TLS support; use amqp://)")
        } else {
            reason
        }
    }
}

/// Watches the connection and replaces it when it drops; ends with the last `Link`.
async fn supervise(link: Weak<Link>) {
    loop {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let Some(l) = link.upgrade() else { return };
            if !l.is_connected() {
                break;
            }
        }
        let Some(l) = link.upgrade() else { return };
        l.state.send_replace(None);
        warn!(url = %l.redacted, "lost the RabbitMQ connection; reconnecting");
        drop(l);
        if !reconnect(&link).await {
            return;
        }
    }
}

async fn reconnect(link: &Weak<Link>) -> bool {
    let mut failures = 0u32;
    loop {
        let Some(l) = link.upgrade() else {
            return false;
        };
        match l.open_session().await {
            Ok(session) => {
                info!(url = %l.redacted, generation = session.generation, attempts = failures + 1, "reconnected to RabbitMQ");
                l.state.send_replace(Some(session));
                return true;
            }
            Err(reason) => {
                let delay = backoff(failures, BACKOFF_BASE, BACKOFF_CAP);
                warn!(url = %l.redacted, %reason, attempt = failures + 1, retry_in_ms = delay.as_millis() as u64, "reconnecting to RabbitMQ failed");
                drop(l);
                tokio::time::sleep(delay).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

impl Session {
    pub(super) fn connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// A new channel of its own (consumers, feeds, one-off work).
    pub(super) async fn channel(&self) -> Result<Channel, QueueError> {
        rpc("opening a channel", self.conn.create_channel()).await
    }

    /// The shared confirm-mode channel for publishes, re-opened if a channel error closed it.
    pub(super) async fn publisher(&self) -> Result<Channel, QueueError> {
        let mut slot = self.publisher.lock().await;
        if let Some(ch) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(ch.clone());
        }
        let ch = self.channel().await?;
        rpc(
            "enabling publisher confirms",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// The shared channel for declarations and inspections.
    pub(super) async fn admin(&self) -> Result<Channel, QueueError> {
        let mut slot = self.admin.lock().await;
        if let Some(ch) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(ch.clone());
        }
        let ch = self.channel().await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Publishes every message, then waits for all the broker's confirms: Ok only when
    /// each one was acked (and, when mandatory, routed to a queue).
    pub(super) async fn publish_confirmed(
        &self,
        messages: Vec<Outgoing<'_>>,
    ) -> Result<(), QueueError> {
        let ch = self.publisher().await?;
        let mut confirms = Vec::new();
        for m in messages {
            let options = BasicPublishOptions {
                mandatory: m.mandatory,
                ..BasicPublishOptions::default()
            };
            let publishing = ch.basic_publish(
                m.exchange.into(),
                m.routing_key.into(),
                options,
                m.payload,
                m.properties,
            );
            confirms.push(rpc("publishing", publishing).await?);
        }
        for confirm in confirms {
            match rpc("waiting for the publish confirm", confirm).await? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(returned)) => {
                    return Err(QueueError::Unavailable(format!(
                        "the broker could not route the message to {:?}: {}",
                        returned.delivery.routing_key.as_str(),
                        returned.reply_text
                    )));
                }
                Confirmation::Nack(_) => {
                    return Err(QueueError::Unavailable(
                        "the broker refused the message (nack)".into(),
                    ));
                }
                Confirmation::NotRequested => {
                    return Err(QueueError::Unavailable(
                        "the publish channel is not in confirm mode".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One message to publish.
pub(super) struct Outgoing<'a> {
    pub(super) exchange: &'a str,
    pub(super) routing_key: &'a str,
    pub(super) payload: &'a [u8],
    pub(super) properties: BasicProperties,
    /// Unroutable is an error (work and dead letters), not a drop (fan-out).
    pub(super) mandatory: bool,
}

/// JSON properties: persistent (delivery mode 2) or transient (1).
pub(super) fn json_properties(persistent: bool) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(if persistent { 2 } else { 1 })
}

/// Awaits one broker round trip, bounded by `RPC_TIMEOUT`, as a `QueueError`.
pub(super) async fn rpc<T, F>(what: &str, fut: F) -> Result<T, QueueError>
where
    F: IntoFuture<Output = lapin::Result<T>>,
{
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(what, e)),
        Err(_) => Err(QueueError::Unavailable(format!(
            "{what}: no answer from RabbitMQ within {RPC_TIMEOUT:?}"
        ))),
    }
}
