//! Identity at the upgrade: development names, guests, and HS256 tokens.

use crate::helpers::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

/// HS256 secrets are at least 32 bytes.
const SECRET: &str = "test-jwt-secret-of-at-least-32-bytes";

fn token(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn in_an_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

async fn upgrade_status(g: &TestGateway, query: &str, auth: Option<&str>) -> u16 {
    // A plain HTTP upgrade request shows the status the server answers before any upgrade.
    let mut req = reqwest::Client::new()
        .get(g.ws_url(query).replace("ws://", "http://"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn development_identities() {
    let g = TestGateway::start().await;
    let mut guest = Client::connect(&g.ws_url("")).await;
    let hello = guest.recv().await;
    let user = hello["user"].as_str().unwrap();
    assert!(user.starts_with("guest-") && user.len() == 22, "{user}");
    assert_eq!(upgrade_status(&g, "?user=bad%20name", None).await, 401);
    assert_eq!(
        upgrade_status(&g, &format!("?user={}", "x".repeat(65)), None).await,
        401
    );
    assert_eq!(upgrade_status(&g, "?user=fine", None).await, 101);
}

#[tokio::test]
async fn jwt_is_required_and_checked_when_configured() {
    let g = TestGateway::start_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    let good = token(json!({"sub":"carol","exp":in_an_hour()}), SECRET);
    let mut c = Client::connect(&g.ws_url(&format!("?token={good}"))).await;
    assert_eq!(c.recv().await["user"], "carol");

    let header = format!("Bearer {good}");
    assert_eq!(upgrade_status(&g, "", Some(&header)).await, 101);
    assert_eq!(upgrade_status(&g, "", None).await, 401, "missing token");
    assert_eq!(
        upgrade_status(&g, "?user=carol", None).await,
        401,
        "no development names"
    );
    let expired = token(json!({"sub":"carol","exp":1_000_000}), SECRET);
    assert_eq!(
        upgrade_status(&g, &format!("?token={expired}"), None).await,
        401
    );
    let forged = token(json!({"sub":"carol","exp":in_an_hour()}), "another-secret");
    assert_eq!(
        upgrade_status(&g, &format!("?token={forged}"), None).await,
        401
    );
    let no_exp = token(json!({"sub":"carol"}), SECRET);
    assert_eq!(
        upgrade_status(&g, &format!("?token={no_exp}"), None).await,
        401
    );
    let bad_sub = token(json!({"sub":"not valid!","exp":in_an_hour()}), SECRET);
    assert_eq!(
        upgrade_status(&g, &format!("?token={bad_sub}"), None).await,
        401
    );
}
