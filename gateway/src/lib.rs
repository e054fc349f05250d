//! The courier gateway: WebSocket clients and the HTTP API in front of the ingest queue,
//! delivering processed messages back to every member of a room.

pub mod access;
pub mod api;
pub mod app;
pub mod auth;
pub mod changes;
pub mod config;
pub mod error;
pub mod hub;
pub mod ops;
pub mod origin;
pub mod page;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod rooms_api;
pub mod serve;
pub mod web;
pub mod ws;

pub use config::GatewayConfig;
pub use error::Error;

use app::App;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use hub::Hub;
use queue::{Admin, FeedEvent, QueueConfig};
use serve::ServeLimits;
use shared::GatewayId;
use shared::shutdown::{self as sd, Shutdown};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

/// Serves on `listener` until `shutdown` fires, then drains: clients are told 1012,
/// embedded workers finish the in-memory queue, and it returns, at most `DRAIN_SECS`
/// after `shutdown` for what clients do.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let (queue_config, origins, metrics_listener) = prepare(&config).await?;
    let (queue, lane) = queue::connect_with_signals(&queue_config).await?;
    let store = Store::connect(&config.store.database_url, config.store.options()).await?;
    let gateway = GatewayId::generate();

    let (workers_stop, workers) = embedded_workers(&config, &queue_config, &queue, &store);

    let access = Arc::new(access::Access::new(
        store.clone(),
        config.limits.room_cache_size as usize,
        config.limits.room_cache_ttl(),
    ));
    let subscription = queue.subscribe(&gateway).await?;
    let hub = Arc::new(Hub::new(subscription.rooms, config.limits.reorder_hold()));
    // After the delivery feed: on SQS the signals arrive in its queue.
    let signals = lane
        .subscribe(&gateway, config.presence.signal_buffer as usize)
        .await?;
    let presence = presence::Presence::start(
        gateway.clone(),
        &config.presence,
        lane,
        signals,
        hub.clone(),
        shutdown.clone(),
    );
    let delivery = tokio::spawn(deliver(
        subscription.events,
        hub.clone(),
        access.clone(),
        config.limits.reorder_hold(),
        shutdown.clone(),
    ));
    let app = Arc::new(App {
        identity: auth::Identity::new(&config),
        origins,
        config,
        gateway,
        publish: queue.clone(),
        admin: queue.clone(),
        bus: queue.clone(),
        access,
        store,
        hub,
        presence,
        metrics: telemetry::metrics_handle(),
        shutdown: shutdown.clone(),
        connections: AtomicUsize::new(0),
        next_conn: AtomicU64::new(1),
    });
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(%addr, gateway = %app.gateway, queue = %shared::url::redact_url(&app.config.queue.queue_url), "gateway listening");

    let stopping = serve_clients(&app, listener, metrics_listener).await;
    drain(
        &app,
        queue.as_ref(),
        queue_config.url.is_volatile(),
        stopping + app.config.limits.drain(),
    )
    .await;
    app.presence.stop().await;
    workers_stop.fire();
    if let Some(w) = workers {
        match w.await {
            Ok(r) => r?,
            Err(e) => tracing::error!(error = %e, "embedded workers panicked"),
        }
    }
    delivery.abort();
    info!(gateway = %app.gateway, "gateway stopped");
    Ok(())
}

/// The embedded queues' workers, in this process; none with a broker, whose workers are
/// processes of their own, nor in a build without `embedded` ([`prepare`] refused the
/// embedded queues there).
fn embedded_workers(
    config: &GatewayConfig,
    queue_config: &QueueConfig,
    queue: &Arc<dyn queue::Queue>,
    store: &Store,
) -> (sd::Trigger, Option<JoinHandle<Result<(), Error>>>) {
    let (stop, shutdown) = sd::channel();
    #[cfg(feature = "embedded")]
    let workers = queue_config.url.is_embedded().then(|| {
        let w = worker::Worker::new(queue.clone(), store.clone(), config.worker.clone());
        tokio::spawn(async move { w.run(shutdown).await.map_err(Error::from) })
    });
    #[cfg(not(feature = "embedded"))]
    let workers = {
        let _unused = (config, queue_config, queue, store, shutdown);
        None
    };
    (stop, workers)
}

/// Checks the settings (`QUEUE_URL` parsed once, here), binds `METRICS_BIND`, and warns
/// when identities are self-chosen.
async fn prepare(
    config: &GatewayConfig,
) -> Result<(QueueConfig, origin::Origins, Option<TcpListener>), Error> {
    config.validate().map_err(Error::Config)?;
    let queue = config
        .queue
        .parse()
        .map_err(|e| Error::Config(e.to_string()))?;
    refuse_without_workers(cfg!(feature = "embedded"), &queue, &config.queue.queue_url)?;
    let origins =
        origin::Origins::parse(config.allowed_origins.as_deref()).map_err(Error::Config)?;
    let metrics = match config.metrics_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind {
                    addr: format!("METRICS_BIND {addr}"),
                    source,
                })?,
        ),
        None => None,
    };
    if config.jwt_secret.is_none() {
        tracing::warn!(
            "JWT_SECRET is not set: clients choose who they are (?user=NAME, or a guest name); set it for real identities"
        );
    }
    Ok((queue, origins, metrics))
}

/// An embedded queue is processed by the gateway's own workers: a build without them
/// (`workers_built` false) refuses it at start, as a build without a broker's feature
/// refuses that broker.
fn refuse_without_workers(
    workers_built: bool,
    queue: &QueueConfig,
    url: &str,
) -> Result<(), Error> {
    if workers_built || !queue.url.is_embedded() {
        return Ok(());
    }
    let refused = queue::QueueError::Unsupported {
        url: shared::url::redact_url(url),
        reason: "this build has no embedded workers (cargo feature embedded); run workers with a broker QUEUE_URL or rebuild with the feature".into(),
    };
    Err(Error::Config(refused.to_string()))
}

/// Serves clients (and `/metrics` on its own listener) until shutdown; returns when the
/// gateway began stopping.
async fn serve_clients(
    app: &Arc<App>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
) -> Instant {
    let limits = ServeLimits {
        listener: "client",
        max_open: app.config.limits.max_http_connections as usize,
        header_timeout: app.config.limits.http_header_timeout(),
        drain: app.config.limits.drain(),
    };
    let metrics = metrics.map(|l| {
        if let Ok(a) = l.local_addr() {
            info!(addr = %a, "gateway metrics listening");
        }
        // Scrapers only: a few connections are plenty.
        let limits = ServeLimits {
            listener: "metrics",
            max_open: 64,
            ..limits.clone()
        };
        let router = metrics_router(app.clone());
        tokio::spawn(serve::serve(l, router, limits, app.shutdown.clone()))
    });
    let stopping = serve::serve(listener, router(app.clone()), limits, app.shutdown.clone()).await;
    if let Some(m) = metrics {
        m.abort();
    }
    stopping
}

/// The gateway's routes over its state (`/metrics` only without `METRICS_BIND`).
pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/ws", get(ws::upgrade))
        .route(
            "/api/rooms/{room}/messages",
            post(api::post_message).get(api::get_messages),
        )
        .route(
            "/api/rooms/{room}",
            put(rooms_api::put_room).get(rooms_api::get_room),
        )
        .route(
            "/api/rooms/{room}/messages/{seq}",
            delete(api::delete_message),
        )
        .route("/api/rooms/{room}/presence", get(rooms_api::get_presence))
        .route(
            "/api/rooms/{room}/members/{user}",
            put(rooms_api::put_member).delete(rooms_api::delete_member),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    if app.config.metrics_bind.is_none() {
        r = r.route("/metrics", get(ops::metrics));
    }
    r.route("/", get(web::index))
        .route("/client.js", get(web::client_js))
        .route("/app.js", get(web::app_js))
        .route("/style.css", get(web::style_css))
        .layer(DefaultBodyLimit::max(ws::MAX_FRAME))
        .with_state(app)
}

/// The routes of the `METRICS_BIND` listener.
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .with_state(app)
}

/// Feeds deliveries from the queue to the hub, applies room changes, and releases held
/// messages on time.
async fn deliver(
    mut events: mpsc::Receiver<FeedEvent>,
    hub: Arc<Hub>,
    access: Arc<access::Access>,
    hold: Duration,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(hold.max(Duration::from_millis(10)) / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(FeedEvent::Message(m)) => hub.dispatch(m),
                Some(FeedEvent::Interrupted) => {
                    tracing::warn!("the delivery feed was interrupted; resyncing every client from the store");
                    hub.resync_all();
                }
                Some(FeedEvent::RoomChanged(room)) => {
                    // Off this loop: the re-check reads the store, deliveries go on.
                    let (hub, access) = (hub.clone(), access.clone());
                    tokio::spawn(async move { changes::recheck(&access, &hub, &room).await });
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

/// Waits for clients to leave; with the volatile queue, also for it to empty (a durable
/// queue keeps what is left for the next start); until `deadline` at most.
async fn drain(app: &App, queue: &dyn Admin, volatile: bool, deadline: Instant) {
    while app.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !volatile {
        return;
    }
    loop {
        let backlog = queue.backlog().await.unwrap_or(0);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> QueueConfig {
        queue::QueueSettings {
            queue_url: url.into(),
            max_attempts: 5,
            memory_queue_capacity: 1,
            delivery_buffer: 1,
            create_queues: true,
        }
        .parse()
        .unwrap()
    }

    #[test]
    fn a_build_without_workers_refuses_the_embedded_queues() {
        for url in ["memory", "sqlite://data/queue.db"] {
            assert!(refuse_without_workers(true, &parsed(url), url).is_ok());
        }
        let err =
            refuse_without_workers(false, &parsed("sqlite://q.db"), "sqlite://q.db").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: unsupported QUEUE_URL \"sqlite://q.db\": this build has no embedded workers (cargo feature embedded); run workers with a broker QUEUE_URL or rebuild with the feature"
        );
    }
}
