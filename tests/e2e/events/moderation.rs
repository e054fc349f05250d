//! The HTTP API as the operator: `DELETE /api/rooms/{room}/messages/{seq}` takes any
//! message back (a moderated delete, seen by every member like the author's), 404 for
//! a seq the room does not have; `POST .../messages` with `reply_to`.

use super::*;
use reqwest::StatusCode;

#[tokio::test]
async fn embedded_the_operator_deletes_any_message_and_a_missing_seq_is_404() {
    on_embedded(|site| async move { moderation(&site).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(feature = "rabbitmq", feature = "postgres")),
    ignore = "needs RabbitMQ and PostgreSQL: --features courier-tests/rabbitmq,courier-tests/postgres (scripts/test.sh)"
)]
async fn rabbitmq_the_operator_deletes_any_message_and_a_missing_seq_is_404() {
    on_rabbitmq(|site| async move { moderation(&site).await }).await;
}

/// `DELETE /api/rooms/{room}/messages/{seq}` with `token`: the status and the JSON body.
async fn http_delete(addr: SocketAddr, room: &str, seq: &str, token: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .delete(format!("http://{addr}/api/rooms/{room}/messages/{seq}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn moderation(site: &Site) {
    let room = fresh_room("mod");
    let (mut alice, _) = site.member(0, "alice", &room).await;
    let (mut bob, _) = site.member(1, "bob", &room).await;
    let (status, body) = http_delete(site.addr(0), &room, "1", API_TOKEN).await;
    assert_eq!(status, 404, "an empty room has no seq 1: {body}");
    assert_eq!(body["error"], "not_found");
    acked(
        &alice
            .say(&room, "m-1", "WIN A FREE IPHONE → bit.ly/xyz 💰💰")
            .await,
    );
    let s1 = seq(&entry(&mut bob, &room, "m-1").await);
    let (status, _) = http_delete(site.addr(1), &room, &s1.to_string(), "wrong").await;
    assert_eq!(status, 401);
    let (status, body) = http_delete(site.addr(1), &room, &s1.to_string(), API_TOKEN).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["room"].as_str(), body["seq"].as_u64()),
        (Some(room.as_str()), Some(s1))
    );
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("op-"), "{id}");
    for c in [&mut alice, &mut bob] {
        let d = entry(c, &room, id).await;
        assert_eq!(
            (d["kind"].as_str(), d["target"].as_u64()),
            (Some("delete"), Some(s1))
        );
        assert_eq!(
            (d["from"].as_str(), d["moderated"].as_bool()),
            (Some("alice"), Some(true))
        );
        assert_eq!(d["body"], "");
    }
    refusals(site, &room, s1).await;
    let latest = http_messages(site.addr(0), &room, 0).await;
    assert_eq!(
        (latest[0]["deleted"].as_bool(), latest[0]["body"].as_str()),
        (Some(true), Some(""))
    );
    posted_replies(site, &room, &mut bob, s1).await;
}

/// What the operator may not delete: a deleted message, an event, a seq the room does
/// not have, a seq that is not a number.
async fn refusals(site: &Site, room: &str, s1: u64) {
    let room = room.to_owned();
    let (status, body) = http_delete(site.addr(0), &room, &s1.to_string(), API_TOKEN).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("bad_request"))
    );
    let event = (s1 + 1).to_string();
    let (status, _) = http_delete(site.addr(0), &room, &event, API_TOKEN).await;
    assert_eq!(status, 400, "the delete event is not a message");
    for missing in ["999", "0"] {
        let (status, body) = http_delete(site.addr(0), &room, missing, API_TOKEN).await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (404, Some("not_found"))
        );
    }
    let (status, body) = http_delete(site.addr(0), &room, "first", API_TOKEN).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("bad_request"))
    );
}

/// `POST .../messages` with `reply_to`: a seq of the room, else `bad_request`.
async fn posted_replies(site: &Site, room: &str, bob: &mut Client, to: u64) {
    let post = |body: Value| post_message(site.addr(0), room, body);
    let r = post(
        json!({"id":"api-1","from":"shop-bot","body":"Refund of 49,90 € issued ✔","reply_to":to}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let m = entry(bob, room, "api-1").await;
    assert_eq!(
        (m["from"].as_str(), m["reply_to"].as_u64()),
        (Some("shop-bot"), Some(to))
    );
    for bad in [json!(999), json!(0), json!("1"), json!(-1)] {
        let r = post(json!({"id":"api-2","from":"shop-bot","body":"x","reply_to":bad})).await;
        assert_eq!(r.status(), 400, "reply_to {bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
    }
}
