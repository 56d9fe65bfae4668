//! What a guest may use, per tenant, and how a guest that goes over is stopped.
//!
//! - **CPU:** fuel per workflow run (deterministic: a replay burns the same fuel) and per
//!   activity call; a time limit per step (from the workflow resuming until it next
//!   blocks) as the backstop, checked on epoch ticks, which also yield to the runtime so a
//!   busy guest cannot starve others. The step's time is the CPU time the guest used
//!   while it was being run ([`StepClock`]), not the wall clock: time spent waiting for a
//!   CPU — behind other guests on the runtime's threads, or behind other processes on the
//!   machine's cores — does not count, and neither does replay (fuel bounds that), so a
//!   busy host never fails a healthy instance.
//! - **Memory:** linear memory growth beyond the limit traps with a clear reason.
//! - **Size:** payloads (inputs, outputs, event data, activity results, custom status),
//!   journal entries per generation (with a "continue as new" hint at 80 %), timers per
//!   generation.
//!
//! A guest over a limit ends **its own** instance as `FAILED` with the reason; the host and
//! every other instance carry on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::model::ErrorInfo;

/// Limits applied to one tenant's guests. Every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) for one run of a workflow: from activation until
    /// it returns, continues as new, or leaves memory.
    pub fuel_per_run: u64,
    /// Fuel for one activity call.
    pub fuel_per_activity: u64,
    /// Time limit for one step of a workflow (from resuming to its next wait) or one
    /// activity call, in ms of the CPU time the guest used: waiting for a core, for the
    /// journal or for the network does not count. (The name predates the CPU clock.)
    pub step_wall_clock_ms: u64,
    /// Wall-clock limit for one activity call, in ms, waiting included: what stops an
    /// activity stuck on a slow HTTP response.
    pub activity_timeout_ms: u64,
    /// Largest linear memory of a guest, in bytes (at most 64 MiB).
    pub max_memory_bytes: usize,
    /// Largest payload: input, output, event data, activity result, custom status.
    pub max_payload_bytes: usize,
    /// Journal entries one generation may hold before it must continue as new.
    pub max_history_per_generation: usize,
    /// Timers one generation may create.
    pub max_timers_per_generation: usize,
    /// Instances of the tenant that may be pending, running or suspended at once, child
    /// workflows included. A start beyond it is refused; a child beyond it fails in its
    /// parent.
    pub max_live_instances: u64,
    /// Raised events an instance may hold that its workflow has not waited for yet (in
    /// its current generation). A raise beyond it is refused with 429; nothing is lost.
    pub max_pending_events: u64,
    /// Bytes of raised events one generation of an instance may hold. A raise beyond it is
    /// refused with 429; continuing as new starts the count again (carried events count).
    pub max_event_bytes_per_generation: u64,
    /// Instances of the tenant kept in memory at once. Beyond it the tenant's own idle
    /// instances leave memory first, so one tenant cannot take every slot of the host.
    pub max_resident_instances: usize,
    /// Component uploads (deploys and checks) the tenant may make per minute.
    pub deploys_per_minute: u32,
    /// Activities of the tenant executing at once (of the host's
    /// `max_concurrent_activities`, 256 by default); the rest wait their turn.
    pub max_activities_in_flight: usize,
    /// Requests one token may make per second, on average (bursts of twice that pass).
    pub requests_per_second: u32,
    /// Requests of the tenant in progress at once (long polls included), over all its
    /// tokens: what keeps one tenant from holding every connection of the host.
    pub max_requests_in_flight: u32,
    /// Outgoing HTTP that activity components may send, as rules
    /// `"[METHODS ]SCHEME://HOST[:PORT][/PATH-PREFIX]"` (see `engine::egress`). Empty: none.
    pub http_allow: Vec<String>,
    /// Environment variables activity components see (name → value). Empty: none; the
    /// host's own environment is never passed through.
    pub activity_env: BTreeMap<String, String>,
    /// Directories activity components may read: guest path → host directory, read-only.
    /// Empty: no filesystem.
    pub activity_dirs: BTreeMap<String, PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_run: 5_000_000_000,
            fuel_per_activity: 5_000_000_000,
            step_wall_clock_ms: 10_000,
            activity_timeout_ms: 60_000,
            max_memory_bytes: crate::sandbox::MAX_MEMORY_BYTES,
            max_payload_bytes: 1024 * 1024,
            max_history_per_generation: 50_000,
            max_timers_per_generation: 10_000,
            max_live_instances: 10_000,
            max_pending_events: 1_000,
            max_event_bytes_per_generation: 32 << 20,
            max_resident_instances: 1_024,
            deploys_per_minute: 20,
            max_activities_in_flight: 64,
            requests_per_second: 500,
            max_requests_in_flight: 256,
            http_allow: Vec::new(),
            activity_env: BTreeMap::new(),
            activity_dirs: BTreeMap::new(),
        }
    }
}

impl Limits {
    /// At 80 % of the history limit the workflow is told to continue as new.
    pub fn should_continue_as_new(&self, entries: usize) -> bool {
        entries.saturating_mul(5) >= self.max_history_per_generation.saturating_mul(4)
    }

    /// These limits with the fields `overrides` names replaced, the rest kept: how a
    /// `[tenant_limits.NAME]` section layers over `[limits]`.
    pub fn layered(
        &self,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Limits, String> {
        let serde_json::Value::Object(mut fields) =
            serde_json::to_value(self).map_err(|e| e.to_string())?
        else {
            unreachable!("limits serialise as a map");
        };
        for (name, value) in overrides {
            fields.insert(name.clone(), value.clone());
        }
        serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| e.to_string())
    }

    /// What a tenant may see of its limits: everything but the values of granted
    /// environment variables and the host paths of granted directories.
    pub fn redacted(&self) -> serde_json::Value {
        let mut view = serde_json::to_value(self).unwrap_or_default();
        if let Some(env) = view.get_mut("activity_env").and_then(|v| v.as_object_mut()) {
            for value in env.values_mut() {
                *value = serde_json::Value::from("<redacted>");
            }
        }
        if let Some(dirs) = view
            .get_mut("activity_dirs")
            .and_then(|v| v.as_object_mut())
        {
            for value in dirs.values_mut() {
                *value = serde_json::Value::from("<granted>");
            }
        }
        view
    }

    /// Checks what cannot be checked by the type: the `http_allow` rules parse and each
    /// granted directory exists.
    pub fn validate(&self) -> Result<(), String> {
        super::egress::parse_rules(&self.http_allow)?;
        for (guest, host) in &self.activity_dirs {
            if !host.is_dir() {
                return Err(format!(
                    "activity_dirs grants '{guest}' from {}, which is not a directory",
                    host.display()
                ));
            }
        }
        if self.max_memory_bytes > crate::sandbox::MAX_MEMORY_BYTES {
            return Err(format!(
                "max_memory_bytes is {}, above the sandbox's {} bytes",
                self.max_memory_bytes,
                crate::sandbox::MAX_MEMORY_BYTES
            ));
        }
        Ok(())
    }
}

/// A guest went over a limit (a trap raised by the host).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitExceeded {
    #[error("{what} is {size} bytes; the limit is {limit} bytes")]
    Payload {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error(
        "the generation's journal reached {0} entries; continue as new before that \
         (ctx.should_continue_as_new() turns true at 80 %)"
    )]
    History(usize),
    #[error("the generation created {0} timers, the limit")]
    Timers(usize),
    #[error(
        "one step computed for more than {0} ms of CPU time (limits.step_wall_clock_ms); \
         split the work into activities, or raise the limit"
    )]
    StepTime(u64),
    /// A value the host cannot journal or act on (a NaN backoff, a time past year 9999).
    #[error("{0}")]
    Invalid(String),
}

impl LimitExceeded {
    fn kind(&self) -> &'static str {
        match self {
            LimitExceeded::Payload { .. } => "payload_too_large",
            LimitExceeded::History(_) => "history_limit",
            LimitExceeded::Timers(_) => "timer_limit",
            LimitExceeded::StepTime(_) => "time_limit",
            LimitExceeded::Invalid(_) => "invalid_argument",
        }
    }
}

/// Checks a payload's size.
pub(crate) fn check_payload(
    what: &'static str,
    text: &str,
    limits: &Limits,
) -> Result<(), LimitExceeded> {
    if text.len() > limits.max_payload_bytes {
        Err(LimitExceeded::Payload {
            what,
            size: text.len(),
            limit: limits.max_payload_bytes,
        })
    } else {
        Ok(())
    }
}

/// Names the reason a guest trapped, for the instance's status: which limit it hit, or
/// what the trap was.
pub(crate) fn classify_trap(error: &wasmtime::Error, limits: &Limits, who: &str) -> ErrorInfo {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return ErrorInfo::new(limit.kind(), format!("{who}: {limit}"));
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => ErrorInfo::new(
            "fuel_exhausted",
            format!(
                "{who} used up its fuel ({} units): it may loop forever",
                limits.fuel_per_run
            ),
        ),
        Some(wasmtime::Trap::StackOverflow) => ErrorInfo::new(
            "stack_overflow",
            format!("{who} overflowed its stack (unbounded recursion?)"),
        ),
        Some(wasmtime::Trap::Interrupt) => ErrorInfo::new(
            "time_limit",
            format!(
                "{who} ran longer than {} ms in one step",
                limits.step_wall_clock_ms
            ),
        ),
        _ => {
            let text = format!("{error:#}");
            if text.contains("growing memory") || text.contains("memory minimum size") {
                ErrorInfo::new(
                    "memory_limit",
                    format!(
                        "{who} tried to grow its memory past {} bytes",
                        limits.max_memory_bytes
                    ),
                )
            } else {
                ErrorInfo::new("workflow_trapped", format!("{who} trapped: {text}"))
            }
        }
    }
}

/// Store data that the limits apply to.
pub(crate) trait Metered: Send + 'static {
    /// The clock of the current step (or activity call), or `None` while the time limit
    /// does not apply (a workflow replaying its journal).
    fn step_clock(&self) -> Option<&StepClock>;
    fn meter(&mut self) -> &mut GuestMeter;
}

/// How long a guest has run in its current step: the CPU time of the thread polling its
/// store, summed over polls. A guest runs only inside `poll` (on a fiber, on the polling
/// thread), so waiting for a CPU, for the journal or for a delivery is not counted.
///
/// Reading a thread's CPU clock is a system call, too dear for every poll of every
/// instance (most polls run a guest for microseconds between two host calls). So a poll
/// is timed with the cheap monotonic clock, and the CPU clock is read only for polls that
/// run long enough for an epoch tick to reach them: from that tick on (or from the start
/// of a poll that follows a yield on a tick) the poll counts CPU time; before it, the wall
/// time, which is less than a tick. Shared between the store's data and the [`timed`]
/// future that drives the guest; read from the epoch callback, which runs inside the
/// poll, on the polling thread.
#[derive(Debug, Default)]
pub(crate) struct StepClock(std::sync::Mutex<StepTimes>);

#[derive(Debug, Default)]
struct StepTimes {
    /// Time counted in this step by the polls that ended.
    used: std::time::Duration,
    /// The poll under way, if any.
    poll: Option<PollTimes>,
    /// The last poll ended by yielding on a tick: the guest is computing, so time the
    /// next poll by the CPU clock from its start.
    measure_next: bool,
}

#[derive(Debug)]
struct PollTimes {
    started: std::time::Instant,
    /// The thread's CPU clock when CPU timing of this poll began.
    cpu_from: Option<std::time::Duration>,
    /// Wall time of the poll before CPU timing began.
    wall_before: std::time::Duration,
    /// The first tick of the poll found the guest just resumed.
    resumed: bool,
}

impl PollTimes {
    fn elapsed(&self) -> std::time::Duration {
        match self.cpu_from {
            Some(from) => self.wall_before + thread_cpu().saturating_sub(from),
            None => self.started.elapsed(),
        }
    }
}

/// What the epoch callback should do at a tick.
pub(crate) enum Tick {
    /// The step has run this long: yield to the runtime (or fail, if over the limit).
    Ran(std::time::Duration),
    /// The guest has only just been resumed, after this much time in the step: let it
    /// go on without yielding (unless that is over the limit already).
    JustResumed(std::time::Duration),
}

impl StepClock {
    fn times(&self) -> std::sync::MutexGuard<'_, StepTimes> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called at an epoch tick while the guest runs.
    pub(crate) fn tick(&self) -> Tick {
        let mut t = self.times();
        let used = t.used;
        let Some(poll) = t.poll.as_mut() else {
            return Tick::Ran(used);
        };
        if poll.cpu_from.is_none() {
            let wall = poll.started.elapsed();
            if wall < RESUMED_WITHIN && !poll.resumed {
                // A parked guest's deadline passed long ago, so its first check after
                // being resumed lands here: most such polls end before the next tick,
                // and need no CPU clock at all.
                poll.resumed = true;
                return Tick::JustResumed(used + wall);
            }
            poll.wall_before = wall;
            poll.cpu_from = Some(thread_cpu());
        }
        let ran = used + poll.elapsed();
        t.measure_next = true;
        Tick::Ran(ran)
    }

    /// A new step begins now (the guest resumed, or replay reached the live end).
    pub(crate) fn restart(&self) {
        let mut t = self.times();
        t.used = std::time::Duration::ZERO;
        if let Some(poll) = t.poll.as_mut() {
            poll.started = std::time::Instant::now();
            poll.wall_before = std::time::Duration::ZERO;
            if poll.cpu_from.is_some() {
                poll.cpu_from = Some(thread_cpu());
            }
        }
    }

    fn poll_started(&self) {
        let mut t = self.times();
        let measure = std::mem::take(&mut t.measure_next);
        t.poll = Some(PollTimes {
            started: std::time::Instant::now(),
            cpu_from: measure.then(thread_cpu),
            wall_before: std::time::Duration::ZERO,
            resumed: false,
        });
    }

    fn poll_ended(&self) {
        let mut t = self.times();
        if let Some(poll) = t.poll.take() {
            t.used += poll.elapsed();
        }
    }
}

/// A poll whose first tick comes sooner than this after it began has just resumed a
/// guest that was parked across ticks: no need to yield again at once.
const RESUMED_WITHIN: std::time::Duration = std::time::Duration::from_millis(1);

/// The CPU time the calling thread has used.
#[cfg(unix)]
fn thread_cpu() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec. On failure it stays zero and time
    // stands still for the limit (fuel still bounds the guest).
    let _ = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    std::time::Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Elsewhere, the wall clock since an arbitrary start: waiting inside a poll counts.
#[cfg(not(unix))]
fn thread_cpu() -> std::time::Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// Drives `fut` (a call into a guest) and counts the time spent polling it on `clock`.
pub(crate) async fn timed<F: std::future::Future>(clock: &StepClock, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        clock.poll_started();
        let result = fut.as_mut().poll(cx);
        clock.poll_ended();
        result
    })
    .await
}

/// What the engine's guest stores hold right now: how many exist and the bytes of linear
/// memory they have grown to. With nothing resident and nothing running, both are 0.
/// Activity instances kept between calls (`engine::warm`) are booked apart, as
/// [`Engine::kept_activity_memory`](super::Engine::kept_activity_memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestMemory {
    pub stores: usize,
    pub bytes: usize,
}

/// The engine-wide book of [`GuestMemory`], kept by every store's [`GuestMeter`]: live
/// stores, and activity stores kept between calls.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    live: Book,
    kept: Book,
}

#[derive(Debug, Default)]
struct Book {
    stores: AtomicUsize,
    bytes: AtomicUsize,
}

impl Book {
    fn read(&self) -> GuestMemory {
        GuestMemory {
            stores: self.stores.load(Ordering::SeqCst),
            bytes: self.bytes.load(Ordering::SeqCst),
        }
    }

    fn add(&self, bytes: usize) {
        self.stores.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    fn remove(&self, bytes: usize) {
        self.stores.fetch_sub(1, Ordering::SeqCst);
        self.bytes.fetch_sub(bytes, Ordering::SeqCst);
    }
}

impl Ledger {
    /// Live stores: resident instances and calls running.
    pub(crate) fn read(&self) -> GuestMemory {
        self.live.read()
    }

    /// Activity stores kept between calls.
    pub(crate) fn read_kept(&self) -> GuestMemory {
        self.kept.read()
    }
}

/// A store's memory and table limiter: refuses growth past the tenant's limit (trapping,
/// so the reason is clear) and books what the store holds in the engine's [`Ledger`]
/// until the store is dropped.
pub(crate) struct GuestMeter {
    limits: wasmtime::StoreLimits,
    ledger: Arc<Ledger>,
    held: usize,
    /// Booked as kept between calls rather than live.
    kept: bool,
}

impl GuestMeter {
    pub(crate) fn new(limits: &Limits, ledger: Arc<Ledger>) -> GuestMeter {
        ledger.live.add(0);
        GuestMeter {
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(limits.max_memory_bytes)
                .table_elements(100_000)
                .trap_on_grow_failure(true)
                .build(),
            ledger,
            held: 0,
            kept: false,
        }
    }

    fn book(&self) -> &Book {
        if self.kept {
            &self.ledger.kept
        } else {
            &self.ledger.live
        }
    }

    /// The bytes of linear memory the store has grown to.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Moves the store between the live and the kept book.
    pub(crate) fn set_kept(&mut self, kept: bool) {
        if self.kept != kept {
            self.book().remove(self.held);
            self.kept = kept;
            self.book().add(self.held);
        }
    }
}

impl Drop for GuestMeter {
    fn drop(&mut self) {
        self.book().remove(self.held);
    }
}

impl wasmtime::ResourceLimiter for GuestMeter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            let grown = desired.saturating_sub(current);
            self.held += grown;
            self.book().bytes.fetch_add(grown, Ordering::SeqCst);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Puts a store under `fuel` and the per-step wall-clock limit.
pub(crate) fn meter<T: Metered>(store: &mut wasmtime::Store<T>, fuel: u64, step_ms: u64) {
    store.limiter(|data| data.meter());
    // Fuel is on for every store of the engine; this cannot fail.
    let _ = store.set_fuel(fuel);
    store.epoch_deadline_callback(move |ctx| {
        let tick = match ctx.data().step_clock() {
            Some(clock) => clock.tick(),
            None => Tick::Ran(std::time::Duration::ZERO),
        };
        match tick {
            Tick::Ran(ran) | Tick::JustResumed(ran) if ran.as_millis() as u64 > step_ms => {
                Err(wasmtime::Error::new(LimitExceeded::StepTime(step_ms)))
            }
            // Let other instances run: a busy guest yields at every tick.
            Tick::Ran(_) => Ok(wasmtime::UpdateDeadline::Yield(1)),
            Tick::JustResumed(_) => Ok(wasmtime::UpdateDeadline::Continue(1)),
        }
    });
    store.set_epoch_deadline(1);
}
