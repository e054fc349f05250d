//! Shared helpers: a real gateway on 127.0.0.1:0 with its own SQLite file, and a real
//! WebSocket client that keeps frames it was not waiting for.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use gateway::GatewayConfig;
use serde_json::{Value, json};
use shared::shutdown::{self, Trigger};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(15);
pub const API_TOKEN: &str = "test-api-token";

/// A gateway running in this test process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub db_url: String,
    trigger: Option<Trigger>,
    task: Option<JoinHandle<Result<(), gateway::Error>>>,
    _dir: Option<tempfile::TempDir>,
}

/// Settings for tests: its own database, the HTTP API on, generous rate limits.
pub fn config(db_url: &str) -> GatewayConfig {
    let mut c = GatewayConfig::defaults();
    c.queue.queue_url = "memory".into();
    c.store.database_url = db_url.to_owned();
    c.api_token = Some(API_TOKEN.into());
    c.jwt_secret = None;
    c.limits.rate_per_sec = 10_000.0;
    c.limits.rate_burst = 10_000;
    c.limits.drain_secs = 5;
    c
}

impl TestGateway {
    /// A gateway with default test settings and a fresh database.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A gateway with a fresh database and settings changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}/chat.db", dir.path().display());
        let mut g = Self::start_on(&db_url, tweak).await;
        g._dir = Some(dir);
        g
    }

    /// A gateway over an existing database URL.
    pub async fn start_on(db_url: &str, tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let mut c = config(db_url);
        tweak(&mut c);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, sd) = shutdown::channel();
        let task = tokio::spawn(gateway::run(c, listener, sd));
        let g = Self {
            addr,
            db_url: db_url.to_owned(),
            trigger: Some(trigger),
            task: Some(task),
            _dir: None,
        };
        g.wait_ready().await;
        g
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = http.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "gateway never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    /// A client connected as `user`, its `hello` already read.
    pub async fn client(&self, user: &str) -> Client {
        let mut c = Client::connect(&self.ws_url(&format!("?user={user}"))).await;
        let hello = c.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["user"], user);
        c
    }

    /// Stops it the graceful way and waits until it returned.
    pub async fn stop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(task) = self.task.take() {
            timeout(Duration::from_secs(30), task)
                .await
                .expect("gateway stops")
                .unwrap()
                .unwrap();
        }
    }

    /// The store of this gateway, opened beside it.
    pub async fn store(&self) -> store::Store {
        store::Store::connect(&self.db_url, Default::default())
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post(&self, room: &str, body: Value) -> reqwest::Response {
        post_message(self.addr, room, body).await
    }
}

/// `POST /api/rooms/{room}/messages` to the gateway at `addr`, with the API token.
pub async fn post_message(addr: SocketAddr, room: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}/api/rooms/{room}/messages"))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A port nothing listens on right now, for servers a test starts on a port of its own.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client over tokio-tungstenite. Its halves are public so a test can send
/// and read at the same time, as a real client does.
pub struct Client {
    pub sink: SplitSink<Ws, Message>,
    pub rx: Reader,
}

/// The reading half: keeps frames a test was not waiting for.
pub struct Reader {
    stream: SplitStream<Ws>,
    kept: VecDeque<Value>,
}

impl std::ops::Deref for Client {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        &self.rx
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Reader {
        &mut self.rx
    }
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Self::from_ws(ws)
    }

    pub fn from_ws(ws: Ws) -> Self {
        let (sink, stream) = ws.split();
        Self {
            sink,
            rx: Reader {
                stream,
                kept: VecDeque::new(),
            },
        }
    }

    /// A client whose socket receive buffer is tiny, so a reader that stops reading
    /// pushes back on the server quickly.
    pub async fn connect_small_buffer(addr: SocketAddr, url: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
        Self::from_ws(ws)
    }

    pub async fn send(&mut self, v: Value) {
        send(&mut self.sink, v).await;
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.sink.send(m).await.unwrap();
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type":"join","room":room})).await;
        self.recv_where(|v| v["type"] == "joined" && v["room"] == room)
            .await
    }

    pub async fn join_since(&mut self, room: &str, since: u64) -> Value {
        self.send(json!({"type":"join","room":room,"since":since}))
            .await;
        self.recv_where(|v| v["type"] == "joined" && v["room"] == room)
            .await
    }

    /// Every frame up to the answer of a `ping` (frames kept earlier first): what the
    /// server had sent by then.
    pub async fn frames_until_pong(&mut self) -> Vec<Value> {
        let r = format!("until-{}", unique_suffix());
        self.send(json!({"type":"ping","ref":r})).await;
        let mut frames = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" && v["ref"] == r.as_str() {
                return frames;
            }
            frames.push(v);
        }
    }

    /// Sends and waits for the ack (or the error) of this id.
    pub async fn say(&mut self, room: &str, id: &str, body: &str) -> Value {
        self.send(json!({"type":"send","room":room,"id":id,"body":body}))
            .await;
        self.recv_where(|v| (v["type"] == "ack" || v["type"] == "error") && v["id"] == id)
            .await
    }
}

pub async fn send(sink: &mut SplitSink<Ws, Message>, v: Value) {
    sink.send(Message::text(v.to_string())).await.unwrap();
}

impl Reader {
    /// The next JSON frame from the socket (kept frames first).
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.kept.pop_front() {
            return v;
        }
        self.read().await
    }

    async fn read(&mut self) -> Value {
        loop {
            let m = timeout(WAIT, self.stream.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("ok");
            match m {
                Message::Text(t) => return serde_json::from_str(&t).expect("server sends JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The first frame matching `pred`; frames before it are kept for later.
    pub async fn recv_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.kept.iter().position(&pred) {
            return self.kept.remove(i).unwrap();
        }
        loop {
            let v = self.read().await;
            if pred(&v) {
                return v;
            }
            self.kept.push_back(v);
        }
    }

    pub async fn recv_type(&mut self, t: &str) -> Value {
        self.recv_where(|v| v["type"] == t).await
    }

    /// True when nothing arrives within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> bool {
        self.kept.is_empty() && timeout(d, self.read()).await.is_err()
    }

    /// The next `message` event of `room`.
    pub async fn message(&mut self, room: &str) -> Value {
        self.recv_where(|v| v["type"] == "message" && v["room"] == room)
            .await
    }

    /// The next JSON frame, or the close code when the server closes instead.
    pub async fn recv_or_close(&mut self) -> Result<Value, u16> {
        if let Some(v) = self.kept.pop_front() {
            return Ok(v);
        }
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(&t).expect("server sends JSON"));
                }
                Some(Ok(Message::Close(f))) => return Err(f.map_or(1005, |f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket failed before a close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// The next JSON frame, or `None` once the connection is gone in any way (closed,
    /// reset, silent for the test wait).
    pub async fn next_or_gone(&mut self) -> Option<Value> {
        if let Some(v) = self.kept.pop_front() {
            return Some(v);
        }
        loop {
            match timeout(WAIT, self.stream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            match timeout(WAIT, self.stream.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket failed before a close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }
}

/// A temporary folder path for tests that manage their own database file.
pub fn temp_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/chat.db", dir.path().display());
    (dir, url)
}

/// The path of a workspace binary built by `cargo build`.
pub fn bin(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let path = p.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` from the workspace root (it builds the binaries) or `cargo build --bins` first",
        path.display()
    );
    path
}

/// The PostgreSQL server tests use (`TEST_POSTGRES_URL`, default the local one).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own on the test PostgreSQL server, dropped when this is dropped.
pub struct TempPostgres {
    pub url: String,
    name: String,
}

impl TempPostgres {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let name = format!("courier_test_{}", unique_suffix());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is not reachable (the README's test command starts it): {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(b, _)| b)
            .to_owned();
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let admin = postgres_admin_url();
        let name = self.name.clone();
        // Dropping runs outside any runtime; a short thread of its own does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Runs `sql` on the database at `url` (SQLite file or PostgreSQL) on a connection of
/// its own, beside whatever process has it open: how tests install failure triggers.
pub async fn exec_sql(url: &str, sql: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = shared::sqlite::rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql} on {url}: {e}"));
    } else {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {url}: {e}"));
    }
}

/// A random hex string for names that must not collide between tests.
pub fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}
