//! The upgrade's gatekeeping on the real `gateway` binary: which origins a browser may
//! connect from, JWTs (`nbf`, audience, issuer, a secret of 32 bytes or more, the token in
//! `Sec-WebSocket-Protocol`, generic refusals), the warning without `JWT_SECRET`, and
//! `/metrics` moved off the client port with `METRICS_BIND`.

use crate::exhaustion::solo;
use crate::helpers::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// 40 bytes: HS256 secrets must be at least 32.
const SECRET: &str = "k3y-for-tests-0123456789-abcdefghijklmno";

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A WebSocket upgrade as plain HTTP: the status, the headers and the body of the answer.
async fn upgrade(
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new()
        .get(format!("http://{addr}/ws{query}"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = if status == 101 {
        String::new()
    } else {
        r.text().await.unwrap_or_default()
    };
    (status, headers, body)
}

async fn status(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> u16 {
    upgrade(addr, query, headers).await.0
}

#[tokio::test]
async fn browsers_may_open_ws_only_from_allowed_origins() {
    let (gw, _dir) = solo("gateway-default", &[]).await;
    let addr = gw.addr.unwrap();
    let own = format!("http://{addr}");
    assert_eq!(
        status(addr, "?user=ana", &[]).await,
        101,
        "no Origin: not a browser"
    );
    assert_eq!(
        status(addr, "?user=ana", &[("origin", &own)]).await,
        101,
        "own origin"
    );
    for evil in [
        "https://evil.example",
        "null",
        "http://127.0.0.1:1",
        "http://localhost",
    ] {
        let (s, _, body) = upgrade(addr, "?user=ana", &[("origin", evil)]).await;
        assert_eq!(s, 403, "{evil}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"],
            "forbidden"
        );
    }

    let listed = "https://chat.example.com, https://admin.example.com:8443";
    let (gw, _dir) = solo("gateway-listed", &[("ALLOWED_ORIGINS", listed)]).await;
    let addr = gw.addr.unwrap();
    for ok in ["https://chat.example.com", "https://admin.example.com:8443"] {
        assert_eq!(
            status(addr, "?user=ana", &[("origin", ok)]).await,
            101,
            "{ok}"
        );
    }
    let own = format!("http://{addr}");
    for refused in [
        own.as_str(),
        "https://chat.example.com:444",
        "http://chat.example.com",
    ] {
        assert_eq!(
            status(addr, "?user=ana", &[("origin", refused)]).await,
            403,
            "{refused}"
        );
    }
    assert_eq!(status(addr, "?user=ana", &[]).await, 101);

    let (gw, _dir) = solo("gateway-any", &[("ALLOWED_ORIGINS", "*")]).await;
    let addr = gw.addr.unwrap();
    assert_eq!(
        status(addr, "?user=ana", &[("origin", "https://evil.example")]).await,
        101
    );
}

#[tokio::test]
async fn tokens_are_checked_for_nbf_audience_and_issuer_and_refused_generically() {
    let env = [
        ("JWT_SECRET", SECRET),
        ("JWT_AUDIENCE", "courier-chat"),
        ("JWT_ISSUER", "https://id.example.com/"),
    ];
    let (gw, _dir) = solo("gateway-jwt", &env).await;
    let addr = gw.addr.unwrap();
    let exp = now() + 3600;
    let good =
        json!({"sub":"zoe_42","exp":exp,"aud":"courier-chat","iss":"https://id.example.com/"});
    let t = token(good.clone());
    assert_eq!(status(addr, &format!("?token={t}"), &[]).await, 101);
    let listed_aud = json!({"sub":"zoe_42","exp":exp,"aud":["account","courier-chat"],"iss":"https://id.example.com/"});
    assert_eq!(
        status(addr, &format!("?token={}", token(listed_aud)), &[]).await,
        101
    );

    let mut refusals = Vec::new();
    let cases = [
        json!({"sub":"zoe_42","exp":exp,"iss":"https://id.example.com/"}),
        json!({"sub":"zoe_42","exp":exp,"aud":"another-app","iss":"https://id.example.com/"}),
        json!({"sub":"zoe_42","exp":exp,"aud":"courier-chat"}),
        json!({"sub":"zoe_42","exp":exp,"aud":"courier-chat","iss":"https://evil.example/"}),
        json!({"sub":"zoe_42","exp":exp,"nbf":now() + 3600,"aud":"courier-chat","iss":"https://id.example.com/"}),
        json!({"sub":"zoe_42","exp":1_000_000,"aud":"courier-chat","iss":"https://id.example.com/"}),
    ];
    for claims in cases {
        let (s, _, body) = upgrade(addr, &format!("?token={}", token(claims.clone())), &[]).await;
        assert_eq!(s, 401, "{claims}");
        refusals.push(body);
    }
    let (s, _, garbage) = upgrade(addr, "?token=not.a-jwt.at_all", &[]).await;
    assert_eq!(s, 401);
    refusals.push(garbage);
    for body in &refusals {
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "unauthorized");
        assert_eq!(
            v,
            serde_json::from_str::<Value>(&refusals[0]).unwrap(),
            "one generic answer"
        );
        for detail in [
            "Invalid",
            "Expired",
            "Base64",
            "Json",
            "aud",
            "iss",
            "nbf",
            "signature",
        ] {
            assert!(!body.contains(detail), "no parser details: {body}");
        }
    }
    assert!(
        gw.log_text().contains("token refused"),
        "the reason goes to the log"
    );

    // Unset audience and issuer: tokens from identity providers carry an `aud` of their own.
    let (gw, _dir) = solo("gateway-any-aud", &[("JWT_SECRET", SECRET)]).await;
    let addr = gw.addr.unwrap();
    let idp = json!({"sub":"li.wei","exp":exp,"aud":"account","iss":"https://login.example.net"});
    assert_eq!(
        status(addr, &format!("?token={}", token(idp)), &[]).await,
        101
    );
}

#[tokio::test]
async fn a_browser_passes_its_token_in_the_subprotocol_and_gets_courier_back() {
    let (gw, _dir) = solo("gateway-jwt-sub", &[("JWT_SECRET", SECRET)]).await;
    let addr = gw.addr.unwrap();
    let t = token(json!({"sub":"amelie-7","exp":now() + 3600}));
    let offered = format!("courier, bearer.{t}");
    let (s, headers, _) = upgrade(addr, "", &[("sec-websocket-protocol", &offered)]).await;
    assert_eq!(s, 101);
    assert_eq!(
        headers["sec-websocket-protocol"], "courier",
        "never the token"
    );

    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", offered.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "courier");
    let mut c = Client::from_ws(ws);
    assert_eq!(c.recv().await["user"], "amelie-7");

    let forged = "courier, bearer.eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl";
    assert_eq!(
        status(addr, "", &[("sec-websocket-protocol", forged)]).await,
        401
    );
    assert_eq!(
        status(addr, "", &[("sec-websocket-protocol", "courier")]).await,
        401,
        "no token"
    );
    let header = format!("Bearer {t}");
    assert_eq!(status(addr, "", &[("authorization", &header)]).await, 101);
}

#[tokio::test]
async fn a_jwt_secret_under_32_bytes_refuses_to_start_and_none_warns() {
    let out = run_to_exit(&[("JWT_SECRET", "short-secret-31-bytes-long-1234")]);
    assert!(!out.0, "a 31-byte secret must not start");
    assert!(
        out.1.contains("JWT_SECRET") && out.1.contains("32"),
        "{}",
        out.1
    );

    let (gw, _dir) = solo("gateway-open", &[]).await;
    let warned = gw.log_text().lines().any(|l| {
        let v: Value = serde_json::from_str(l).unwrap_or_default();
        v["level"] == "WARN" && l.contains("?user=")
    });
    assert!(
        warned,
        "a warning that identities are self-chosen:\n{}",
        gw.log_text()
    );
}

/// Runs `gateway` with `env` until it exits on its own (at most 20 s); (success, stderr).
fn run_to_exit(env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin("gateway"))
        .current_dir(dir.path())
        .env_clear()
        .env("BIND", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "gateway kept running for 20 s; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_bind_moves_metrics_off_the_client_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let (gw, _dir) = solo("gateway-metrics", &[("METRICS_BIND", &bind)]).await;
    let addr = gw.addr.unwrap();
    let on_client = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(on_client.status(), 404);
    let mut c = Client::connect(&format!("ws://{addr}/ws?user=ops")).await;
    c.recv().await;
    let text = reqwest::get(format!("http://{bind}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("courier_connections 1"), "{text}");
    assert_eq!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .status(),
        200,
        "the client port serves the rest"
    );
}
