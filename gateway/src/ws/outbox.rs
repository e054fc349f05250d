//! What waits to be written to one connection, bounded in bytes (`OUTBOUND_BUFFER_BYTES`).
//!
//! Two parties queue frames for a connection's writer: its reader (replies, which can be
//! a 192 KiB `history` page each) and the hub (room messages). A bound in frames alone
//! let one client that asks and never reads pin hundreds of megabytes, so everything
//! queued is also counted in bytes until the writer has handed it to the socket:
//!
//! - the reader waits before queuing a reply while the connection is over its bound
//!   (a client gets no more replies than it reads);
//! - a room message that would go over it is not kept: the connection is marked
//!   lagging and catches up from the store later, as when the frame queue is full;
//! - while a write to the socket is blocked, the writer keeps taking what arrives (so
//!   room messages are counted rather than left in the queue), and if the connection is
//!   over its bound or lagging meanwhile, the client is not reading: it is closed with 1008.

use crate::hub::Outbound;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc};

/// Bytes queued for one connection and not yet written, against its bound.
pub struct Budget {
    queued: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
        })
    }

    /// Counts `bytes` in once the connection is under its bound, waiting until it is.
    /// Only the connection's reader waits here (one waiter: `notify_one` keeps a wake-up
    /// that comes before the wait). Items of no bytes never wait: a `joined` must reach
    /// the writer for the room messages it holds back (which count) to be let go.
    pub async fn reserve(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        while self.over() {
            self.freed.notified().await;
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` in unless that would pass the bound.
    pub fn try_admit(&self, bytes: usize) -> bool {
        self.queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                (q + bytes <= self.limit).then_some(q + bytes)
            })
            .is_ok()
    }

    /// Counts `bytes` out: they were written or dropped.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            self.freed.notify_one();
        }
    }

    /// At or beyond the bound.
    pub fn over(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= self.limit
    }
}

/// The bytes an item holds while it waits.
pub fn cost(item: &Outbound) -> usize {
    match item {
        Outbound::Frame(f) => f.len(),
        Outbound::Live(d) => d.frame.len(),
        Outbound::Signal(s) => s.frame.len(),
        _ => 0,
    }
}

/// The writer's side of the queue: items in order, room messages counted as they are taken.
pub struct Intake<'a> {
    rx: &'a mut mpsc::Receiver<Outbound>,
    /// Taken while a write was blocked, to be handled next, in order.
    held: VecDeque<Outbound>,
    /// False once every sender is gone.
    open: bool,
    pub budget: Arc<Budget>,
    pub lagging: Arc<AtomicBool>,
}

impl<'a> Intake<'a> {
    pub fn new(
        rx: &'a mut mpsc::Receiver<Outbound>,
        budget: Arc<Budget>,
        lagging: Arc<AtomicBool>,
    ) -> Self {
        Self {
            rx,
            held: VecDeque::new(),
            open: true,
            budget,
            lagging,
        }
    }

    /// The next item to handle (counted in the budget until [`Intake::done`]); `None`
    /// once the reader is gone and everything was handled. Cancel-safe.
    pub async fn next(&mut self) -> Option<Outbound> {
        if let Some(item) = self.held.pop_front() {
            return Some(item);
        }
        while self.open {
            match self.rx.recv().await {
                Some(item) => {
                    if let Some(item) = self.admit(item) {
                        return Some(item);
                    }
                }
                None => self.open = false,
            }
        }
        None
    }

    /// Takes one item that arrived while a write is blocked; pending while none does.
    pub async fn hold_next(&mut self) {
        if !self.open {
            return std::future::pending().await;
        }
        match self.rx.recv().await {
            Some(item) => {
                if let Some(item) = self.admit(item) {
                    self.held.push_back(item);
                }
            }
            None => self.open = false,
        }
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.rx.is_empty()
    }

    /// An item of this cost was written or dropped.
    pub fn done(&self, cost: usize) {
        self.budget.release(cost);
    }

    /// A blocked write now means the client stopped reading.
    pub fn stalled(&self) -> bool {
        self.lagging.load(Ordering::Relaxed) || self.budget.over()
    }

    /// Marks the connection as having missed room messages (resynced from the store).
    pub fn missed(&self) {
        if !self.lagging.swap(true, Ordering::Relaxed) {
            metrics::counter!("courier_lagging_members_total").increment(1);
        }
    }

    /// Room messages and signals are counted here (the reader counted its replies when
    /// it queued them); a message that does not fit is left to a resync, a signal dropped.
    fn admit(&mut self, item: Outbound) -> Option<Outbound> {
        match &item {
            Outbound::Live(d) if !self.budget.try_admit(d.frame.len()) => {
                self.missed();
                None
            }
            // Ephemeral: not worth a resync, just not shown.
            Outbound::Signal(s) if !self.budget.try_admit(s.frame.len()) => None,
            _ => Some(item),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Delivered;
    use axum::extract::ws::Utf8Bytes;
    use shared::RoomId;

    fn live(seq: u64, len: usize) -> Outbound {
        Outbound::Live(Arc::new(Delivered {
            room: RoomId::parse("r").unwrap(),
            seq,
            frame: Utf8Bytes::from("x".repeat(len)),
            sent_at_ms: 0,
        }))
    }

    #[tokio::test]
    async fn room_messages_beyond_the_bound_are_left_to_a_resync() {
        let (tx, mut rx) = mpsc::channel(16);
        let budget = Budget::new(1000);
        let mut intake = Intake::new(&mut rx, budget.clone(), Arc::default());
        for seq in 1..=3 {
            tx.send(live(seq, 400)).await.unwrap();
        }
        let first = intake.next().await.unwrap();
        intake.hold_next().await;
        assert!(!intake.stalled());
        intake.hold_next().await; // 1200 > 1000: not kept
        assert!(intake.stalled(), "lagging");
        intake.done(cost(&first));
        assert!(matches!(intake.next().await, Some(Outbound::Live(d)) if d.seq == 2));
        drop(tx);
        assert!(intake.next().await.is_none());
    }

    #[tokio::test]
    async fn a_signal_beyond_the_bound_is_dropped_without_a_resync() {
        let (tx, mut rx) = mpsc::channel(16);
        let budget = Budget::new(1000);
        let mut intake = Intake::new(&mut rx, budget.clone(), Arc::default());
        let signal = |len| {
            Outbound::Signal(Arc::new(crate::hub::RoomSignal {
                room: RoomId::parse("r").unwrap(),
                frame: Utf8Bytes::from("x".repeat(len)),
            }))
        };
        tx.send(live(1, 900)).await.unwrap();
        tx.send(signal(200)).await.unwrap();
        tx.send(signal(50)).await.unwrap();
        let first = intake.next().await.unwrap();
        intake.hold_next().await; // 1100 > 1000: dropped
        intake.hold_next().await;
        assert!(
            !intake.lagging.load(Ordering::Relaxed),
            "no resync for a signal"
        );
        intake.done(cost(&first));
        assert!(matches!(intake.next().await, Some(Outbound::Signal(s)) if s.frame.len() == 50));
    }

    #[tokio::test]
    async fn the_reader_waits_while_over_the_bound() {
        let budget = Budget::new(1000);
        budget.reserve(900).await;
        budget.reserve(900).await; // under the bound before: goes over
        assert!(budget.over());
        let waiting = tokio::spawn({
            let b = budget.clone();
            async move { b.reserve(10).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        budget.reserve(0).await; // a join's reply never waits
        budget.release(900);
        waiting.await.unwrap();
        assert!(!budget.over());
    }
}
