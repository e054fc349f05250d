//! The processing loop: receive a batch, enrich, store in one transaction, then hand it
//! to the fan-out stage ([`crate::fanout`]), which fans out and acks while the loop
//! takes the next batch.
//!
//! A delivery is acked only after its message is committed and fanned out.
//! A store or queue outage is waited out while the batch is held (it is not the
//! messages' fault, so it costs them no attempt); a message the store refuses is
//! retried alone with a growing delay and ends in the dead-letter place.

use crate::config::WorkerSettings;
use crate::enrich::Pipeline;
use crate::error::Error;
use crate::fanout;
use queue::{Consume, Consumer, Delivery, DeliveryBus, Queue, Settled};
use shared::shutdown::{Shutdown, backoff};
use shared::{Enriched, Envelope, EventKind, StoredMessage};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{EventFields, NewMessage, Store, Stored};
use tracing::{debug, error, info, warn};

const OUTAGE_BASE: Duration = Duration::from_millis(100);
const OUTAGE_CAP: Duration = Duration::from_secs(5);

/// One consumer loop with what it needs.
#[derive(Clone)]
pub struct Worker {
    /// Where batches come from: the ingest queue.
    pub consume: Arc<dyn Consume>,
    /// Where stored messages go: the gateways.
    pub bus: Arc<dyn DeliveryBus>,
    pub store: Store,
    pub enrich: Arc<Pipeline>,
    pub settings: WorkerSettings,
}

impl Worker {
    /// A worker on both of `queue`'s roles it uses.
    pub fn new(queue: Arc<dyn Queue>, store: Store, settings: WorkerSettings) -> Self {
        Self {
            consume: queue.clone(),
            bus: queue,
            store,
            enrich: Arc::new(Pipeline::standard()),
            settings,
        }
    }

    /// Runs `settings.workers` consumer loops until `shutdown`; each finishes its batch.
    /// A loop that panics is started again (its batch goes back to the queue when its
    /// deliveries are dropped), so the process never goes on acking sends it no longer
    /// processes.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), Error> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut loops = std::collections::HashMap::new();
        for n in 0..self.settings.workers {
            let id = self.spawn_loop(&mut tasks, n, &shutdown);
            loops.insert(id, n);
        }
        let mut result = Ok(());
        while let Some(done) = tasks.join_next_with_id().await {
            match done {
                Ok((_, Err(e))) => result = Err(e),
                Err(panic) if panic.is_panic() && !shutdown.is_fired() => {
                    let n = loops.remove(&panic.id()).unwrap_or_default();
                    error!(worker = n, error = %panic, "worker loop panicked; its batch goes back to the queue and the loop starts again");
                    metrics::counter!("courier_worker_restarts_total").increment(1);
                    let id = self.spawn_loop(&mut tasks, n, &shutdown);
                    loops.insert(id, n);
                }
                Err(e) => error!(error = %e, "worker loop ended abnormally"),
                Ok((_, Ok(()))) => {}
            }
        }
        result
    }

    fn spawn_loop(
        &self,
        tasks: &mut tokio::task::JoinSet<Result<(), Error>>,
        n: u32,
        shutdown: &Shutdown,
    ) -> tokio::task::Id {
        let w = self.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move { w.consume(n, sd).await }).id()
    }

    /// One loop: receive and store here, fan out and ack in [`fanout`], both in this
    /// task (a panic in either hands every unacked delivery back).
    async fn consume(&self, n: u32, shutdown: Shutdown) -> Result<(), Error> {
        let (tx, rx) = fanout::channel();
        let stage = fanout::run(self.bus.clone(), rx, shutdown.clone());
        let (stored, ()) = tokio::join!(self.receive_and_store(n, tx, &shutdown), stage);
        info!(worker = n, "worker stopped");
        stored
    }

    async fn receive_and_store(
        &self,
        n: u32,
        handoff: fanout::Sender,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        let mut consumer = self.open_consumer(shutdown).await?;
        info!(worker = n, "worker consuming");
        let mut failures = 0;
        while !shutdown.is_fired() {
            let batch = tokio::select! {
                b = consumer.receive(self.settings.batch_size as usize) => b,
                _ = shutdown.fired() => break,
            };
            let batch = match batch {
                Ok(b) if !b.is_empty() => Ok(self.linger(&mut *consumer, b).await),
                other => other,
            };
            match batch {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => {
                    failures = 0;
                    self.process(batch, &handoff, shutdown).await;
                }
                Err(e) => {
                    warn!(worker = n, error = %e, "receiving from the ingest queue failed; retrying");
                    shutdown
                        .sleep(backoff(failures, OUTAGE_BASE, OUTAGE_CAP))
                        .await;
                    failures += 1;
                }
            }
        }
        Ok(())
    }

    /// Tops up a batch with what arrives within the linger, so a steady stream is stored
    /// in fewer, larger transactions rather than many of one or two messages.
    async fn linger(&self, consumer: &mut dyn Consumer, mut batch: Vec<Delivery>) -> Vec<Delivery> {
        let max = self.settings.batch_size as usize;
        let until =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.batch_linger_ms);
        // Stop at the first look that finds nothing: when traffic is light, waiting longer
        // would only add latency.
        while batch.len() < max && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_micros(500)).await;
            let more = consumer.try_receive(max - batch.len());
            if more.is_empty() {
                break;
            }
            batch.extend(more);
        }
        batch
    }

    async fn open_consumer(&self, shutdown: &Shutdown) -> Result<Box<dyn Consumer>, Error> {
        let mut failures = 0;
        loop {
            match self.consume.consumer().await {
                Ok(c) => return Ok(c),
                Err(e) if shutdown.is_fired() => return Err(e.into()),
                Err(e) => {
                    warn!(error = %e, "opening an ingest consumer failed; retrying");
                    shutdown
                        .sleep(backoff(failures, OUTAGE_BASE, OUTAGE_CAP))
                        .await;
                    failures += 1;
                }
            }
        }
    }

    /// Settles every delivery of the batch, one way or another.
    async fn process(&self, batch: Vec<Delivery>, handoff: &fanout::Sender, shutdown: &Shutdown) {
        metrics::histogram!("courier_worker_batch_size").record(batch.len() as f64);
        let mut ready = Vec::with_capacity(batch.len());
        for d in batch {
            // A bug that panics on one message's content must cost that message, not the
            // batch: a panic here would drop every delivery of the batch, which would
            // come back and crash the loop again, forever.
            let prepared =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.prepare(&d)))
                    .unwrap_or_else(|panic| {
                        Err(format!("processing it panicked: {}", panic_text(&*panic)))
                    });
            match prepared {
                Ok(msg) => ready.push((d, msg)),
                Err(reason) => {
                    warn!(attempt = d.attempt, %reason, "a message that cannot be processed goes to the dead-letter place");
                    metrics::counter!("courier_dead_letters_total", "reason" => "malformed")
                        .increment(1);
                    if let Err(e) = d.dead_letter(&reason).await {
                        error!(error = %e, "dead-lettering failed; the message will be redelivered");
                    }
                }
            }
        }
        if ready.is_empty() {
            return;
        }
        record_ages("received", ready.iter().map(|(_, m)| m.sent_at));
        let msgs: Vec<NewMessage> = ready.iter().map(|(_, m)| m.clone()).collect();
        match self.store_waiting_out_outages(&msgs, shutdown).await {
            Some(Ok(stored)) => {
                let deliveries = ready.into_iter().map(|(d, _)| d).collect();
                hand_over(handoff, deliveries, stored).await;
            }
            Some(Err(e)) => {
                debug!(error = %e, "batch refused by the store; storing its messages one by one");
                for (d, m) in ready {
                    self.process_one(d, m, handoff, shutdown).await;
                }
            }
            // Shutting down in the middle of an outage: the dropped deliveries go back.
            None => {}
        }
    }

    async fn process_one(
        &self,
        d: Delivery,
        m: NewMessage,
        handoff: &fanout::Sender,
        shutdown: &Shutdown,
    ) {
        match self
            .store_waiting_out_outages(std::slice::from_ref(&m), shutdown)
            .await
        {
            Some(Ok(stored)) => hand_over(handoff, vec![d], stored).await,
            Some(Err(e)) => {
                let reason = format!("store refused the message: {e}");
                let delay = self.settings.retry_delay(d.attempt);
                let attempt = d.attempt;
                match d.retry(delay, &reason).await {
                    Ok(Settled::Retrying) => {
                        warn!(room = %m.room, id = %m.id, attempt, error = %e, "message failed; retrying later");
                        metrics::counter!("courier_worker_retries_total").increment(1);
                    }
                    Ok(Settled::DeadLettered) => {
                        error!(room = %m.room, id = %m.id, attempt, error = %e, "message failed every attempt; moved to the dead-letter place");
                        metrics::counter!("courier_dead_letters_total", "reason" => "failed")
                            .increment(1);
                    }
                    Err(qe) => {
                        error!(error = %qe, "handing a failed message back failed; it will be redelivered")
                    }
                }
            }
            None => {}
        }
    }

    fn prepare(&self, d: &Delivery) -> Result<NewMessage, String> {
        let env =
            Envelope::from_json(&d.payload).map_err(|e| format!("malformed envelope: {e}"))?;
        env.check()?;
        // Messages and edits are enriched (an edit again, from its new text); deletes and
        // reactions carry no text.
        let (body, enriched) = match env.kind {
            EventKind::Message | EventKind::Edit => self.enrich.run(&env.body),
            EventKind::Delete | EventKind::Reaction => (String::new(), Enriched::default()),
        };
        debug!(trace = env.trace.as_deref().unwrap_or("-"), room = %env.room, id = %env.id, kind = env.kind.as_str(), attempt = d.attempt, "message received");
        Ok(NewMessage {
            room: env.room,
            id: env.id,
            from: env.from,
            body,
            sent_at: env.sent_at,
            enriched,
            trace: env.trace,
            event: EventFields {
                kind: env.kind,
                target: env.target,
                reply_to: env.reply_to,
                emoji: env.emoji,
                remove: env.remove,
                moderated: env.moderated,
            },
        })
    }

    /// `None` when shutdown came while the store was away.
    async fn store_waiting_out_outages(
        &self,
        msgs: &[NewMessage],
        shutdown: &Shutdown,
    ) -> Option<Result<Vec<Stored>, store::Error>> {
        let mut failures = 0;
        loop {
            let started = Instant::now();
            match self.store.store_batch(msgs).await {
                Ok(stored) => {
                    metrics::histogram!("courier_worker_store_seconds")
                        .record(started.elapsed().as_secs_f64());
                    return Some(Ok(stored));
                }
                Err(e) if e.is_transient() => {
                    metrics::counter!("courier_worker_store_errors_total", "kind" => "transient")
                        .increment(1);
                    warn!(error = %e, messages = msgs.len(), "store unavailable; holding the batch and retrying");
                    if !shutdown
                        .sleep(backoff(failures, OUTAGE_BASE, OUTAGE_CAP))
                        .await
                    {
                        return None;
                    }
                    failures += 1;
                }
                Err(e) => {
                    metrics::counter!("courier_worker_store_errors_total", "kind" => "permanent")
                        .increment(1);
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Counts the outcomes, and hands the batch to the fan-out stage (in order behind the
/// batches before it). If the stage is gone (shutdown in an outage), the deliveries are
/// dropped: they go back to the queue and come back found stored.
async fn hand_over(handoff: &fanout::Sender, deliveries: Vec<Delivery>, stored: Vec<Stored>) {
    let mut messages: Vec<Arc<StoredMessage>> = Vec::with_capacity(stored.len());
    for s in stored {
        let outcome = match &s {
            Stored::New(_) => "stored",
            Stored::Duplicate(_) => "duplicate",
            Stored::Refused(why) => {
                // Acked by the gateway, which checked the target before: only a race
                // (a delete that overtook an edit) or another writer gets here.
                info!(reason = %why, "an event its target does not allow is dropped");
                "refused"
            }
        };
        metrics::counter!("courier_worker_messages_total", "outcome" => outcome).increment(1);
        if let Some(m) = s.into_message() {
            debug!(trace = m.trace.as_deref().unwrap_or("-"), room = %m.room, id = %m.id, seq = m.seq, new = outcome == "stored", "message stored");
            messages.push(Arc::new(m));
        }
    }
    let batch = fanout::Stored {
        deliveries,
        messages,
    };
    if handoff.send(batch).await.is_err() {
        debug!("the fan-out stage stopped; the batch goes back to the queue");
    }
}

/// How long after the gateway took them messages reached a stage of this loop
/// (`courier_worker_message_age_seconds`, by `stage`): where a message's latency goes.
pub(crate) fn record_ages(stage: &'static str, sent: impl Iterator<Item = shared::Timestamp>) {
    let now = shared::Timestamp::now().as_millis();
    let age = metrics::histogram!("courier_worker_message_age_seconds", "stage" => stage);
    for at in sent {
        age.record((now - at.as_millis()).max(0) as f64 / 1000.0);
    }
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
