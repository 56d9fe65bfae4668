//! Loading a component: check the upload's bytes, compile it on the bounded compile pool,
//! check its imports, find out which world it implements by instantiating it once, and ask
//! it for the names it serves — all before anything is registered, journaled or cached.
//!
//! **Invariants:**
//! - Compiling is a bounded, fair resource: an upload takes its tenant's
//!   [`UploadTicket`] before its body is read (one upload per tenant at a time, four in
//!   all; beyond that it is refused as busy, 429); it is compiled on [`CompileGate`]'s own
//!   threads (never on the async workers that answer requests), which run at a lower
//!   scheduling priority than the rest of the host; the ticket and the compile slot are
//!   held until the work ends, also when the client hangs up.
//! - A component reaches the registry, the journal and the compiled-code cache only when it
//!   is accepted; a refused upload, or a `?check`, leaves nothing behind.
//! - Inspecting a component (instantiating it and calling `names`) has a wall-clock bound,
//!   also when the guest blocks in a host call.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::Component;

use super::activation::HostState;
use super::activity_host::ActivityState;
use super::bindings::activity::ActivityWorkerPre;
use super::bindings::orchestrator::OrchestratorPre;
use super::registry::Loaded;
use super::{ComponentKind, EngineError, Limits, Shared, limits};
use crate::model::{Digest, Tenant};
use crate::sandbox::{SandboxError, precheck};

/// Wall-clock bound on instantiating a component and asking it for its names.
pub(crate) const INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A component that passed every check, not yet registered anywhere.
pub(crate) struct Inspected {
    pub(crate) component: Component,
    pub(crate) loaded: Arc<Loaded>,
    pub(crate) kind: ComponentKind,
    pub(crate) names: Vec<String>,
    /// Compiled now (as opposed to found in the registry or the cache): worth caching.
    pub(crate) fresh: bool,
}

/// Who may upload and compile now: a few compiles at once, one upload per tenant, a
/// short queue.
pub(crate) struct CompileGate {
    slots: Arc<tokio::sync::Semaphore>,
    queued: Mutex<HashSet<String>>,
    max_queued: usize,
    /// The compile threads' queue.
    compilers: Mutex<std::sync::mpsc::Sender<CompileJob>>,
}

type CompileJob = Box<dyn FnOnce() + Send>;

/// How much lower than the server's the compile threads' scheduling priority is (a nice
/// value): a compile gets what CPU the requests leave.
const COMPILE_NICENESS: i32 = 10;

impl CompileGate {
    /// `concurrency` compile threads, at a lower priority than the rest of the host.
    pub(crate) fn new(concurrency: usize, max_queued: usize) -> Self {
        let concurrency = concurrency.max(1);
        let (tx, rx) = std::sync::mpsc::channel::<CompileJob>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..concurrency {
            let rx = Arc::clone(&rx);
            let _ = std::thread::Builder::new()
                .name(format!("steadfast-compile-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
        }
        CompileGate {
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            queued: Mutex::new(HashSet::new()),
            max_queued: max_queued.max(1),
            compilers: Mutex::new(tx),
        }
    }

    /// Runs `work` on a compile thread.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: CompileJob = Box::new(move || {
            let _ = tx.send(work());
        });
        let sent = self
            .compilers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if sent.is_err() {
            return Err(SandboxError::Compile("no compile thread is running".into()).into());
        }
        rx.await
            .map_err(|_| SandboxError::Compile("the compiler stopped".into()).into())
    }
}

/// Lowers the calling thread's scheduling priority (Linux: niceness is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` and `setpriority` on the calling thread; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, COMPILE_NICENESS) != 0 {
            tracing::debug!("could not lower the compile thread's priority");
        }
    }
}

/// A tenant's turn to upload: taken before the upload is read (so a tenant buffers one
/// upload at a time, and the host at most the queue's length), held until the upload is
/// accepted or refused — and, if the client goes away meanwhile, until the compile it
/// started has finished, so hanging up does not free the turn early.
#[derive(Clone)]
pub struct UploadTicket(Arc<QueueEntry>);

impl std::fmt::Debug for UploadTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadTicket({})", self.0.tenant)
    }
}

/// A tenant's place in the queue, given up when the last ticket clone drops.
struct QueueEntry {
    gate: Arc<CompileGate>,
    tenant: Tenant,
}

impl UploadTicket {
    /// The tenant's turn, or [`EngineError::Busy`] at once if it already has an upload in
    /// progress or the queue is full.
    pub(crate) fn take(
        gate: &Arc<CompileGate>,
        tenant: &Tenant,
    ) -> Result<UploadTicket, EngineError> {
        let mut queued = gate.queued.lock().unwrap_or_else(|p| p.into_inner());
        if queued.contains(tenant.as_str()) {
            return Err(EngineError::Busy {
                what: format!(
                    "with another upload of tenant '{tenant}' (one at a time per tenant)"
                ),
                retry_after: Duration::from_secs(5),
            });
        }
        if queued.len() >= gate.max_queued {
            return Err(EngineError::Busy {
                what: format!("with {} uploads being checked and compiled", queued.len()),
                retry_after: Duration::from_secs(10),
            });
        }
        queued.insert(tenant.as_str().to_owned());
        Ok(UploadTicket(Arc::new(QueueEntry {
            gate: Arc::clone(gate),
            tenant: tenant.clone(),
        })))
    }

    /// Whose turn it is.
    pub fn tenant(&self) -> &Tenant {
        &self.0.tenant
    }
}

impl Drop for QueueEntry {
    fn drop(&mut self) {
        self.gate
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.tenant.as_str());
    }
}

/// The digest of an upload, hashed on a blocking thread (a large upload takes a while).
pub(crate) async fn digest_of(bytes: Vec<u8>) -> (Digest, Arc<Vec<u8>>) {
    let bytes = Arc::new(bytes);
    let hashed = Arc::clone(&bytes);
    let digest = tokio::task::spawn_blocking(move || Digest::of(&hashed))
        .await
        .unwrap_or_else(|_| Digest::of(&bytes));
    (digest, bytes)
}

impl Shared {
    /// Compiles a component (blocking), recording how long it took.
    fn timed_compile(&self, bytes: &[u8]) -> Result<wasmtime::component::Component, SandboxError> {
        let began = std::time::Instant::now();
        let compiled = self.sandbox.compile(bytes);
        self.metrics
            .compile_duration
            .observe(began.elapsed().as_secs_f64());
        compiled
    }

    /// An upload: checked, compiled on the compile pool and inspected, but not
    /// registered, journaled or cached (see [`Shared::accept`]). Bytes already loaded (the
    /// same digest deployed before) are not compiled again. The work runs in a task of its
    /// own that holds the ticket and a compile slot until it ends, even if the caller
    /// stops waiting.
    pub(super) async fn inspect_upload(
        self: &Arc<Self>,
        ticket: &UploadTicket,
        digest: &Digest,
        bytes: Arc<Vec<u8>>,
    ) -> Result<Inspected, EngineError> {
        if let Some(known) = self.known(digest) {
            return Ok(known);
        }
        let shared = Arc::clone(self);
        let ticket = ticket.clone();
        let work = tokio::spawn(async move {
            let _ticket = ticket;
            // Reading 64 MB of sections is tens of milliseconds: not on the async workers.
            let limits = shared.compile_limits;
            let checked = Arc::clone(&bytes);
            tokio::task::spawn_blocking(move || precheck(&checked, &limits))
                .await
                .map_err(|e| SandboxError::Compile(format!("the check stopped: {e}")))??;
            let _slot = Arc::clone(&shared.compiles.slots)
                .acquire_owned()
                .await
                .expect("never closed");
            let compiler = Arc::clone(&shared);
            let component = shared
                .compiles
                .run(move || compiler.timed_compile(&bytes))
                .await??;
            shared.inspect(component, true).await
        });
        work.await.map_err(|e| {
            EngineError::from(SandboxError::Compile(format!(
                "the upload's check stopped: {e}"
            )))
        })?
    }

    /// A stored component at startup: from the compiled-code cache if its file matches
    /// the digest recorded for it, else compiled again.
    pub(super) async fn load_stored(
        self: &Arc<Self>,
        digest: &Digest,
        bytes: Vec<u8>,
    ) -> Result<Inspected, EngineError> {
        let recorded = match self.sandbox.cache_key(digest) {
            Some(file) => self.journal.compiled_code(&file)?,
            None => None,
        };
        if let Some(component) = recorded.and_then(|sha| self.sandbox.load_cached(digest, &sha)) {
            return self.inspect(component, false).await;
        }
        let shared = Arc::clone(self);
        let component = tokio::task::spawn_blocking(move || shared.timed_compile(&bytes))
            .await
            .map_err(|e| SandboxError::Compile(format!("the compiler stopped: {e}")))??;
        self.inspect(component, true).await
    }

    /// Adds an accepted component to the registry (not yet to any tenant) and caches its
    /// compiled code if it was compiled just now.
    pub(super) async fn accept(&self, digest: &Digest, inspected: &Inspected) {
        self.registry_mut().add_component(
            digest.clone(),
            Arc::clone(&inspected.loaded),
            inspected.names.clone(),
        );
        if !inspected.fresh {
            return;
        }
        if let (Some(file), Some(sha)) = (
            self.sandbox.cache_key(digest),
            self.sandbox.store(digest, &inspected.component),
        ) && let Err(e) = self.journal.record_compiled_code(file, sha).await
        {
            tracing::warn!(error = %e, "could not record the compiled-code digest; the cache entry will not be used");
        }
    }

    /// The registry's entry for `digest`, if it is loaded already.
    fn known(&self, digest: &Digest) -> Option<Inspected> {
        let registry = self.registry();
        let loaded = registry.component(digest)?;
        let names = registry.names_of(digest)?;
        let (component, kind) = match &*loaded {
            Loaded::Orchestrator(pre) => (
                pre.instance_pre().component().clone(),
                ComponentKind::Orchestrator,
            ),
            Loaded::Activity(pre) => (
                pre.instance_pre().component().clone(),
                ComponentKind::Activity,
            ),
        };
        Some(Inspected {
            component,
            loaded,
            kind,
            names,
            fresh: false,
        })
    }

    /// Checks a compiled component's imports, works out which world it implements and
    /// asks it for the names it serves, within [`INSPECT_TIMEOUT`].
    async fn inspect(
        self: &Arc<Self>,
        component: Component,
        fresh: bool,
    ) -> Result<Inspected, EngineError> {
        self.sandbox.check_imports(&component)?;
        let (loaded, kind, names) = tokio::time::timeout(INSPECT_TIMEOUT, self.names(&component))
            .await
            .map_err(|_| {
                EngineError::Inspect(
                    "names",
                    format!(
                        "it did not answer within {} s; `names` must return at once, without \
                         waiting on anything",
                        INSPECT_TIMEOUT.as_secs()
                    ),
                )
            })??;
        Ok(Inspected {
            component,
            loaded: Arc::new(loaded),
            kind,
            names,
            fresh,
        })
    }

    async fn names(
        self: &Arc<Self>,
        component: &Component,
    ) -> Result<(Loaded, ComponentKind, Vec<String>), EngineError> {
        let inspect = |e: wasmtime::Error| EngineError::Inspect("names", format!("{e:#}"));
        let limits = Arc::clone(&self.limits);
        let orchestrator_error = match self
            .linker
            .instantiate_pre(component)
            .and_then(OrchestratorPre::new)
        {
            Ok(pre) => {
                let mut store =
                    Store::new(self.sandbox.engine(), HostState::inert(Arc::clone(self)));
                limits::meter(&mut store, limits.fuel_per_run, limits.step_wall_clock_ms);
                let instance = pre.instantiate_async(&mut store).await.map_err(inspect)?;
                let names = instance
                    .steadfast_workflow_workflows()
                    .call_names(&mut store)
                    .await
                    .map_err(inspect)?;
                return Ok((
                    Loaded::Orchestrator(pre),
                    ComponentKind::Orchestrator,
                    names,
                ));
            }
            Err(e) => e.to_string(),
        };
        match self
            .activity_linker
            .instantiate_pre(component)
            .and_then(ActivityWorkerPre::new)
        {
            Ok(pre) => {
                let state = ActivityState::new(
                    "",
                    "names",
                    "",
                    &Limits::default(),
                    Arc::clone(&self.ledger),
                )
                .map_err(|e| EngineError::Inspect("names", e))?;
                let mut store = Store::new(self.sandbox.engine(), state);
                limits::meter(
                    &mut store,
                    limits.fuel_per_activity,
                    limits.step_wall_clock_ms,
                );
                let worker = pre.instantiate_async(&mut store).await.map_err(inspect)?;
                let names = worker
                    .steadfast_workflow_activities()
                    .call_names(&mut store)
                    .await
                    .map_err(inspect)?;
                Ok((Loaded::Activity(pre), ComponentKind::Activity, names))
            }
            Err(activity_error) => Err(EngineError::NotOurWorld(format!(
                "as an orchestrator: {orchestrator_error}; as an activity worker: {activity_error}"
            ))),
        }
    }
}
