//! The second stage of a worker loop: stored batches are fanned out to the gateways and
//! acked here, in the order they were stored, while the loop receives, enriches and
//! stores the next batch.
//!
//! Before this stage the loop waited for each batch's fan-out confirm and ack before it
//! took the next batch, so one broker round trip per batch was on every message's path
//! and capped what one loop could carry. Batches that wait here together go out as one
//! fan-out and one ack. At most `DEPTH` stored batches wait: then the loop waits too.

use queue::{Delivery, DeliveryBus};
use shared::StoredMessage;
use shared::shutdown::{Shutdown, backoff};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// Stored batches that may wait for their fan-out.
pub const DEPTH: usize = 2;

const OUTAGE_BASE: Duration = Duration::from_millis(100);
const OUTAGE_CAP: Duration = Duration::from_secs(5);

/// A stored batch: its deliveries to ack, and the messages to fan out first (stored now,
/// or found stored before).
pub struct Stored {
    pub deliveries: Vec<Delivery>,
    pub messages: Vec<Arc<StoredMessage>>,
}

/// The loop's end of the stage.
pub type Sender = mpsc::Sender<Stored>;

/// The stage's channel, bounded to `DEPTH` batches.
pub fn channel() -> (Sender, mpsc::Receiver<Stored>) {
    mpsc::channel(DEPTH)
}

/// Fans out and acks what the loop hands over until the loop is gone and nothing is left.
/// A fan-out that fails is retried (the messages are stored); if shutdown comes first,
/// what is unacked goes back to the queue and comes back found stored.
pub async fn run(bus: Arc<dyn DeliveryBus>, mut rx: mpsc::Receiver<Stored>, shutdown: Shutdown) {
    while let Some(first) = rx.recv().await {
        let mut deliveries = first.deliveries;
        let mut messages = first.messages;
        while let Ok(more) = rx.try_recv() {
            deliveries.extend(more.deliveries);
            messages.extend(more.messages);
        }
        let mut failures = 0;
        while !messages.is_empty()
            && let Err(e) = bus.fan_out(&messages).await
        {
            warn!(error = %e, "fan-out failed; retrying (messages are stored)");
            if !shutdown
                .sleep(backoff(failures, OUTAGE_BASE, OUTAGE_CAP))
                .await
            {
                return;
            }
            failures += 1;
        }
        crate::pipeline::record_ages("fanned_out", messages.iter().map(|m| m.sent_at));
        if let Err(e) = Delivery::ack_all(deliveries).await {
            warn!(error = %e, "ack failed; the messages will be redelivered and found already stored");
        }
    }
}
