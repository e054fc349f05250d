//! One shutdown signal that every long-lived loop selects on (mini-redis style), and the
//! retry backoff every loop shares.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;
use tokio::sync::watch;

/// Fires once; every clone sees it.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that fires the signal; dropping it fires it too.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A new signal and its trigger.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when the signal fires (or its trigger is gone).
    pub async fn fired(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// Sleeps for `d` unless the signal fires first; true when it slept the whole time.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.fired() => false,
        }
    }
}

/// Exponential backoff with full jitter: a random delay in [base·2^n / 2, base·2^n],
/// capped at `cap`. `n` counts failures so far, from 0.
pub fn backoff(n: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << n.min(16)).min(cap);
    let half = exp / 2;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(n);
    let frac = (h.finish() % 1000) as u32;
    half + half * frac / 1000
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_signal() {
        let (trigger, sd) = channel();
        let other = sd.clone();
        assert!(!sd.is_fired());
        trigger.fire();
        sd.fired().await;
        assert!(other.is_fired());
        assert!(!other.sleep(Duration::from_secs(60)).await);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let cap = Duration::from_secs(5);
        for n in 0..40 {
            let d = backoff(n, Duration::from_millis(100), cap);
            assert!(d <= cap);
            assert!(
                d >= Duration::from_millis(50)
                    .saturating_mul(1 << n.min(6))
                    .min(cap / 2)
            );
        }
    }
}
