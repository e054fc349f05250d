//! The SQS client and what every role shares: building it from aws-config's standard
//! chain, and bounded calls that turn SDK errors into `QueueError`.

use crate::QueueError;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
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
    // Every SQS request is billed: counted per kind, so operators and the benchmark can
    // see what a message costs in requests.
    metrics::counter!("courier_sqs_requests_total", "call" => what.to_owned()).increment(1);
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failure(what, &e)),
        Err(_) => Err(Failure {
            text: format!("{what}: no answer from SQS within {limit:?}"),
            missing_queue: false,
        }),
    }
}

pub(super) fn failure<E, R>(what: &str, e: &SdkError<E, R>) -> Failure
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

/// Seconds since the epoch, for heartbeats.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
