//! The embedded queue's scheduling state: a lane per room, handed to one consumer at a
//! time.
//!
//! Like a FIFO queue's message groups: while any message of a room is in flight or waits
//! for its retry, no consumer gets that room's later messages. Rooms stay parallel, and
//! each room is processed in publish order whatever the number of workers.

use super::DeadLetter;
use shared::ids::RoomId;
use shared::message::MessageKey;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use tokio::time::Instant;

#[derive(Default)]
pub(super) struct State {
    /// Rooms with ready messages and none held, in the order they became available.
    /// A room is here exactly when its lane has ready messages and holds none.
    pub available: VecDeque<RoomId>,
    lanes: HashMap<RoomId, Lane>,
    /// Retries waiting for their delay, earliest first.
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_items: HashMap<u64, Item>,
    pub in_flight: HashMap<u64, Item>,
    /// Dead letters of the volatile queue (the durable one keeps them in its file).
    pub dead: VecDeque<DeadItem>,
    /// Ready, delayed and in flight: what the capacity bounds.
    pub depth: usize,
    next_tag: u64,
    /// The next message's order (its row id in the durable queue).
    next_order: u64,
}

/// One room's messages.
#[derive(Default)]
struct Lane {
    /// Waiting to be handed out, in publish order.
    ready: VecDeque<Item>,
    /// In flight or waiting for a retry: while non-zero, the room is held.
    held: usize,
}

pub(super) struct Item {
    pub room: RoomId,
    /// Publish order, so a message handed back takes its place again; the row id in
    /// the durable queue.
    pub order: u64,
    pub payload: Vec<u8>,
    /// The idempotency key it was published with; `None` when restored from the durable
    /// queue's file, which keeps the envelope only.
    pub key: Option<MessageKey>,
    /// Deliveries so far.
    pub attempts: u32,
}

pub(super) struct DeadItem {
    pub room: RoomId,
    pub letter: DeadLetter,
}

impl State {
    /// Counts a message about to be published and gives its order, unless the queue
    /// holds `capacity` already.
    pub fn reserve(&mut self, capacity: usize) -> Result<u64, usize> {
        if self.depth >= capacity {
            return Err(self.depth);
        }
        self.depth += 1;
        Ok(self.next_order())
    }

    /// The next order, for a message that is not counted against the capacity.
    pub fn next_order(&mut self) -> u64 {
        let order = self.next_order;
        self.next_order += 1;
        order
    }

    /// Queues a published message (reserved before) in its place in its room's lane.
    pub fn insert(&mut self, item: Item) {
        let room = item.room.clone();
        let lane = self.lanes.entry(room.clone()).or_default();
        let at = lane.ready.partition_point(|i| i.order < item.order);
        lane.ready.insert(at, item);
        if lane.held == 0 && lane.ready.len() == 1 {
            self.available.push_back(room);
        }
    }

    /// Takes back a message found in the durable queue at start: ready, or waiting
    /// for its retry until `due`.
    pub fn restore(&mut self, item: Item, due: Option<Instant>) {
        self.depth += 1;
        self.next_order = self.next_order.max(item.order + 1);
        match due {
            None => self.insert(item),
            Some(at) => {
                self.lanes.entry(item.room.clone()).or_default().held += 1;
                let tag = self.tag();
                self.delay(tag, item, at);
            }
        }
    }

    /// A held message is ready again: it takes its place in publish order.
    pub fn put_back(&mut self, item: Item) {
        let room = item.room.clone();
        let lane = self.lanes.entry(room.clone()).or_default();
        lane.held = lane.held.saturating_sub(1);
        let at = lane.ready.partition_point(|i| i.order < item.order);
        lane.ready.insert(at, item);
        if lane.held == 0 {
            self.available.push_back(room);
        }
    }

    /// A held message of `room` is settled for good.
    pub fn release(&mut self, room: &RoomId) {
        self.depth = self.depth.saturating_sub(1);
        let Some(lane) = self.lanes.get_mut(room) else {
            return;
        };
        lane.held = lane.held.saturating_sub(1);
        if lane.held == 0 {
            if lane.ready.is_empty() {
                self.lanes.remove(room);
            } else {
                self.available.push_back(room.clone());
            }
        }
    }

    /// Up to `max` ready messages, whole rooms first, each with its delivery tag: a room
    /// taken is held until every message handed out of it is settled.
    pub fn take(&mut self, max: usize) -> Vec<(u64, Item)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(room) = self.available.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&room) else {
                continue;
            };
            let n = lane.ready.len().min(max - out.len());
            lane.held += n;
            let taken: Vec<Item> = lane.ready.drain(..n).collect();
            for mut item in taken {
                item.attempts += 1;
                out.push((self.tag(), item));
            }
        }
        out
    }

    /// Keeps a held message back until `at`; its room stays held meanwhile.
    pub fn delay(&mut self, tag: u64, item: Item, at: Instant) {
        self.delayed.push(Reverse((at, tag)));
        self.delayed_items.insert(tag, item);
    }

    pub fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((at, tag))) = self.delayed.peek().copied() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if let Some(item) = self.delayed_items.remove(&tag) {
                self.put_back(item);
            }
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, _))| *at)
    }

    /// Rooms with any state, for tests that settled rooms leave none.
    #[cfg(test)]
    pub fn rooms(&self) -> usize {
        self.lanes.len()
    }

    fn tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }
}
