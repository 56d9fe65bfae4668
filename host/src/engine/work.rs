//! Counting work in flight, so the virtual clock can tell "nothing can run now".
//!
//! Every piece of work holds a [`WorkGuard`]: an activation running guest code, an
//! activity executing, a timer firing, a delivery on its way to an instance. A handoff
//! creates the receiver's guard before the sender drops its own, so the count never
//! touches zero while work is still moving. When it does reach zero, only a timer can
//! make progress, and the virtual clock may jump to the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Work {
    in_flight: AtomicUsize,
    idle: Notify,
}

/// One unit of work in flight; dropping it finishes the unit.
#[derive(Debug)]
pub(crate) struct WorkGuard(Arc<Work>);

impl Work {
    pub(crate) fn guard(self: &Arc<Self>) -> WorkGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        WorkGuard(Arc::clone(self))
    }

    /// Resolves once no work is in flight.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_guard() {
        let work = Arc::new(Work::default());
        work.wait_idle().await;
        let a = work.guard();
        let b = work.guard();
        let waiter = tokio::spawn({
            let work = Arc::clone(&work);
            async move { work.wait_idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        waiter.await.unwrap();
    }
}
