//! Which instances are in memory, how journaled events reach them, and the timer loop.
//!
//! An instance is resident while its activation task runs. `deliver` sends to the
//! mailbox of a resident instance or activates it; `leave_resident` hands deliveries that
//! raced with an instance's exit to a fresh activation, so none is lost.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::activation::Msg;
use super::run::Preload;
use super::timers::{TimerJob, Timers};
use super::work::WorkGuard;
use super::{Resident, Shared};
use crate::journal::QueuedActivity;
use crate::model::{Clock, Event, InstanceId, Outcome, Timestamp};

impl Shared {
    /// Makes sure the instance is resident (activating it if not).
    pub(crate) fn activate(self: &Arc<Self>, id: InstanceId) {
        self.activate_with(id, None);
    }

    /// As [`Shared::activate`]; an instance this host has just created comes with what
    /// its start wrote, which a fresh activation then need not read back.
    pub(crate) fn activate_with(self: &Arc<Self>, id: InstanceId, preload: Option<Preload>) {
        let mut resident = self.resident.lock().unwrap_or_else(|p| p.into_inner());
        match resident.get_mut(&id) {
            // It may be leaving (terminated, evicted, replaced by a new start with the
            // same id): make sure it comes back, as it exits at once if there is nothing
            // to do.
            Some(r) => r.wake_on_leave = true,
            None => {
                let guard = self.work.guard();
                self.spawn_activation_with(&mut resident, id, guard, preload);
            }
        }
    }

    /// Activates a running instance now, or, if it was started for a later time not yet
    /// reached, when that time comes.
    pub(crate) fn activate_at(
        self: &Arc<Self>,
        id: InstanceId,
        start_at: Option<Timestamp>,
        now: Timestamp,
    ) {
        match start_at {
            Some(at) if at > now => self.timers.add(at, TimerJob::Start(id)),
            _ => self.activate(id),
        }
    }

    /// Hands a journaled event to its instance, activating the instance if needed.
    pub(crate) fn deliver(
        self: &Arc<Self>,
        id: InstanceId,
        generation: u32,
        pos: u64,
        event: Event,
        work: WorkGuard,
    ) {
        let mut resident = self.resident.lock().unwrap_or_else(|p| p.into_inner());
        let work = match resident.get(&id) {
            Some(r) => match r.tx.send(Msg::Deliver {
                generation,
                pos,
                event,
                work,
                unwritten: None,
            }) {
                Ok(()) => return,
                Err(mpsc::error::SendError(Msg::Deliver { work, .. })) => work,
                Err(_) => return,
            },
            None => work,
        };
        // Not resident (or just leaving): activate; the journal already holds the event.
        self.spawn_activation(&mut resident, id, work);
    }

    fn spawn_activation(
        self: &Arc<Self>,
        resident: &mut HashMap<InstanceId, Resident>,
        id: InstanceId,
        work: WorkGuard,
    ) {
        self.spawn_activation_with(resident, id, work, None);
    }

    fn spawn_activation_with(
        self: &Arc<Self>,
        resident: &mut HashMap<InstanceId, Resident>,
        id: InstanceId,
        work: WorkGuard,
        preload: Option<Preload>,
    ) {
        if !self.owns(&id) {
            // Another host runs it; what was written for it reaches that host as a
            // wake-up.
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let activation = self.next_activation.fetch_add(1, Ordering::Relaxed);
        if !resident.contains_key(&id) {
            *self
                .resident_per_tenant
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(id.tenant().to_owned())
                .or_default() += 1;
        }
        resident.insert(
            id.clone(),
            Resident {
                tx,
                activation,
                wake_on_leave: false,
            },
        );
        self.runtime.spawn(super::run::run(
            Arc::clone(self),
            id,
            activation,
            rx,
            work,
            preload,
        ));
    }

    /// Called by an activation as it ends. Deliveries that raced with its end are not
    /// lost: the instance is activated again to take them.
    pub(crate) fn leave_resident(
        self: &Arc<Self>,
        id: &InstanceId,
        activation: u64,
        leftover: Option<mpsc::UnboundedReceiver<Msg>>,
    ) {
        let mut resident = self.resident.lock().unwrap_or_else(|p| p.into_inner());
        let mut wake = false;
        if resident.get(id).is_some_and(|r| r.activation == activation) {
            wake = resident.remove(id).is_some_and(|r| r.wake_on_leave);
            let mut per_tenant = self
                .resident_per_tenant
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(count) = per_tenant.get_mut(id.tenant()) {
                *count -= 1;
                if *count == 0 {
                    per_tenant.remove(id.tenant());
                }
            }
        }
        if wake {
            let guard = self.work.guard();
            self.spawn_activation(&mut resident, id.clone(), guard);
        }
        let Some(mut rx) = leftover else { return };
        rx.close();
        let mut work = None;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Deliver {
                    work: guard,
                    unwritten: Some(job),
                    event,
                    ..
                } => {
                    // Nobody will write this result with a step now: write it on its own.
                    if let Event::ActivityCompleted { result, .. } = event {
                        tokio::spawn(write_completion(Arc::clone(self), *job, result, guard));
                    }
                }
                Msg::Deliver { work: guard, .. } => work = Some(guard),
                Msg::Evict(_) => {}
            }
        }
        if let Some(work) = work
            && !resident.contains_key(id)
        {
            self.spawn_activation(&mut resident, id.clone(), work);
        }
    }

    /// Hands an activity's final result to its instance. A resident instance takes it
    /// unwritten and journals it with its next step (one commit instead of two); for an
    /// instance not in memory it is journaled here first.
    pub(crate) fn deliver_completion(
        self: &Arc<Self>,
        job: QueuedActivity,
        result: Outcome,
        work: WorkGuard,
    ) {
        let resident = self.resident.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = resident.get(&job.instance) {
            let event = Event::ActivityCompleted {
                seq: job.seq,
                attempts: job.attempt,
                result,
            };
            let msg = Msg::Deliver {
                generation: job.generation,
                pos: 0,
                event,
                work,
                unwritten: Some(Box::new(job)),
            };
            match r.tx.send(msg) {
                Ok(()) => return,
                Err(mpsc::error::SendError(Msg::Deliver {
                    work,
                    unwritten: Some(job),
                    event,
                    ..
                })) => {
                    drop(resident);
                    if let Event::ActivityCompleted { result, .. } = event {
                        tokio::spawn(write_completion(Arc::clone(self), *job, result, work));
                    }
                    return;
                }
                Err(_) => return,
            }
        }
        drop(resident);
        tokio::spawn(write_completion(Arc::clone(self), job, result, work));
    }

    /// Journals an activity result on its own that an activation took unwritten and is
    /// leaving without writing, then delivers it.
    pub(crate) fn write_unwritten(self: &Arc<Self>, job: QueuedActivity, result: Outcome) {
        let guard = self.work.guard();
        tokio::spawn(write_completion(Arc::clone(self), job, result, guard));
    }

    /// More instances are in memory than the host's maximum, or more of `tenant`'s than
    /// its own (`limits.max_resident_instances`): an idle instance of the tenant should
    /// leave. So one tenant's idle instances never hold every slot of the host.
    pub(crate) fn over_capacity(&self, tenant: &str) -> bool {
        let total = self
            .resident
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if total > self.max_resident {
            return true;
        }
        let of_tenant = self
            .resident_per_tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .copied()
            .unwrap_or(0);
        of_tenant > self.limits(tenant).max_resident_instances
    }

    pub(crate) fn add_timer(&self, at: Timestamp, instance: InstanceId, generation: u32, seq: u32) {
        self.timers.add(
            at,
            TimerJob::Fire {
                instance,
                generation,
                seq,
            },
        );
    }

    /// Fires every timer that is due.
    pub(crate) fn fire_due(self: &Arc<Self>) {
        // Counted as work from before the jobs leave the queue until each has its own
        // guard: otherwise `settle` could see no work and no timer in between.
        let _batch = self.work.guard();
        let now = self.clock.now();
        for job in self.timers.take_due(now) {
            match job {
                TimerJob::Fire {
                    instance,
                    generation,
                    seq,
                } => {
                    let guard = self.work.guard();
                    let shared = Arc::clone(self);
                    tokio::spawn(async move {
                        match shared
                            .journal
                            .fire_timer(instance.clone(), generation, seq, now)
                            .await
                        {
                            Ok(Some((pos, event))) => {
                                if let Some(trace) =
                                    shared.instance_trace_off_thread(&instance).await
                                {
                                    shared.traces().under_run(
                                        &trace,
                                        generation,
                                        "timer fired".to_owned(),
                                        std::time::SystemTime::now(),
                                        vec![opentelemetry::KeyValue::new(
                                            "steadfast.timer_seq",
                                            i64::from(seq),
                                        )],
                                        None,
                                    );
                                }
                                shared.deliver(instance, generation, pos, event, guard)
                            }
                            Ok(None) => {}
                            Err(_) if !shared.owns(&instance) => {
                                // Its partition's lease is gone: the new owner fires it.
                            }
                            Err(e) => {
                                tracing::error!(%instance, seq, error = %e, "cannot journal a timer firing; retrying in a second");
                                shared.timers.add(
                                    now.plus_ms(1000),
                                    TimerJob::Fire {
                                        instance,
                                        generation,
                                        seq,
                                    },
                                );
                            }
                        }
                    });
                }
                TimerJob::Activity(job) => self.dispatch_activity(job),
                TimerJob::Start(instance) => self.activate(instance),
                TimerJob::Wake { wake, .. } => {
                    // A sleeper that is gone drops the guard here.
                    let _ = wake.send((self.work.guard(), true));
                }
            }
        }
    }

    /// Wakes whoever waits on `id`'s status.
    pub(crate) fn status_changed(&self, id: &InstanceId) {
        let waiting = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        for (_, waiter) in waiting.into_iter().flatten() {
            let _ = waiter.send(());
        }
    }
}

/// Sleeps until the earliest timer is due (or the queue changes), then fires what is due.
/// Holds only a weak reference between wake-ups, so it ends with the engine.
/// Journals an activity result on its own, then delivers it.
async fn write_completion(
    shared: Arc<Shared>,
    job: QueuedActivity,
    result: Outcome,
    work: WorkGuard,
) {
    let now = shared.clock.now();
    match shared.journal.complete_activity(&job, result, now).await {
        Ok(Some((pos, event))) => shared.deliver(job.instance, job.generation, pos, event, work),
        Ok(None) => {}
        Err(_) if !shared.owns(&job.instance) => {
            // Its partition's lease is gone: the new owner runs it again.
        }
        Err(e) => {
            // Its queue row is still there: run it again later (at least once) rather
            // than leave its instance waiting for a restart.
            let at = shared.clock.now().plus_ms(RESULT_RETRY_MS);
            tracing::error!(instance = %job.instance, activity = %job.name, error = %e, "cannot journal an activity result; the activity runs again at {at}");
            shared.timers.add(at, TimerJob::Activity(job));
        }
    }
}

/// How long after a failed write of its result an activity runs again.
const RESULT_RETRY_MS: u64 = 1_000;

pub(crate) async fn timer_loop(shared: Weak<Shared>, timers: Arc<Timers>, clock: Arc<dyn Clock>) {
    loop {
        let sleep = match timers.next_due() {
            Some(at) => clock.sleep_until(at),
            None => Box::pin(std::future::pending()),
        };
        tokio::select! {
            () = sleep => {}
            () = timers.changed.notified() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.fire_due();
    }
}
