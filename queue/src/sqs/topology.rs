//! The queues of a prefix on SQS: their names, finding or creating them with their
//! attributes and redrive policy, their depth, listing and deleting them.

use super::Settings;
use super::connection::{CALL_TIMEOUT, Failure, TAG_PREFIX, TAG_ROLE, call};
use crate::QueueError;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use shared::ids::GatewayId;
use std::collections::HashMap;
use std::time::Duration;

/// Receives beyond `MAX_ATTEMPTS` before the redrive policy moves a message by itself
/// (a worker that crashed or stopped while holding it); normally the worker dead-letters
/// it at `MAX_ATTEMPTS` first.
pub const REDRIVE_MARGIN: u32 = 5;
const INGEST_RETENTION_SECS: u32 = 4 * 24 * 3600;
const DEAD_RETENTION_SECS: u32 = 14 * 24 * 3600;

/// The names of everything one prefix owns.
#[derive(Clone, Debug)]
pub(super) struct Names {
    pub(super) prefix: String,
    pub(super) ingest: String,
    pub(super) dead: String,
    /// What every gateway queue's name starts with (for listing them).
    pub(super) gateways: String,
}

impl Names {
    pub(super) fn new(settings: &Settings) -> Self {
        let p = &settings.prefix;
        let suffix = if settings.fifo { ".fifo" } else { "" };
        Self {
            ingest: format!("{p}-ingest{suffix}"),
            dead: format!("{p}-dead{suffix}"),
            gateways: format!("{p}--gw-"),
            prefix: p.clone(),
        }
    }

    /// `PREFIX--gw-<id>`: characters SQS refuses become `_`, cut to SQS's 80.
    pub(super) fn gateway(&self, gateway: &GatewayId) -> String {
        let mut name = self.gateways.clone();
        let id = gateway.as_str();
        let id = id
            .strip_prefix("gw-")
            .filter(|s| !s.is_empty())
            .unwrap_or(id);
        name.extend(id.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        }));
        name.truncate(80);
        name
    }
}

/// The queues a prefix needs, as SQS named them.
#[derive(Clone, Debug)]
pub(super) struct Topology {
    pub(super) ingest: String,
    pub(super) dead: String,
    /// The redrive policy's `maxReceiveCount` of the ingest queue, when it has one.
    pub(super) redrive_max: Option<u32>,
}

/// Finds the dead-letter and ingest queues, creating what is missing when allowed.
/// An error is a sentence for `QueueError::Connect`.
pub(super) async fn ensure_topology(
    sqs: &Client,
    settings: &Settings,
    names: &Names,
    max_attempts: u32,
) -> Result<Topology, String> {
    let dead_attrs = queue_attributes(settings.fifo, DEAD_RETENTION_SECS, settings.visibility);
    let dead = find_or_create(sqs, settings, &names.dead, dead_attrs, "dead").await?;
    let arn = attribute(sqs, &dead, QueueAttributeName::QueueArn)
        .await
        .map_err(|f| f.text)?
        .ok_or_else(|| format!("SQS did not say the ARN of {}", names.dead))?;
    let mut ingest_attrs =
        queue_attributes(settings.fifo, INGEST_RETENTION_SECS, settings.visibility);
    let redrive = serde_json::json!({
        "deadLetterTargetArn": arn,
        "maxReceiveCount": max_attempts.saturating_add(REDRIVE_MARGIN),
    });
    ingest_attrs.insert(QueueAttributeName::RedrivePolicy, redrive.to_string());
    if settings.fifo {
        // High-throughput FIFO: order and deduplication per room, not per queue.
        ingest_attrs.insert(
            QueueAttributeName::DeduplicationScope,
            "messageGroup".into(),
        );
        ingest_attrs.insert(
            QueueAttributeName::FifoThroughputLimit,
            "perMessageGroupId".into(),
        );
    }
    let ingest = find_or_create(sqs, settings, &names.ingest, ingest_attrs, "ingest").await?;
    let redrive_max = attribute(sqs, &ingest, QueueAttributeName::RedrivePolicy)
        .await
        .map_err(|f| f.text)?
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .and_then(|p| match &p["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .and_then(|n| u32::try_from(n).ok());
    if redrive_max.is_none() {
        tracing::warn!(queue = %names.ingest, "the ingest queue has no redrive policy: a message whose worker keeps crashing is never dead-lettered");
    }
    Ok(Topology {
        ingest,
        dead,
        redrive_max,
    })
}

fn queue_attributes(
    fifo: bool,
    retention_secs: u32,
    visibility: Duration,
) -> HashMap<QueueAttributeName, String> {
    let mut a = HashMap::new();
    if fifo {
        a.insert(QueueAttributeName::FifoQueue, "true".into());
        a.insert(
            QueueAttributeName::ContentBasedDeduplication,
            "false".into(),
        );
    }
    a.insert(
        QueueAttributeName::MessageRetentionPeriod,
        retention_secs.to_string(),
    );
    a.insert(
        QueueAttributeName::VisibilityTimeout,
        visibility.as_secs().to_string(),
    );
    a
}

/// The URL of queue `name`; created with `attributes` when missing and allowed. A queue
/// that exists is used as it is (its attributes are not changed).
async fn find_or_create(
    sqs: &Client,
    settings: &Settings,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
    role: &str,
) -> Result<String, String> {
    match queue_url(sqs, name).await {
        Ok(Some(url)) => return Ok(url),
        Ok(None) if !settings.create => {
            return Err(format!(
                "the queue {name} does not exist and queue creation is off (CREATE_QUEUES=false or ?create=false); create it (infra/aws/sqs.tf, infra/localstack/init-queues.sh) or allow creation"
            ));
        }
        Ok(None) => {}
        Err(f) => return Err(f.text),
    }
    let created = call(
        "creating a queue",
        CALL_TIMEOUT,
        sqs.create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes))
            .tags(TAG_ROLE, role)
            .tags(TAG_PREFIX, &settings.prefix)
            .send(),
    )
    .await;
    match created {
        Ok(out) => {
            let url = out.queue_url().unwrap_or_default().to_owned();
            tracing::info!(queue = name, %url, "created an SQS queue");
            Ok(url)
        }
        // Another process created it at the same moment (possibly with other settings):
        // use what is there.
        Err(f) => match queue_url(sqs, name).await {
            Ok(Some(url)) => Ok(url),
            _ => Err(format!("creating the queue {name} failed: {}", f.text)),
        },
    }
}

/// The URL of queue `name`, `None` when it does not exist.
pub(super) async fn queue_url(sqs: &Client, name: &str) -> Result<Option<String>, Failure> {
    match call(
        "looking up a queue",
        CALL_TIMEOUT,
        sqs.get_queue_url().queue_name(name).send(),
    )
    .await
    {
        Ok(out) => Ok(out.queue_url().map(str::to_owned)),
        Err(f) if f.missing_queue => Ok(None),
        Err(f) => Err(f),
    }
}

async fn attribute(
    sqs: &Client,
    url: &str,
    name: QueueAttributeName,
) -> Result<Option<String>, Failure> {
    let out = call(
        "reading queue attributes",
        CALL_TIMEOUT,
        sqs.get_queue_attributes()
            .queue_url(url)
            .attribute_names(name.clone())
            .send(),
    )
    .await?;
    Ok(out.attributes().and_then(|a| a.get(&name)).cloned())
}

/// Messages on a queue not yet deleted: waiting, in flight and delayed.
pub(super) async fn depth(sqs: &Client, url: &str, limit: Duration) -> Result<u64, QueueError> {
    let out = call(
        "reading the ingest queue's depth",
        limit,
        sqs.get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send(),
    )
    .await?;
    Ok(out
        .attributes()
        .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0))
}

/// URLs of the queues whose names start with `prefix`, at most `max`.
pub(super) async fn list_queues(
    sqs: &Client,
    prefix: &str,
    max: usize,
) -> Result<Vec<String>, Failure> {
    let mut urls = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = i32::try_from(max.saturating_sub(urls.len()).clamp(1, 1000)).unwrap_or(1000);
        let out = call(
            "listing queues",
            CALL_TIMEOUT,
            sqs.list_queues()
                .queue_name_prefix(prefix)
                .max_results(page)
                .set_next_token(token.take())
                .send(),
        )
        .await?;
        urls.extend(out.queue_urls().iter().cloned());
        match out.next_token() {
            Some(t) if urls.len() < max => token = Some(t.to_owned()),
            _ => break,
        }
    }
    urls.truncate(max);
    Ok(urls)
}

/// Deletes a queue; one that is already gone counts as deleted.
pub(super) async fn delete_queue(sqs: &Client, url: &str) -> Result<(), Failure> {
    match call(
        "deleting a queue",
        CALL_TIMEOUT,
        sqs.delete_queue().queue_url(url).send(),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(f) if f.missing_queue => Ok(()),
        Err(f) => Err(f),
    }
}

/// Deletes the ingest and dead-letter queues and every gateway queue of the prefix.
pub(super) async fn destroy(
    sqs: &Client,
    names: &Names,
    topology: &Topology,
) -> Result<(), QueueError> {
    let mut urls = list_queues(sqs, &names.gateways, 10_000).await?;
    urls.push(topology.ingest.clone());
    urls.push(topology.dead.clone());
    for url in &urls {
        delete_queue(sqs, url).await?;
    }
    tracing::info!(prefix = %names.prefix, queues = urls.len(), "deleted the SQS queues");
    Ok(())
}
