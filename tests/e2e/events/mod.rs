//! Issue 14 end to end: edits, deletes, reactions and replies as log events ([`log`]),
//! the HTTP API's moderated delete ([`moderation`]), and read state with exact unread
//! counts across devices ([`read_state`]). Every scenario runs on the embedded topology
//! (one in-process gateway, the in-memory queue, SQLite) and on RabbitMQ with
//! PostgreSQL (two `gateway` processes, one `worker`), where each client of a pair sits
//! on another gateway.

mod log;
mod moderation;
mod read_state;

use crate::cluster::{Backend, Cluster};
use crate::helpers::*;
use crate::queue_contract::BROKER_FAULTS;
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;

/// Where a scenario runs: two gateway addresses (the same one twice on the embedded
/// topology) and the store they share.
pub struct Site {
    addrs: [SocketAddr; 2],
    db_url: String,
}

impl Site {
    /// A client connected as `user` to gateway `g` (0 or 1), its `hello` read.
    pub async fn client(&self, g: usize, user: &str) -> Client {
        let url = format!("ws://{}/ws?user={user}", self.addrs[g]);
        let mut c = Client::connect(&url).await;
        assert_eq!(c.recv().await["type"], "hello");
        c
    }

    /// A client of gateway `g` joined to `room`; returns it and its `joined` frame.
    pub async fn member(&self, g: usize, user: &str, room: &str) -> (Client, Value) {
        let mut c = self.client(g, user).await;
        let joined = c.join(room).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        (c, joined)
    }

    pub fn addr(&self, g: usize) -> SocketAddr {
        self.addrs[g]
    }

    pub async fn store(&self) -> store::Store {
        store::Store::connect(&self.db_url, Default::default())
            .await
            .unwrap()
    }
}

/// Runs `scenario` on one in-process gateway (memory queue, SQLite).
pub async fn on_embedded<F, Fut>(scenario: F)
where
    F: FnOnce(Site) -> Fut,
    Fut: Future<Output = ()>,
{
    let g = TestGateway::start().await;
    let site = Site {
        addrs: [g.addr, g.addr],
        db_url: g.db_url.clone(),
    };
    scenario(site).await;
}

/// Runs `scenario` on two gateways and a worker on RabbitMQ and PostgreSQL.
pub async fn on_rabbitmq<F, Fut>(scenario: F)
where
    F: FnOnce(Site) -> Fut,
    Fut: Future<Output = ()>,
{
    let _faults = BROKER_FAULTS.lock().await;
    let c = Cluster::start(2, 1, &[]).await;
    let site = Site {
        addrs: [c.addr(0), c.addr(1)],
        db_url: c.db.url.clone(),
    };
    scenario(site).await;
    c.destroy().await;
}

/// Runs `scenario` on two gateways and a worker on SQS (LocalStack) and PostgreSQL:
/// another ingest path (FIFO groups) and another signal lane (the gateways' queues).
pub async fn on_sqs<F, Fut>(scenario: F)
where
    F: FnOnce(Site) -> Fut,
    Fut: Future<Output = ()>,
{
    let c = Cluster::start_on(Backend::Sqs, 2, 1, &[]).await;
    let site = Site {
        addrs: [c.addr(0), c.addr(1)],
        db_url: c.db.url.clone(),
    };
    scenario(site).await;
    c.destroy().await;
}

/// A room of its own for one scenario.
pub fn fresh_room(prefix: &str) -> String {
    format!("{prefix}-{}", &unique_suffix()[..10])
}

/// Sends a command that carries an `id` and returns its `ack` or `error`.
pub async fn ask(c: &mut Client, cmd: Value) -> Value {
    let id = cmd["id"].as_str().expect("a command with an id").to_owned();
    c.send(cmd).await;
    c.recv_where(|v| (v["type"] == "ack" || v["type"] == "error") && v["id"] == id.as_str())
        .await
}

/// Asserts `reply` is the `ack` of a command.
pub fn acked(reply: &Value) {
    assert_eq!(reply["type"], "ack", "{reply}");
}

/// Asserts `reply` is an `error` with `code`.
pub fn refused(reply: &Value, code: &str) {
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some(code)),
        "{reply}"
    );
}

pub fn edit(room: &str, id: &str, target: u64, body: &str) -> Value {
    json!({"type":"edit","room":room,"id":id,"target":target,"body":body})
}

pub fn delete(room: &str, id: &str, target: u64) -> Value {
    json!({"type":"delete","room":room,"id":id,"target":target})
}

pub fn react(room: &str, id: &str, target: u64, emoji: &str, remove: bool) -> Value {
    json!({"type":"react","room":room,"id":id,"target":target,"emoji":emoji,"remove":remove})
}

/// The next log entry (`message` frame, any kind) of `room` with this `id`.
pub async fn entry(c: &mut Client, room: &str, id: &str) -> Value {
    c.recv_where(|v| v["type"] == "message" && v["room"] == room && v["id"] == id)
        .await
}

/// The seq of a log entry.
pub fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

/// Every log entry of `room` `c` gets, up to and including the one with id `last`.
pub async fn log_until(c: &mut Client, room: &str, last: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = c
            .recv_where(|v| v["type"] == "message" && v["room"] == room)
            .await;
        let done = v["id"] == last;
        out.push(v);
        if done {
            return out;
        }
    }
}

/// The `history` of `room` (newest 200 entries) as `c` gets it.
pub async fn history(c: &mut Client, room: &str) -> Vec<Value> {
    let r = format!("h-{}", unique_suffix());
    c.send(json!({"type":"history","room":room,"limit":200,"ref":r}))
        .await;
    let reply = c
        .recv_where(|v| v["type"] == "history" && v["ref"] == r.as_str())
        .await;
    reply["messages"].as_array().unwrap().clone()
}

/// `GET /api/rooms/{room}/messages?since=N` on gateway `addr`.
pub async fn http_messages(addr: SocketAddr, room: &str, since: u64) -> Vec<Value> {
    let r = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/rooms/{room}/messages?since={since}&limit=200"
        ))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["messages"].as_array().unwrap().clone()
}
