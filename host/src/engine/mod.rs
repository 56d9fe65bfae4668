//! The engine: deployed components, resident instances, activities and timers, all
//! driven from the journal.
//!
//! ## Life of an instance
//! `start` writes the instance and its `WorkflowStarted` event, then **activates** it: a
//! tokio task instantiates the workflow's component (through a cached `InstancePre`) and
//! runs it. The instance stays **resident** — suspended inside a host call — while it
//! waits. Every completion (activity result, timer, raised event, child result) is written
//! to the journal first and then delivered to the instance's mailbox. An instance that is
//! not resident when something is delivered (after a restart or an eviction) is activated
//! again and replays its journal to where it was.
//!
//! **Invariant:** nothing is delivered, dispatched or started before the journal entry
//! that causes it is durable.

mod activation;
mod activities;
mod activity_host;
mod bindings;
mod compat;
mod components;
mod egress;
mod external;
pub use external::ExternalTask;
pub(crate) use external::WorkerStream;
mod guest_log;
mod lifecycle;
mod limits;
mod observe;
mod partitions;
mod random;
mod registry;
mod resident;
mod run;
mod timers;
mod warm;
mod work;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use wasmtime::component::{HasSelf, Linker};

use activation::{HostState, Msg};
pub use activities::ActivityContext;
use activity_host::ActivityState;
use bindings::activity::ActivityWorker;
use bindings::orchestrator::{Orchestrator, OrchestratorPre};
pub use compat::Compatibility;
pub use components::UploadTicket;
pub use lifecycle::{InstanceCheck, Scope, WorkflowInfo, WorkflowVersion, token_hash};
pub use limits::{GuestMemory, Limits};
use registry::{Loaded, Registry};
use timers::Timers;
use work::Work;

use crate::journal::{EventBounds, Journal, JournalError};
pub use crate::journal::{InstanceFilter, InstanceRecord, StoredEvent, TokenRecord};
use crate::model::{
    Clock, Digest, ErrorInfo, InstanceId, RuntimeStatus, SystemClock, Tenant, Timestamp,
};
use crate::sandbox::{Sandbox, SandboxError};

/// Instances kept in memory by default. Each costs a few memory mappings (fiber stack,
/// linear memory and their guards) and ~50 KiB of RSS; Linux allows 65,530 mappings per
/// process by default, so this leaves ample room. Idle instances beyond it wait in the
/// journal and resume in about a millisecond.
pub const DEFAULT_MAX_RESIDENT: usize = 4_096;

/// How an engine is set up.
#[derive(Clone)]
pub struct EngineConfig {
    /// Holds the journal (`steadfast.db`) and the compiled-code cache (`compiled/`).
    pub data_dir: PathBuf,
    /// Where time comes from; a [`crate::model::VirtualClock`] for tests and the demo.
    pub clock: Arc<dyn Clock>,
    /// Most instances kept in memory; idle ones beyond this are evicted to the journal.
    pub max_resident: usize,
    /// Most activities executing at once; the rest wait their turn.
    pub max_concurrent_activities: usize,
    /// Limits for every tenant without its own.
    pub limits: Limits,
    /// Per-tenant limits, by tenant name.
    pub tenant_limits: HashMap<String, Limits>,
    /// What an uploaded component may be, checked before it is compiled.
    pub compile_limits: crate::sandbox::CompileLimits,
    /// Where spans go; off by default.
    pub traces: Arc<crate::traces::Traces>,
    /// Where the journal is: `steadfast.db` in `data_dir` (the default), or a PostgreSQL
    /// database shared with other hosts.
    pub journal: JournalBackend,
    /// Native activities, registered before recovery dispatches queued activities.
    natives: Vec<(String, activities::NativeActivity)>,
}

/// Which journal an engine keeps.
#[derive(Debug, Clone, Default)]
pub enum JournalBackend {
    /// `steadfast.db` in the data directory, this engine's alone.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by several hosts, each running the partitions it
    /// leases.
    Postgres {
        url: String,
        lease: crate::journal::leases::LeaseConfig,
    },
}

impl EngineConfig {
    /// Defaults: the system clock, up to [`DEFAULT_MAX_RESIDENT`] resident instances.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            clock: Arc::new(SystemClock),
            max_resident: DEFAULT_MAX_RESIDENT,
            max_concurrent_activities: 256,
            limits: Limits::default(),
            tenant_limits: HashMap::new(),
            compile_limits: crate::sandbox::CompileLimits::default(),
            traces: Arc::new(crate::traces::Traces::off()),
            journal: JournalBackend::Sqlite,
            natives: Vec::new(),
        }
    }

    /// Registers a native Rust activity before the engine opens, so activities that were
    /// queued when the host last stopped already find it when they are resumed.
    pub fn with_activity<F, Fut>(mut self, name: &str, activity: F) -> Self
    where
        F: Fn(ActivityContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, ErrorInfo>> + Send + 'static,
    {
        self.natives.push((name.to_owned(), native(activity)));
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_max_resident(mut self, max: usize) -> Self {
        self.max_resident = max.max(1);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no workflow named '{name}' is deployed; deployed workflows: {}", list_or_none(.deployed))]
    UnknownWorkflow { name: String, deployed: Vec<String> },
    #[error("{what} is not valid JSON: {reason}")]
    InvalidJson { what: &'static str, reason: String },
    #[error("invalid instance id: {0}")]
    InvalidInstanceId(String),
    #[error("instance '{0}' already exists; choose another id or purge the old instance")]
    InstanceExists(InstanceId),
    #[error("no instance '{0}'")]
    InstanceNotFound(InstanceId),
    #[error(
        "tenant '{tenant}' already has {limit} pending, running or suspended instances, its \
         max_live_instances limit; wait for some to finish, terminate some, or raise the limit"
    )]
    TooManyInstances { tenant: String, limit: u64 },
    #[error("instance '{id}' is {status}; it accepts no more events")]
    NotRunning {
        id: InstanceId,
        status: RuntimeStatus,
    },
    #[error(transparent)]
    Component(#[from] SandboxError),
    #[error(
        "the component implements neither the steadfast:workflow orchestrator world nor the \
         activity-worker world ({0}); generate its bindings from wit/steadfast.wit"
    )]
    NotOurWorld(String),
    #[error("the component's {0} export failed: {1}")]
    Inspect(&'static str, String),
    #[error("unknown tenant '{0}'; an admin creates tenants with `steadfast tenant create`")]
    UnknownTenant(Tenant),
    #[error("instance '{id}' is {status}; {action} needs it to be {wanted}")]
    WrongStatus {
        id: InstanceId,
        status: RuntimeStatus,
        action: &'static str,
        wanted: &'static str,
    },
    #[error("instance '{id}' is {status}; terminate it first or purge with force")]
    StillRunning {
        id: InstanceId,
        status: RuntimeStatus,
    },
    #[error("{what} is {size} bytes; the limit is {limit} bytes")]
    PayloadTooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("the host is busy {what}; retry in {} s", retry_after.as_secs().max(1))]
    Busy { what: String, retry_after: Duration },
    #[error(
        "instance '{id}' holds {why}. Nothing was raised: pending events make room as the \
         workflow waits for them; event bytes only when it continues as new"
    )]
    TooManyEvents { id: InstanceId, why: String },
    #[error("{0}")]
    InvalidName(String),
    #[error("the limits for {tenant} are invalid: {why}")]
    InvalidLimits { tenant: String, why: String },
    #[error("this engine runs on the system clock; only a virtual clock can be advanced")]
    NoVirtualClock,
    #[error("cannot replay: {0}")]
    CannotReplay(String),
    #[error(transparent)]
    Journal(JournalError),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl From<JournalError> for EngineError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::InstanceExists(id) => EngineError::InstanceExists(id),
            JournalError::InstanceNotFound(id) => EngineError::InstanceNotFound(id),
            JournalError::TooManyInstances { tenant, limit } => {
                EngineError::TooManyInstances { tenant, limit }
            }
            JournalError::NotRunning { id, status } => EngineError::NotRunning { id, status },
            JournalError::TooManyEvents { id, why } => EngineError::TooManyEvents { id, why },
            JournalError::StillRunning { id, status } => EngineError::StillRunning { id, status },
            JournalError::WrongStatus { id, status, wanted } => EngineError::WrongStatus {
                id,
                status,
                action: if wanted == RuntimeStatus::Running {
                    "suspend"
                } else {
                    "resume"
                },
                wanted: wanted.as_str(),
            },
            other => EngineError::Journal(other),
        }
    }
}

/// What `deploy` found in a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub digest: Digest,
    pub kind: ComponentKind,
    /// Workflow names (orchestrator) or activity names (activity worker).
    pub names: Vec<String>,
    /// The version each workflow got: (workflow, version). Empty for activity components.
    pub versions: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    Orchestrator,
    Activity,
}

impl ComponentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Orchestrator => "orchestrator",
            ComponentKind::Activity => "activity",
        }
    }
}

/// Options for [`Engine::start`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Use this id instead of a generated one.
    pub instance_id: Option<String>,
    /// The tenant that owns the instance; the default tenant when `None`.
    pub tenant: Option<Tenant>,
    /// What to do when an instance with `instance_id` already exists.
    pub reuse: ReusePolicy,
    /// Run the workflow first at this time instead of at once. The instance exists (and
    /// is `PENDING`, taking events, which wait in its journal) from the start call on; it
    /// becomes `RUNNING` and its code first runs when the engine's clock reaches this
    /// time, also across restarts.
    pub start_at: Option<Timestamp>,
    /// The caller's W3C `traceparent`: the instance's spans join its trace. An invalid
    /// one is ignored.
    pub traceparent: Option<String>,
}

/// What `start` does when the instance id is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReusePolicy {
    /// Refuse with [`EngineError::InstanceExists`].
    #[default]
    Error,
    /// Return the existing instance's id and start nothing.
    Ignore,
    /// Terminate the existing instance (if it still runs), purge it, start anew.
    TerminateExisting,
}

/// A running Steadfast engine. Cloning shares it.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    journal: Journal,
    /// The partitions whose instances this host recovered since it took their leases
    /// (all of them, on SQLite).
    recovered: Mutex<std::collections::HashSet<u32>>,
    /// The runtime the engine was opened on: activations are spawned there, also from the
    /// journal's writer thread.
    runtime: tokio::runtime::Handle,
    sandbox: Sandbox,
    clock: Arc<dyn Clock>,
    linker: Linker<HostState>,
    activity_linker: Linker<ActivityState>,
    registry: RwLock<Registry>,
    resident: Mutex<HashMap<InstanceId, Resident>>,
    /// How many of `resident` each tenant has; changed only with `resident` locked.
    resident_per_tenant: Mutex<HashMap<String, usize>>,
    next_activation: AtomicU64,
    max_resident: usize,
    timers: Arc<Timers>,
    work: Arc<Work>,
    /// Who waits for which instance to change status.
    /// Each waiter is removed when its wait ends, however it ends (see [`Waiter`]).
    waiters: Mutex<HashMap<InstanceId, HashMap<u64, tokio::sync::oneshot::Sender<()>>>>,
    next_waiter: AtomicU64,
    ids: Mutex<random::SplitMix64>,
    /// Activities executing at once.
    activity_slots: Arc<tokio::sync::Semaphore>,
    /// How many permits `activity_slots` started with.
    activity_slot_total: usize,
    /// Each tenant's share of `activity_slots` (`limits.max_activities_in_flight`), taken
    /// first: one tenant's backlog waits in its own line, not in everyone's.
    tenant_activity_slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Shared, not copied, by every activation and activity call.
    limits: Arc<Limits>,
    tenant_limits: HashMap<String, Arc<Limits>>,
    /// What guest stores hold, for [`Engine::guest_memory`].
    ledger: Arc<limits::Ledger>,
    /// Activity instances kept between calls.
    warm: warm::WarmPool,
    compile_limits: crate::sandbox::CompileLimits,
    compiles: Arc<components::CompileGate>,
    metrics: Arc<crate::metrics::Metrics>,
    traces: Arc<crate::traces::Traces>,
    /// Worker processes connected over the Durable Task protocol, per tenant.
    external: Arc<external::ExternalWorkers>,
}

struct Resident {
    tx: mpsc::UnboundedSender<Msg>,
    activation: u64,
    /// Someone asked for the instance to be active while this activation was already in
    /// the map (it may be on its way out): activate it again once it has left.
    wake_on_leave: bool,
}

impl Engine {
    /// Opens the journal in `config.data_dir`, loads the deployed components and resumes
    /// every timer, queued activity and running instance. An instance that went back to
    /// waiting with nothing new for it since (see `Journal::running_instances`) stays in
    /// the journal, not replayed, until something comes for it; the engine is ready
    /// without it.
    pub async fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        crate::sandbox::create_private_dir(&config.data_dir).map_err(|e| {
            EngineError::Journal(JournalError::Storage(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            )))
        })?;
        let journal = match &config.journal {
            JournalBackend::Sqlite => open_journal(&config.data_dir.join("steadfast.db")).await?,
            JournalBackend::Postgres { url, lease } => {
                let (url, lease) = (url.clone(), lease.clone());
                // The synchronous client must not start inside the async runtime.
                tokio::task::spawn_blocking(move || {
                    std::thread::spawn(move || Journal::open_postgres(&url, &lease))
                        .join()
                        .unwrap_or_else(|_| {
                            Err(JournalError::Storage("opening the journal panicked".into()))
                        })
                })
                .await
                .map_err(|e| JournalError::Storage(e.to_string()))??
            }
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        journal.observe_commits(
            metrics.journal_commit_duration.clone(),
            metrics.journal_writes_per_commit.clone(),
        );
        // Resident instances, running activities, deploy-time inspections and compatibility
        // checks, and room for bursts of activations before idle ones leave.
        let capacity = config.max_resident + config.max_concurrent_activities + 1024;
        let sandbox = Sandbox::new(
            Some(&config.data_dir.join("compiled")),
            u32::try_from(capacity).unwrap_or(u32::MAX),
        )?;
        let mut linker = Linker::new(sandbox.engine());
        Orchestrator::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut activity_linker = Linker::new(sandbox.engine());
        ActivityWorker::add_to_linker::<ActivityState, HasSelf<ActivityState>>(
            &mut activity_linker,
            |s| s,
        )
        .map_err(|e| SandboxError::Engine(e.to_string()))?;
        // Activity components also get WASI (without sockets) and outgoing HTTP.
        wasmtime_wasi::p2::add_to_linker_async(&mut activity_linker)
            .and_then(|()| {
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut activity_linker)
            })
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        for (tenant, limits) in std::iter::once(("every tenant", &config.limits))
            .chain(config.tenant_limits.iter().map(|(t, l)| (t.as_str(), l)))
        {
            limits
                .validate()
                .map_err(|why| EngineError::InvalidLimits {
                    tenant: tenant.to_owned(),
                    why,
                })?;
        }
        let seed = SystemClock.now().0 ^ u64::from(std::process::id()).rotate_left(32);
        let mut registry = Registry::default();
        for (name, activity) in config.natives {
            registry.add_native(name, activity);
        }
        let shared = Arc::new(Shared {
            journal,
            recovered: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
            sandbox,
            clock: config.clock,
            linker,
            activity_linker,
            registry: RwLock::new(registry),
            resident: Mutex::new(HashMap::new()),
            resident_per_tenant: Mutex::new(HashMap::new()),
            next_activation: AtomicU64::new(1),
            max_resident: config.max_resident.max(1),
            timers: Arc::new(Timers::default()),
            work: Arc::new(Work::default()),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
            activity_slots: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_activities.max(1),
            )),
            activity_slot_total: config.max_concurrent_activities.max(1),
            tenant_activity_slots: Mutex::new(HashMap::new()),
            limits: Arc::new(config.limits.clone()),
            tenant_limits: config
                .tenant_limits
                .iter()
                .map(|(tenant, limits)| (tenant.clone(), Arc::new(limits.clone())))
                .collect(),
            ledger: Arc::default(),
            warm: warm::WarmPool::default(),
            compile_limits: config.compile_limits,
            // Leave a core to the runtime: compiling is the heaviest thing a tenant can ask.
            compiles: Arc::new(components::CompileGate::new(
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)),
                4,
            )),
            metrics,
            traces: config.traces,
            external: Arc::default(),
            ids: Mutex::new(random::SplitMix64::for_instance(
                "steadfast-ids",
                (seed as u32) ^ (seed >> 32) as u32,
            )),
        });
        tokio::spawn(resident::timer_loop(
            Arc::downgrade(&shared),
            Arc::clone(&shared.timers),
            Arc::clone(&shared.clock),
        ));
        let lease_changes = shared.journal.take_lease_changes();
        let engine = Engine { shared };
        engine.recover().await?;
        if let Some(changes) = lease_changes {
            tokio::spawn(partitions::follow(Arc::downgrade(&engine.shared), changes));
        }
        Ok(engine)
    }

    async fn recover(&self) -> Result<(), EngineError> {
        let shared = &self.shared;
        shared.load_deployments().await?;
        shared
            .external
            .remember(shared.journal.external_worker_tenants()?);
        // On a shared journal: the partitions leased so far (the lease thread's first
        // round ran before the engine opened); the rest as they are taken.
        shared.recover_instances(None)?;
        Ok(())
    }

    /// Where the journal is: its SQLite file, or the PostgreSQL database shared with other
    /// hosts.
    pub fn journal_location(&self) -> crate::journal::Location {
        self.shared.journal.location().clone()
    }

    /// The SQLite journal's file; for a journal on PostgreSQL, its URL without the
    /// password.
    pub fn journal_path(&self) -> PathBuf {
        match self.shared.journal.location() {
            crate::journal::Location::File(path) => path.clone(),
            crate::journal::Location::Postgres(url) => PathBuf::from(url),
        }
    }

    /// Group-commit counters: transactions committed, writes folded into them, rows
    /// written.
    pub fn journal_writer_stats(&self) -> crate::journal::WriterCounts {
        self.shared.journal.writer_stats()
    }

    /// The journal's size on disk (database plus write-ahead log), in bytes.
    pub fn journal_bytes(&self) -> u64 {
        self.shared.journal.size_on_disk()
    }

    /// The engine's current time.
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Registers a native Rust activity. It takes precedence over an activity component
    /// exporting the same name. Activities resumed while the engine opened were dispatched
    /// already: register those with [`EngineConfig::with_activity`].
    pub fn register_activity<F, Fut>(&self, name: &str, activity: F)
    where
        F: Fn(ActivityContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, ErrorInfo>> + Send + 'static,
    {
        self.shared
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add_native(name.to_owned(), native(activity));
    }

    /// Raises event `name` with JSON `payload` to a running instance. Once this returns the
    /// event is durable and will be delivered, even across a crash; events raised before
    /// the workflow waits are buffered in order.
    pub async fn raise_event(
        &self,
        id: &InstanceId,
        name: &str,
        payload: &str,
    ) -> Result<(), EngineError> {
        check_event_name(name)?;
        self.check_payload(id.tenant(), "the event payload", payload)?;
        // Checking and serialising a large payload takes a while: not on the async
        // workers, and not on the journal's writer thread.
        let large = payload.len() > OFF_THREAD_BYTES;
        let (event, data) = {
            let (name, payload) = (name.to_owned(), payload.to_owned());
            let prepare = move || -> Result<(crate::model::Event, String), EngineError> {
                check_json("the event payload", &payload)?;
                let event = crate::model::Event::EventRaised { name, payload };
                let data = serde_json::to_string(&event)
                    .map_err(|e| EngineError::Journal(JournalError::Corrupt(e.to_string())))?;
                Ok((event, data))
            };
            if large {
                tokio::task::spawn_blocking(prepare)
                    .await
                    .map_err(|e| EngineError::Journal(JournalError::Storage(e.to_string())))??
            } else {
                prepare()?
            }
        };
        let bounds = self.limit(id.tenant(), |l| EventBounds {
            max_pending: l.max_pending_events,
            max_bytes: l.max_event_bytes_per_generation,
        });
        let now = self.shared.clock.now();
        // Delivered from the writer thread right after the commit, so two events raised
        // at once reach the instance in the order the journal holds them: what a live
        // wait consumes is what a replay's wait consumes.
        let guard = self.shared.work.guard();
        let shared = Arc::clone(&self.shared);
        let target = id.clone();
        let deliver = move |(generation, pos, event): &(u32, u64, crate::model::Event)| {
            if shared.journal.is_shared() {
                // Another host may have raised an event of the same name just before,
                // still on its way here: the instance gets every event the journal holds,
                // in journal order (it ignores those it has), never this one alone.
                let runtime = shared.runtime.clone();
                runtime.spawn_blocking(move || {
                    let _guard = guard;
                    if let Err(e) = shared.reconcile(target.clone()) {
                        tracing::warn!(instance = %target, error = %e, "cannot hand a raised event over");
                    }
                });
            } else {
                shared.deliver(target, *generation, *pos, event.clone(), guard);
            }
        };
        self.shared
            .journal
            .raise_event(id.clone(), event, data, now, bounds, deliver)
            .await?;
        Ok(())
    }

    /// The instance's status, input, output and custom status.
    pub fn status(&self, id: &InstanceId) -> Result<InstanceRecord, EngineError> {
        self.shared
            .journal
            .instance(id)?
            .ok_or_else(|| EngineError::InstanceNotFound(id.clone()))
    }

    /// The instance's journal (its current generation and carried-over events).
    pub fn history(&self, id: &InstanceId) -> Result<Vec<StoredEvent>, EngineError> {
        self.status(id)?;
        Ok(self.shared.journal.history(id)?)
    }

    /// A page of the instance's journal: up to `limit` entries after position `after`,
    /// cut short at about `max_bytes`; true if there are more.
    pub fn history_page(
        &self,
        id: &InstanceId,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<StoredEvent>, bool), EngineError> {
        self.status(id)?;
        Ok(self
            .shared
            .journal
            .history_page(id, after, limit, max_bytes)?)
    }

    /// Rows the journal holds for the instance.
    pub fn journal_rows(&self, id: &InstanceId) -> Result<u64, EngineError> {
        Ok(self.shared.journal.row_count(id)?)
    }

    /// Waits until the instance reaches a terminal status, and returns it. Fails at once
    /// if there is no such instance; dropping the future leaves nothing behind.
    pub async fn wait_for_completion(
        &self,
        id: &InstanceId,
    ) -> Result<InstanceRecord, EngineError> {
        self.wait_until(id, |record| record.status.is_terminal())
            .await
    }

    /// Waits until the instance has started (is no longer `PENDING`).
    pub async fn wait_for_start(&self, id: &InstanceId) -> Result<InstanceRecord, EngineError> {
        self.wait_until(id, |record| record.status != RuntimeStatus::Pending)
            .await
    }

    /// Waits until the instance's record satisfies `done`, or it is gone.
    async fn wait_until(
        &self,
        id: &InstanceId,
        done: impl Fn(&InstanceRecord) -> bool,
    ) -> Result<InstanceRecord, EngineError> {
        loop {
            // Register before reading, so a change between the two is not missed.
            let (waiter, changed) = Waiter::register(&self.shared, id);
            let record = self.status(id)?;
            if done(&record) {
                return Ok(record);
            }
            if self.shared.journal.is_shared() {
                // Another host may run it (or come to run it, the lease moving while this
                // waits) and tell this one nothing: look again shortly.
                let poll = if self.shared.owns(id) {
                    SHARED_WAIT_POLL * 4
                } else {
                    SHARED_WAIT_POLL
                };
                let _ = tokio::time::timeout(poll, changed).await;
            } else if changed.await.is_err() {
                return self.status(id);
            }
            drop(waiter);
        }
    }

    /// How many waits on instance status are registered (for leak tests).
    #[doc(hidden)]
    pub fn waiter_count(&self) -> usize {
        let waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        waiters.values().map(HashMap::len).sum()
    }

    /// Stops the engine: every resident instance leaves memory (its state is in the
    /// journal) and the journal closes once the last task lets go of it.
    pub async fn shutdown(self) {
        // On a shared journal, other hosts take over at once rather than at expiry.
        if self.shared.journal.is_shared() {
            let shared = Arc::clone(&self.shared);
            let _ = tokio::task::spawn_blocking(move || {
                shared.journal.release_leases(Duration::from_secs(2));
            })
            .await;
        }
        let residents: Vec<InstanceId> = {
            let resident = self
                .shared
                .resident
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            resident.keys().cloned().collect()
        };
        for id in residents {
            self.evict(&id).await;
        }
        self.shared.warm.close();
    }

    /// Stops the engine the way a crash would, for crash tests and the simulation: every
    /// journal write not yet committed is abandoned and nothing is committed again. The
    /// caller then drops the runtime the engine ran on (ending its tasks mid-flight) and
    /// may open a new engine on the same data directory.
    #[doc(hidden)]
    pub fn crash(&self) {
        self.shared.journal.crash();
    }

    /// Makes the next `n` journal writes of activations fail as a storage fault would
    /// (for tests of how instances survive host faults).
    #[doc(hidden)]
    pub fn inject_journal_faults(&self, n: u32) {
        self.shared.journal.inject_faults(n);
    }

    /// The tenant's live-instance counter as the quota keeps it, and the live instances
    /// actually in the journal; the two must always agree.
    #[doc(hidden)]
    pub fn tenant_load(&self, tenant: &Tenant) -> Result<(u64, u64), EngineError> {
        Ok(self.shared.journal.tenant_load(tenant)?)
    }

    /// Pins an instance to another deployed component; it replays on that code when next
    /// activated. A replay that diverges stalls the instance.
    pub async fn set_instance_component(
        &self,
        id: &InstanceId,
        digest: &Digest,
    ) -> Result<(), EngineError> {
        self.shared
            .journal
            .set_instance_component(id.clone(), digest.clone())
            .await?;
        Ok(())
    }

    /// Takes an idle instance out of memory; it resumes from the journal when next
    /// needed. Returns whether it left (a busy or absent instance stays as it is).
    pub async fn evict(&self, id: &InstanceId) -> bool {
        let (ack, left) = tokio::sync::oneshot::channel();
        {
            let resident = self
                .shared
                .resident
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match resident.get(id) {
                Some(r) if r.tx.send(Msg::Evict(Some(ack))).is_ok() => {}
                _ => return false,
            }
        }
        left.await.is_ok()
    }

    /// How many instances are in memory.
    /// Guest stores alive now and the linear memory they hold: back to zero once nothing
    /// is resident or running, however the guests ended.
    pub fn guest_memory(&self) -> GuestMemory {
        self.shared.ledger.read()
    }

    /// Activity instances kept between calls for later calls of the same tenant's same
    /// component, and the linear memory they hold (at most `MAX_IDLE` of them; see
    /// `engine::warm`).
    pub fn kept_activity_memory(&self) -> GuestMemory {
        self.shared.ledger.read_kept()
    }

    /// Whether the journal is a PostgreSQL database shared with other hosts.
    pub fn journal_is_shared(&self) -> bool {
        self.shared.journal.is_shared()
    }

    /// The partitions of a shared journal this host holds (all of them on SQLite).
    pub fn held_partitions(&self) -> Vec<u32> {
        self.shared.journal.held_partitions()
    }

    pub fn resident_count(&self) -> usize {
        self.shared
            .resident
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Instances of `tenant` in memory.
    pub fn resident_of(&self, tenant: &Tenant) -> usize {
        self.shared
            .resident_per_tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// Waits until no work is in flight: every resident instance is waiting on a timer,
    /// an event or nothing at all.
    pub async fn settle(&self) {
        self.shared.work.wait_idle().await;
    }

    /// With a virtual clock: settles, moves time to the next timer, fires it and settles
    /// again. Returns the new time, or `None` when no timer is pending.
    pub async fn advance_to_next_timer(&self) -> Result<Option<Timestamp>, EngineError> {
        let clock = self
            .shared
            .clock
            .as_virtual()
            .ok_or(EngineError::NoVirtualClock)?
            .clone();
        self.settle().await;
        let Some(next) = self.shared.timers.next_due() else {
            return Ok(None);
        };
        clock.advance_to(next);
        self.shared.fire_due();
        self.settle().await;
        Ok(Some(self.shared.clock.now()))
    }

    /// With a virtual clock: moves time forward by `by`, firing the timers on the way in
    /// order, and settles.
    pub async fn advance_by(&self, by: Duration) -> Result<(), EngineError> {
        let clock = self
            .shared
            .clock
            .as_virtual()
            .ok_or(EngineError::NoVirtualClock)?
            .clone();
        let target = self
            .shared
            .clock
            .now()
            .plus_ms(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        loop {
            self.settle().await;
            match self.shared.timers.next_due() {
                Some(next) if next <= target => {
                    clock.advance_to(next);
                    self.shared.fire_due();
                }
                _ => break,
            }
        }
        clock.advance_to(target);
        self.settle().await;
        Ok(())
    }

    /// With a virtual clock: keeps jumping to the next timer until none is left.
    /// Never returns for an eternal workflow; use [`Engine::advance_to_next_timer`] there.
    pub async fn run_until_idle(&self) -> Result<(), EngineError> {
        while self.advance_to_next_timer().await?.is_some() {}
        Ok(())
    }
}

impl Engine {
    /// The limits that apply to `tenant`.
    pub fn limits(&self, tenant: &str) -> Limits {
        Limits::clone(self.shared.limits(tenant))
    }

    /// One of `tenant`'s limits, read without copying the rest.
    pub fn limit<T>(&self, tenant: &str, read: impl FnOnce(&Limits) -> T) -> T {
        read(self.shared.limits(tenant))
    }

    fn check_payload(
        &self,
        tenant: &str,
        what: &'static str,
        text: &str,
    ) -> Result<(), EngineError> {
        let limit = self.shared.limits(tenant).max_payload_bytes;
        if text.len() > limit {
            return Err(EngineError::PayloadTooLarge {
                what,
                size: text.len(),
                limit,
            });
        }
        Ok(())
    }
}

fn native<F, Fut>(activity: F) -> activities::NativeActivity
where
    F: Fn(ActivityContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<serde_json::Value, ErrorInfo>> + Send + 'static,
{
    Arc::new(move |ctx, input| Box::pin(activity(ctx, input)))
}

/// One registered wait on an instance's status; unregistered when dropped.
struct Waiter {
    shared: Arc<Shared>,
    id: InstanceId,
    key: u64,
}

impl Waiter {
    fn register(
        shared: &Arc<Shared>,
        id: &InstanceId,
    ) -> (Waiter, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let key = shared
            .next_waiter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default()
            .insert(key, tx);
        let waiter = Waiter {
            shared: Arc::clone(shared),
            id: id.clone(),
            key,
        };
        (waiter, rx)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(of_instance) = waiters.get_mut(&self.id) {
            of_instance.remove(&self.key);
            if of_instance.is_empty() {
                waiters.remove(&self.id);
            }
        }
    }
}

/// How long [`Engine::open`] waits for another engine to let go of the journal: long
/// enough for an engine dropped in this process to commit its last writes, short enough
/// that a second server started on a live data directory is told so at once.
const JOURNAL_LOCK_WAIT: Duration = Duration::from_secs(5);

async fn open_journal(path: &std::path::Path) -> Result<Journal, JournalError> {
    let deadline = std::time::Instant::now() + JOURNAL_LOCK_WAIT;
    loop {
        match Journal::open(path) {
            Err(JournalError::InUse { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            result => return result,
        }
    }
}

/// How often a wait on an instance another host runs looks at the shared journal, in
/// case a status notification was missed (they come through `LISTEN`).
const SHARED_WAIT_POLL: Duration = Duration::from_millis(250);

/// Payloads larger than this are checked and serialised on a blocking thread.
pub(crate) const OFF_THREAD_BYTES: usize = 16 * 1024;

/// Longest event name, in characters (as JSON Schema counts them).
pub const MAX_EVENT_NAME_CHARS: usize = 256;

fn check_event_name(name: &str) -> Result<(), EngineError> {
    let length = name.chars().count();
    if length == 0 || length > MAX_EVENT_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(EngineError::InvalidName(format!(
            "an event name is 1 to {MAX_EVENT_NAME_CHARS} characters without control \
             characters; this one is {length} characters"
        )));
    }
    Ok(())
}

fn check_json(what: &'static str, text: &str) -> Result<(), EngineError> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| EngineError::InvalidJson {
            what,
            reason: e.to_string(),
        })
}

impl Shared {
    pub(crate) fn limits(&self, tenant: &str) -> &Arc<Limits> {
        self.tenant_limits.get(tenant).unwrap_or(&self.limits)
    }

    /// `tenant`'s line for activity slots.
    pub(crate) fn tenant_activity_slots(&self, tenant: &str) -> Arc<tokio::sync::Semaphore> {
        let max = self.limits(tenant).max_activities_in_flight.max(1);
        Arc::clone(
            self.tenant_activity_slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max))),
        )
    }

    pub(crate) fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    fn orchestrator_pre(&self, digest: &Digest) -> Option<OrchestratorPre<HostState>> {
        let loaded = self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .component(digest)?;
        match &*loaded {
            Loaded::Orchestrator(pre) => Some(pre.clone()),
            Loaded::Activity(_) => None,
        }
    }
}
