//! What each connection counts, merged into one result at the end.

use hdrhistogram::Histogram;
use std::collections::HashSet;

/// Latencies are recorded in microseconds, 1 µs to 60 s, two significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds are valid")
}

/// Message ids carry the run, the sender and its scheduled send time, so any receiver can
/// compute the latency without a shared table:
/// `<run>.<sender>.<n>.<micros since the run's epoch>`. The run tag tells this run's
/// messages from a backlog that an earlier run left in a queue.
pub fn encode_id(run: u32, sender: usize, n: u64, micros: u64) -> String {
    format!("{run:x}.{sender}.{n}.{micros}")
}

/// `None` for an id this run did not send.
pub fn decode_id(run: u32, id: &str) -> Option<(usize, u64, u64)> {
    let mut parts = id.split('.');
    if u32::from_str_radix(parts.next()?, 16).ok()? != run {
        return None;
    }
    let sender = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    let micros = parts.next()?.parse().ok()?;
    Some((sender, n, micros))
}

pub struct ConnStats {
    pub sent: u64,
    /// Bytes of the bodies sent (their UTF-8 text, before JSON escaping).
    pub body_bytes: u64,
    pub acked: u64,
    pub errors: u64,
    pub error_codes: Vec<String>,
    /// Deliveries this connection's sends should cause (members of its room per send,
    /// minus those of sends the server refused).
    pub expected: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Received within the measured window.
    pub received_in_window: u64,
    pub duplicates: u64,
    /// Messages skipped over in a room's `seq` (courier protocol only).
    pub gaps: u64,
    /// Connections the server closed or that failed during the run.
    pub disconnects: u64,
    /// Messages received that an earlier run sent.
    pub foreign: u64,
    pub latency: Histogram<u64>,
    pub ack_latency: Histogram<u64>,
    last_seq: Option<u64>,
    /// Without a `seq`, duplicates are found by (sender, n).
    seen: Option<HashSet<u64>>,
}

impl ConnStats {
    pub fn new(track_ids: bool) -> Self {
        Self {
            sent: 0,
            body_bytes: 0,
            acked: 0,
            errors: 0,
            error_codes: Vec::new(),
            expected: 0,
            received: 0,
            received_in_window: 0,
            duplicates: 0,
            gaps: 0,
            disconnects: 0,
            foreign: 0,
            latency: histogram(),
            ack_latency: histogram(),
            last_seq: None,
            seen: track_ids.then(HashSet::new),
        }
    }

    /// A message of another run (a backlog left in a queue): it moves the room's `seq`
    /// on but is not this run's to count.
    pub fn foreign(&mut self, seq: Option<u64>) {
        self.foreign += 1;
        if let Some(seq) = seq {
            self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
        }
    }

    /// Counts one delivery; false when it is a duplicate.
    pub fn delivery(&mut self, sender: usize, n: u64, seq: Option<u64>) -> bool {
        let fresh = match (seq, &mut self.seen) {
            (Some(seq), _) => match self.last_seq {
                Some(last) if seq <= last => false,
                Some(last) => {
                    self.gaps += seq - last - 1;
                    self.last_seq = Some(seq);
                    true
                }
                None => {
                    self.last_seq = Some(seq);
                    true
                }
            },
            (None, Some(seen)) => seen.insert(((sender as u64) << 32) | n),
            (None, None) => true,
        };
        if fresh {
            self.received += 1;
        } else {
            self.duplicates += 1;
        }
        fresh
    }

    pub fn merge(&mut self, o: ConnStats) {
        self.sent += o.sent;
        self.body_bytes += o.body_bytes;
        self.acked += o.acked;
        self.errors += o.errors;
        if self.error_codes.len() < 5 {
            self.error_codes.extend(o.error_codes.into_iter().take(5));
        }
        self.expected += o.expected;
        self.received += o.received;
        self.received_in_window += o.received_in_window;
        self.duplicates += o.duplicates;
        self.gaps += o.gaps;
        self.disconnects += o.disconnects;
        self.foreign += o.foreign;
        self.latency.add(&o.latency).expect("same bounds");
        self.ack_latency.add(&o.ack_latency).expect("same bounds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(
            decode_id(9, &encode_id(9, 7, 42, 123_456)),
            Some((7, 42, 123_456))
        );
        assert_eq!(decode_id(8, &encode_id(9, 7, 42, 123_456)), None);
        assert_eq!(decode_id(9, "c-1"), None);
    }

    #[test]
    fn seq_tracking_finds_gaps_and_duplicates() {
        let mut s = ConnStats::new(false);
        assert!(s.delivery(0, 0, Some(5)));
        assert!(s.delivery(0, 1, Some(6)));
        assert!(!s.delivery(0, 1, Some(6)));
        assert!(s.delivery(0, 2, Some(9)));
        assert_eq!((s.received, s.duplicates, s.gaps), (3, 1, 2));
    }

    #[test]
    fn id_tracking_finds_duplicates() {
        let mut s = ConnStats::new(true);
        assert!(s.delivery(1, 0, None));
        assert!(s.delivery(2, 0, None));
        assert!(!s.delivery(1, 0, None));
        assert_eq!((s.received, s.duplicates), (2, 1));
    }
}
