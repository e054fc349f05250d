//! Consumers for both roles: a consumer on its own channel whose deliveries reach an
//! in-order queue, cancelled when dropped.

use super::connection::{Link, Session, rpc};
use crate::QueueError;
use lapin::message::DeliveryResult;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ConsumerDelegate};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// A consumer on its own channel whose deliveries arrive, in order, on `rx`.
pub(super) struct Subscribed {
    /// The session (connection) it was opened on.
    generation: u64,
    pub(super) channel: Channel,
    pub(super) rx: mpsc::UnboundedReceiver<DeliveryResult>,
    consumer: lapin::Consumer,
    forward: Forward,
}

impl Subscribed {
    /// Starts consuming `queue` on `channel` (ack mode, `prefetch` unacked at most).
    pub(super) async fn start(
        session: &Session,
        channel: Channel,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self, QueueError> {
        Self::start_with(session, channel, queue, prefetch, None).await
    }

    /// The same; `wake` is notified after each delivery that arrives.
    pub(super) async fn start_with(
        session: &Session,
        channel: Channel,
        queue: &str,
        prefetch: u16,
        wake: Option<Arc<Notify>>,
    ) -> Result<Self, QueueError> {
        rpc(
            "setting the prefetch",
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        let consumer = rpc(
            "starting a consumer",
            channel.basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let forward = Forward { tx, wake };
        consumer.set_delegate(forward.clone());
        Ok(Self {
            generation: session.generation,
            channel,
            rx,
            consumer,
            forward,
        })
    }

    /// False once its channel closed or the connection it belongs to was replaced.
    pub(super) fn usable(&self, link: &Link) -> bool {
        self.channel.status().connected()
            && link
                .session()
                .is_ok_and(|s| s.generation == self.generation)
    }

    /// Hands over deliveries that lapin queued in the instant between `basic_consume`
    /// returning and the delegate being installed (it re-drains on every install).
    pub(super) fn redrain(&self) {
        self.consumer.set_delegate(self.forward.clone());
    }

    /// Closes its channel: the broker puts back every message it delivered here and not
    /// settled, and removes the consumer, in one step.
    pub(super) async fn close(self, reason: &str) {
        let _ = rpc("closing a channel", self.channel.close(200, reason.into())).await;
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        // lapin cancels a dropped consumer only when it has no delegate, and the consumer
        // keeps its channel open until cancelled. Once cancelled, the channel closes with
        // its last handle (deliveries still held keep it open so they can be settled).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.channel.status().connected() {
            return;
        }
        let channel = self.channel.clone();
        let tag = self.consumer.tag();
        runtime.spawn(async move {
            let cancel = channel.basic_cancel(tag, BasicCancelOptions::default());
            let _ = rpc("cancelling a consumer", cancel).await;
        });
    }
}

/// Forwards deliveries synchronously from lapin's I/O thread: the delegate's future is
/// spawned, so doing the work there could reorder deliveries. (A delegate rather than
/// lapin's `Stream`, which would need `futures-core` as a dependency of this crate.)
#[derive(Clone)]
struct Forward {
    tx: mpsc::UnboundedSender<DeliveryResult>,
    wake: Option<Arc<Notify>>,
}

impl ConsumerDelegate for Forward {
    fn on_new_delivery(
        &self,
        delivery: DeliveryResult,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // A closed receiver is a consumer that was dropped; its channel closes with it.
        let _ = self.tx.send(delivery);
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
        Box::pin(std::future::ready(()))
    }
}
