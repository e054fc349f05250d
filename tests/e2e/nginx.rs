//! Debian's nginx with `infra/nginx/courier.conf` in front of two real gateways (and two
//! workers) on RabbitMQ and PostgreSQL: a cross-gateway chat through the balancer, and a
//! gateway SIGTERM whose client reconnects through nginx to the other gateway and misses
//! nothing. `scripts/test.sh` installs nginx; this test only runs it.

use crate::cluster::*;
use crate::helpers::*;
use crate::queue_contract::BROKER_FAULTS;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NGINX: &str = "/usr/sbin/nginx";

/// The repository's nginx configuration, rendered for these gateways and this port.
fn render_courier_conf(listen: &str, gateways: &[SocketAddr]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/nginx/courier.conf");
    let template = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is unreadable: {e}", path.display()));
    assert!(template.contains("${COURIER_LISTEN}") && template.contains("${COURIER_GATEWAYS}"));
    let servers = gateways
        .iter()
        .map(|a| format!("server {a} max_fails=2 fail_timeout=10s;"))
        .collect::<Vec<_>>()
        .join("\n    ");
    template
        .replace("${COURIER_LISTEN}", listen)
        .replace("${COURIER_GATEWAYS}", &servers)
}

/// An nginx master (and its worker) of this test, in its own process group.
struct Nginx {
    child: Child,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(gateways: &[SocketAddr]) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: install Debian's nginx (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path();
        // A free port: bound by the OS, released just before nginx takes it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            prefix.join("courier.conf"),
            render_courier_conf(&format!("127.0.0.1:{port}"), gateways),
        )
        .unwrap();
        let temp = |name: &str| -> PathBuf { prefix.join(name) };
        let main_conf = format!(
            "user root;\n\
             worker_processes 1;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20 client_body_temp_path {};\n\
             \x20 proxy_temp_path {};\n\
             \x20 fastcgi_temp_path {};\n\
             \x20 uwsgi_temp_path {};\n\
             \x20 scgi_temp_path {};\n\
             \x20 include courier.conf;\n\
             }}\n",
            temp("client_body").display(),
            temp("proxy").display(),
            temp("fastcgi").display(),
            temp("uwsgi").display(),
            temp("scgi").display(),
        );
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, main_conf).unwrap();
        let globals = format!(
            "daemon off; pid {}; error_log stderr;",
            prefix.join("nginx.pid").display()
        );
        let mut child = Command::new(NGINX)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(prefix)
            .arg("-g")
            .arg(&globals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{NGINX} does not start: {e}"));
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut k = kept.lock().unwrap();
                if k.len() < 5000 {
                    k.push(line);
                }
            }
        });
        let mut n = Self {
            child,
            port,
            logs,
            _dir: dir,
        };
        n.wait_listening();
        n
    }

    /// Until nginx answers its own health location.
    fn wait_listening(&mut self) {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nginx exited with {status}:\n{}", self.log_text());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = s.write_all(
                    b"GET /nginx-healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                );
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                if reply.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx never listened:\n{}", self.log_text());
    }

    fn ws_url(&self, user: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?user={user}", self.port)
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers, then exits.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still there after 5 s: the whole group (master and workers), no mercy.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// A client through nginx, its hello read; returns it with the gateway that took it.
async fn connect_via(nginx: &Nginx, user: &str) -> (Client, String) {
    let mut c = Client::connect(&nginx.ws_url(user)).await;
    let hello = c.recv().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["user"], user);
    let gw = hello["gateway"].as_str().expect("hello names its gateway");
    (c, gw.to_owned())
}

/// Reads `room` messages `from..=to`, asserting gapless order; returns their ids.
async fn read_seqs(r: &mut Reader, room: &str, from: u64, to: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for want in from..=to {
        let m = r.message(room).await;
        assert_eq!(m["seq"].as_u64(), Some(want), "gapless, in order: {m}");
        ids.push(format!(
            "{}/{}",
            m["from"].as_str().unwrap(),
            m["id"].as_str().unwrap()
        ));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "nginx", feature = "rabbitmq", feature = "postgres")),
    ignore = "needs nginx and RabbitMQ and PostgreSQL: --features courier-tests/nginx,courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn through_nginx_clients_chat_across_gateways_and_survive_a_gateway_sigterm() {
    let _faults = BROKER_FAULTS.lock().await;
    let mut c = Cluster::start(2, 2, &[]).await;
    // Which gateway id is which process: each one's hello, read directly.
    let mut names = Vec::new();
    for g in 0..2 {
        let mut direct = Client::connect(&format!("ws://{}/ws?user=probe", c.addr(g))).await;
        names.push(direct.recv().await["gateway"].as_str().unwrap().to_owned());
    }
    assert_ne!(names[0], names[1], "gateways have distinct ids");
    let nginx = Nginx::start(&[c.addr(0), c.addr(1)]);

    // The balancer serves HTTP too: the gateways' readiness, but not their metrics.
    let ready = reqwest::get(nginx.http_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(nginx.http_url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 404, "/metrics is not public");

    // Two clients on different gateways, both through nginx.
    let (mut alice, alice_gw) = connect_via(&nginx, "alice").await;
    let mut bob = None;
    for _ in 0..20 {
        let (cl, gw) = connect_via(&nginx, "bob").await;
        if gw != alice_gw {
            bob = Some((cl, gw));
            break;
        }
    }
    let (mut bob, bob_gw) = bob.unwrap_or_else(|| {
        panic!(
            "nginx sent 20 connections in a row to {alice_gw}:\n{}",
            nginx.log_text()
        )
    });
    assert!(names.contains(&alice_gw) && names.contains(&bob_gw));

    // Cross-gateway chat: each sees both, in one gapless order.
    alice.join("lobby").await;
    bob.join("lobby").await;
    for n in 0..20 {
        assert_eq!(
            alice.say("lobby", &format!("a{n}"), "from alice").await["type"],
            "ack"
        );
        assert_eq!(
            bob.say("lobby", &format!("b{n}"), "from bob").await["type"],
            "ack"
        );
    }
    let seen_by_alice = read_seqs(&mut alice, "lobby", 1, 40).await;
    let seen_by_bob = read_seqs(&mut bob, "lobby", 1, 40).await;
    assert_eq!(seen_by_alice, seen_by_bob, "one order for everyone");
    for n in 0..20 {
        assert!(seen_by_bob.contains(&format!("alice/a{n}")));
        assert!(seen_by_alice.contains(&format!("bob/b{n}")));
    }

    // SIGTERM to bob's gateway while alice keeps talking: bob gets 1012, reconnects
    // through nginx, lands on alice's gateway and resumes with `since`.
    let doomed = names.iter().position(|n| *n == bob_gw).unwrap();
    let ws_url = nginx.ws_url("bob");
    let other = alice_gw.clone();
    let reading = tokio::spawn(async move {
        let mut last = 40;
        let mut ids = Vec::new();
        let code = loop {
            let v = match tokio::time::timeout(WAIT, bob.rx.recv_or_close())
                .await
                .expect("traffic or a close")
            {
                Ok(v) => v,
                Err(code) => break code,
            };
            if v["type"] == "message" {
                assert_eq!(v["seq"].as_u64(), Some(last + 1), "gapless: {v}");
                last += 1;
                ids.push(format!(
                    "{}/{}",
                    v["from"].as_str().unwrap(),
                    v["id"].as_str().unwrap()
                ));
            }
        };
        assert_eq!(code, 1012, "a stopping gateway closes with 1012");
        let mut again = Client::connect(&ws_url).await;
        let hello = again.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(
            hello["gateway"],
            other.as_str(),
            "reconnected to the other gateway"
        );
        again.join_since("lobby", last).await;
        ids.extend(read_seqs(&mut again, "lobby", last + 1, 140).await);
        ids
    });
    for n in 0..100 {
        if n == 30 {
            let status = c.gateways[doomed].terminate();
            assert!(
                status.success(),
                "gateway exits cleanly on SIGTERM: {status:?}"
            );
        }
        let id = format!("t{n}");
        assert_eq!(
            alice.say("lobby", &id, "still here").await["type"],
            "ack",
            "{id}"
        );
    }
    let after = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .unwrap_or_else(|_| panic!("bob never caught up:\n{}\n{}", c.logs(), nginx.log_text()))
        .unwrap();
    // seq is the order of the room (two workers may store in another order than sent).
    let want: BTreeSet<String> = (0..100).map(|n| format!("alice/t{n}")).collect();
    assert_eq!(
        after.len(),
        100,
        "bob saw each message after the SIGTERM once"
    );
    assert_eq!(
        after.iter().cloned().collect::<BTreeSet<_>>(),
        want,
        "bob missed nothing"
    );
    let alice_rest = read_seqs(&mut alice, "lobby", 41, 140).await;
    assert_eq!(alice_rest, after, "one order for everyone");

    // New connections keep flowing through nginx while one gateway is gone.
    for i in 0..3 {
        let (_cl, gw) = connect_via(&nginx, &format!("late{i}")).await;
        assert_eq!(gw, alice_gw);
    }
    drop(nginx);
    c.destroy().await;
}
