//! The SQS client and what every role shares: building it from aws-config's standard
//! chain, bounded calls that turn SDK errors into `QueueError`, and finding or creating
//! the queues of a prefix.

use super::{Names, Settings};
use crate::QueueError;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// Longest any one SQS call (the SDK's own retries included) may take before the caller
/// gets `Unavailable`, so nothing hangs on an endpoint that stopped answering.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Tags every queue this backend creates carries, so a sweep never touches another's.
pub(super) const TAG_ROLE: &str = "courier-role";
pub(super) const TAG_PREFIX: &str = "courier-prefix";
pub(super) const TAG_HEARTBEAT: &str = "courier-heartbeat";
/// Receives beyond `MAX_ATTEMPTS` before the redrive policy moves a message by itself
/// (a worker that crashed or stopped while holding it); normally the worker dead-letters
/// it at `MAX_ATTEMPTS` first.
pub const REDRIVE_MARGIN: u32 = 5;
const INGEST_RETENTION_SECS: u32 = 4 * 24 * 3600;
const DEAD_RETENTION_SECS: u32 = 14 * 24 * 3600;

/// Settings that take precedence over aws-config's standard chain (for tools and tests
/// that must not depend on the process environment). Empty: the chain decides.
#[derive(Clone, Debug, Default)]
pub struct AwsOverrides {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Access key id and secret access key.
    pub static_credentials: Option<(String, String)>,
}

/// Where the client goes, for error messages and logs.
pub(super) struct Whereabouts {
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
}

impl fmt::Display for Whereabouts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = self
            .endpoint
            .as_deref()
            .unwrap_or("the AWS regional endpoint");
        let region = self.region.as_deref().unwrap_or("none");
        write!(f, "endpoint {endpoint}, region {region}")
    }
}

/// The SQS client from the standard chain (environment, profile, container and instance
/// roles; `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SQS` and `AWS_REGION` included), with
/// short retries so an outage surfaces as `Unavailable` within about a second.
pub(super) async fn build(overrides: &AwsOverrides) -> (Client, Whereabouts) {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = &overrides.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = &overrides.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some((key, secret)) = &overrides.static_credentials {
        let credentials = aws_sdk_sqs::config::Credentials::new(key, secret, None, None, "courier");
        loader = loader.credentials_provider(credentials);
    }
    let config = loader
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_millis(500)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .build(),
        )
        // Long polls legitimately stay silent for up to 20 s.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await;
    let endpoint = overrides.endpoint_url.clone().or_else(|| {
        std::env::var("AWS_ENDPOINT_URL_SQS")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| config.endpoint_url().map(str::to_owned))
    });
    let whereabouts = Whereabouts {
        endpoint,
        region: config.region().map(|r| r.to_string()),
    };
    (Client::new(&config), whereabouts)
}

/// A failed SQS call, classified.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) text: String,
    /// The queue does not exist (deleted, or never created).
    pub(super) missing_queue: bool,
}

impl From<Failure> for QueueError {
    fn from(f: Failure) -> Self {
        QueueError::Unavailable(f.text)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Awaits one SQS call, bounded by `limit`, classifying its failure.
pub(super) async fn call<T, E, R, F>(what: &str, limit: Duration, fut: F) -> Result<T, Failure>
where
    F: Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failure(what, &e)),
        Err(_) => Err(Failure {
            text: format!("{what}: no answer from SQS within {limit:?}"),
            missing_queue: false,
        }),
    }
}

fn failure<E, R>(what: &str, e: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    let code = e.code().unwrap_or_default();
    let text = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{what}: {code}: {message}"),
        (Some(code), None) => format!("{what}: {code}"),
        _ => format!("{what}: {}", DisplayErrorContext(e)),
    };
    Failure {
        text,
        missing_queue: is_missing_queue_code(code),
    }
}

/// SQS answers a missing queue with `QueueDoesNotExist` (JSON protocol) or
/// `AWS.SimpleQueueService.NonExistentQueue` (query-compatible code).
pub(super) fn is_missing_queue_code(code: &str) -> bool {
    code.contains("QueueDoesNotExist") || code.contains("NonExistentQueue")
}

/// Seconds as SQS wants them.
pub(super) fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
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

/// Seconds since the epoch, for heartbeats.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
