//! The chat page at `/` in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver with fantoccini: two people chat both ways,
//! markup in a message stays text, and a gateway restart while one browser keeps sending
//! loses, repeats and reorders nothing on either screen; edits, reactions, deletes,
//! replies, unread badges and "Seen by". Screenshots of the page are saved under
//! `target/test-artifacts/`.

use crate::helpers::{self, TestGateway, WAIT, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use shared::shutdown::{self, Trigger};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Chromium's flags here: without them it floods the closed network or wants a sandbox.
const FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];
/// Longest a page may take to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// Browsers are heavy on two cores: the browser tests run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A chromedriver process and every Chromium it started (one process group), with the
/// browser's profile folder. Dropping it kills the group, however the test ended.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Driver {
    fn spawn() -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: apt-get install chromium chromium-driver (the README's test command does)"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        Self {
            child,
            port,
            profile: tempfile::tempdir().unwrap(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid; Chromium's processes are in the group too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium driven over WebDriver.
struct Browser {
    client: Client,
    name: &'static str,
    // Dropped after the client: kills chromedriver and Chromium.
    _driver: Driver,
}

impl Browser {
    async fn start(name: &'static str) -> Self {
        let driver = Driver::spawn();
        let url = format!("http://127.0.0.1:{}", driver.port);
        wait_http(&format!("{url}/status")).await;
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            driver.profile.path().display()
        ));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session through chromedriver");
        client.set_window_size(1000, 640).await.unwrap();
        Self {
            client,
            name,
            _driver: driver,
        }
    }

    /// Opens the page, signs in as `user` and waits until the lobby is joined and its
    /// recent history shown.
    async fn sign_in(&self, gateway: SocketAddr, user: &str) {
        self.client
            .goto(&format!("http://{gateway}/"))
            .await
            .unwrap();
        let name = self.client.find(Locator::Id("name")).await.unwrap();
        // After a reload the page offers the name it remembered.
        name.clear().await.unwrap();
        name.send_keys(user).await.unwrap();
        self.client
            .find(Locator::Id("login-button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for(
            "the lobby joined and loaded",
            "return document.getElementById('conn').dataset.state === 'connected' \
             && !!document.querySelector('.room-view[data-room=\"lobby\"][data-loaded]');",
        )
        .await;
    }

    /// Types `text` into the composer and presses Send.
    async fn say(&self, text: &str) {
        let input = self.client.find(Locator::Id("text")).await.unwrap();
        input.send_keys(text).await.unwrap();
        self.client
            .find(Locator::Id("send"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Joins `room` with the form beside the room list and waits until it is shown.
    async fn join_room(&self, room: &str) {
        self.submit_and_show("room-name", "join-button", room, room)
            .await;
    }

    /// Starts (or opens) the direct room with `other` from the page's form.
    async fn start_dm(&self, other: &str, room: &str) {
        self.submit_and_show("dm-name", "dm-button", other, room)
            .await;
    }

    /// Types `text` into the field `input`, clicks `button`, and waits until `room` is
    /// joined and shown.
    async fn submit_and_show(&self, input: &str, button: &str, text: &str, room: &str) {
        let field = self.client.find(Locator::Id(input)).await.unwrap();
        field.send_keys(text).await.unwrap();
        self.client
            .find(Locator::Id(button))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for(
            &format!("{room} joined and shown"),
            &format!(
                "return !!document.querySelector('.room-view[data-room=\"{room}\"][data-loaded]:not([hidden])') \
                 && document.getElementById('room-title').textContent === '{room}';"
            ),
        )
        .await;
    }

    /// Clicks the element `css` finds.
    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name))
            .click()
            .await
            .unwrap();
    }

    /// Switches to `room` in the room list.
    async fn open_room(&self, room: &str) {
        self.client
            .find(Locator::Css(&format!(".room-button[data-room=\"{room}\"]")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for(
            &format!("{room} shown"),
            &format!("return document.getElementById('room-title').textContent === '{room}';"),
        )
        .await;
    }

    /// The rooms in the room list.
    async fn rooms(&self) -> Vec<String> {
        let v = self
            .js("return [...document.querySelectorAll('.room-button')].map(b => b.dataset.room);")
            .await;
        serde_json::from_value(v).unwrap()
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// The messages of the room on screen, in DOM order: `[seq, from, body text]`.
    async fn messages(&self) -> Vec<(u64, String, String)> {
        let v = self
            .js(
                "const view = document.querySelector('.room-view:not([hidden])');
                 return [...view.querySelectorAll('.timeline > li.msg')].map(li =>
                   [Number(li.dataset.seq), li.dataset.from, li.querySelector('.body').textContent]);",
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// Own messages not acked yet, and own messages acked but not delivered yet.
    async fn outbox(&self) -> (u64, u64) {
        let v = self
            .js(
                "return [document.querySelectorAll('.outbox li.pending').length,
                         document.querySelectorAll('.outbox li').length];",
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// Polls `script` (a function body) until it returns something truthy.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        let end = Instant::now() + PAGE_WAIT;
        loop {
            let v = self.js(script).await;
            if !matches!(v, Value::Null | Value::Bool(false)) {
                return v;
            }
            if Instant::now() > end {
                let state = self
                    .js("return [document.getElementById('conn').textContent, document.body.innerText.slice(-2000)];")
                    .await;
                self.screenshot(&format!("failed-{}", self.name)).await;
                panic!(
                    "{}: {what} did not happen in time; page: {state}",
                    self.name
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until this page shows `n` messages.
    async fn wait_count(&self, n: usize) {
        self.wait_for(
            &format!("{n} messages on screen"),
            &format!(
                "return document.querySelectorAll('.room-view:not([hidden]) .timeline > li.msg').length >= {n};"
            ),
        )
        .await;
    }

    /// Saves a PNG of the page as `target/test-artifacts/{name}.png`; returns its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn quit(self) {
        let Self {
            client, _driver, ..
        } = self;
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        drop(_driver);
    }
}

/// `target/test-artifacts` of this workspace (or of `CARGO_TARGET_DIR`).
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("test-artifacts")
}

/// Waits until `url` answers 200.
async fn wait_http(url: &str) {
    let http = reqwest::Client::new();
    let end = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < end, "{url} never answered");
        sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway on a given address, for a restart on the same port (the helpers bind
/// port 0).
struct PortGateway {
    trigger: Option<Trigger>,
    task: Option<JoinHandle<Result<(), gateway::Error>>>,
}

impl PortGateway {
    async fn start(db_url: &str, addr: SocketAddr) -> Self {
        let end = Instant::now() + WAIT;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < end => {
                    eprintln!("rebinding {addr}: {e}; retrying");
                    sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        let (trigger, sd) = shutdown::channel();
        let task = tokio::spawn(gateway::run(helpers::config(db_url), listener, sd));
        wait_http(&format!("http://{addr}/readyz")).await;
        Self {
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("gateway stops")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for PortGateway {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }
}

#[tokio::test]
async fn page_and_scripts_are_served_with_a_strict_policy() {
    let gw = TestGateway::start().await;
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/client.js", "text/javascript; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
    ] {
        let r = reqwest::get(gw.url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], ty, "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(csp.contains("connect-src 'self' ws: wss:"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "browser"),
    ignore = "needs chromedriver and Chromium: --features courier-tests/browser (scripts/test.sh)"
)]
async fn two_browsers_chat_both_ways() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = TestGateway::start().await;
    let (alice, bob) = tokio::join!(Browser::start("alice"), Browser::start("bob"));
    alice.sign_in(gw.addr, "alice").await;
    bob.sign_in(gw.addr, "bob").await;
    alice.join_room("release-1.0").await;
    alice.open_room("lobby").await;

    let lines = [
        (
            "alice",
            "hi @bob, the notes for tomorrow are at https://example.org/notes #planning",
        ),
        ("bob", "thanks @alice! reading them now"),
        ("alice", "great, see you at 10 #planning"),
        ("bob", "à bientôt, I'll bring coffee"),
    ];
    for (i, (who, text)) in lines.iter().enumerate() {
        let (me, other) = if *who == "alice" {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        me.say(text).await;
        other.wait_count(i + 1).await;
    }
    let want: Vec<(u64, String, String)> = lines
        .iter()
        .enumerate()
        .map(|(i, (who, text))| (i as u64 + 1, who.to_string(), text.to_string()))
        .collect();
    alice.wait_count(lines.len()).await;
    bob.wait_count(lines.len()).await;
    assert_eq!(alice.messages().await, want);
    assert_eq!(bob.messages().await, want);

    // Bob's view of the first message: the mention of him, the hashtag and a safe link.
    let first = bob
        .js(
            "const li = document.querySelector('.timeline li.msg[data-seq=\"1\"]');
             const a = li.querySelector('a');
             return {
               from: li.querySelector('.from').textContent,
               mention: [...li.querySelectorAll('.mention.me')].map(e => e.textContent),
               tags: [...li.querySelectorAll('.hashtag')].map(e => e.textContent),
               href: a.getAttribute('href'), target: a.target, rel: a.rel, text: a.textContent,
               time: li.querySelector('time').dateTime,
             };",
        )
        .await;
    assert_eq!(first["from"], "alice");
    assert_eq!(first["mention"], json!(["@bob"]));
    assert_eq!(first["tags"], json!(["#planning"]));
    assert_eq!(first["href"], "https://example.org/notes");
    assert_eq!(first["text"], "https://example.org/notes");
    assert_eq!(first["target"], "_blank");
    assert_eq!(first["rel"], "noopener noreferrer");
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(alice.outbox().await, (0, 0));

    let shot = alice.screenshot("chat-alice").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // Leaving a room takes it off the list and shows the one left.
    assert_eq!(alice.rooms().await, ["lobby", "release-1.0"]);
    alice.open_room("release-1.0").await;
    alice
        .client
        .find(Locator::Id("leave"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice
        .wait_for(
            "the room left",
            "return document.querySelectorAll('.room-button').length === 1 \
             && document.getElementById('room-title').textContent === 'lobby';",
        )
        .await;
    assert_eq!(alice.messages().await, want);

    // A phone-sized window: nothing wider than the screen, the composer still there.
    bob.client.set_window_size(390, 780).await.unwrap();
    bob.wait_for(
        "a layout that fits a phone",
        "return document.documentElement.scrollWidth <= window.innerWidth \
         && document.getElementById('send').getBoundingClientRect().right <= window.innerWidth;",
    )
    .await;
    bob.screenshot("chat-bob-phone").await;

    tokio::join!(alice.quit(), bob.quit());
}

#[tokio::test]
#[cfg_attr(
    not(feature = "browser"),
    ignore = "needs chromedriver and Chromium: --features courier-tests/browser (scripts/test.sh)"
)]
async fn scrolling_up_pages_older_history() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = TestGateway::start().await;
    const N: u64 = 120;
    for i in 1..=N {
        let r = gw
            .post(
                "lobby",
                json!({"id": format!("h-{i}"), "from": "carol", "body": format!("older {i:03}")}),
            )
            .await;
        assert_eq!(r.status(), 202);
    }
    let store = gw.store().await;
    let room = shared::RoomId::parse("lobby").unwrap();
    let end = Instant::now() + WAIT;
    while store.head(&room).await.unwrap() < N {
        assert!(Instant::now() < end, "messages stored in time");
        sleep(Duration::from_millis(50)).await;
    }

    let alice = Browser::start("alice").await;
    alice.sign_in(gw.addr, "alice").await;
    // The newest page first, the way to older ones offered.
    let recent: Vec<u64> = alice.messages().await.iter().map(|m| m.0).collect();
    assert_eq!(recent, (N - 49..=N).collect::<Vec<_>>());
    assert_eq!(
        alice
            .js("return !document.getElementById('older').hidden;")
            .await,
        true
    );
    // Scrolling to the top loads the next older page, until the beginning.
    alice
        .wait_for(
            "the whole room after scrolling up",
            "const s = document.getElementById('scroller'); s.scrollTop = 0;
             s.dispatchEvent(new Event('scroll'));
             return !document.getElementById('beginning').hidden;",
        )
        .await;
    let all = alice.messages().await;
    assert_eq!(
        all.iter().map(|m| m.0).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>()
    );
    // Two workers store concurrently: seq order need not be posting order.
    let mut bodies: Vec<&str> = all.iter().map(|m| m.2.as_str()).collect();
    bodies.sort();
    let want: Vec<String> = (1..=N).map(|i| format!("older {i:03}")).collect();
    assert_eq!(bodies, want);
    assert!(all.iter().all(|m| m.1 == "carol"));
    alice.quit().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "browser"),
    ignore = "needs chromedriver and Chromium: --features courier-tests/browser (scripts/test.sh)"
)]
async fn markup_in_a_message_shows_as_text() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = TestGateway::start().await;
    let (alice, bob) = tokio::join!(Browser::start("alice"), Browser::start("bob"));
    alice.sign_in(gw.addr, "alice").await;
    bob.sign_in(gw.addr, "bob").await;

    let evil = [
        "<img src=x onerror=alert(1)>",
        "<script>alert(2)</script><b>bold?</b> &amp; javascript:alert(3)",
    ];
    for text in evil {
        alice.say(text).await;
    }
    for b in [&alice, &bob] {
        b.wait_count(evil.len()).await;
        // Sent back to back, two workers may store them in either order.
        let mut bodies: Vec<String> = b.messages().await.into_iter().map(|m| m.2).collect();
        bodies.sort();
        let mut want = evil.map(String::from);
        want.sort();
        assert_eq!(bodies, want, "{}", b.name);
        let dom = b
            .js(
                "const t = document.querySelector('.room-view:not([hidden]) .timeline');
                 return {
                   img: document.querySelectorAll('img').length,
                   script: t.querySelectorAll('script').length,
                   bold: t.querySelectorAll('b').length,
                   links: t.querySelectorAll('a').length,
                 };",
            )
            .await;
        assert_eq!(
            dom,
            json!({"img": 0, "script": 0, "bold": 0, "links": 0}),
            "{}",
            b.name
        );
        // The text is on screen as the person typed it, and no alert came up.
        let img = b
            .client
            .find(Locator::XPath(
                "//li[contains(@class, 'msg')]/div[@class='body'][starts-with(., '<img')]",
            ))
            .await
            .unwrap();
        assert!(img.is_displayed().await.unwrap());
        assert_eq!(img.text().await.unwrap(), evil[0]);
        assert!(
            b.client.get_alert_text().await.is_err(),
            "{}: an alert is open",
            b.name
        );
    }
    // Abuse is censored by the workers and the message marked as flagged.
    alice.say("you are a fucking idiot").await;
    bob.wait_count(evil.len() + 1).await;
    let flagged = bob
        .js(
            "const li = document.querySelector('.timeline li.msg[data-seq=\"3\"]');
             return [li.classList.contains('flagged'), li.querySelector('.flag').textContent,
                     li.querySelector('.body').textContent];",
        )
        .await;
    assert_eq!(flagged[0], true, "{flagged}");
    assert_eq!(flagged[1], "flagged");
    assert!(!flagged[2].as_str().unwrap().contains("fuck"), "{flagged}");
    bob.screenshot("markup-as-text").await;
    tokio::join!(alice.quit(), bob.quit());
}

#[tokio::test]
#[cfg_attr(
    not(feature = "browser"),
    ignore = "needs chromedriver and Chromium: --features courier-tests/browser (scripts/test.sh)"
)]
async fn gateway_restart_loses_and_repeats_nothing_on_screen() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut first = TestGateway::start().await;
    let (addr, db_url) = (first.addr, first.db_url.clone());
    let (alice, bob) = tokio::join!(Browser::start("alice"), Browser::start("bob"));
    alice.sign_in(addr, "alice").await;
    bob.sign_in(addr, "bob").await;

    const N: usize = 30;
    // What people type: numbers, prices and times pass unharmed and in typed order.
    let bodies: Vec<String> = (1..=N)
        .map(|i| format!("message {i:02}: order 1992{i:02} is €4.50, call me at 18:30"))
        .collect();
    let sending = async {
        for b in &bodies {
            alice.say(b).await;
            sleep(Duration::from_millis(120)).await;
        }
    };
    let restarting = async {
        // Let some messages through, then stop the gateway (clients get 1012) and keep
        // it down for a while: Alice's page goes on sending into its pending list.
        alice.wait_count(5).await;
        first.stop().await;
        alice
            .wait_for(
                "the page offline with pending messages",
                "return document.getElementById('conn').dataset.state !== 'connected' \
                 && document.querySelectorAll('.outbox li.pending').length >= 2;",
            )
            .await;
        sleep(Duration::from_millis(500)).await;
        PortGateway::start(&db_url, addr).await
    };
    let ((), mut second) = tokio::join!(sending, restarting);

    for b in [&alice, &bob] {
        b.wait_count(N).await;
        b.wait_for(
            "the connection back",
            "return document.getElementById('conn').dataset.state === 'connected';",
        )
        .await;
    }
    alice
        .wait_for(
            "no pending message",
            "return document.querySelectorAll('.outbox li').length === 0;",
        )
        .await;
    let a = alice.messages().await;
    let b = bob.messages().await;
    assert_eq!(a, b, "both pages show the same room");
    let seqs: Vec<u64> = a.iter().map(|m| m.0).collect();
    assert_eq!(
        seqs,
        (1..=N as u64).collect::<Vec<_>>(),
        "every seq once, in order, no gap"
    );
    let shown: Vec<String> = a.iter().map(|m| m.2.clone()).collect();
    assert!(a.iter().all(|m| m.1 == "alice"));
    assert_eq!(
        shown, bodies,
        "every message exactly once, in the order it was typed (also those typed offline)"
    );
    assert_eq!(alice.outbox().await, (0, 0));
    alice.screenshot("after-restart").await;

    // The store agrees with the screens.
    let stored = second_store_count(&db_url).await;
    assert_eq!(stored, N as u64);

    tokio::join!(alice.quit(), bob.quit());
    second.stop().await;
    drop(first);
}

async fn second_store_count(db_url: &str) -> u64 {
    let store = store::Store::connect(db_url, Default::default())
        .await
        .unwrap();
    let room = shared::RoomId::parse("lobby").unwrap();
    store.head(&room).await.unwrap()
}

/// Issue 12 on the page: alice and bob each start their direct room from the page and talk
/// in it; carol, opening the same room, is told she is not a member and sees none of it.
#[tokio::test]
#[cfg_attr(
    not(feature = "browser"),
    ignore = "needs chromedriver and Chromium: --features courier-tests/browser (scripts/test.sh)"
)]
async fn a_direct_room_started_from_the_page_is_private_to_its_two_users() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = TestGateway::start().await;
    let (alice, bob, carol) = tokio::join!(
        Browser::start("alice"),
        Browser::start("bob"),
        Browser::start("carol")
    );
    alice.sign_in(gw.addr, "alice").await;
    bob.sign_in(gw.addr, "bob").await;
    carol.sign_in(gw.addr, "carol").await;
    let room = "dm:alice:bob";
    alice.start_dm("bob", room).await;
    bob.start_dm("alice", room).await;
    alice.say("psst bob, eyes only").await;
    bob.wait_count(1).await;
    bob.say("got it, eyes only").await;
    alice.wait_count(2).await;
    let want = vec![
        (1, "alice".to_owned(), "psst bob, eyes only".to_owned()),
        (2, "bob".to_owned(), "got it, eyes only".to_owned()),
    ];
    assert_eq!(alice.messages().await, want);
    assert_eq!(bob.messages().await, want);
    // Listed among each one's direct rooms, by the other's name.
    let listed = format!(
        "const b = document.querySelector('#private-list .room-button[data-room=\"{room}\"]'); \
         return b && b.textContent;"
    );
    assert_eq!(alice.wait_for("the room listed", &listed).await, "bob");
    assert_eq!(bob.wait_for("the room listed", &listed).await, "alice");

    // Carol opens the same room by name: refused, told why, shown nothing of it.
    let input = carol.client.find(Locator::Id("room-name")).await.unwrap();
    input.send_keys(room).await.unwrap();
    carol
        .client
        .find(Locator::Id("join-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    carol
        .wait_for(
            "the refusal explained",
            "const n = document.getElementById('notice'); \
             return !n.hidden && n.textContent.includes('You are not a member of the private room dm:alice:bob');",
        )
        .await;
    alice.say("still eyes only").await;
    bob.wait_count(3).await;
    let seen = carol
        .js(&format!(
            "return [!!document.querySelector('.room-view[data-room=\"{room}\"]'), \
                     document.body.innerText.includes('eyes only'), \
                     document.querySelectorAll('#private-list .room-button').length];"
        ))
        .await;
    assert_eq!(seen, json!([false, false, 0]), "carol saw {seen}");
    assert_eq!(carol.rooms().await, ["lobby"]);
    carol.screenshot("dm-refused-carol").await;
    tokio::join!(alice.quit(), bob.quit(), carol.quit());
}

#[tokio::test]
#[cfg_attr(
    not(feature = "browser"),
    ignore = "needs chromedriver and Chromium: --features courier-tests/browser (scripts/test.sh)"
)]
async fn two_people_see_each_other_online_and_who_is_typing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = TestGateway::start().await;
    let (alice, bob) = tokio::join!(Browser::start("alice"), Browser::start("bob"));
    alice.sign_in(gw.addr, "alice").await;
    bob.sign_in(gw.addr, "bob").await;
    let online = "return document.getElementById('online').textContent;";
    for b in [&alice, &bob] {
        b.wait_for(
            "both online",
            "return document.getElementById('online').textContent === 'Online: alice, bob';",
        )
        .await;
    }
    assert_eq!(alice.js(online).await, "Online: alice, bob");

    // Bob types (without sending): alice sees it under the timeline, bob does not.
    let input = bob.client.find(Locator::Id("text")).await.unwrap();
    input.send_keys("half a thought").await.unwrap();
    let typing = "return document.getElementById('typing').textContent;";
    alice
        .wait_for(
            "bob is typing",
            "return document.getElementById('typing').textContent === 'bob is typing…';",
        )
        .await;
    assert_eq!(bob.js(typing).await, "", "not shown to the typist");
    alice.screenshot("typing-alice").await;
    // Sending the message takes the typing line away at once.
    bob.client
        .find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice.wait_count(1).await;
    assert_eq!(alice.js(typing).await, "");

    // Bob closes his page: alice sees him go.
    bob.quit().await;
    alice
        .wait_for(
            "bob offline",
            "return document.getElementById('online').textContent === 'Online: alice';",
        )
        .await;
    alice.quit().await;
}

/// Issue 14 on the page: alice edits a message (markup in it stays text), bob and alice
/// react to it with the picker and a chip, alice deletes another, bob replies with a
/// quote; both pages show the same latest state. A second room that carol posts into
/// from a WebSocket client shows its unread count as a badge on alice's page, from the
/// gateway's counts (also after a reload); opening the room reads it, which the gateway
/// keeps, and under alice's last message her page says who has seen it.
#[tokio::test]
#[cfg_attr(
    not(feature = "browser"),
    ignore = "needs chromedriver and Chromium: --features courier-tests/browser (scripts/test.sh)"
)]
async fn edits_reactions_deletes_replies_and_unread_badges_on_the_page() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = TestGateway::start().await;
    let (alice, bob) = tokio::join!(Browser::start("alice"), Browser::start("bob"));
    alice.sign_in(gw.addr, "alice").await;
    bob.sign_in(gw.addr, "bob").await;
    alice.join_room("release").await;
    alice.open_room("lobby").await;

    alice.say("helo wrold").await;
    alice.wait_count(1).await;
    alice.say("oops, wrong room").await;
    bob.wait_count(2).await;
    alice.wait_count(2).await;
    let msg = |seq: u64| format!("li.msg[data-seq=\"{seq}\"]");

    // Only her own messages offer Edit and Delete; every message offers Reply and a reaction.
    let actions = |seq: u64| {
        format!(
            "return [...document.querySelectorAll('{} .actions button')].map(b => b.textContent + '|' + b.getAttribute('aria-label'));",
            msg(seq).replace('"', "\\\"")
        )
    };
    assert_eq!(
        alice.js(&actions(1)).await,
        json!([
            "☺+|Add a reaction",
            "Reply|Reply to alice",
            "Edit|Edit your message",
            "Delete|Delete your message"
        ])
    );
    assert_eq!(
        bob.js(&actions(1)).await,
        json!(["☺+|Add a reaction", "Reply|Reply to alice"])
    );

    // Alice edits message 1; markup in the new text stays text.
    alice.click(&format!("{} .act.edit", msg(1))).await;
    let field = alice
        .client
        .find(Locator::Css(&format!("{} .edit-text", msg(1))))
        .await
        .unwrap();
    assert_eq!(
        field.prop("value").await.unwrap().as_deref(),
        Some("helo wrold")
    );
    field.clear().await.unwrap();
    field.send_keys("hello <i>world</i>").await.unwrap();
    alice.click(&format!("{} .editor .save", msg(1))).await;
    let edited = format!(
        "const li = document.querySelector('{}');
         return !!li && !li.querySelector('.editor') && li.querySelector('.body').textContent === 'hello <i>world</i>'
           && li.querySelector('.edited')?.textContent === '(edited)' && li.querySelectorAll('i').length === 0;",
        msg(1).replace('"', "\\\"")
    );
    alice.wait_for("the edit shown", &edited).await;
    bob.wait_for("the edit shown", &edited).await;

    // Bob reacts with the picker, alice adds hers by clicking the chip.
    bob.click(&format!("{} .react-toggle", msg(1))).await;
    bob.click(&format!("{} .picker .pick[data-emoji=\"👍\"]", msg(1)))
        .await;
    let chip = |count: usize, pressed: bool| {
        format!(
            "const c = document.querySelectorAll('{} .reactions .chip');
             return c.length === 1 && c[0].dataset.emoji === '👍'
               && c[0].querySelector('.chip-count').textContent === '{count}'
               && c[0].getAttribute('aria-pressed') === '{pressed}';",
            msg(1).replace('"', "\\\"")
        )
    };
    bob.wait_for("bob's reaction", &chip(1, true)).await;
    alice.wait_for("bob's reaction", &chip(1, false)).await;
    assert_eq!(
        bob.js(&format!(
            "return !!document.querySelector('{} .picker');",
            msg(1).replace('"', "\\\"")
        ))
        .await,
        false,
        "the picker closes after a pick"
    );
    alice
        .click(&format!("{} .chip[data-emoji=\"👍\"]", msg(1)))
        .await;
    alice.wait_for("both reactions", &chip(2, true)).await;
    bob.wait_for("both reactions", &chip(2, true)).await;
    let title = alice
        .js(&format!(
            "return document.querySelector('{} .chip').title;",
            msg(1).replace('"', "\\\"")
        ))
        .await;
    assert_eq!(title, "👍 alice, bob");

    // Alice deletes message 2, after confirming.
    alice.click(&format!("{} .act.delete", msg(2))).await;
    alice.click(&format!("{} .confirm-delete", msg(2))).await;
    let deleted = format!(
        "const li = document.querySelector('{}');
         return !!li && li.classList.contains('deleted') && li.querySelector('.body').textContent === 'message deleted'
           && !li.querySelector('.actions') && !document.body.innerText.includes('wrong room');",
        msg(2).replace('"', "\\\"")
    );
    alice.wait_for("the delete shown", &deleted).await;
    bob.wait_for("the delete shown", &deleted).await;

    // Bob replies to message 1: the reply quotes it on both pages.
    bob.click(&format!("{} .act.reply", msg(1))).await;
    assert_eq!(
        bob.js("return document.getElementById('reply-bar').hidden ? null : document.getElementById('reply-text').textContent;")
            .await,
        "Replying to alice: hello <i>world</i>"
    );
    bob.say("agreed").await;
    for b in [&alice, &bob] {
        b.wait_count(3).await;
        let reply = b
            .wait_for(
                "the reply with its quote",
                "const li = [...document.querySelectorAll('.room-view:not([hidden]) .timeline > li.msg')].pop();
                 const q = li && li.querySelector('.quote');
                 return q && li.dataset.from === 'bob' && [q.dataset.target, q.textContent, li.querySelector('.body').textContent];",
            )
            .await;
        assert_eq!(
            reply,
            json!(["1", "alice hello <i>world</i>", "agreed"]),
            "{}",
            b.name
        );
    }
    assert_eq!(
        bob.js("return document.getElementById('reply-bar').hidden;")
            .await,
        true
    );
    let want = vec![
        (1, "alice".to_owned(), "hello <i>world</i>".to_owned()),
        (2, "alice".to_owned(), "message deleted".to_owned()),
        (7, "bob".to_owned(), "agreed".to_owned()),
    ];
    assert_eq!(alice.messages().await, want);
    assert_eq!(bob.messages().await, want);

    // Bob's page reads the lobby as it is shown: alice's page says so under her last
    // message (the deleted one does not count).
    alice
        .wait_for(
            "seen by bob",
            &format!(
                "const s = document.querySelectorAll('.timeline .seen');
                 return s.length === 1 && s[0].textContent === 'Seen by bob' && !!s[0].closest('{}');",
                msg(1).replace('"', "\\\"")
            ),
        )
        .await;
    alice.screenshot("issue14-alice").await;
    bob.screenshot("issue14-bob").await;

    // Carol posts into release while alice looks at the lobby: a badge with the count.
    let mut carol = gw.client("carol").await;
    carol.join("release").await;
    for (id, body) in [("c-1", "release notes are up"), ("c-2", "please review")] {
        let ack = carol.say("release", id, body).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let badge = |n: &str| {
        format!(
            "const b = document.querySelector('.room-button[data-room=\"release\"] .unread');
             return !b.hidden && b.textContent === '{n}';"
        )
    };
    alice.wait_for("a badge of 2 on release", &badge("2")).await;
    assert_eq!(
        alice
            .js("return document.querySelector('.room-button[data-room=\"release\"]').textContent;")
            .await,
        "release2 (2 unread)"
    );

    // Opening the room reads it: the badge goes, and the gateway keeps alice's cursor.
    alice.open_room("release").await;
    let no_badge =
        "return document.querySelector('.room-button[data-room=\"release\"] .unread').hidden;";
    alice.wait_for("no badge on release", no_badge).await;
    let end = Instant::now() + WAIT;
    loop {
        let r = format!("reads-{}", helpers::unique_suffix());
        carol
            .send(json!({"type": "reads", "room": "release", "ref": r}))
            .await;
        let reads = carol
            .recv_where(|v| v["type"] == "reads" && v["ref"] == r.as_str())
            .await;
        if reads["reads"]["alice"] == 2 {
            break;
        }
        assert!(
            Instant::now() < end,
            "alice's cursor never reached 2: {reads}"
        );
        sleep(Duration::from_millis(200)).await;
    }
    alice.open_room("lobby").await;
    alice.wait_for("still no badge", no_badge).await;

    // One more while she is away; after a reload the count comes from the gateway.
    let ack = carol.say("release", "c-3", "ping?").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    alice.wait_for("a badge of 1 on release", &badge("1")).await;
    alice.sign_in(gw.addr, "alice").await;
    alice
        .wait_for("a badge of 1 after a reload", &badge("1"))
        .await;
    assert_eq!(alice.rooms().await, ["lobby", "release"]);
    assert_eq!(
        alice.messages().await,
        want,
        "the lobby as before the reload"
    );
    alice.screenshot("issue14-badge").await;
    tokio::join!(alice.quit(), bob.quit());
}
