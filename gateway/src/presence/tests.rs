//! The presence state: the union over gateways, tabs, TTL expiry, stale signals, the cap
//! and the typing throttle.

use super::state::{Change, PresenceState, TYPING_EVERY};
use queue::{RoomUsers, Signal, SignalKind};
use shared::{GatewayId, RoomId, UserId};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(25);

fn room() -> RoomId {
    RoomId::parse("lobby").unwrap()
}

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn gw(g: &str) -> GatewayId {
    GatewayId::from_string(g.into())
}

fn state(cap: usize) -> PresenceState {
    PresenceState::new(gw("me"), cap, TTL)
}

fn signal(from: &str, seq: u64, kind: SignalKind) -> Signal {
    Signal {
        gateway: gw(from),
        seq,
        kind,
    }
}

fn online(u: &str) -> SignalKind {
    SignalKind::Online {
        room: room(),
        user: user(u),
    }
}

fn offline(u: &str) -> SignalKind {
    SignalKind::Offline {
        room: room(),
        user: user(u),
    }
}

fn snapshot(users: &[&str], complete: bool) -> SignalKind {
    SignalKind::Snapshot {
        rooms: vec![RoomUsers {
            room: room(),
            users: users.iter().map(|u| user(u)).collect(),
            truncated: false,
        }],
        complete,
    }
}

fn names(s: &PresenceState) -> Vec<String> {
    s.users(&room()).0.iter().map(|u| u.to_string()).collect()
}

#[test]
fn tabs_here_and_on_another_gateway_are_one_online_and_one_offline() {
    let mut s = state(100);
    let now = Instant::now();
    let first = s.join(&room(), &user("bob"), 1);
    assert_eq!(first.change, Some(Change::Online(room(), user("bob"))));
    assert_eq!(first.signal, Some(online("bob")));
    let second = s.join(&room(), &user("bob"), 2);
    assert_eq!((second.change, second.signal), (None, None), "a second tab");
    // The same user on another gateway: no change of the union.
    assert!(s.apply(signal("gw-b", 1, online("bob")), now).is_empty());
    assert!(s.leave(&room(), 1).change.is_none());
    let last_here = s.leave(&room(), 2);
    assert_eq!(
        last_here.signal,
        Some(offline("bob")),
        "the others are told"
    );
    assert_eq!(last_here.change, None, "still online on gw-b");
    assert_eq!(names(&s), ["bob"]);
    assert_eq!(
        s.apply(signal("gw-b", 2, offline("bob")), now),
        [Change::Offline(room(), user("bob"))]
    );
    assert!(names(&s).is_empty());
    assert_eq!(s.entries(), 0);
    assert!(
        s.leave(&room(), 2).change.is_none(),
        "a leave twice is nothing"
    );
}

#[test]
fn a_silent_gateway_expires_after_the_ttl_and_a_snapshot_keeps_it_alive() {
    let mut s = state(100);
    let t0 = Instant::now();
    assert_eq!(
        s.apply(signal("gw-b", 1, snapshot(&["ann", "bob"], true)), t0),
        [
            Change::Online(room(), user("ann")),
            Change::Online(room(), user("bob"))
        ]
    );
    s.join(&room(), &user("bob"), 7);
    assert!(s.expire(t0 + TTL / 2).is_empty());
    assert!(
        s.apply(
            signal("gw-b", 2, snapshot(&["ann", "bob"], true)),
            t0 + TTL / 2
        )
        .is_empty()
    );
    assert!(s.expire(t0 + TTL).is_empty(), "refreshed at TTL/2");
    // Silent from TTL/2 on: gone at TTL/2 + TTL; bob stays, he has a connection here.
    assert_eq!(
        s.expire(t0 + TTL / 2 + TTL),
        [Change::Offline(room(), user("ann"))]
    );
    assert_eq!(names(&s), ["bob"]);
}

#[test]
fn snapshots_replace_what_a_gateway_said_and_stale_signals_are_ignored() {
    let mut s = state(100);
    let now = Instant::now();
    s.apply(signal("gw-b", 5, online("ann")), now);
    // A snapshot older than the delta (SQS reorders) changes nothing.
    assert!(
        s.apply(signal("gw-b", 4, snapshot(&[], true)), now)
            .is_empty()
    );
    assert!(s.apply(signal("gw-b", 3, offline("ann")), now).is_empty());
    assert_eq!(names(&s), ["ann"]);
    // A later complete snapshot without the room clears it (a lost offline delta).
    assert_eq!(
        s.apply(
            signal(
                "gw-b",
                6,
                SignalKind::Snapshot {
                    rooms: vec![],
                    complete: true
                }
            ),
            now
        ),
        [Change::Offline(room(), user("ann"))]
    );
    // One that is not complete leaves unlisted rooms to the TTL.
    s.apply(signal("gw-b", 7, online("cy")), now);
    assert!(
        s.apply(
            signal(
                "gw-b",
                8,
                SignalKind::Snapshot {
                    rooms: vec![],
                    complete: false
                }
            ),
            now
        )
        .is_empty()
    );
    assert_eq!(
        s.apply(signal("gw-b", 9, SignalKind::Gone), now),
        [Change::Offline(room(), user("cy"))]
    );
    // Our own signals come back on some lanes: ignored.
    assert!(s.apply(signal("me", 10, online("zed")), now).is_empty());
}

#[test]
fn the_cap_bounds_every_gateways_part_and_the_reply() {
    let mut s = state(2);
    let now = Instant::now();
    assert!(s.join(&room(), &user("a"), 1).change.is_some());
    assert!(s.join(&room(), &user("b"), 2).change.is_some());
    let over = s.join(&room(), &user("c"), 3);
    assert_eq!((over.change, over.signal), (None, None), "not tracked");
    assert_eq!(s.users(&room()), (vec![user("a"), user("b")], true));
    assert!(s.leave(&room(), 3).change.is_none());
    // Another gateway's part is cut at the cap too.
    let many = snapshot(&["d", "e", "f", "g"], true);
    s.apply(signal("gw-b", 1, many), now);
    assert_eq!(s.entries(), 4, "two here, two of gw-b");
    assert_eq!(s.users(&room()), (vec![user("a"), user("b")], true));
    assert!(s.apply(signal("gw-b", 2, online("h")), now).is_empty());
    assert!(s.snapshot_rooms()[0].truncated);
}

#[test]
fn typing_is_throttled_per_user_and_room() {
    let mut s = state(10);
    let t0 = Instant::now();
    let other = RoomId::parse("other").unwrap();
    assert!(s.typing_allowed(&room(), &user("a"), None, t0));
    assert!(!s.typing_allowed(&room(), &user("a"), None, t0 + Duration::from_millis(1999)));
    assert!(s.typing_allowed(&room(), &user("b"), None, t0));
    assert!(s.typing_allowed(&other, &user("a"), None, t0));
    assert!(s.typing_allowed(&room(), &user("a"), None, t0 + TYPING_EVERY));
    s.expire(t0 + TYPING_EVERY * 3);
    assert!(s.typing_allowed(&room(), &user("b"), None, t0 + TYPING_EVERY * 3));
}

#[test]
fn relayed_typing_is_throttled_across_gateways_but_not_against_its_own_origin() {
    let mut s = state(10);
    let t0 = Instant::now();
    let (b, c) = (gw("gw-b"), gw("gw-c"));
    let early = t0 + Duration::from_millis(1800);
    assert!(s.typing_allowed(&room(), &user("a"), Some(&b), t0));
    // gw-b throttled its own; one that came faster over the lane still goes.
    assert!(s.typing_allowed(&room(), &user("a"), Some(&b), early));
    // The same user typing on gw-c, or here, within 2 s of it: dropped.
    assert!(!s.typing_allowed(&room(), &user("a"), Some(&c), early));
    assert!(!s.typing_allowed(&room(), &user("a"), None, early));
    assert!(s.typing_allowed(&room(), &user("a"), Some(&c), early + TYPING_EVERY));
}
