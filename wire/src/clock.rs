//! Time as the edge sees it: the wall clock in production, or a simulated
//! clock that a driver moves forward so that a month of 15-minute readings
//! passes in seconds (the demo and the tests).
//!
//! The simulator computes meter registers at `now()` and the gateway
//! timestamps reads with `now()`, so both must share one `Clock`.

use chrono::{DateTime, Duration, DurationRound, Utc};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub enum Clock {
    /// The system clock; sleeping uses tokio timers.
    System,
    /// Simulated time, moved only by [`ManualClock::set`].
    Manual(ManualClock),
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(m) => m.now(),
        }
    }

    /// Waits until `now() >= t`. On a manual clock whose driver is gone it
    /// never returns: callers select on their shutdown signal beside it.
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        match self {
            Clock::System => {
                let wait = (t - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            Clock::Manual(m) => m.wait_until(t).await,
        }
    }

    pub fn is_simulated(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }
}

/// A clock moved by hand. Cloning shares it.
#[derive(Clone, Debug)]
pub struct ManualClock {
    tx: Arc<watch::Sender<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        let (tx, _rx) = watch::channel(start);
        Self { tx: Arc::new(tx) }
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.tx.borrow()
    }

    /// Moves the clock to `t`. Time never runs backwards: an earlier `t` is ignored.
    pub fn set(&self, t: DateTime<Utc>) {
        self.tx.send_if_modified(|cur| {
            if t > *cur {
                *cur = t;
                true
            } else {
                false
            }
        });
    }

    async fn wait_until(&self, t: DateTime<Utc>) {
        let mut rx = self.tx.subscribe();
        if rx.wait_for(|now| *now >= t).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The next instant after `after` that lies on a multiple of `interval` since
/// midnight UTC, so a 15-minute schedule lands on :00, :15, :30 and :45.
pub fn next_aligned(after: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    assert!(interval > Duration::zero(), "interval must be positive");
    let floor = after
        .duration_trunc(interval)
        .expect("interval fits in a timestamp");
    if floor > after {
        floor
    } else {
        floor + interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn aligns_to_quarter_hours() {
        let q = Duration::minutes(15);
        assert_eq!(
            next_aligned(t("2026-10-01T00:00:00Z"), q),
            t("2026-10-01T00:15:00Z")
        );
        assert_eq!(
            next_aligned(t("2026-10-01T00:14:59Z"), q),
            t("2026-10-01T00:15:00Z")
        );
        assert_eq!(
            next_aligned(t("2026-10-01T23:59:00Z"), q),
            t("2026-10-02T00:00:00Z")
        );
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers() {
        let m = ManualClock::new(t("2026-10-01T00:00:00Z"));
        let c = Clock::Manual(m.clone());
        let waiter = tokio::spawn(async move { c.sleep_until(t("2026-10-01T00:15:00Z")).await });
        tokio::task::yield_now().await;
        m.set(t("2026-10-01T00:10:00Z"));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        m.set(t("2026-10-01T00:15:00Z"));
        waiter.await.unwrap();
        m.set(t("2026-10-01T00:00:00Z"));
        assert_eq!(
            m.now(),
            t("2026-10-01T00:15:00Z"),
            "time never runs backwards"
        );
    }
}
