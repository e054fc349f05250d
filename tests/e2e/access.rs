//! Access control (issue 12, phase 1) on the embedded topology: private rooms configured
//! through the HTTP API, direct rooms `dm:A:B`, and a token's `rooms` claim. A non-member
//! must never see a frame of a private room's messages: every frame it got is checked.

use crate::helpers::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use reqwest::Method;
use serde_json::{Value, json};

/// HS256 secrets are at least 32 bytes.
const SECRET: &str = "test-jwt-secret-of-at-least-32-bytes";
/// Text only the private rooms' messages carry.
const SECRET_WORDS: &str = "eyes-only";

/// One HTTP API call with the API token; the status and the JSON body (`Null` if none).
async fn api(g: &TestGateway, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, g.url(path))
        .bearer_auth(API_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends `cmd` and returns the direct answer: the frame carrying its `ref`.
async fn ask(c: &mut Client, mut cmd: Value, r: &str) -> Value {
    cmd["ref"] = json!(r);
    c.send(cmd).await;
    c.recv_where(|v| v["ref"] == r).await
}

/// Asserts that join, join with `since`, send and history of `room` are all refused with
/// `code`.
async fn refused_everywhere(c: &mut Client, room: &str, code: &str) {
    let commands = [
        json!({"type":"join","room":room}),
        json!({"type":"join","room":room,"since":0}),
        json!({"type":"send","room":room,"id":"x-1","body":SECRET_WORDS}),
        json!({"type":"history","room":room}),
    ];
    for (i, cmd) in commands.into_iter().enumerate() {
        let reply = ask(c, cmd.clone(), &format!("refused-{i}")).await;
        assert_eq!(reply["type"], "error", "{cmd} got {reply}");
        assert_eq!(reply["code"], code, "{cmd} got {reply}");
    }
}

/// Every frame `c` got and has not consumed yet, up to the answer of a `ping`; none may
/// carry anything of a private room's messages.
async fn assert_saw_nothing_private(c: &mut Client, rooms: &[&str]) {
    c.send(json!({"type":"ping","ref":"last"})).await;
    loop {
        let v = c.recv().await;
        let text = v.to_string();
        assert!(!text.contains(SECRET_WORDS), "a non-member got {text}");
        if let Some(room) = v["room"].as_str() {
            let leak = rooms.contains(&room) && v["type"] != "error";
            assert!(!leak, "a non-member got {text}");
        }
        if v["type"] == "pong" && v["ref"] == "last" {
            return;
        }
    }
}

async fn chat(a: &mut Client, b: &mut Client, room: &str, id: &str) {
    assert_eq!(a.join(room).await["type"], "joined");
    assert_eq!(b.join(room).await["type"], "joined");
    let body = format!("{SECRET_WORDS} {id}");
    assert_eq!(a.say(room, id, &body).await["type"], "ack");
    assert_eq!(a.message(room).await["body"], body);
    assert_eq!(b.message(room).await["body"], body);
}

#[tokio::test]
async fn private_rooms_admit_only_their_members() {
    let g = TestGateway::start().await;
    let (status, never) = api(&g, Method::GET, "/api/rooms/secret", None).await;
    assert_eq!(status, 200);
    assert_eq!(never, json!({"room":"secret","private":false,"members":[]}));
    let (status, put) = api(
        &g,
        Method::PUT,
        "/api/rooms/secret",
        Some(json!({"private":true,"members":["bob","alice"]})),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    let settings = json!({"room":"secret","private":true,"members":["alice","bob"]});
    assert_eq!(put, settings);
    assert_eq!(
        api(&g, Method::GET, "/api/rooms/secret", None).await.1,
        settings
    );

    let (mut alice, mut bob) = (g.client("alice").await, g.client("bob").await);
    let mut mallory = g.client("mallory").await;
    mallory.join("lobby").await;
    chat(&mut alice, &mut bob, "secret", "s-1").await;
    refused_everywhere(&mut mallory, "secret", "forbidden").await;
    // Mallory is in a public room beside it and gets that room's traffic.
    alice.join("lobby").await;
    assert_eq!(alice.say("lobby", "l-1", "hello all").await["type"], "ack");
    assert_eq!(mallory.message("lobby").await["body"], "hello all");
    assert_eq!(
        alice.say("secret", "s-2", SECRET_WORDS).await["type"],
        "ack"
    );
    assert_eq!(bob.message("secret").await["seq"], 2);

    // The operator reads and posts to any room.
    let (status, read) = api(&g, Method::GET, "/api/rooms/secret/messages", None).await;
    assert_eq!(
        (status, read["messages"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    let posted = json!({"id":"op-1","from":"ops","body":format!("{SECRET_WORDS} op")});
    assert_eq!(g.post("secret", posted).await.status(), 202);
    assert_eq!(bob.message("secret").await["from"], "ops");
    assert_saw_nothing_private(&mut mallory, &["secret"]).await;
}

#[tokio::test]
async fn members_are_added_and_removed_through_the_api() {
    let g = TestGateway::start().await;
    let put = json!({"private":true,"members":["alice"]});
    assert_eq!(
        api(&g, Method::PUT, "/api/rooms/crew", Some(put)).await.0,
        200
    );
    let mut carol = g.client("carol").await;
    refused_everywhere(&mut carol, "crew", "forbidden").await;

    let (status, body) = api(&g, Method::PUT, "/api/rooms/crew/members/carol", None).await;
    assert_eq!((status, body), (204, Value::Null));
    // This gateway's API dropped its cached settings: the change applies at once.
    assert_eq!(carol.join("crew").await["type"], "joined");
    let (_, now) = api(&g, Method::GET, "/api/rooms/crew", None).await;
    assert_eq!(now["members"], json!(["alice", "carol"]));

    assert_eq!(
        api(&g, Method::DELETE, "/api/rooms/crew/members/carol", None)
            .await
            .0,
        204
    );
    assert_eq!(
        api(&g, Method::DELETE, "/api/rooms/crew/members/carol", None)
            .await
            .0,
        204
    );
    let send = json!({"type":"send","room":"crew","id":"c-1","body":"still here?"});
    assert_eq!(
        ask(&mut carol, send, "after-removal").await["code"],
        "forbidden"
    );
    let mut carol2 = g.client("carol").await;
    refused_everywhere(&mut carol2, "crew", "forbidden").await;

    // Made public again, the room admits anyone; its member list is kept.
    let public = json!({"private":false,"members":["alice"]});
    assert_eq!(
        api(&g, Method::PUT, "/api/rooms/crew", Some(public))
            .await
            .0,
        200
    );
    assert_eq!(carol2.join("crew").await["type"], "joined");
}

#[tokio::test]
async fn the_rooms_api_refuses_bad_input() {
    let g = TestGateway::start().await;
    let ok = json!({"private":true,"members":["alice"]});
    for (method, path, body) in [
        (Method::PUT, "/api/rooms/bad%20room", Some(ok.clone())),
        (Method::GET, "/api/rooms/dm:bob:alice", None),
        (Method::PUT, "/api/rooms/dm:alice", Some(ok.clone())),
        (Method::PUT, "/api/rooms/dm:alice:bob", Some(ok.clone())),
        (Method::PUT, "/api/rooms/r", Some(json!({"private":"yes"}))),
        (
            Method::PUT,
            "/api/rooms/r",
            Some(json!({"members":["alice"]})),
        ),
        (
            Method::PUT,
            "/api/rooms/r",
            Some(json!({"private":true,"members":["a b"]})),
        ),
        (
            Method::PUT,
            "/api/rooms/r",
            Some(json!({"private":true,"members":"alice"})),
        ),
        (Method::PUT, "/api/rooms/r/members/bad%20name", None),
        (Method::DELETE, "/api/rooms/dm:a:b/members/a", None),
        (Method::GET, "/api/rooms/dm:x:y:z/messages", None),
    ] {
        let (status, body) = api(&g, method.clone(), path, body).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert_eq!(body["error"], "bad_request", "{method} {path}: {body}");
    }
    let r = reqwest::Client::new()
        .put(g.url("/api/rooms/r"))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the API token is required");
    let r = reqwest::Client::new()
        .delete(g.url("/api/rooms/r/members/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn direct_rooms_admit_their_two_users() {
    let g = TestGateway::start().await;
    let (mut alice, mut bob) = (g.client("alice").await, g.client("bob").await);
    let mut carol = g.client("carol").await;
    carol.join("lobby").await;
    chat(&mut alice, &mut bob, "dm:alice:bob", "d-1").await;
    chat(&mut bob, &mut alice, "dm:alice:bob", "d-2").await;
    refused_everywhere(&mut carol, "dm:alice:bob", "forbidden").await;
    for bad in [
        "dm:bob:alice",
        "dm:alice",
        "dm:alice:alice",
        "dm:a:b:c",
        "dm:",
    ] {
        refused_everywhere(&mut alice, bad, "bad_request").await;
    }
    let (status, settings) = api(&g, Method::GET, "/api/rooms/dm:alice:bob", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        settings,
        json!({"room":"dm:alice:bob","private":true,"members":["alice","bob"]})
    );
    let post = json!({"id":"p-1","from":"alice","body":"hi"});
    assert_eq!(g.post("dm:bob:alice", post).await.status(), 400);
    assert_saw_nothing_private(&mut carol, &["dm:alice:bob"]).await;
}

fn token(sub: &str, rooms: Option<Value>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({"sub":sub,"exp":exp});
    if let Some(r) = rooms {
        claims["rooms"] = r;
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::default(), &claims, &key).unwrap()
}

async fn client_with(g: &TestGateway, sub: &str, rooms: Option<Value>) -> Client {
    let mut c = Client::connect(&g.ws_url(&format!("?token={}", token(sub, rooms)))).await;
    assert_eq!(c.recv().await["user"], sub);
    c
}

#[tokio::test]
async fn a_tokens_rooms_claim_limits_it_to_exact_names_and_prefixes() {
    let g = TestGateway::start_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    let claim = json!(["lobby", "team-7:*", "dm:alice:bob"]);
    let mut alice = client_with(&g, "alice", Some(claim)).await;
    for room in ["lobby", "team-7:ops", "team-7:", "dm:alice:bob"] {
        assert_eq!(alice.join(room).await["type"], "joined", "{room}");
    }
    for room in ["lobby2", "team-8:ops", "team-7", "dm:alice:carol"] {
        refused_everywhere(&mut alice, room, "forbidden").await;
    }
    // Both must allow: the claim matches, but the room is private to others.
    let put = json!({"private":true,"members":["bob"]});
    assert_eq!(
        api(&g, Method::PUT, "/api/rooms/team-7:secret", Some(put))
            .await
            .0,
        200
    );
    refused_everywhere(&mut alice, "team-7:secret", "forbidden").await;
    // A member whose token does not name the room is refused too.
    let mut bob = client_with(&g, "bob", Some(json!(["lobby"]))).await;
    refused_everywhere(&mut bob, "team-7:secret", "forbidden").await;
    let mut bob_any = client_with(&g, "bob", None).await;
    assert_eq!(bob_any.join("team-7:secret").await["type"], "joined");
    let body = format!("{SECRET_WORDS} claim");
    assert_eq!(
        bob_any.say("team-7:secret", "b-1", &body).await["type"],
        "ack"
    );
    assert_eq!(bob_any.message("team-7:secret").await["body"], body);
    // An empty claim allows nothing; a claim that is not a list of strings is no token.
    let mut none = client_with(&g, "dave", Some(json!([]))).await;
    refused_everywhere(&mut none, "lobby", "forbidden").await;
    let bad = token("dave", Some(json!("lobby")));
    let status = reqwest::Client::new()
        .get(g.url(&format!("/ws?token={bad}")))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    assert_saw_nothing_private(&mut alice, &["team-7:secret"]).await;
    assert_saw_nothing_private(&mut bob, &["team-7:secret"]).await;
}

/// Room settings live in the store: a restarted gateway (or any other) enforces them.
async fn settings_survive_a_restart(db_url: &str) {
    let mut g = TestGateway::start_on(db_url, |_| {}).await;
    let put = json!({"private":true,"members":["alice","bob"]});
    assert_eq!(
        api(&g, Method::PUT, "/api/rooms/vault", Some(put)).await.0,
        200
    );
    assert_eq!(
        api(&g, Method::DELETE, "/api/rooms/vault/members/bob", None)
            .await
            .0,
        204
    );
    g.stop().await;
    let g = TestGateway::start_on(db_url, |_| {}).await;
    let (status, settings) = api(&g, Method::GET, "/api/rooms/vault", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        settings,
        json!({"room":"vault","private":true,"members":["alice"]})
    );
    let mut bob = g.client("bob").await;
    bob.join("lobby").await;
    refused_everywhere(&mut bob, "vault", "forbidden").await;
    let mut alice = g.client("alice").await;
    assert_eq!(alice.join("vault").await["type"], "joined");
    assert_eq!(alice.say("vault", "v-1", SECRET_WORDS).await["type"], "ack");
    assert_eq!(alice.message("vault").await["body"], SECRET_WORDS);
    assert_saw_nothing_private(&mut bob, &["vault"]).await;
}

#[tokio::test]
async fn sqlite_room_settings_survive_a_restart() {
    let (_dir, url) = temp_db();
    settings_survive_a_restart(&url).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "needs PostgreSQL: --features courier-tests/postgres (scripts/test.sh)"
)]
async fn postgres_room_settings_survive_a_restart() {
    let db = TempPostgres::create().await;
    settings_survive_a_restart(&db.url).await;
}

/// Two gateways over one store but each with its own embedded queue, so no bus carries
/// the change between them: it applies on the other once its cached settings expire
/// (`ROOM_CACHE_TTL_MS`), the backstop when an announcement is missed (removal.rs has
/// the announced path).
#[tokio::test]
async fn another_gateway_applies_a_change_within_the_cache_ttl() {
    let (_dir, url) = temp_db();
    let g1 = TestGateway::start_on(&url, |_| {}).await;
    let g2 = TestGateway::start_on(&url, |c| c.limits.room_cache_ttl_ms = 500).await;
    let mut bob = g2.client("bob").await;
    assert_eq!(
        bob.join("shared").await["type"],
        "joined",
        "public, now cached"
    );
    let put = json!({"private":true,"members":["alice"]});
    assert_eq!(
        api(&g1, Method::PUT, "/api/rooms/shared", Some(put))
            .await
            .0,
        200
    );
    let started = std::time::Instant::now();
    let history = json!({"type":"history","room":"shared"});
    let mut n = 0;
    loop {
        n += 1;
        let reply = ask(&mut bob, history.clone(), &format!("h-{n}")).await;
        if reply["code"] == "forbidden" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{reply}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    refused_everywhere(&mut bob, "shared", "forbidden").await;
}

/// `rooms` lists the private rooms the user is a member of and their direct rooms with a
/// message, sorted by bytes, within the token's claim; never someone else's.
#[tokio::test]
async fn rooms_lists_a_users_private_and_direct_rooms() {
    let g = TestGateway::start_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    for (room, members) in [("team-7:ops", json!(["alice"])), ("zz", json!(["bob"]))] {
        let put = json!({"private":true,"members":members});
        let path = format!("/api/rooms/{room}");
        assert_eq!(api(&g, Method::PUT, &path, Some(put)).await.0, 200);
    }
    let mut alice = client_with(&g, "alice", None).await;
    let rooms = |v: Value| v["rooms"].clone();
    let listed = ask(&mut alice, json!({"type":"rooms"}), "r-0").await;
    assert_eq!(listed["type"], "rooms", "{listed}");
    assert_eq!(rooms(listed), json!(["team-7:ops"]));
    // Joined without a message: not listed yet; after one, for both of them.
    let mut bob = client_with(&g, "bob", None).await;
    assert_eq!(alice.join("dm:alice:bob").await["type"], "joined");
    let listed = ask(&mut alice, json!({"type":"rooms"}), "r-1").await;
    assert_eq!(rooms(listed), json!(["team-7:ops"]));
    chat(&mut alice, &mut bob, "dm:alice:bob", "r-1").await;
    let listed = ask(&mut alice, json!({"type":"rooms"}), "r-2").await;
    assert_eq!(rooms(listed), json!(["dm:alice:bob", "team-7:ops"]));
    let listed = ask(&mut bob, json!({"type":"rooms"}), "r-3").await;
    assert_eq!(rooms(listed), json!(["dm:alice:bob", "zz"]));
    // Carol is in none of them; a claim narrows the list.
    let mut carol = client_with(&g, "carol", None).await;
    let listed = ask(&mut carol, json!({"type":"rooms"}), "r-4").await;
    assert_eq!(rooms(listed), json!([]));
    let mut narrow = client_with(&g, "alice", Some(json!(["team-7:*"]))).await;
    let listed = ask(&mut narrow, json!({"type":"rooms"}), "r-5").await;
    assert_eq!(rooms(listed), json!(["team-7:ops"]));
    assert_saw_nothing_private(&mut carol, &["dm:alice:bob", "team-7:ops", "zz"]).await;
}
