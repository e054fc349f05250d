//! The ingest role's receiving end: long-polled batches of up to 10 (several calls for a
//! bigger batch), and settlement: ack = `DeleteMessageBatch` after the store commit,
//! retry = `ChangeMessageVisibility` to the delay, dead letter = a confirmed send to the
//! dead-letter queue and then the delete. While a delivery is held its visibility is
//! extended, so a batch that waits out a store outage is not handed to another worker.
//!
//! `attempt` is SQS's `ApproximateReceiveCount`: it counts every receive, crashes of a
//! holder included, which is what the redrive policy counts too.

use super::codec::{self, ATTEMPTS, Body, GROUP, REASON};
use super::connection::{CALL_TIMEOUT, call, secs};
use super::{Shared, batch};
use crate::{Consumer, Delivery, Failed, QueueError, Settle, Token};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use shared::message::MessageKey;
use shared::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

/// SQS's most messages per receive.
const RECEIVE_MAX: usize = batch::BATCH;
/// SQS's longest long poll.
const LONGEST_POLL: Duration = Duration::from_secs(20);
/// Most deliveries one `receive` returns, however many are asked for.
const BIGGEST_BATCH: usize = 1000;

/// A delivery's handle ([`Token::Sqs`]): its receipt, and what a dead letter needs.
pub struct Ticket {
    /// Its entry among the held deliveries.
    held: u64,
    receipt: String,
    message_id: String,
    group: Option<String>,
    /// The idempotency key its attributes carry, copied onto its dead letter.
    key: Option<MessageKey>,
}

/// Settles deliveries of every consumer of one `SqsQueue`, and keeps the held ones
/// invisible.
pub(super) struct Settler {
    /// Itself, for work `abandon` spawns.
    me: Weak<Settler>,
    shared: Arc<Shared>,
    held: Mutex<HashMap<u64, Held>>,
    next_key: AtomicU64,
    /// Serializes visibility changes: an extension must not undo a retry's delay.
    visibility: tokio::sync::Mutex<()>,
    /// For `abandon`, which runs in `Drop` and may be outside any runtime context.
    runtime: tokio::runtime::Handle,
}

struct Held {
    receipt: String,
    extended: Instant,
}

impl Settler {
    /// A settler and its visibility extender, which stops with the last handle.
    pub(super) fn start(shared: &Arc<Shared>) -> Arc<Self> {
        let settler = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            shared: shared.clone(),
            held: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            visibility: tokio::sync::Mutex::new(()),
            runtime: tokio::runtime::Handle::current(),
        });
        tokio::spawn(extend(Arc::downgrade(&settler)));
        settler
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        lock(&self.held)
    }

    fn hold(&self, receipt: &str) -> u64 {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.held().insert(
            key,
            Held {
                receipt: receipt.to_owned(),
                extended: Instant::now(),
            },
        );
        key
    }

    fn release(&self, key: u64) {
        self.held().remove(&key);
    }

    fn sqs(&self) -> &Client {
        &self.shared.sqs
    }

    fn ingest(&self) -> &str {
        &self.shared.topology.ingest
    }

    async fn change_visibility(&self, receipt: &str, d: Duration) -> Result<(), QueueError> {
        let seconds = secs(d).clamp(0, 43_200);
        call(
            "changing a message's visibility",
            CALL_TIMEOUT,
            self.sqs()
                .change_message_visibility()
                .queue_url(self.ingest())
                .receipt_handle(receipt)
                .visibility_timeout(seconds)
                .send(),
        )
        .await
        .map(|_| ())
        .map_err(QueueError::from)
    }
}

/// Extends the visibility of every delivery held for a third of the visibility timeout,
/// every third of it, until the settler is gone.
async fn extend(settler: Weak<Settler>) {
    let Some(visibility) = settler.upgrade().map(|s| s.shared.settings.visibility) else {
        return;
    };
    let every = visibility / 3;
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = settler.upgrade() else { return };
        let _gate = s.visibility.lock().await;
        let now = Instant::now();
        let due: Vec<(u64, String)> = s
            .held()
            .iter()
            .filter(|(_, h)| now.duration_since(h.extended) >= every)
            .map(|(k, h)| (*k, h.receipt.clone()))
            .collect();
        for chunk in due.chunks(RECEIVE_MAX) {
            let named = chunk
                .iter()
                .map(|(k, receipt)| (k.to_string(), receipt.as_str()));
            let extended =
                batch::change_visibility(s.sqs(), s.ingest(), named, secs(visibility)).await;
            match extended {
                Ok(out) => {
                    let mut held = s.held();
                    for ok in out.successful() {
                        if let Some(h) = ok.id().parse().ok().and_then(|k| held.get_mut(&k)) {
                            h.extended = now;
                        }
                    }
                    for failed in out.failed() {
                        debug!(
                            code = failed.code(),
                            "a held message's visibility could not be extended"
                        );
                    }
                }
                Err(f) => {
                    warn!(error = %f, held = due.len(), "extending the visibility of held messages failed; they may be delivered again")
                }
            }
        }
    }
}

/// A consumer of the ingest queue.
pub(super) struct SqsConsumer {
    shared: Arc<Shared>,
    settler: Arc<Settler>,
}

impl SqsConsumer {
    pub(super) fn new(shared: Arc<Shared>, settler: Arc<Settler>) -> Self {
        Self { shared, settler }
    }

    /// One `ReceiveMessage` of up to `n` messages, waiting up to `wait`. Cancel-safe: the
    /// call runs on its own task, and messages it brings after the caller went away (a
    /// worker stopping mid-poll) are handed back at once instead of staying invisible
    /// (and, on a FIFO queue, holding their rooms) for the visibility timeout.
    async fn receive_once(&self, n: usize, wait: Duration) -> Result<Vec<Message>, QueueError> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let received = call(
                "receiving from the ingest queue",
                wait + CALL_TIMEOUT,
                shared
                    .sqs
                    .receive_message()
                    .queue_url(&shared.topology.ingest)
                    .max_number_of_messages(i32::try_from(n.clamp(1, RECEIVE_MAX)).unwrap_or(1))
                    .wait_time_seconds(secs(wait))
                    .visibility_timeout(secs(shared.settings.visibility))
                    .message_system_attribute_names(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                    .message_attribute_names("All")
                    .send(),
            )
            .await
            .map(|out| out.messages.unwrap_or_default())
            .map_err(QueueError::from);
            if let Err(Ok(orphans)) = tx.send(received) {
                let receipts: Vec<&str> =
                    orphans.iter().filter_map(|m| m.receipt_handle()).collect();
                let ingest = &shared.topology.ingest;
                if let Err(e) = batch::set_visibility(&shared.sqs, ingest, &receipts, 0).await {
                    debug!(error = %e, "handing back messages nobody waited for failed; they return after their visibility timeout");
                }
            }
        });
        rx.await.unwrap_or_else(|_| {
            Err(QueueError::Unavailable(
                "the receive task ended without an answer".into(),
            ))
        })
    }

    fn wrap(&self, m: Message) -> Option<Delivery> {
        let receipt = m.receipt_handle()?.to_owned();
        let attempt = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        let group = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned();
        let ticket = Ticket {
            held: self.settler.hold(&receipt),
            receipt,
            message_id: m.message_id().unwrap_or_default().to_owned(),
            group,
            key: codec::key_of(&m),
        };
        let payload = codec::payload_of(&m);
        let settle: Arc<dyn Settle> = self.settler.clone();
        Some(Delivery::new(payload, attempt, Token::Sqs(ticket), settle))
    }
}

#[async_trait]
impl Consumer for SqsConsumer {
    /// Nothing without a round trip: `receive` already takes up to ten per call and
    /// batches its calls.
    fn try_receive(&mut self, _max: usize) -> Vec<Delivery> {
        Vec::new()
    }

    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let max = max.clamp(1, BIGGEST_BATCH);
        // Whole seconds: SQS long polls in seconds. Zero would be a short poll, which
        // samples only some servers of a standard queue.
        let wait = self
            .shared
            .opts
            .receive_wait
            .max(Duration::from_secs(1))
            .min(LONGEST_POLL);
        let wait = Duration::from_secs(wait.as_secs_f64().ceil() as u64);
        let mut out = Vec::new();
        let mut asked = max.min(RECEIVE_MAX);
        let mut got = self.receive_once(asked, wait).await?;
        loop {
            let full = got.len() == asked;
            out.extend(got.into_iter().filter_map(|m| self.wrap(m)));
            if !full || out.len() >= max {
                return Ok(out);
            }
            // More is waiting: fill the batch without waiting.
            asked = (max - out.len()).min(RECEIVE_MAX);
            got = match self.receive_once(asked, Duration::ZERO).await {
                Ok(more) => more,
                Err(_) => return Ok(out),
            };
        }
    }
}

#[async_trait]
impl Settle for Settler {
    fn max_attempts(&self) -> u32 {
        self.shared.opts.max_attempts
    }

    async fn ack(&self, tokens: Vec<Token>) -> Result<(), QueueError> {
        let mut receipts = Vec::with_capacity(tokens.len());
        for token in tokens {
            let t = token.into_sqs()?;
            self.release(t.held);
            receipts.push(t.receipt);
        }
        let total = receipts.len();
        batch::delete(self.sqs(), self.ingest(), receipts)
            .await
            .map_err(|(failed, e)| {
                debug!(failed, total, error = %e, "deletes failed; SQS redelivers those messages");
                e
            })
    }

    async fn retry(&self, token: Token, _: Failed<'_>, delay: Duration) -> Result<(), QueueError> {
        let t = token.into_sqs()?;
        let _gate = self.visibility.lock().await;
        self.release(t.held);
        // SQS counts in whole seconds; at least one so it is not redelivered at once.
        let delay = Duration::from_secs(delay.as_secs_f64().ceil().max(1.0) as u64);
        self.change_visibility(&t.receipt, delay).await
    }

    async fn dead_letter(&self, token: Token, f: Failed<'_>) -> Result<(), QueueError> {
        let t = token.into_sqs()?;
        let body = Body::encode(f.payload);
        let mut send = self
            .sqs()
            .send_message()
            .queue_url(&self.shared.topology.dead)
            .message_body(body.text.clone())
            .set_message_attributes(codec::attributes(&body, t.key.as_ref()))
            .message_attributes(ATTEMPTS, codec::number_attr(f.attempt))
            .message_attributes(REASON, codec::reason_attr(f.reason));
        if let Some(group) = &t.group {
            send = send.message_attributes(GROUP, codec::string_attr(group));
        }
        if self.shared.settings.fifo {
            // A group per dead letter: listing the queue never waits on a group's lock;
            // the message id deduplicates a repeat after a crash.
            send = send
                .message_group_id(&t.message_id)
                .message_deduplication_id(&t.message_id);
        }
        // Held (its visibility extended) until the dead letter is confirmed; when that
        // fails, it comes back after its visibility timeout and is tried again.
        let sent = call(
            "sending to the dead-letter queue",
            CALL_TIMEOUT,
            send.send(),
        )
        .await;
        self.release(t.held);
        sent?;
        batch::delete(self.sqs(), self.ingest(), vec![t.receipt])
            .await
            .map_err(|(_, e)| e)
    }

    fn abandon(&self, token: Token) {
        let Ok(t) = token.into_sqs() else { return };
        let Some(settler) = self.me.upgrade() else {
            return;
        };
        self.runtime.spawn(async move {
            let _gate = settler.visibility.lock().await;
            settler.release(t.held);
            if let Err(e) = settler.change_visibility(&t.receipt, Duration::ZERO).await {
                debug!(error = %e, "handing back an abandoned delivery failed; SQS redelivers it after its visibility timeout");
            }
        });
    }
}
