//! Multi-process harness: real `gateway` and `worker` binaries on RabbitMQ and
//! PostgreSQL, each cluster with its own queue prefix and its own database.

use crate::helpers::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The RabbitMQ server tests use (`TEST_AMQP_URL`, default the local one).
pub fn amqp_base_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The queue a cluster runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    RabbitMq,
    /// SQS at `AWS_ENDPOINT_URL` (LocalStack by default): a short visibility timeout so
    /// a killed worker's messages come back within seconds, and a short gateway TTL so
    /// a killed gateway's queue is swept within seconds.
    Sqs,
}

/// A running binary whose stderr (JSON logs) is kept for diagnosis.
pub struct Proc {
    pub name: String,
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub addr: Option<SocketAddr>,
}

impl Proc {
    fn spawn(name: &str, binary: &str, envs: &[(String, String)]) -> Self {
        Self::spawn_in(name, binary, envs, None)
    }

    /// The same, started in `dir` (relative paths in its settings are resolved there).
    pub fn spawn_in(
        name: &str,
        binary: &str,
        envs: &[(String, String)],
        dir: Option<&std::path::Path>,
    ) -> Self {
        let mut cmd = Command::new(bin(binary));
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.env_clear()
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "gateway listening"
                    && let Some(a) = v["addr"].as_str()
                {
                    let _ = tx.send(a.parse::<SocketAddr>().unwrap());
                }
                let mut k = kept.lock().unwrap();
                if k.len() < 5000 {
                    k.push(line);
                }
            }
        });
        let addr = (binary == "gateway").then(|| {
            rx.recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!(
                        "{name} never listened; its log:\n{}",
                        logs.lock().unwrap().join("\n")
                    )
                })
        });
        Self {
            name: name.to_owned(),
            child,
            logs,
            addr,
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not exit within 30 s of SIGTERM; log:\n{}",
            self.name,
            self.logs.lock().unwrap().join("\n")
        );
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The process id, for `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, without waiting.
    pub fn sigterm(&self) {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }

    /// Its exit status, once it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Gateways and workers sharing one queue prefix and one PostgreSQL database.
pub struct Cluster {
    pub backend: Backend,
    pub prefix: String,
    pub queue_url: String,
    pub db: TempPostgres,
    pub gateways: Vec<Proc>,
    pub workers: Vec<Proc>,
    extra: Vec<(String, String)>,
}

impl Cluster {
    /// `gateways` gateways and `workers` workers; `extra` settings go to every process.
    pub async fn start(gateways: usize, workers: usize, extra: &[(&str, &str)]) -> Self {
        Self::start_on(Backend::RabbitMq, gateways, workers, extra).await
    }

    /// The same on the queue `backend`.
    pub async fn start_on(
        backend: Backend,
        gateways: usize,
        workers: usize,
        extra: &[(&str, &str)],
    ) -> Self {
        let prefix = format!("cl-{}", unique_suffix());
        let queue_url = match backend {
            Backend::RabbitMq => format!("{}?prefix={prefix}", amqp_base_url()),
            Backend::Sqs => format!("sqs://{prefix}?visibility=5&gateway_ttl=8"),
        };
        let db = TempPostgres::create().await;
        let mut c = Self {
            backend,
            prefix,
            queue_url,
            db,
            gateways: Vec::new(),
            workers: Vec::new(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for _ in 0..workers {
            c.add_worker();
        }
        for _ in 0..gateways {
            c.add_gateway().await;
        }
        c
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut e = vec![
            ("QUEUE_URL".to_owned(), self.queue_url.clone()),
            ("DATABASE_URL".to_owned(), self.db.url.clone()),
            ("API_TOKEN".to_owned(), API_TOKEN.to_owned()),
            ("RATE_PER_SEC".to_owned(), "10000".to_owned()),
            ("RATE_BURST".to_owned(), "10000".to_owned()),
            ("BIND".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        if self.backend == Backend::Sqs {
            e.extend(crate::sqs::aws_env());
        }
        e.extend(self.extra.iter().cloned());
        e
    }

    pub fn add_worker(&mut self) -> usize {
        self.add_worker_with(&[])
    }

    /// A worker with settings of its own on top of the cluster's.
    pub fn add_worker_with(&mut self, extra: &[(&str, &str)]) -> usize {
        let name = format!("worker-{}", self.workers.len());
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.workers.push(Proc::spawn(&name, "worker", &env));
        self.workers.len() - 1
    }

    /// Runs `worker ARGS…` against this cluster's queue; returns (success, stdout, stderr).
    pub fn worker_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin("worker"))
            .args(args)
            .env_clear()
            .envs(self.env())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    pub async fn add_gateway(&mut self) -> usize {
        let name = format!("gateway-{}", self.gateways.len());
        let p = Proc::spawn(&name, "gateway", &self.env());
        wait_ready(p.addr.unwrap()).await;
        self.gateways.push(p);
        self.gateways.len() - 1
    }

    pub fn addr(&self, gateway: usize) -> SocketAddr {
        self.gateways[gateway].addr.unwrap()
    }

    /// A client on gateway `g`, its hello read.
    pub async fn client(&self, g: usize, user: &str) -> Client {
        let mut c = Client::connect(&format!("ws://{}/ws?user={user}", self.addr(g))).await;
        assert_eq!(c.recv().await["type"], "hello");
        c
    }

    /// The store, opened beside the cluster.
    pub async fn store(&self) -> store::Store {
        store::Store::connect(&self.db.url, Default::default())
            .await
            .unwrap()
    }

    /// The cluster's queue, opened beside it.
    pub async fn queue(&self) -> std::sync::Arc<dyn queue::Queue> {
        let opts = queue::QueueOptions::default();
        match self.backend {
            Backend::RabbitMq => std::sync::Arc::new(
                crate::queue_contract::open(&self.queue_url, &opts)
                    .await
                    .unwrap(),
            ),
            Backend::Sqs => std::sync::Arc::new(
                crate::sqs::open(&self.queue_url, &opts, &crate::sqs::overrides())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Every process's log, for a failing assertion's message.
    pub fn logs(&self) -> String {
        self.gateways
            .iter()
            .chain(&self.workers)
            .map(|p| format!("--- {}\n{}", p.name, p.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every process and deletes the cluster's queues and exchanges.
    pub async fn destroy(mut self) {
        self.gateways.clear();
        self.workers.clear();
        let opts = queue::QueueOptions::default();
        if self.backend == Backend::Sqs {
            let aws = crate::sqs::overrides();
            match crate::sqs::open(&self.queue_url, &opts, &aws).await {
                Ok(q) => {
                    if let Err(e) = q.destroy().await {
                        eprintln!("deleting the cluster's SQS queues: {e}");
                    }
                }
                Err(e) => eprintln!("deleting the cluster's SQS queues: {e}"),
            }
            return;
        }
        if let Ok(q) = crate::queue_contract::open(&self.queue_url, &opts).await {
            let _ = q.destroy().await;
        }
        // Retry queues are declared lazily by whichever worker needed them.
        let listed = Command::new("rabbitmqctl")
            .args(["list_queues", "-q", "--no-table-headers", "name"])
            .output();
        if let Ok(out) = listed {
            let mine = format!("{}.", self.prefix);
            for name in String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|n| n.starts_with(&mine))
            {
                let _ = Command::new("rabbitmqctl")
                    .args(["delete_queue", name])
                    .output();
            }
        }
    }
}

/// Waits until a gateway at `addr` answers `/readyz` with 200.
pub async fn wait_ready(addr: SocketAddr) {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{addr}/readyz")).await
            && r.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "gateway at {addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn readyz(addr: SocketAddr) -> u16 {
    match reqwest::get(format!("http://{addr}/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}
