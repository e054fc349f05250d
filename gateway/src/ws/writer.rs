//! A connection's writer: the only code that writes to the socket.
//!
//! It keeps, per joined room, the last `seq` it wrote. A live message at or below it is
//! skipped (never the same seq twice); one beyond the next is preceded by the missing
//! messages read from the store (never a gap). Replays for `join` with `since` go through
//! the same cursor, which is what joins replay and live traffic without a seam.
//!
//! When a room message could not be queued (the frame queue or the byte bound was
//! full), the connection is lagging: once the writer has drained its queue it reads each
//! room's head and writes what it missed from the store. A write that stays blocked
//! while the connection lags or is over its byte bound means the client is not reading:
//! it is closed with 1008 (see `outbox`).

use super::outbox::{self, Intake};
use crate::hub::{JoinedReply, LeftReply, Outbound};
use crate::protocol::{REPLAY_MAX, ServerEvent};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt};
use shared::shutdown::Shutdown;
use shared::{RoomId, StoredMessage};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use store::Store;

/// Longest a single socket write may take: a client that takes nothing for this long
/// stopped reading, and is closed with 1008.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a blocked write checks whether the connection fell behind.
const BLOCKED_CHECK: Duration = Duration::from_millis(100);
/// Page size of store reads for replays and gap fills.
const PAGE: u32 = 200;

/// Why the writer stopped, and the close frame to send if any.
#[derive(Debug, PartialEq, Eq)]
pub enum WriterExit {
    /// Every sender is gone: the reader ended.
    Drained,
    /// The socket cannot be written to.
    Broken,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

enum Cursor {
    /// Joining: live messages wait here until the replay is written.
    Joining(Vec<(u64, Utf8Bytes)>),
    /// Last seq written.
    Live(u64),
}

pub struct Writer<'a, S> {
    sink: &'a mut S,
    intake: Intake<'a>,
    store: Store,
    rooms: HashMap<RoomId, Cursor>,
    /// Bound of a room's early-arrival list, the same as the outbound buffer.
    max_early: usize,
    /// Gateway receipt to the write of a live message (looked up once, not per frame).
    latency: metrics::Histogram,
    bytes_out: metrics::Counter,
    /// Frames fed since the last flush.
    unflushed: bool,
}

impl<'a, S> Writer<'a, S>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    pub fn new(sink: &'a mut S, intake: Intake<'a>, store: Store, max_early: usize) -> Self {
        Self {
            sink,
            intake,
            store,
            rooms: HashMap::new(),
            max_early,
            latency: metrics::histogram!("courier_delivery_latency_seconds"),
            bytes_out: metrics::counter!("courier_bytes_out_total"),
            unflushed: false,
        }
    }

    /// Writes until the reader is gone, the buffer overflowed, or the gateway stops.
    pub async fn run(mut self, shutdown: Shutdown, heartbeat: Duration) -> WriterExit {
        let stopping = shutdown.fired();
        tokio::pin!(stopping);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut stopping => return WriterExit::Close(1012, "gateway restarting; reconnect with since"),
                item = self.intake.next() => match item {
                    Some(item) => Some(item),
                    None => return WriterExit::Drained,
                },
                _ = ping.tick() => None,
            };
            let step = match next {
                Some(item) => {
                    let cost = outbox::cost(&item);
                    let step = self.handle(item).await;
                    self.intake.done(cost);
                    step
                }
                None => self.write(Message::Ping(Default::default())).await,
            };
            if let Err(exit) = step {
                return exit;
            }
            if self.intake.is_empty()
                && self.intake.lagging.swap(false, Ordering::Relaxed)
                && let Err(exit) = Box::pin(self.resync()).await
            {
                return exit;
            }
            // Frames are fed, not flushed, one by one: a burst for this client goes out
            // in one socket write once nothing more is waiting.
            if self.intake.is_empty()
                && let Err(exit) = self.flush().await
            {
                return exit;
            }
        }
    }

    /// Writes, for every live room, what was stored beyond the cursor.
    async fn resync(&mut self) -> Result<(), WriterExit> {
        metrics::counter!("courier_resyncs_total").increment(1);
        let live: Vec<(RoomId, u64)> = self
            .rooms
            .iter()
            .filter_map(|(room, c)| match c {
                Cursor::Live(last) => Some((room.clone(), *last)),
                Cursor::Joining(_) => None,
            })
            .collect();
        for (room, last) in live {
            let head = self.store.head(&room).await.map_err(|e| {
                tracing::error!(%room, error = %e, "reading a room's head to resync failed");
                WriterExit::Close(1011, "store unavailable; reconnect with since")
            })?;
            if head > last {
                let upto = self.write_from_store(&room, last, head).await?;
                if let Some(Cursor::Live(c)) = self.rooms.get_mut(&room) {
                    *c = (*c).max(upto);
                }
            }
        }
        Ok(())
    }

    async fn handle(&mut self, item: Outbound) -> Result<(), WriterExit> {
        match item {
            Outbound::Frame(f) => self.text(f).await,
            Outbound::Joining(room) => {
                self.rooms
                    .entry(room)
                    .or_insert_with(|| Cursor::Joining(Vec::new()));
                Ok(())
            }
            Outbound::Abandon(room) => {
                if matches!(self.rooms.get(&room), Some(Cursor::Joining(_))) {
                    self.forget(&room);
                }
                Ok(())
            }
            Outbound::Joined(j) => {
                // Boxed, like every store read here, to keep idle connections small.
                Box::pin(self.joined(*j)).await
            }
            Outbound::Left(l) => {
                let LeftReply {
                    room,
                    reference,
                    removed,
                } = *l;
                self.forget(&room);
                let ev = ServerEvent::Left {
                    room: &room,
                    reference: reference.as_deref(),
                    reason: removed.then_some("removed"),
                };
                self.text(ev.to_json().into()).await
            }
            Outbound::Live(d) => {
                self.live(&d.room, d.seq, d.frame.clone()).await?;
                let age = shared::Timestamp::now().as_millis() - d.sent_at_ms;
                self.latency.record(age.max(0) as f64 / 1000.0);
                Ok(())
            }
            // Only while the room is live here: never before `joined` nor after `left`.
            Outbound::Signal(s) => match self.rooms.get(&s.room) {
                Some(Cursor::Live(_)) => self.text(s.frame.clone()).await,
                _ => Ok(()),
            },
            // Caught up later, once the buffer is drained, so a join in progress is included.
            Outbound::Resync => {
                self.intake.lagging.store(true, Ordering::Relaxed);
                Ok(())
            }
            Outbound::Close(code, reason) => Err(WriterExit::Close(code, reason)),
        }
    }

    async fn joined(&mut self, j: JoinedReply) -> Result<(), WriterExit> {
        let JoinedReply {
            room,
            head,
            read,
            unread,
            since,
            reference,
        } = j;
        let (had, early) = match self.rooms.remove(&room) {
            Some(Cursor::Live(c)) => (Some(c), Vec::new()),
            Some(Cursor::Joining(early)) => (None, early),
            None => (None, Vec::new()),
        };
        // Replay (from, head]; never below what this connection already got.
        let mut from = match since {
            Some(s) => s.max(had.unwrap_or(0)).min(head),
            None => had.unwrap_or(head),
        };
        let truncated = since.is_some() && head - from > REPLAY_MAX;
        if truncated {
            from = head - REPLAY_MAX;
        }
        let ev = ServerEvent::Joined {
            room: &room,
            head,
            read,
            unread,
            truncated,
            reference: reference.as_deref(),
        };
        self.text(ev.to_json().into()).await?;
        let mut cursor = from;
        if since.is_some() {
            cursor = self.write_from_store(&room, from, head).await?;
        }
        self.rooms.insert(room.clone(), Cursor::Live(cursor));
        let mut early = early.into_iter();
        while let Some((seq, frame)) = early.next() {
            let cost = frame.len();
            let written = self.live(&room, seq, frame).await;
            self.intake.done(cost);
            if let Err(exit) = written {
                early.for_each(|(_, f)| self.intake.done(f.len()));
                return Err(exit);
            }
        }
        Ok(())
    }

    /// Drops a room's cursor, and the bytes of what it held back, if anything.
    fn forget(&mut self, room: &RoomId) {
        if let Some(Cursor::Joining(early)) = self.rooms.remove(room) {
            early.iter().for_each(|(_, f)| self.intake.done(f.len()));
        }
    }

    async fn live(&mut self, room: &RoomId, seq: u64, frame: Utf8Bytes) -> Result<(), WriterExit> {
        let last = match self.rooms.get_mut(room) {
            None => return Ok(()),
            Some(Cursor::Joining(early)) => {
                // Held back, it still counts against the byte bound; beyond either
                // bound, drop it and resync from the store later.
                if early.len() < self.max_early && self.intake.budget.try_admit(frame.len()) {
                    early.push((seq, frame));
                } else {
                    self.intake.missed();
                }
                return Ok(());
            }
            Some(Cursor::Live(last)) => *last,
        };
        if seq <= last {
            return Ok(());
        }
        if seq > last + 1 {
            metrics::counter!("courier_gap_fills_total").increment(1);
            let filled = Box::pin(self.write_from_store(room, last, seq - 1)).await?;
            self.rooms.insert(room.clone(), Cursor::Live(filled));
            if filled + 1 != seq {
                // The store must hold every seq below a delivered one; if it does not,
                // closing (the client resumes with since) beats showing a gap.
                tracing::error!(%room, after = filled, seq, "store is missing messages below a delivered seq");
                return Err(WriterExit::Close(
                    1011,
                    "missing messages; reconnect with since",
                ));
            }
        }
        self.text(frame).await?;
        self.rooms.insert(room.clone(), Cursor::Live(seq));
        Ok(())
    }

    /// Writes stored messages with seq in (after, upto]; returns the last seq written.
    async fn write_from_store(
        &mut self,
        room: &RoomId,
        after: u64,
        upto: u64,
    ) -> Result<u64, WriterExit> {
        let mut last = after;
        while last < upto {
            let want = (upto - last).min(u64::from(PAGE)) as u32;
            let page = self.store.after(room, last, want).await.map_err(|e| {
                tracing::error!(%room, error = %e, "reading the store to replay or fill a gap failed");
                WriterExit::Close(1011, "store unavailable; reconnect with since")
            })?;
            if page.is_empty() {
                break;
            }
            for m in page.iter().filter(|m| m.seq <= upto) {
                self.text(serialize(m)).await?;
                last = m.seq;
            }
        }
        Ok(last)
    }

    async fn text(&mut self, frame: Utf8Bytes) -> Result<(), WriterExit> {
        self.bytes_out.increment(frame.len() as u64);
        self.write(Message::Text(frame)).await
    }

    /// Queues one frame in the write buffer (written out when it fills, or at `flush`).
    async fn write(&mut self, msg: Message) -> Result<(), WriterExit> {
        self.unflushed = true;
        let feed = self.sink.feed(msg);
        drive(feed, &mut self.intake).await
    }

    /// Writes out what was fed, if anything.
    async fn flush(&mut self) -> Result<(), WriterExit> {
        if !std::mem::take(&mut self.unflushed) {
            return Ok(());
        }
        let flush = self.sink.flush();
        drive(flush, &mut self.intake).await
    }
}

/// Completes a socket write. While it is blocked, what arrives for the connection is
/// taken and counted; a write the socket does not take while the connection lags or is
/// over its byte bound, or for `WRITE_TIMEOUT`, means the client stopped reading: give up
/// on it with 1008 (the close frame then queues behind the frame in flight).
async fn drive<F>(write: F, intake: &mut Intake<'_>) -> Result<(), WriterExit>
where
    F: std::future::Future<Output = Result<(), axum::Error>>,
{
    let mut write = std::pin::pin!(write);
    // Most writes complete at once: try before arming any timer (two timers per frame
    // were a measurable share of the fan-out's CPU).
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(r) = first {
        return r.map_err(|_| WriterExit::Broken);
    }
    let deadline = tokio::time::sleep(WRITE_TIMEOUT);
    tokio::pin!(deadline);
    let start = tokio::time::Instant::now() + BLOCKED_CHECK;
    let mut check = tokio::time::interval_at(start, BLOCKED_CHECK);
    loop {
        tokio::select! {
            biased;
            r = &mut write => return r.map_err(|_| WriterExit::Broken),
            _ = &mut deadline => return Err(slow_consumer()),
            _ = check.tick() => {
                if intake.stalled() {
                    return Err(slow_consumer());
                }
            }
            _ = intake.hold_next() => {}
        }
    }
}

fn slow_consumer() -> WriterExit {
    metrics::counter!("courier_slow_consumer_closes_total").increment(1);
    WriterExit::Close(1008, "not reading; reconnect with since")
}

fn serialize(m: &StoredMessage) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(m).expect("messages serialize"))
}

/// Sends a close frame. It waits behind whatever a slow reader has not taken yet, up to
/// the write timeout, so a reader that is slow but alive still learns why it was closed.
pub async fn close<S>(sink: &mut S, code: u16, reason: &'static str)
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}
