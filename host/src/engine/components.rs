//! Loading a component: check the upload's bytes, compile it on the bounded compile pool,
//! check its imports, find out which world it implements by instantiating it once, and ask
//! it for the names it serves — all before anything is registered, journaled or cached.
//!
//! **Invariants:**
//! - Compiling is a bounded, fair resource: it runs on blocking threads (never on the async
//!   workers that answer requests), at most [`CompileGate`]'s number at once, one per
//!   tenant at a time, with a short queue; beyond it an upload is refused as busy (429).
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
use crate::model::Digest;
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

/// Who may compile now: a few at once, one per tenant, a short queue.
pub(crate) struct CompileGate {
    slots: tokio::sync::Semaphore,
    queued: Mutex<HashSet<String>>,
    max_queued: usize,
}

impl CompileGate {
    pub(crate) fn new(concurrency: usize, max_queued: usize) -> Self {
        CompileGate {
            slots: tokio::sync::Semaphore::new(concurrency.max(1)),
            queued: Mutex::new(HashSet::new()),
            max_queued: max_queued.max(1),
        }
    }

    /// Compiles on a blocking thread once a slot is free, or refuses at once if `tenant`
    /// already has a compile queued or running, or the queue is full.
    async fn compile(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        tenant: &str,
        bytes: Arc<Vec<u8>>,
    ) -> Result<Component, EngineError> {
        let _entry = QueueEntry::enter(self, tenant)?;
        let _slot = self.slots.acquire().await.expect("never closed");
        let shared = Arc::clone(shared);
        tokio::task::spawn_blocking(move || shared.sandbox.compile(&bytes))
            .await
            .map_err(|e| SandboxError::Compile(format!("the compiler stopped: {e}")))?
            .map_err(EngineError::from)
    }
}

/// A tenant's place in the compile queue, given up when dropped.
struct QueueEntry {
    gate: Arc<CompileGate>,
    tenant: String,
}

impl QueueEntry {
    fn enter(gate: &Arc<CompileGate>, tenant: &str) -> Result<QueueEntry, EngineError> {
        let mut queued = gate.queued.lock().unwrap_or_else(|p| p.into_inner());
        if queued.contains(tenant) {
            return Err(EngineError::Busy {
                what: format!(
                    "compiling another component of tenant '{tenant}' (one at a time per tenant)"
                ),
                retry_after: Duration::from_secs(5),
            });
        }
        if queued.len() >= gate.max_queued {
            return Err(EngineError::Busy {
                what: format!("with {} components waiting to compile", queued.len()),
                retry_after: Duration::from_secs(10),
            });
        }
        queued.insert(tenant.to_owned());
        Ok(QueueEntry {
            gate: Arc::clone(gate),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for QueueEntry {
    fn drop(&mut self) {
        self.gate
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.tenant);
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
    /// An upload from `tenant`: checked, compiled on the compile pool and inspected, but
    /// not registered, journaled or cached (see [`Shared::accept`]). Bytes already loaded
    /// (the same digest deployed before) are not compiled again.
    pub(super) async fn inspect_upload(
        self: &Arc<Self>,
        tenant: &str,
        digest: &Digest,
        bytes: Arc<Vec<u8>>,
    ) -> Result<Inspected, EngineError> {
        if let Some(known) = self.known(digest) {
            return Ok(known);
        }
        // Reading 64 MB of sections is tens of milliseconds: not on the async workers.
        let limits = self.compile_limits;
        let checked = Arc::clone(&bytes);
        tokio::task::spawn_blocking(move || precheck(&checked, &limits))
            .await
            .map_err(|e| SandboxError::Compile(format!("the check stopped: {e}")))??;
        let component = self.compiles.compile(self, tenant, bytes).await?;
        self.inspect(component, true).await
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
        let component = tokio::task::spawn_blocking(move || shared.sandbox.compile(&bytes))
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
