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
/// activity lends them back while all it waits for is a sleep on the engine's clock.
#[derive(Debug, Default)]
pub(crate) struct Holding {
    work: Option<WorkGuard>,
    slots: Vec<OwnedSemaphorePermit>,
    /// The task the activity runs on: only its own sleeps count (a task it spawned may
    /// sleep while the activity itself waits for something else).
    task: Option<tokio::task::Id>,
    /// Sleeps of the activity's task under way.
    asleep: usize,
    /// The unit and slots are lent out.
    lent: bool,
    /// The activity has returned: sleeping now means nothing.
    finished: bool,
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
    /// because the activity's instance ended or continued as new (its result would be
    /// discarded), the engine stopped, or the activity had already returned: the activity
    /// should then give up.
    ///
    /// While all the activity waits for is its sleeps, it holds no activity slot and is
    /// not counted as work, so on a virtual clock `settle` returns and the clock can be
    /// moved past its wake-up time: that is how a test gives an activity a duration without
    /// waiting for it. (Sleeps in a task the activity spawned do not count.)
    pub async fn sleep(&self, duration: std::time::Duration) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        let own_task = {
            let mut holding = lock(&self.holding);
            if holding.finished {
                return false;
            }
            let own = holding.task.is_some() && tokio::task::try_id() == holding.task;
            if own {
                holding.asleep += 1;
            }
            own
        };
        let _asleep = own_task.then(|| Asleep(&self.holding));
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let (wake, woken) = tokio::sync::oneshot::channel();
        shared.timers.add(
            shared.clock.now().plus_ms(ms),
            TimerJob::Wake {
                instance: self.instance.clone(),
                wake,
            },
        );
        drop(shared);
        // The firing (or the instance's end) sends a guard along: the count stays above
        // zero until the activity's task runs again and takes its unit back (`Counted`).
        match woken.await {
            Ok((_firing, full)) => full,
            // The engine stopped.
            Err(_) => false,
        }
    }
}

/// One sleep of the activity's task under way, counted in [`Holding::asleep`] until it
/// ends or is dropped (a `select!` or timeout gave up on it).
struct Asleep<'a>(&'a Mutex<Holding>);

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        lock(self.0).asleep -= 1;
    }
}

fn lock(holding: &Mutex<Holding>) -> std::sync::MutexGuard<'_, Holding> {
    holding.lock().unwrap_or_else(|p| p.into_inner())
}

/// A native activity's future, counted as work except while it waits only on its sleeps:
/// its unit and slots are lent when it yields with a sleep under way, and taken back the
/// moment it is polled again, before its code runs.
struct Counted<F> {
    inner: Pin<Box<F>>,
    holding: Arc<Mutex<Holding>>,
    shared: Weak<Shared>,
    tenant: String,
    acquiring: Option<Pin<Box<dyn Future<Output = Vec<OwnedSemaphorePermit>> + Send>>>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.acquiring.is_none() {
            let mut holding = lock(&this.holding);
            if std::mem::take(&mut holding.lent) {
                let Some(shared) = this.shared.upgrade() else {
                    drop(holding);
                    return this.inner.as_mut().poll(cx);
                };
                // Running again: counted at once, then its slots.
                holding.work = Some(shared.work.guard());
                let tenant = this.tenant.clone();
                this.acquiring = Some(Box::pin(async move {
                    shared.take_activity_slots(&tenant).await
                }));
            }
        }
        if let Some(acquiring) = &mut this.acquiring {
            match acquiring.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(slots) => {
                    lock(&this.holding).slots = slots;
                    this.acquiring = None;
                }
            }
        }
        let polled = this.inner.as_mut().poll(cx);
        if polled.is_pending() {
            let mut holding = lock(&this.holding);
            if holding.asleep > 0 && holding.work.is_some() {
                holding.lent = true;
                drop(holding.work.take());
                holding.slots.clear();
            }
        }
        polled
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
        if !self.owns(&job.instance) {
            return;
        }
        if job.due_at > self.clock.now() {
            self.timers.add(job.due_at, TimerJob::Activity(job));
            return;
        }
        let guard = self.work.guard();
        tokio::spawn(run_activity(Arc::clone(self), job, guard, stops));
    }

    /// Whether a Wasm or native activity of `tenant` has `name`.
    pub(crate) fn has_activity(&self, tenant: &str, name: &str) -> bool {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .activity(tenant, name)
            .is_some()
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
        traceparent: Option<String>,
    ) -> Result<String, ErrorInfo> {
        let lookup = || {
            self.registry
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .activity(job.instance.tenant(), &job.name)
        };
        let mut registered = lookup();
        if registered.is_none() && self.journal.is_shared() {
            // Perhaps deployed through another host a moment ago.
            if let Err(e) = self.load_deployments().await {
                tracing::warn!(error = %e, "cannot load other hosts' deployments");
            }
            registered = lookup();
        }
        match registered {
            None if self.external.serves(job.instance.tenant()) => {
                // Nothing here answers the name: the tenant's worker processes do.
                let within = std::time::Duration::from_millis(
                    self.limits(job.instance.tenant()).activity_timeout_ms,
                );
                let task = super::ExternalTask {
                    token: String::new(),
                    name: job.name.clone(),
                    input: job.input.clone(),
                    instance: job.instance.local().to_owned(),
                    task_id: i32::try_from(job.seq).unwrap_or(i32::MAX),
                    execution_id: format!("{}:{}:{}", job.instance, job.generation, job.seq),
                };
                self.external.run(job.instance.tenant(), task, within).await
            }
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
                let output = Counted {
                    inner: Box::pin(f(ctx, input)),
                    holding: Arc::clone(holding),
                    shared: Arc::downgrade(self),
                    tenant: job.instance.tenant().to_owned(),
                    acquiring: None,
                }
                .await?;
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
                let tenant = job.instance.tenant();
                let limits = Arc::clone(self.limits(tenant));
                let instance = job.instance.to_string();
                let (mut store, kept, calls) = match self.warm.take(tenant, &digest, &limits) {
                    Some(warm) => {
                        let mut store = warm.store;
                        store.data_mut().next_call(&job.name, &instance);
                        (store, Some(warm.worker), warm.calls)
                    }
                    None => {
                        let state = ActivityState::new(
                            tenant,
                            &job.name,
                            &instance,
                            &limits,
                            Arc::clone(&self.ledger),
                        )
                        .map_err(|e| ErrorInfo::new("activity_grants", e))?;
                        (Store::new(self.sandbox.engine(), state), None, 0)
                    }
                };
                store.data_mut().egress.traceparent =
                    traceparent.and_then(|t| http::HeaderValue::from_str(&t).ok());
                super::limits::meter(
                    &mut store,
                    limits.fuel_per_activity,
                    limits.step_wall_clock_ms,
                );
                let clock = Arc::clone(&store.data().clock);
                let run = super::limits::timed(&clock, async {
                    let worker = match kept {
                        Some(worker) => worker,
                        None => pre.instantiate_async(&mut store).await?,
                    };
                    let result = worker
                        .steadfast_workflow_activities()
                        .call_run(&mut store, &job.name, &job.input)
                        .await?;
                    wasmtime::Result::Ok((worker, result))
                });
                // Epochs stop a guest that computes too long; this stops one that waits
                // too long in the host (a slow HTTP response).
                let deadline = std::time::Duration::from_millis(limits.activity_timeout_ms);
                let outcome = tokio::time::timeout(deadline, run).await;
                if let Some(why) = store.data().egress.take_denied() {
                    // Whatever the guest made of the refusal, the call did not do its job.
                    return Err(ErrorInfo::new("http_denied", why));
                }
                // A call that returned leaves its instance fit for another call of this
                // tenant's component; one that trapped or timed out does not.
                let outcome = outcome.map(|ran| {
                    ran.map(|(worker, result)| {
                        store.data().log.finish_call();
                        let warm = super::warm::Warm::new(store, worker, limits.clone(), calls + 1);
                        self.warm.give_back(tenant, &digest, warm);
                        result
                    })
                });
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
            task: tokio::task::try_id(),
            ..Holding::default()
        }));
        // Started only while its instance still wants it: an activity of an instance
        // terminated or purged since it was queued never starts. Without any termination
        // or purge since the step that queued it, there is nothing to look up.
        // The count is this process's: on a shared journal another host may have terminated
        // or purged the instance, so the queue is always looked at.
        let unchanged =
            !shared.journal.is_shared() && stops.is_some_and(|seen| seen == shared.journal.stops());
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
        let began = std::time::Instant::now();
        let trace = shared.instance_trace_off_thread(&job.instance).await;
        let span = trace.and_then(|trace| {
            shared.traces().start_under_run(
                &trace,
                job.generation,
                format!("activity {}", job.name),
                std::time::SystemTime::now(),
                vec![
                    opentelemetry::KeyValue::new("steadfast.activity", job.name.clone()),
                    opentelemetry::KeyValue::new("steadfast.attempt", i64::from(job.attempt)),
                    opentelemetry::KeyValue::new(
                        "steadfast.tenant",
                        job.instance.tenant().to_owned(),
                    ),
                ],
            )
        });
        let traceparent = span.as_ref().map(crate::traces::traceparent_of);
        let result = shared.execute_activity(&job, &holding, traceparent).await;
        if let Some(mut span) = span {
            use opentelemetry::trace::Span as _;
            if let Err(e) = &result {
                span.set_status(opentelemetry::trace::Status::error(format!(
                    "{}: {}",
                    e.kind, e.message
                )));
            }
            span.end();
        }
        // A name no Wasm or native activity has is the guest's choice (also when an
        // external worker answers it): counted under one label, so a guest cannot grow
        // the metrics without bound.
        let label = if shared.has_activity(job.instance.tenant(), &job.name) {
            job.name.as_str()
        } else {
            "<unregistered>"
        };
        shared.metrics.activity_attempted(
            job.instance.tenant(),
            label,
            result.is_ok(),
            began.elapsed(),
        );
        // Its unit of work back from the context, and its slots given up: a context kept
        // by a task the activity spawned must hold neither. (The unit is missing only if
        // the activity returned from inside a cancelled sleep; then a fresh one counts
        // the rest of the work.)
        let work = {
            let mut holding = holding.lock().unwrap_or_else(|p| p.into_inner());
            holding.finished = true;
            holding.slots.clear();
            holding.work.take()
        }
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
                let label = if shared.has_activity(job.instance.tenant(), &job.name) {
                    job.name.as_str()
                } else {
                    "<unregistered>"
                };
                shared
                    .metrics
                    .activity_retried(job.instance.tenant(), label);
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
