//! Durable timers and delayed activity retries, in memory, ordered by due time.
//!
//! The journal holds the durable copy (the `timers` table and `activity_queue.due_at`);
//! this queue is rebuilt from it on start. A background loop sleeps on the clock until
//! the earliest entry is due; the virtual clock wakes it by moving time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use super::work::Work;
use crate::journal::QueuedActivity;
use crate::model::{InstanceId, Timestamp};

#[derive(Debug)]
pub(crate) enum TimerJob {
    /// A workflow timer.
    Fire {
        instance: InstanceId,
        generation: u32,
        seq: u32,
    },
    /// The next attempt of an activity.
    Activity(QueuedActivity),
    /// The first run of an instance started with a later start time.
    Start(InstanceId),
    /// A native activity sleeping on the engine's clock ([`super::ActivityContext::sleep`]):
    /// it gets the firing's work guard, which becomes its own unit of work again.
    Wake {
        instance: InstanceId,
        /// The guard, and whether the whole duration passed (`false`: the instance ended).
        wake: tokio::sync::oneshot::Sender<(super::work::WorkGuard, bool)>,
    },
}

impl TimerJob {
    fn instance(&self) -> &InstanceId {
        match self {
            TimerJob::Fire { instance, .. }
            | TimerJob::Start(instance)
            | TimerJob::Wake { instance, .. } => instance,
            TimerJob::Activity(job) => &job.instance,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: Mutex<BTreeMap<(Timestamp, u64), TimerJob>>,
    tiebreak: AtomicU64,
    pub(crate) changed: Notify,
}

impl Timers {
    pub(crate) fn add(&self, at: Timestamp, job: TimerJob) {
        let key = (at, self.tiebreak.fetch_add(1, Ordering::Relaxed));
        self.lock().insert(key, job);
        self.changed.notify_one();
    }

    /// Drops the timers and retries of an instance whose generation ended (their journal
    /// rows went with it; firing them would do nothing but move a virtual clock).
    pub(crate) fn cancel_instance(&self, instance: &InstanceId, work: &std::sync::Arc<Work>) {
        let mut woken = Vec::new();
        {
            let mut queue = self.lock();
            let keys: Vec<_> = queue
                .iter()
                .filter(|(_, job)| job.instance() == instance)
                .map(|(key, _)| *key)
                .collect();
            for key in keys {
                if let Some(TimerJob::Wake { wake, .. }) = queue.remove(&key) {
                    woken.push(wake);
                }
            }
        }
        // Sleeping activities of the instance are woken now, told they were cut short,
        // each with a guard, so the count holds until they have their own unit back.
        for wake in woken {
            let _ = wake.send((work.guard(), false));
        }
    }

    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.lock().keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns every job due at or before `now`, earliest first.
    pub(crate) fn take_due(&self, now: Timestamp) -> Vec<TimerJob> {
        let mut queue = self.lock();
        let later = queue.split_off(&(now.plus_ms(1), 0));
        let due = std::mem::replace(&mut *queue, later);
        due.into_values().collect()
    }

    /// Timers not yet due (durable timers, retries, sleeping activities).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Timestamp, u64), TimerJob>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(seq: u32) -> TimerJob {
        TimerJob::Fire {
            instance: InstanceId::new("i").unwrap(),
            generation: 0,
            seq,
        }
    }

    #[test]
    fn takes_only_what_is_due_in_order() {
        let timers = Timers::default();
        timers.add(Timestamp(30), fire(3));
        timers.add(Timestamp(10), fire(1));
        timers.add(Timestamp(20), fire(2));
        assert_eq!(timers.next_due(), Some(Timestamp(10)));
        let due: Vec<u32> = timers
            .take_due(Timestamp(20))
            .into_iter()
            .map(|j| match j {
                TimerJob::Fire { seq, .. } => seq,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(due, vec![1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next_due(), Some(Timestamp(30)));
    }
}
