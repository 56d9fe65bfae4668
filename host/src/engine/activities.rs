//! Running activities: native Rust functions registered by an embedding program, or
//! activity components. Attempts are journaled; retries follow the activity's policy and
//! wait on the engine's clock, so they survive restarts.
//!
//! Delivery is at least once: an activity whose result was not yet durable when the host
//! stopped runs again after the restart. Activities should be idempotent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedSemaphorePermit;

use wasmtime::Store;

use super::activity_host::ActivityState;
use super::registry::{ActivityImpl, Loaded};
use super::timers::TimerJob;
use super::work::WorkGuard;
use super::{Limits, Shared};
use crate::journal::QueuedActivity;
use crate::model::{ErrorInfo, InstanceId};

/// What a native activity is told about the call it serves.
#[derive(Clone)]
pub struct ActivityContext {
    pub instance: InstanceId,
    pub activity: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    // Weak: a context kept past its call must not keep a stopped engine alive.
    shared: Weak<Shared>,
    holding: Arc<Mutex<Holding>>,
}

/// What an executing activity holds: its unit of work and its activity slots. A native
/// activity lends them back while it sleeps on the engine's clock.
#[derive(Debug, Default)]
pub(crate) struct Holding {
    work: Option<WorkGuard>,
    slots: Vec<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for ActivityContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityContext")
            .field("instance", &self.instance)
            .field("activity", &self.activity)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl ActivityContext {
    /// The engine's current time (virtual in tests); `None` once the engine has stopped.
    pub fn now(&self) -> Option<crate::model::Timestamp> {
        self.shared.upgrade().map(|shared| shared.clock.now())
    }

    /// Waits `duration` on the engine's clock. Returns `false` if the wait was cut short
    /// because the activity's instance ended (its result would be discarded) or the engine
    /// stopped: the activity should then give up.
    ///
    /// While it sleeps, the activity holds no activity slot and is not counted as work,
    /// so on a virtual clock `settle` returns and the clock can be moved past its wake-up
    /// time: that is how a test gives an activity a duration without waiting for it.
    pub async fn sleep(&self, duration: std::time::Duration) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let (wake, woken) = tokio::sync::oneshot::channel();
        shared.timers.add(
            shared.clock.now().plus_ms(ms),
            TimerJob::Wake {
                instance: self.instance.clone(),
                wake,
            },
        );
        // Lent back only once the wake-up is queued, so that a `settle` in between sees
        // either this work or the timer. (Sleeps that overlap in one activity lend once.)
        let lent = {
            let mut holding = self.holding.lock().unwrap_or_else(|p| p.into_inner());
            (holding.work.take(), std::mem::take(&mut holding.slots))
        };
        let parked = lent.0.is_some();
        drop(lent);
        drop(shared);
        // The firing hands over a guard of its own: the count stays above zero from the
        // firing until this activity has its unit back.
        let woken = woken.await;
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        let slept = woken.is_ok();
        if parked {
            // Counted again before anything else: with the firing's guard or, for a sleep
            // cut short, a fresh one (this activity runs again now).
            let work = match woken {
                Ok(firing) => firing,
                Err(_) => shared.work.guard(),
            };
            let slots = shared.take_activity_slots(self.instance.tenant()).await;
            let mut holding = self.holding.lock().unwrap_or_else(|p| p.into_inner());
            holding.work = Some(work);
            holding.slots = slots;
        }
        slept
    }
}

pub(crate) type NativeActivity = Arc<
    dyn Fn(
            ActivityContext,
            serde_json::Value,
        ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, ErrorInfo>> + Send>>
        + Send
        + Sync,
>;

impl Shared {
    /// Runs `job` now, or parks it on the timer queue until it is due.
    pub(crate) fn dispatch_activity(self: &Arc<Self>, job: QueuedActivity) {
        self.dispatch_activity_seen(job, None);
    }

    /// Like [`Shared::dispatch_activity`], for an activity just queued by a step that
    /// saw `stops` terminations and purges (see [`crate::journal::Journal::stops`]).
    pub(crate) fn dispatch_activity_seen(
        self: &Arc<Self>,
        job: QueuedActivity,
        stops: Option<u64>,
    ) {
        if job.due_at > self.clock.now() {
            self.timers.add(job.due_at, TimerJob::Activity(job));
            return;
        }
        let guard = self.work.guard();
        tokio::spawn(run_activity(Arc::clone(self), job, guard, stops));
    }

    /// An activity's slots, its tenant's first, then one of the host's.
    pub(crate) async fn take_activity_slots(&self, tenant: &str) -> Vec<OwnedSemaphorePermit> {
        // The semaphores are never closed: `acquire_owned` cannot fail.
        let mut slots = Vec::with_capacity(2);
        if let Ok(slot) = self.tenant_activity_slots(tenant).acquire_owned().await {
            slots.push(slot);
        }
        if let Ok(slot) = Arc::clone(&self.activity_slots).acquire_owned().await {
            slots.push(slot);
        }
        slots
    }

    async fn execute_activity(
        self: &Arc<Self>,
        job: &QueuedActivity,
        holding: &Arc<Mutex<Holding>>,
    ) -> Result<String, ErrorInfo> {
        let registered = self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .activity(job.instance.tenant(), &job.name);
        match registered {
            None => {
                let known = self
                    .registry
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .activity_names(job.instance.tenant());
                Err(ErrorInfo::new(
                    "unknown_activity",
                    format!(
                        "no activity named '{}' is registered; registered: {}",
                        job.name,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ))
            }
            Some(ActivityImpl::Native(f)) => {
                let input: serde_json::Value = serde_json::from_str(&job.input).map_err(|e| {
                    ErrorInfo::new("bad_payload", format!("activity input is not JSON: {e}"))
                })?;
                let ctx = ActivityContext {
                    instance: job.instance.clone(),
                    activity: job.name.clone(),
                    attempt: job.attempt,
                    shared: Arc::downgrade(self),
                    holding: Arc::clone(holding),
                };
                let output = f(ctx, input).await?;
                Ok(output.to_string())
            }
            Some(ActivityImpl::Component(digest)) => {
                let loaded = self
                    .registry
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .component(&digest);
                let Some(Loaded::Activity(pre)) = loaded.as_deref() else {
                    return Err(ErrorInfo::new(
                        "unknown_activity",
                        format!("activity component {} is not loaded", digest.short()),
                    ));
                };
                let limits = Arc::clone(self.limits(job.instance.tenant()));
                let state = ActivityState::new(
                    job.instance.tenant(),
                    &job.name,
                    &job.instance.to_string(),
                    &limits,
                    Arc::clone(&self.ledger),
                )
                .map_err(|e| ErrorInfo::new("activity_grants", e))?;
                let mut store = Store::new(self.sandbox.engine(), state);
                super::limits::meter(
                    &mut store,
                    limits.fuel_per_activity,
                    limits.step_wall_clock_ms,
                );
                let clock = Arc::clone(&store.data().clock);
                let run = super::limits::timed(&clock, async {
                    let worker = pre.instantiate_async(&mut store).await?;
                    worker
                        .steadfast_workflow_activities()
                        .call_run(&mut store, &job.name, &job.input)
                        .await
                });
                // Epochs stop a guest that computes too long; this stops one that waits
                // too long in the host (a slow HTTP response).
                let deadline = std::time::Duration::from_millis(limits.activity_timeout_ms);
                let outcome = tokio::time::timeout(deadline, run).await;
                if let Some(why) = store.data().egress.take_denied() {
                    // Whatever the guest made of the refusal, the call did not do its job.
                    return Err(ErrorInfo::new("http_denied", why));
                }
                match outcome {
                    Err(_elapsed) => Err(ErrorInfo::new(
                        "time_limit",
                        format!(
                            "activity '{}' ran longer than {} ms of wall-clock time \
                             (limits.activity_timeout_ms)",
                            job.name, limits.activity_timeout_ms
                        ),
                    )),
                    Ok(Ok(Ok(output))) => Ok(output),
                    Ok(Ok(Err(e))) => Err(ErrorInfo::new(e.kind, e.message)),
                    Ok(Err(trap)) => {
                        let limits = Limits {
                            fuel_per_run: limits.fuel_per_activity,
                            ..Limits::clone(&limits)
                        };
                        let who = format!("activity '{}'", job.name);
                        Err(super::limits::classify_trap(&trap, &limits, &who))
                    }
                }
            }
        }
    }
}

async fn run_activity(
    shared: Arc<Shared>,
    job: QueuedActivity,
    work: WorkGuard,
    stops: Option<u64>,
) {
    let (result, work) = {
        // Bounded: a burst of scheduled activities queues here instead of instantiating
        // thousands of components at once — first in its tenant's line, then in the
        // host's, so one tenant's backlog cannot hold every slot.
        let slots = shared.take_activity_slots(job.instance.tenant()).await;
        let holding = Arc::new(Mutex::new(Holding {
            work: Some(work),
            slots,
        }));
        // Started only while its instance still wants it: an activity of an instance
        // terminated or purged since it was queued never starts. Without any termination
        // or purge since the step that queued it, there is nothing to look up.
        let unchanged = stops.is_some_and(|seen| seen == shared.journal.stops());
        let queued = if unchanged {
            Ok(true)
        } else {
            shared.journal.activity_queued(&job)
        };
        match queued {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(instance = %job.instance, activity = %job.name, "not started: its instance no longer waits for it");
                return;
            }
            Err(e) => {
                tracing::warn!(instance = %job.instance, activity = %job.name, error = %e, "cannot check the activity queue; running the activity")
            }
        }
        let result = shared.execute_activity(&job, &holding).await;
        // Its unit of work back from the context: missing only if a task the activity
        // spawned still sleeps with it, and then this one counts the rest of the work.
        let work = holding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .work
            .take()
            .unwrap_or_else(|| shared.work.guard());
        let limits = shared.limits(job.instance.tenant());
        let result = match result {
            Ok(output) => super::limits::check_payload("the activity result", &output, limits)
                .map(|()| output)
                .map_err(|e| {
                    ErrorInfo::new("payload_too_large", format!("activity '{}': {e}", job.name))
                }),
            Err(e) => Err(e),
        };
        (result, work)
    };
    let now = shared.clock.now();
    let retry_delay = match (&result, &job.retry) {
        // A refused request is refused again until an operator changes the grants.
        (Err(error), Some(policy)) if error.kind != "http_denied" => {
            policy.delay_before(job.attempt + 1, &error.kind, now.millis_since(job.first_at))
        }
        _ => None,
    };
    if let (Err(error), Some(delay)) = (&result, retry_delay) {
        let retry_at = now.plus_ms(delay);
        tracing::debug!(instance = %job.instance, activity = %job.name, attempt = job.attempt, %retry_at, "activity attempt failed: {}", error.message);
        match shared
            .journal
            .activity_attempt_failed(job.clone(), error.clone(), retry_at, now)
            .await
        {
            Ok(Some(_)) => {
                let next = QueuedActivity {
                    attempt: job.attempt + 1,
                    due_at: retry_at,
                    ..job
                };
                shared.timers.add(retry_at, TimerJob::Activity(next));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(instance = %job.instance, activity = %job.name, error = %e, "cannot journal a failed attempt; it runs again on restart")
            }
        }
        return;
    }
    shared.deliver_completion(job, result, work);
}
