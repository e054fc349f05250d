//! The hub's unit tests: in-order forwarding, held early arrivals, lagging members,
//! and membership changes that wait only for their own room.

use super::*;
use async_trait::async_trait;
use shared::{ClientMsgId, Enriched, StoredMessage, Timestamp, UserId};

/// A hub binding that binds nothing: for tests of what a hub does with its members.
pub(crate) struct NoBinding;

#[async_trait]
impl RoomBinding for NoBinding {
    async fn bind(&self, _: &RoomId) -> Result<(), QueueError> {
        Ok(())
    }
    async fn unbind(&self, _: &RoomId) -> Result<(), QueueError> {
        Ok(())
    }
}

/// A broker whose bind of `slow` waits until released, and whose unbinds wait until
/// `together` of them are in progress at once.
struct SlowBinding {
    release: Arc<tokio::sync::Notify>,
    unbinds: tokio::sync::Barrier,
}

#[async_trait]
impl RoomBinding for SlowBinding {
    async fn bind(&self, room: &RoomId) -> Result<(), QueueError> {
        if room.as_str() == "slow" {
            self.release.notified().await;
        }
        Ok(())
    }
    async fn unbind(&self, _: &RoomId) -> Result<(), QueueError> {
        self.unbinds.wait().await;
        Ok(())
    }
}

fn test_member(tx: mpsc::Sender<Outbound>, lagging: Arc<AtomicBool>) -> Member {
    Member {
        user: UserId::parse("u").unwrap(),
        claim: None,
        tx,
        lagging,
    }
}

fn member() -> (Member, mpsc::Receiver<Outbound>) {
    let (tx, rx) = mpsc::channel(8);
    let lagging = Arc::new(AtomicBool::new(false));
    (test_member(tx, lagging), rx)
}

#[tokio::test]
async fn a_slow_bind_holds_up_only_its_own_room_and_a_disconnect_unbinds_at_once() {
    let release = Arc::new(tokio::sync::Notify::new());
    let hub = Arc::new(Hub::new(
        Box::new(SlowBinding {
            release: release.clone(),
            unbinds: tokio::sync::Barrier::new(3),
        }),
        Duration::from_millis(50),
    ));
    let slow = RoomId::parse("slow").unwrap();
    let waiting = {
        let hub = hub.clone();
        let slow = slow.clone();
        tokio::spawn(async move { hub.join(&slow, 1, member().0).await })
    };
    tokio::task::yield_now().await;
    let rooms: Vec<RoomId> = ["a", "b", "c"]
        .iter()
        .map(|r| RoomId::parse(r).unwrap())
        .collect();
    let within = Duration::from_secs(5);
    for room in &rooms {
        let joined = tokio::time::timeout(within, hub.join(room, 2, member().0)).await;
        assert!(
            joined.is_ok(),
            "joining {room} waited for another room's bind"
        );
    }
    // Each unbind waits for the other two: only concurrent unbinds finish.
    let left = tokio::time::timeout(within, hub.leave_all(rooms.clone(), 2)).await;
    assert!(left.is_ok(), "a disconnect's unbinds ran one after another");
    assert_eq!(hub.room_count(), 0);
    release.notify_one();
    waiting.await.unwrap().unwrap();
    assert_eq!(hub.room_count(), 1);
    assert!(hub.locks().is_empty(), "no lock is left behind");
}

fn msg(seq: u64) -> StoredMessage {
    StoredMessage::plain(
        RoomId::parse("r").unwrap(),
        seq,
        ClientMsgId::parse(&format!("m{seq}")).unwrap(),
        UserId::parse("u").unwrap(),
        "b".into(),
        Timestamp::now(),
        Enriched::default(),
        None,
    )
}

fn seqs(rx: &mut mpsc::Receiver<Outbound>) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok(Outbound::Live(d)) = rx.try_recv() {
        out.push(d.seq);
    }
    out
}

/// A hub holding gaps for `hold`, with one member of room `r` at seq 1 whose buffer
/// holds `buffer` messages, and that member's lagging flag.
async fn joined(hold: Duration, buffer: usize) -> (Hub, mpsc::Receiver<Outbound>, Arc<AtomicBool>) {
    let hub = Hub::new(Box::new(NoBinding), hold);
    let (tx, rx) = mpsc::channel(buffer);
    let lagging = Arc::new(AtomicBool::new(false));
    let member = test_member(tx, lagging.clone());
    let room = RoomId::parse("r").unwrap();
    hub.join(&room, 1, member).await.unwrap();
    (hub, rx, lagging)
}

#[tokio::test]
async fn reorders_and_drops_duplicates() {
    let (hub, mut rx, _) = joined(Duration::from_secs(60), 16).await;
    for s in [1, 3, 2, 2, 5, 4, 1] {
        hub.dispatch(Frame::of(&msg(s)));
    }
    assert_eq!(seqs(&mut rx), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn releases_held_messages_after_the_hold() {
    let (hub, mut rx, _) = joined(Duration::ZERO, 16).await;
    hub.dispatch(Frame::of(&msg(1)));
    hub.dispatch(Frame::of(&msg(3)));
    assert_eq!(seqs(&mut rx), [1]);
    hub.release_expired();
    assert_eq!(seqs(&mut rx), [3]);
    hub.dispatch(Frame::of(&msg(2))); // late: its hole was filled from the store
    assert_eq!(seqs(&mut rx), Vec::<u64>::new());
}

#[tokio::test]
async fn a_full_buffer_marks_the_member_lagging_without_waiting() {
    let (hub, mut rx, lagging) = joined(Duration::ZERO, 1).await;
    hub.dispatch(Frame::of(&msg(1)));
    assert!(!lagging.load(Ordering::Relaxed));
    hub.dispatch(Frame::of(&msg(2)));
    assert!(lagging.load(Ordering::Relaxed));
    assert_eq!(seqs(&mut rx), [1]);
}

proptest::proptest! {
    /// Whatever order and repetition deliveries come in, a member gets strictly
    /// increasing seqs with no repeat; when nothing is released early, exactly 1..=n.
    #[test]
    fn any_arrival_order_forwards_in_order(
        n in 1u64..60,
        keys in proptest::collection::vec(0u64..1000, 1..200),
        release_every in proptest::option::of(1usize..20),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (hub, mut rx, _) = joined(Duration::ZERO, 10_000).await;
            // Every seq at least once, shuffled by the generated keys, some repeated.
            let mut arrivals: Vec<(u64, u64)> = (1..=n).map(|s| (keys[s as usize % keys.len()], s)).collect();
            arrivals.extend(keys.iter().map(|k| (*k, k % n + 1)));
            arrivals.sort();
            hub.dispatch(Frame::of(&msg(1)));
            for (i, (_, seq)) in arrivals.iter().enumerate() {
                hub.dispatch(Frame::of(&msg(*seq)));
                if release_every.is_some_and(|e| i % e == 0) {
                    hub.release_expired();
                }
            }
            hub.release_expired();
            let got = seqs(&mut rx);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {got:?}");
            assert_eq!(got.last().copied(), Some(n));
            if release_every.is_none() {
                assert_eq!(got, (1..=n).collect::<Vec<_>>());
            }
        });
    }
}
