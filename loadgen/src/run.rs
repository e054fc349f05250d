//! W1 and W2: connect, drive load for warm-up plus duration, drain, report.

use crate::bodies::Bodies;
use crate::cli::{BodyMode, Protocol, RunArgs, Target};
use crate::client::{self, Incoming, Ws};

/// An open, joined connection, as [`connect_all`] gives them.
pub type WsConn = Ws;
use crate::procstat;
use crate::report;
use crate::rng::Rng;
use crate::stats::{ConnStats, decode_id, encode_id};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

/// When each phase starts, fixed before the first send.
pub struct Plan {
    pub origin: Instant,
    /// Tags this run's message ids.
    pub run: u32,
    pub start: Instant,
    pub measure_from: Instant,
    pub send_end: Instant,
    pub drain_end: Instant,
    pub rate: Option<f64>,
    pub window: usize,
    pub bodies: Bodies,
    /// Seeds each connection's draw of bodies.
    pub seed: u64,
    pub target: Target,
}

impl Plan {
    fn micros(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_micros() as u64
    }
}

/// Live totals the coordinator watches to end the drain early.
#[derive(Default)]
pub struct Totals {
    pub expected: AtomicU64,
    pub received: AtomicU64,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.bodies == BodyMode::Corpus && args.body_bytes.is_some() {
        anyhow::bail!("--body-bytes needs --bodies fixed: the corpus has its own lengths");
    }
    let procs = procstat::parse(&args.target.pids)?;
    let bodies = Bodies::new(args.bodies, args.body_bytes.unwrap_or(64), args.seed);
    let origin = Instant::now();
    let conns = connect_all(&args.target, 16 * 1024).await?;
    let start = Instant::now() + Duration::from_millis(500);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let send_end = measure_from + Duration::from_secs_f64(args.duration);
    let plan = Arc::new(Plan {
        origin,
        run: run_tag(),
        start,
        measure_from,
        send_end,
        drain_end: send_end + Duration::from_secs_f64(args.drain),
        rate: args.rate,
        window: args.window.max(1),
        bodies,
        seed: args.seed,
        target: args.target.clone(),
    });
    let totals = Arc::new(Totals::default());
    let (done_tx, done_rx) = watch::channel(false);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(drive(i, ws, plan.clone(), totals.clone(), done_rx.clone())))
        .collect();

    sleep_until(measure_from).await;
    let me = procstat::sample(std::process::id()).cpu_s;
    let (before, m0) = (procstat::sample_all(&procs), procstat::machine());
    sleep_until(send_end).await;
    let (after, m1) = (procstat::sample_all(&procs), procstat::machine());
    let driver_cpu_s = procstat::sample(std::process::id()).cpu_s - me;
    while Instant::now() < plan.drain_end
        && totals.received.load(Relaxed) < totals.expected.load(Relaxed)
    {
        sleep(Duration::from_millis(10)).await;
    }
    let drain_s = send_end.elapsed().as_secs_f64();
    let _ = done_tx.send(true);
    let mut all = ConnStats::new(false);
    for t in tasks {
        all.merge(t.await?);
    }
    let (busy_s, busy) = procstat::machine_busy(&m0, &m1);
    let machine = report::Machine {
        busy,
        // Everything that ran (brokers, databases, the kernel's network work) but this
        // driver: what a deployment of the system under test costs.
        cpu_s: (busy_s - driver_cpu_s).max(0.0),
        driver_cpu_s,
    };
    report::run(
        &args,
        &all,
        &procstat::window(&procs, &before, &after),
        &machine,
        drain_s,
    );
    Ok(())
}

/// A tag that differs from run to run (time and process id are enough).
fn run_tag() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

/// Opens every connection, a bounded number at a time.
pub async fn connect_all(t: &Target, read_buffer: usize) -> anyhow::Result<Vec<Ws>> {
    let began = Instant::now();
    let conns: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..t.conns)
        .map(|i| {
            let room = format!("bench-{}", i % t.rooms);
            let url = t.url(i).to_string();
            let proto = t.protocol;
            async move { client::open(&url, proto, &format!("lg{i}"), &room, read_buffer).await }
        })
        .buffered(t.connect_concurrency.max(1))
        .collect()
        .await;
    let opened = conns.iter().filter(|c| c.is_ok()).count();
    let conns = conns
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(|e| e.context(format!("{opened} of {} connections opened", t.conns)))?;
    eprintln!(
        "{} connections open and joined in {:.1} s",
        t.conns,
        began.elapsed().as_secs_f64()
    );
    Ok(conns)
}

/// One connection and what it has counted.
struct Driver {
    i: usize,
    ws: Ws,
    room: String,
    members: u64,
    n: u64,
    /// Draws this connection's bodies, the same ones in every run with the same seed.
    rng: Rng,
    st: ConnStats,
    plan: Arc<Plan>,
    totals: Arc<Totals>,
}

enum Reply {
    None,
    Pong,
    /// Closed loop: one of this connection's messages completed (or failed); send again
    /// after the delay.
    Credit(Duration),
}

/// One connection's life: send on schedule (or on each own delivery), count what arrives.
async fn drive(
    i: usize,
    ws: Ws,
    plan: Arc<Plan>,
    totals: Arc<Totals>,
    mut done: watch::Receiver<bool>,
) -> ConnStats {
    let t = &plan.target;
    let period = Duration::from_secs_f64(t.conns as f64 / plan.rate.unwrap_or(1.0));
    let mut ticker = interval_at(
        plan.start + period.mul_f64(i as f64 / t.conns as f64),
        period,
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let open_loop = plan.rate.is_some();
    // Closed loop: messages this connection may still put in flight, and when to.
    let mut credits = if open_loop { 0 } else { plan.window };
    let mut kick = (!open_loop).then_some(plan.start);
    let mut d = Driver {
        i,
        ws,
        room: format!("bench-{}", i % t.rooms),
        members: t.members(i),
        n: 0,
        rng: Rng::new(plan.seed, i as u64),
        st: ConnStats::new(t.protocol == Protocol::Socketio),
        plan: plan.clone(),
        totals,
    };
    let ok = loop {
        tokio::select! {
            tick = ticker.tick(), if open_loop => {
                if tick < plan.send_end && d.send(tick).await.is_err() { break false; }
            }
            _ = sleep_until(kick.unwrap_or(plan.start)), if kick.is_some() => {
                kick = None;
                while credits > 0 && Instant::now() < plan.send_end {
                    credits -= 1;
                    if d.send(Instant::now()).await.is_err() { break; }
                }
            }
            frame = d.ws.next() => match frame {
                Some(Ok(Message::Text(text))) => match d.on_frame(&text) {
                    Reply::None => {}
                    Reply::Pong => { let _ = d.ws.send(Message::text("3")).await; }
                    Reply::Credit(delay) => {
                        credits += 1;
                        if Instant::now() < plan.send_end {
                            kick = Some(Instant::now() + delay);
                        }
                    }
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => break false,
                Some(Ok(_)) => {}
            },
            _ = done.changed() => break true,
        }
    };
    if !ok {
        d.st.disconnects += 1;
    }
    d.st
}

impl Driver {
    /// Sends one message whose id carries `at`, its scheduled time.
    async fn send(&mut self, at: Instant) -> anyhow::Result<()> {
        let id = encode_id(self.plan.run, self.i, self.n, self.plan.micros(at));
        self.n += 1;
        self.st.sent += 1;
        self.st.expected += self.members;
        self.totals.expected.fetch_add(self.members, Relaxed);
        let body = self.plan.bodies.pick(&mut self.rng);
        self.st.body_bytes += body.bytes as u64;
        let frame = client::send_frame(self.plan.target.protocol, &self.room, &id, &body.json);
        self.ws.send(frame).await?;
        Ok(())
    }

    fn on_frame(&mut self, text: &str) -> Reply {
        let (plan, st) = (&*self.plan, &mut self.st);
        let now = Instant::now();
        let now_us = plan.micros(now);
        let measured_from = plan.micros(plan.measure_from);
        match client::classify(plan.target.protocol, text) {
            Incoming::Message { id, seq } => {
                let Some((sender, n, sent_us)) = decode_id(plan.run, id) else {
                    st.foreign(seq);
                    return Reply::None;
                };
                if !st.delivery(sender, n, seq) {
                    return Reply::None;
                }
                self.totals.received.fetch_add(1, Relaxed);
                if now >= plan.measure_from && now < plan.send_end {
                    st.received_in_window += 1;
                }
                if sent_us >= measured_from {
                    let _ = st.latency.record(now_us.saturating_sub(sent_us).max(1));
                }
                if sender == self.i && plan.rate.is_none() {
                    return Reply::Credit(Duration::ZERO);
                }
                Reply::None
            }
            Incoming::Ack { id } => {
                if let Some((_, _, sent_us)) = decode_id(plan.run, id) {
                    st.acked += 1;
                    if sent_us >= measured_from {
                        let _ = st.ack_latency.record(now_us.saturating_sub(sent_us).max(1));
                    }
                }
                Reply::None
            }
            Incoming::Error { id, code } => {
                st.errors += 1;
                if st.error_codes.len() < 5 {
                    st.error_codes.push(code);
                }
                if id
                    .and_then(|id| decode_id(plan.run, id))
                    .is_none_or(|(sender, _, _)| sender != self.i)
                {
                    return Reply::None;
                }
                st.expected -= self.members;
                self.totals.expected.fetch_sub(self.members, Relaxed);
                match plan.rate {
                    None => Reply::Credit(Duration::from_millis(5)),
                    Some(_) => Reply::None,
                }
            }
            Incoming::Ping => Reply::Pong,
            Incoming::Other => Reply::None,
        }
    }
}
