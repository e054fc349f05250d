//! The courier worker: consumes the ingest queue, enriches and stores each message exactly
//! once with a gapless per-room `seq`, and publishes the result for delivery.

pub mod config;
pub mod enrich;
pub mod error;
pub mod pipeline;
pub mod store;

pub use config::{WorkerConfig, WorkerSettings};
pub use error::Error;
pub use pipeline::Worker;
pub use store::Store;

use shared::queue::{self, QueueUrl};
use shared::shutdown::Shutdown;

/// Runs the worker binary's job: connect to queue and store, consume until `shutdown`.
pub async fn run(config: WorkerConfig, shutdown: Shutdown) -> Result<(), Error> {
    let url = config.backend.queue_url()?;
    if url == QueueUrl::Memory {
        return Err(Error::Config(
            "QUEUE_URL=memory is an in-process queue that only the gateway can feed; \
             run the gateway alone (it embeds workers) or point both at amqp:// or sqs://"
                .into(),
        ));
    }
    let queue = queue::connect(&url, &config.backend.queue_options()).await?;
    let store = Store::connect(
        &config.backend.database_url,
        config.settings.store_options(),
    )
    .await?;
    Worker::new(queue, store, config.settings)
        .run(shutdown)
        .await
}
