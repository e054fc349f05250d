//! The signal lane on RabbitMQ: a non-durable fanout exchange `{prefix}.signals` and one
//! exclusive, auto-deleted queue per gateway bound to it, `{prefix}.signals.{gateway}`,
//! bounded by `x-max-length` with the oldest dropped. Transient messages, on a channel of
//! their own so a refused publish never closes the ingest publisher's channel; nothing
//! outlives the gateways (the exchange is auto-deleted with its last queue).

use super::AmqpQueue;
use super::connection::{Link, Session, json_properties, rpc};
use super::subscribed::Subscribed;
use crate::{QueueError, Signal, SignalLane};
use async_trait::async_trait;
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use shared::ids::GatewayId;
use shared::shutdown::backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tracing::{info, warn};

/// Re-opening a subscription backs off to at most this.
const REOPEN_CAP: Duration = Duration::from_secs(1);
/// Deliveries acked at once, unless the queue runs dry first.
const ACK_EVERY: usize = 64;

fn exchange(link: &Link) -> String {
    format!("{}.signals", link.names.prefix)
}

/// Declares the exchange (idempotent: the same arguments every time).
async fn declare_exchange(link: &Link, ch: &Channel) -> Result<(), QueueError> {
    let options = ExchangeDeclareOptions {
        durable: false,
        auto_delete: true,
        ..ExchangeDeclareOptions::default()
    };
    rpc(
        "declaring the signal exchange",
        ch.exchange_declare(
            exchange(link).as_str().into(),
            ExchangeKind::Fanout,
            options,
            FieldTable::default(),
        ),
    )
    .await
}

/// The lane's publishing channel, per connection.
#[derive(Default)]
pub(crate) struct SignalPublisher {
    channel: Mutex<Option<(u64, Channel)>>,
}

impl SignalPublisher {
    async fn channel(&self, link: &Link, session: &Session) -> Result<Channel, QueueError> {
        let mut slot = self.channel.lock().await;
        if let Some((generation, ch)) = slot.as_ref()
            && *generation == session.generation
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let ch = session.channel().await?;
        rpc(
            "enabling publisher confirms on the signal lane",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        declare_exchange(link, &ch).await?;
        *slot = Some((session.generation, ch.clone()));
        Ok(ch)
    }
}

#[async_trait]
impl SignalLane for AmqpQueue {
    async fn publish(&self, signals: &[Signal]) -> Result<(), QueueError> {
        let session = self.link.session()?;
        let ch = self.signals.channel(&self.link, &session).await?;
        let exchange = exchange(&self.link);
        let mut confirms = Vec::with_capacity(signals.len());
        for s in signals {
            let payload = s.encode()?;
            let publishing = ch.basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &payload,
                json_properties(false),
            );
            confirms.push(rpc("publishing a signal", publishing).await?);
        }
        // Confirms say the broker took them; what it could not route is just gone.
        for c in confirms {
            rpc("waiting for a signal's confirm", c).await?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        gateway: &GatewayId,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Signal>, QueueError> {
        let buffer = buffer.max(1);
        let end = Arc::new(End {
            link: self.link.clone(),
            queue: format!("{}.signals.{gateway}", self.link.names.prefix),
            buffer,
        });
        let live = end.open().await?;
        let (tx, rx) = mpsc::channel(buffer);
        tokio::spawn(run(end, live, tx));
        Ok(rx)
    }
}

/// One gateway's end of the lane.
struct End {
    link: Arc<Link>,
    queue: String,
    buffer: usize,
}

impl End {
    /// Declares the exchange and the bounded queue, binds, consumes.
    async fn open(&self) -> Result<Subscribed, QueueError> {
        let session = self.link.session()?;
        let ch = session.channel().await?;
        declare_exchange(&self.link, &ch).await?;
        let mut args = FieldTable::default();
        let max = i64::try_from(self.buffer).unwrap_or(i64::MAX);
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(max));
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("drop-head".into()),
        );
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        rpc(
            "declaring the gateway's signal queue",
            ch.queue_declare(self.queue.as_str().into(), options, args),
        )
        .await?;
        rpc(
            "binding the signal queue",
            ch.queue_bind(
                self.queue.as_str().into(),
                exchange(&self.link).as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let prefetch = u16::try_from(self.buffer).unwrap_or(u16::MAX);
        Subscribed::start(&session, ch, &self.queue, prefetch).await
    }
}

/// Forwards signals until the receiver goes away, re-opening after a lost connection
/// (signals of the gap are lost: the next snapshots heal presence).
async fn run(end: Arc<End>, mut live: Subscribed, tx: mpsc::Sender<Signal>) {
    loop {
        match forward(&end, &mut live, &tx).await {
            None => break,
            Some(reason) => {
                metrics::counter!("courier_signal_lane_errors_total", "op" => "subscribe")
                    .increment(1);
                warn!(queue = %end.queue, %reason, "the signal lane was interrupted; re-opening it");
            }
        }
        let mut failures = 0u32;
        live = loop {
            match end.open().await {
                Ok(l) => break l,
                Err(e) if failures > 0 && failures.is_multiple_of(10) => {
                    warn!(queue = %end.queue, error = %e, "re-opening the signal lane failed; retrying")
                }
                Err(_) => {}
            }
            let delay = backoff(failures, Duration::from_millis(100), REOPEN_CAP);
            failures = failures.saturating_add(1);
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        };
        info!(queue = %end.queue, "the signal lane resumed");
    }
    let _ = live.close("signal lane closed").await;
}

/// `None` when the receiver is gone, or why the consumer ended.
async fn forward(end: &End, live: &mut Subscribed, tx: &mpsc::Sender<Signal>) -> Option<String> {
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut changes = end.link.changes();
    let mut unacked = 0usize;
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return None,
            _ = check.tick() => {
                live.redrain();
                if !live.usable(&end.link) {
                    return Some("its channel closed".into());
                }
                continue;
            }
            _ = changes.changed() => {
                if !live.usable(&end.link) {
                    return Some("the connection dropped".into());
                }
                continue;
            }
            d = live.rx.recv() => d,
        };
        let d = match next {
            Some(Ok(Some(d))) => d,
            Some(Ok(None)) => return Some("cancelled by the broker".into()),
            Some(Err(e)) => return Some(e.to_string()),
            None => return Some("closed".into()),
        };
        match Signal::decode(&d.data) {
            // Full: the oldest wait in the broker's bounded queue instead.
            Some(s) => {
                if tx.send(s).await.is_err() {
                    return None;
                }
            }
            None => {
                metrics::counter!("courier_signal_lane_errors_total", "op" => "decode")
                    .increment(1);
            }
        }
        unacked += 1;
        if unacked >= ACK_EVERY || live.rx.is_empty() {
            unacked = 0;
            if let Err(e) = d.acker.ack(BasicAckOptions { multiple: true }).await {
                return Some(format!("ack failed: {e}"));
            }
        }
    }
}
