//! Deleting the queues of gateways that died without deleting their own (kill -9, lost
//! host). Every process sweeps now and then: a gateway queue of this prefix whose
//! heartbeat tag is older than the gateway TTL is deleted. Only queues tagged as this
//! prefix's gateway queues are ever touched.

use super::Shared;
use super::connection::{CALL_TIMEOUT, TAG_HEARTBEAT, TAG_PREFIX, TAG_ROLE, call, unix_now};
use super::fanout::MAX_GATEWAYS;
use super::topology::{delete_queue, list_queues};
use crate::QueueError;
use aws_sdk_sqs::types::QueueAttributeName;
use std::hash::{BuildHasher, Hasher};
use std::sync::Weak;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Sweeps every half TTL (with jitter, so processes do not sweep in step) until the
/// queue is dropped.
pub(super) async fn run(shared: Weak<Shared>) {
    loop {
        let Some(every) = shared.upgrade().map(|s| s.settings.gateway_ttl / 2) else {
            return;
        };
        tokio::time::sleep(every + jitter(every / 4)).await;
        let Some(s) = shared.upgrade() else { return };
        if let Err(e) = sweep_once(&s).await {
            debug!(error = %e, "sweeping dead gateway queues failed; trying again later");
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    max.mul_f64((h.finish() % 1000) as f64 / 1000.0)
}

/// Deletes the stale gateway queues of this prefix; returns how many.
pub(super) async fn sweep_once(s: &Shared) -> Result<usize, QueueError> {
    let urls = list_queues(&s.sqs, &s.names.gateways, MAX_GATEWAYS).await?;
    let now = unix_now();
    let ttl = s.settings.gateway_ttl.as_secs();
    let mut deleted = 0;
    for url in urls {
        if s.directory.is_local(&url) {
            continue;
        }
        // One queue that cannot be read (gone meanwhile, not ours to read) does not stop
        // the sweep of the others.
        let age = match heartbeat_age(s, &url, now).await {
            Ok(Some(age)) => age,
            Ok(None) => continue,
            Err(e) => {
                debug!(%url, error = %e, "reading a gateway queue's heartbeat failed");
                continue;
            }
        };
        if age <= ttl {
            continue;
        }
        match delete_queue(&s.sqs, &url).await {
            Ok(()) => {
                info!(%url, silent_for_s = age, "deleted the queue of a gateway that stopped");
                s.directory.forget(&url).await;
                deleted += 1;
            }
            Err(e) => warn!(%url, error = %e, "deleting a dead gateway's queue failed"),
        }
    }
    Ok(deleted)
}

/// Seconds since the queue's heartbeat (or creation, before its first heartbeat); `None`
/// for a queue that is not this prefix's gateway queue, or is already gone.
async fn heartbeat_age(s: &Shared, url: &str, now: u64) -> Result<Option<u64>, QueueError> {
    let tags = match call(
        "reading a gateway queue's tags",
        CALL_TIMEOUT,
        s.sqs.list_queue_tags().queue_url(url).send(),
    )
    .await
    {
        Ok(out) => out.tags.unwrap_or_default(),
        Err(f) if f.missing_queue => return Ok(None),
        Err(f) => return Err(f.into()),
    };
    if tags.get(TAG_ROLE).map(String::as_str) != Some("gateway")
        || tags.get(TAG_PREFIX) != Some(&s.names.prefix)
    {
        return Ok(None);
    }
    let beat = match tags.get(TAG_HEARTBEAT).and_then(|t| t.parse::<u64>().ok()) {
        Some(b) => b,
        None => {
            let created = call(
                "reading a gateway queue's age",
                CALL_TIMEOUT,
                s.sqs
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::CreatedTimestamp)
                    .send(),
            )
            .await;
            match created {
                Ok(out) => out
                    .attributes()
                    .and_then(|a| a.get(&QueueAttributeName::CreatedTimestamp))
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(now),
                Err(f) if f.missing_queue => return Ok(None),
                Err(f) => return Err(f.into()),
            }
        }
    };
    Ok(Some(now.saturating_sub(beat)))
}
