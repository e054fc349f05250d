//! The courier worker: consumes the ingest queue, enriches and stores each message exactly
//! once with a gapless per-room `seq` (through courier-store), and publishes the result
//! for delivery.

pub mod config;
pub mod dlq;
pub mod enrich;
pub mod error;
mod fanout;
mod listen;
pub mod pipeline;

pub use config::{DlqAction, WorkerCommand, WorkerConfig, WorkerSettings};
pub use error::Error;
pub use pipeline::Worker;

use shared::shutdown::Shutdown;

/// Runs the worker binary's job: a `dlq` command, or consuming until `shutdown` (with the
/// metrics listener when `METRICS_BIND` is set).
pub async fn run(config: WorkerConfig, shutdown: Shutdown) -> Result<(), Error> {
    let queue_config = config.queue.parse()?;
    if queue_config.url.is_volatile() {
        return Err(Error::Config(
            "QUEUE_URL=memory is an in-process queue that only the gateway can feed; \
             run the gateway alone (it embeds workers) or point both at amqp:// or sqs://"
                .into(),
        ));
    }
    let dlq = config
        .command
        .as_ref()
        .map(|WorkerCommand::Dlq { action }| action);
    if queue_config.url.is_embedded() && dlq.is_none() {
        return Err(Error::Config(
            "QUEUE_URL=sqlite://… is the gateway's embedded queue: the gateway runs its \
             workers itself (worker dlq … works on it); point both at amqp:// or sqs:// \
             to run workers apart"
                .into(),
        ));
    }
    let queue = queue::connect(&queue_config).await?;
    if let Some(action) = dlq {
        return dlq::run(queue.as_ref(), action, &mut std::io::stdout()).await;
    }
    let store = store::Store::connect(&config.store.database_url, config.store.options()).await?;
    let metrics = config.metrics_bind.map(|bind| {
        telemetry::metrics_handle();
        tokio::spawn(listen::serve(bind, queue.clone(), shutdown.clone()))
    });
    let result = Worker::new(queue, store, config.settings)
        .run(shutdown)
        .await;
    if let Some(m) = metrics {
        match m.await {
            Ok(Err(e)) => tracing::error!(error = %e, "metrics listener failed"),
            Err(e) => tracing::error!(error = %e, "metrics listener panicked"),
            Ok(Ok(())) => {}
        }
    }
    result
}
