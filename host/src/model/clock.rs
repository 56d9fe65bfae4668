//! Time, behind a trait: the system clock in production, a virtual clock in tests and the
//! demo, so a three-day approval timeout or a thousand monitor generations take no waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::Timestamp;

/// A source of the current time that can also wait for a time to come.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Resolves once `now() >= at`.
    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

    /// The virtual clock, if this is one (the engine advances it when idle).
    fn as_virtual(&self) -> Option<&VirtualClock> {
        None
    }
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let wait = at.millis_since(self.now());
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// Time that moves only when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl VirtualClock {
    pub fn new(start: Timestamp) -> Self {
        VirtualClock {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now.send_modify(|t| *t = t.plus_ms(ms));
    }

    /// Moves time forward to `at`; never backwards.
    pub fn advance_to(&self, at: Timestamp) {
        self.now.send_modify(|t| *t = (*t).max(at));
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // An error means the clock was dropped: time stops, so the sleep never ends.
            if rx.wait_for(|now| *now >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }

    fn as_virtual(&self) -> Option<&VirtualClock> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn virtual_sleep_ends_when_time_is_advanced() {
        let clock = VirtualClock::new(Timestamp(1_000));
        let sleep = clock.sleep_until(Timestamp(61_000));
        let handle = tokio::spawn(sleep);
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_secs(60));
        handle.await.unwrap();
        assert_eq!(clock.now(), Timestamp(61_000));
        clock.advance_to(Timestamp(5));
        assert_eq!(clock.now(), Timestamp(61_000), "time never goes backwards");
    }
}
