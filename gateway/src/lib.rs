//! The courier gateway: WebSocket clients and the HTTP API in front of the ingest queue,
//! delivering processed messages back to every member of a room.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod hub;
pub mod ops;
pub mod ratelimit;
pub mod web;
pub mod ws;

pub use config::GatewayConfig;
pub use error::Error;

use app::App;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use hub::Hub;
use shared::GatewayId;
use shared::queue::{self, FeedEvent, Queue, QueueUrl};
use shared::shutdown::{self as sd, Shutdown};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::info;
use worker::{Store, Worker};

/// Serves on `listener` until `shutdown` fires, then drains: clients are told 1012,
/// embedded workers finish the in-memory queue, and it returns.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let url = config.backend.queue_url()?;
    let queue = queue::connect(&url, &config.backend.queue_options()).await?;
    let store = Store::connect(&config.backend.database_url, config.worker.store_options()).await?;
    let gateway = GatewayId::generate();

    let (workers_stop, workers_sd) = sd::channel();
    let workers = url.is_embedded().then(|| {
        let w = Worker::new(
            queue.clone(),
            store.clone(),
            config.worker.clone(),
            config.backend.max_attempts,
        );
        tokio::spawn(w.run(workers_sd))
    });

    let subscription = queue.subscribe(&gateway).await?;
    let hub = Arc::new(Hub::new(subscription.rooms, config.limits.reorder_hold()));
    let delivery = tokio::spawn(deliver(
        subscription.events,
        hub.clone(),
        config.limits.reorder_hold(),
        shutdown.clone(),
    ));

    let app = Arc::new(App {
        identity: auth::Identity::new(config.jwt_secret.as_deref()),
        config,
        gateway,
        queue: queue.clone(),
        store,
        hub,
        metrics: ops::metrics_handle(),
        shutdown: shutdown.clone(),
        connections: AtomicUsize::new(0),
        next_conn: AtomicU64::new(1),
    });
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(%addr, gateway = %app.gateway, queue = %shared::config::redact_url(&app.config.backend.queue_url), "gateway listening");

    // Without TCP_NODELAY, a reply written right after another waits for the client's
    // delayed ACK (about 40 ms): every ack-then-message pair and every burst pays it.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    let served = axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown({
            let s = shutdown.clone();
            async move { s.fired().await }
        })
        .await;
    drain(&app, queue.as_ref(), url == QueueUrl::Memory).await;
    workers_stop.fire();
    if let Some(w) = workers {
        match w.await {
            Ok(r) => r?,
            Err(e) => tracing::error!(error = %e, "embedded workers panicked"),
        }
    }
    delivery.abort();
    info!(gateway = %app.gateway, "gateway stopped");
    served.map_err(Error::Serve)
}

/// The gateway's routes over its state.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route(
            "/api/rooms/{room}/messages",
            post(api::post_message).get(api::get_messages),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(web::index))
        .route("/client.js", get(web::client_js))
        .route("/app.js", get(web::app_js))
        .route("/style.css", get(web::style_css))
        .layer(DefaultBodyLimit::max(ws::MAX_FRAME))
        .with_state(app)
}

/// Feeds deliveries from the queue to the hub and releases held messages on time.
async fn deliver(
    mut events: mpsc::Receiver<FeedEvent>,
    hub: Arc<Hub>,
    hold: Duration,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(hold.max(Duration::from_millis(10)) / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(FeedEvent::Message(m)) => {
                    hub.dispatch(&m);
                }
                Some(FeedEvent::Interrupted) => {
                    tracing::warn!("the delivery feed was interrupted; resyncing every client from the store");
                    hub.resync_all();
                }
                None => {
                    tracing::error!("the delivery feed closed; no more live messages on this gateway");
                    return;
                }
            },
            _ = tick.tick() => hub.release_expired(),
            _ = shutdown.fired() => return,
        }
    }
}

/// Waits for clients to be closed, then (embedded topology) for the in-memory queue to
/// empty, so nothing acked is left unprocessed; bounded by `DRAIN_SECS`.
/// Waits for clients to leave; with the volatile queue, also for it to empty (a durable
/// queue keeps what is left for the next start).
async fn drain(app: &App, queue: &dyn Queue, volatile: bool) {
    let deadline = Instant::now() + app.config.limits.drain();
    while app.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !volatile {
        return;
    }
    loop {
        let backlog = queue.backlog().await.ok().flatten().unwrap_or(0);
        if backlog == 0 {
            return;
        }
        if Instant::now() >= deadline {
            tracing::error!(
                backlog,
                "stopping with messages still on the in-memory queue; they are lost (QUEUE_URL=sqlite://PATH keeps them)"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
