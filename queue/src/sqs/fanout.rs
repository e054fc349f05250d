//! The delivery role's sending end. SQS has no fan-out, so a worker sends every processed
//! batch to every live gateway's queue (`PREFIX--gw-*`), packed: one SQS message holds
//! all the batch's messages (up to 256 KiB), so a batch costs one `SendMessage` per
//! gateway whatever its size. Each gateway keeps the rooms it has members in.
//!
//! The list of gateway queues is cached and re-listed (`ListQueues`) when it is older
//! than `DISCOVER_EVERY`; a new gateway waits that long (twice, plus a margin) before it
//! serves, so no worker sends a message it should have without it.
//!
//! A room change ([`announce`]) goes the same way, to every gateway queue: SQS has no
//! per-room routing, and a gateway without members in the room just drops its cache entry.

use super::Shared;
use super::codec::{Body, MAX_BODY};
use super::connection::{CALL_TIMEOUT, call};
use super::topology::list_queues;
use crate::frames::{self, Frame};
use crate::{Announcement, QueueError};
use shared::ids::RoomId;
use shared::message::StoredMessage;
use shared::sync::lock;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info};

/// Age at which the cached list of gateway queues is listed again.
pub(super) const DISCOVER_EVERY: Duration = Duration::from_secs(1);
/// Most gateway queues one prefix serves; more are ignored (and logged).
pub(super) const MAX_GATEWAYS: usize = 1000;
/// `SendMessage` calls in flight at once for one fan-out.
const SENDS_IN_FLIGHT: usize = 16;

/// The gateway queues this process knows of.
#[derive(Default)]
pub(super) struct Directory {
    /// This process's own gateway queues (name → URL), known without listing.
    local: Mutex<BTreeMap<String, String>>,
    /// The last listing; refreshed by one caller at a time.
    listed: tokio::sync::Mutex<Listed>,
}

#[derive(Default)]
struct Listed {
    urls: BTreeSet<String>,
    /// When the listing that produced `urls` was requested.
    at: Option<Instant>,
}

impl Directory {
    pub(super) fn add_local(&self, name: &str, url: &str) {
        lock(&self.local).insert(name.to_owned(), url.to_owned());
    }

    pub(super) fn remove_local(&self, name: &str) {
        lock(&self.local).remove(name);
    }

    pub(super) fn is_local(&self, url: &str) -> bool {
        lock(&self.local).values().any(|u| u == url)
    }

    /// Drops a queue that turned out to be gone until a listing shows it again.
    pub(super) async fn forget(&self, url: &str) {
        self.listed.lock().await.urls.remove(url);
    }

    /// Every known gateway queue, listed afresh when the listing is stale.
    async fn targets(&self, s: &Shared) -> Result<Vec<String>, QueueError> {
        let mut listed = self.listed.lock().await;
        if listed.at.is_none_or(|at| at.elapsed() >= DISCOVER_EVERY) {
            let asked = Instant::now();
            let urls = list_queues(&s.sqs, &s.names.gateways, MAX_GATEWAYS + 1).await?;
            if urls.len() > MAX_GATEWAYS {
                error!(
                    limit = MAX_GATEWAYS,
                    "more gateway queues than this backend serves; some gateways get no deliveries"
                );
            }
            let fresh: BTreeSet<String> = urls.into_iter().take(MAX_GATEWAYS).collect();
            if fresh != listed.urls {
                info!(gateways = fresh.len(), "the set of gateway queues changed");
            }
            listed.urls = fresh;
            listed.at = Some(asked);
        }
        let mut all = listed.urls.clone();
        all.extend(lock(&self.local).values().cloned());
        Ok(all.into_iter().collect())
    }
}

/// Sends `messages` to every gateway queue; Ok once SQS accepted them for each one that
/// still exists.
pub(super) async fn fan_out(
    s: &Arc<Shared>,
    messages: &[Arc<StoredMessage>],
) -> Result<(), QueueError> {
    if messages.is_empty() {
        return Ok(());
    }
    send_all(s, Arc::new(pack(messages)?)).await
}

/// Sends one body saying `room` changed to every gateway queue.
pub(super) async fn announce(s: &Arc<Shared>, room: &RoomId) -> Result<(), QueueError> {
    let body = Body::encode(&Announcement::encode(room)?);
    send_all(s, Arc::new(vec![body])).await
}

/// Sends every body to every gateway queue; Ok once SQS accepted them for each one that
/// still exists.
pub(super) async fn send_all(s: &Arc<Shared>, bodies: Arc<Vec<Body>>) -> Result<(), QueueError> {
    let targets = s.directory.targets(s).await?;
    let mut sends = JoinSet::new();
    let mut first_error = None;
    for url in targets {
        for i in 0..bodies.len() {
            while sends.len() >= SENDS_IN_FLIGHT {
                collect(s, sends.join_next().await, &mut first_error).await;
            }
            let (s2, bodies, url) = (s.clone(), bodies.clone(), url.clone());
            sends.spawn(async move {
                let body = &bodies[i];
                let sent = call(
                    "sending to a gateway queue",
                    CALL_TIMEOUT,
                    s2.sqs
                        .send_message()
                        .queue_url(&url)
                        .message_body(body.text.clone())
                        .set_message_attributes(body.attributes())
                        .send(),
                )
                .await;
                (url, sent.map(|_| ()))
            });
        }
    }
    while let Some(done) = sends.join_next().await {
        collect(s, Some(done), &mut first_error).await;
    }
    first_error.map_or(Ok(()), Err)
}

type Sent = (String, Result<(), super::connection::Failure>);

async fn collect(
    s: &Shared,
    done: Option<Result<Sent, tokio::task::JoinError>>,
    first_error: &mut Option<QueueError>,
) {
    match done {
        Some(Ok((_, Ok(())))) | None => {}
        // A gateway that stopped (and deleted its queue) or was swept: nothing is owed.
        Some(Ok((url, Err(f)))) if f.missing_queue => {
            debug!(%url, "a gateway queue is gone; dropping it");
            s.directory.forget(&url).await;
        }
        Some(Ok((_, Err(f)))) => {
            first_error.get_or_insert(f.into());
        }
        Some(Err(e)) => {
            first_error.get_or_insert(QueueError::Unavailable(format!("fan-out task: {e}")));
        }
    }
}

/// Packs messages into as few bodies as fit: newline-delimited message frames
/// ([`crate::frames`]) of at most `MAX_BODY` bytes. A message that alone exceeds it is
/// left out (gateways fill the gap from the store).
fn pack(messages: &[Arc<StoredMessage>]) -> Result<Vec<Body>, QueueError> {
    let bodies: Vec<Body> = frames::pack(messages, MAX_BODY)
        .iter()
        .map(|b| Body::encode(b))
        .collect();
    if bodies.iter().all(|b| b.len() <= MAX_BODY) {
        return Ok(bodies);
    }
    // Base64 grows a body by a third: split the batch until every body fits.
    if let [m] = messages {
        error!(room = %m.room, seq = m.seq, "a message is too big for an SQS body; gateways fill it in from the store");
        return Ok(Vec::new());
    }
    let (a, b) = messages.split_at(messages.len() / 2);
    let mut out = pack(a)?;
    out.extend(pack(b)?);
    Ok(out)
}

/// The frames of one packed body.
pub(super) fn unpack(payload: &[u8]) -> Result<Vec<Frame>, frames::NotFrames> {
    frames::unpack(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built from its wire form, so fields added later with defaults need no change here.
    fn msg(seq: u64, body: &str) -> Arc<StoredMessage> {
        let v = serde_json::json!({
            "room": "r", "seq": seq, "id": format!("m{seq}"), "from": "u", "body": body,
            "sent_at": shared::time::Timestamp::now(),
            "enriched": shared::message::Enriched::default(),
        });
        Arc::new(serde_json::from_value(v).expect("a stored message from JSON"))
    }

    #[test]
    fn packs_into_bodies_that_fit_and_unpacks_in_order() {
        let small: Vec<_> = (1..=50).map(|i| msg(i, "hello")).collect();
        let bodies = pack(&small).unwrap();
        assert_eq!(bodies.len(), 1);
        let back = unpack(bodies[0].text.as_bytes()).unwrap();
        assert_eq!(
            back.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=50).collect::<Vec<_>>()
        );
        let big: Vec<_> = (1..=10).map(|i| msg(i, &"x".repeat(60_000))).collect();
        let bodies = pack(&big).unwrap();
        assert!(bodies.len() >= 3, "{}", bodies.len());
        assert!(bodies.iter().all(|b| b.len() <= MAX_BODY));
        let seqs: Vec<u64> = bodies
            .iter()
            .flat_map(|b| unpack(b.text.as_bytes()).unwrap())
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        let odd: Vec<_> = (1..=10)
            .map(|i| msg(i, &"\u{FFFF}".repeat(20_000)))
            .collect();
        let bodies = pack(&odd).unwrap();
        assert!(bodies.iter().all(|b| b.base64 && b.len() <= MAX_BODY));
    }
}
