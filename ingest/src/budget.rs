//! The in-flight byte budget: payload bytes received from the broker and not
//! yet committed and acknowledged. The MQTT task takes a share of it for each
//! message before handing the message on, and waits while the budget is
//! spent (the socket is then not read: backpressure to the broker, which
//! keeps the rest in the session). The share is given back when the message
//! is dropped, after its acknowledgement. Nothing is ever dropped for want of
//! budget. The gauge `ingest_inflight_bytes` shows what is held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A semaphore of bytes, with a gauge of what is held and its peak.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sem: Arc<Semaphore>,
    capacity: usize,
    held: AtomicUsize,
    peak: AtomicUsize,
}

/// A share of the budget, given back on drop.
#[derive(Debug)]
pub struct BytePermit {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    inner: Arc<Inner>,
}

impl ByteBudget {
    /// A budget of `capacity` bytes (at least 1, at most what a semaphore
    /// holds and what one acquisition can take).
    pub fn new(capacity: usize) -> ByteBudget {
        let capacity = capacity.clamp(1, (u32::MAX as usize).min(Semaphore::MAX_PERMITS));
        ByteBudget {
            inner: Arc::new(Inner {
                sem: Arc::new(Semaphore::new(capacity)),
                capacity,
                held: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }),
        }
    }

    /// Waits until `bytes` (at least 1, at most the whole budget, so a
    /// message larger than the budget still passes alone) are free and
    /// takes them.
    pub async fn acquire(&self, bytes: usize) -> BytePermit {
        let n = bytes.clamp(1, self.inner.capacity);
        let permit = self
            .inner
            .sem
            .clone()
            .acquire_many_owned(n as u32)
            .await
            .expect("the budget's semaphore is never closed");
        let held = self.inner.held.fetch_add(n, Ordering::Relaxed) + n;
        self.inner.peak.fetch_max(held, Ordering::Relaxed);
        metrics::gauge!("ingest_inflight_bytes").set(held as f64);
        BytePermit {
            _permit: permit,
            bytes: n,
            inner: self.inner.clone(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// The most bytes ever held at once.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::Relaxed)
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        let held = self.inner.held.fetch_sub(self.bytes, Ordering::Relaxed) - self.bytes;
        metrics::gauge!("ingest_inflight_bytes").set(held as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_when_spent_and_frees_on_drop() {
        let b = ByteBudget::new(100);
        let a = b.acquire(60).await;
        let c = b.acquire(40).await;
        assert_eq!(b.held(), 100);
        // A third share waits until one is given back.
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.acquire(10)).await;
        assert!(waiting.is_err(), "the budget is spent: acquire must wait");
        drop(a);
        let d = tokio::time::timeout(Duration::from_secs(1), b.acquire(10))
            .await
            .expect("freed bytes are available again");
        assert_eq!(b.held(), 50);
        drop((c, d));
        assert_eq!(b.held(), 0);
        assert_eq!(b.peak(), 100);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_passes_alone() {
        let b = ByteBudget::new(10);
        let big = b.acquire(1_000).await;
        assert_eq!(b.held(), 10);
        assert!(
            tokio::time::timeout(Duration::from_millis(30), b.acquire(1))
                .await
                .is_err()
        );
        drop(big);
        let _ = b.acquire(1).await;
    }
}
