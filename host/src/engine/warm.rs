//! Activity instances kept between calls.
//!
//! Instantiating an activity component for every call costs more than most calls: a pool
//! slot's memory is faulted in copy-on-write from the component's image, and released
//! with `madvise`, whose TLB shootdowns interrupt the other cores. So an instance whose
//! call returned (with its output or with an error the guest chose) is kept here and
//! serves a later call of the **same tenant's same component**, the way one worker
//! process serves many calls in Temporal or Dapr. What a call leaves in the guest's
//! globals is seen by that tenant's later calls of that component, never by another
//! tenant's and never by another component.
//!
//! Each call starts afresh where the host keeps state: fuel, the time limit, the log's
//! budget and tags, and the egress hooks. An instance is dropped, never kept, if its call
//! trapped or ran out of time; if it made an outgoing HTTP request (the request runs on
//! a task of its own, which, like a refusal found there, could outlive the call); if it
//! opened stdout or stderr (bytes still on their way would be logged under the next
//! call); if it holds more than [`MAX_RESOURCES`] host resources or more linear memory
//! than [`MAX_MEMORY_BYTES`] or half the tenant's memory limit, whichever is less; or
//! after [`MAX_CALLS`] calls. At most
//! [`MAX_IDLE`] instances wait here, [`MAX_IDLE_PER_TENANT`] of one tenant's, the oldest
//! going first, so the pooling allocator's headroom stays for everything else. They are
//! booked apart from live guest memory (`Engine::kept_activity_memory`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use wasmtime::Store;

use super::Limits;
use super::activity_host::ActivityState;
use super::bindings::activity::ActivityWorker;
use crate::model::Digest;

/// Instances kept across all tenants and components.
pub(crate) const MAX_IDLE: usize = 128;
/// Instances kept of one tenant's components: as many as it may run activities at once
/// by default (`limits.max_activities_in_flight`), so a busy tenant's calls all find one.
pub(crate) const MAX_IDLE_PER_TENANT: usize = 64;
/// Calls one instance serves before it is dropped.
pub(crate) const MAX_CALLS: u32 = 10_000;
/// Host resources an instance may hold after a call and still be kept.
pub(crate) const MAX_RESOURCES: usize = 64;
/// Linear memory an instance may have grown to and still be kept: a guest that leaks a
/// little per call is dropped long before a later call would meet its memory limit.
pub(crate) const MAX_MEMORY_BYTES: usize = 16 << 20;

/// An activity instance between calls.
pub(crate) struct Warm {
    pub(crate) store: Store<ActivityState>,
    pub(crate) worker: ActivityWorker,
    /// The limits it was made under; it serves only calls under the same ones.
    limits: Arc<Limits>,
    /// Calls it has served.
    pub(crate) calls: u32,
}

impl Warm {
    pub(crate) fn new(
        store: Store<ActivityState>,
        worker: ActivityWorker,
        limits: Arc<Limits>,
        calls: u32,
    ) -> Warm {
        Warm {
            store,
            worker,
            limits,
            calls,
        }
    }
}

/// Who may take an instance: the tenant and the component it was made of.
#[derive(Clone, PartialEq, Eq)]
struct Key {
    tenant: String,
    component: Digest,
}

/// The kept instances, oldest first.
#[derive(Default)]
pub(crate) struct WarmPool {
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    kept: VecDeque<(Key, Warm)>,
    /// The engine is shutting down: nothing more is kept.
    closed: bool,
}

impl WarmPool {
    /// A kept instance of `tenant`'s `component`, made under `limits`, if there is one.
    pub(crate) fn take(
        &self,
        tenant: &str,
        component: &Digest,
        limits: &Arc<Limits>,
    ) -> Option<Warm> {
        let mut idle = self.lock();
        let ours = |key: &Key| key.tenant == tenant && key.component == *component;
        // Made under limits the tenant no longer has: never taken again.
        let mut stale = Vec::new();
        while let Some(at) = idle
            .kept
            .iter()
            .position(|(key, warm)| ours(key) && !Arc::ptr_eq(&warm.limits, limits))
        {
            stale.extend(idle.kept.remove(at));
        }
        // The newest first: its memory is the likeliest still in the caches.
        let found = idle
            .kept
            .iter()
            .rposition(|(key, _)| ours(key))
            .and_then(|at| idle.kept.remove(at));
        drop(idle);
        // Dropping a store releases its pool slot: not under the lock.
        drop(stale);
        let (_, mut warm) = found?;
        warm.store.data_mut().set_kept(false);
        Some(warm)
    }

    /// Keeps `warm`, whose call just returned, for a later call of `tenant`'s
    /// `component`, if it is fit to keep and there is room.
    pub(crate) fn give_back(&self, tenant: &str, component: &Digest, mut warm: Warm) {
        if warm.calls >= MAX_CALLS {
            return;
        }
        let max_memory = MAX_MEMORY_BYTES.min(warm.limits.max_memory_bytes / 2);
        if let Some(why) = warm
            .store
            .data_mut()
            .unfit_to_keep(MAX_RESOURCES, max_memory)
        {
            tracing::trace!(tenant, component = %component.short(), why, "activity instance not kept");
            return;
        }
        warm.store.data_mut().set_kept(true);
        let key = Key {
            tenant: tenant.to_owned(),
            component: component.clone(),
        };
        let mut idle = self.lock();
        if idle.closed {
            drop(idle);
            return;
        }
        // Over a cap, the oldest goes: the tenant's own, or anyone's.
        let kept = &mut idle.kept;
        let mut evicted = None;
        if kept.iter().filter(|(k, _)| k.tenant == key.tenant).count() >= MAX_IDLE_PER_TENANT {
            let at = kept.iter().position(|(k, _)| k.tenant == key.tenant);
            evicted = at.and_then(|at| kept.remove(at));
        } else if kept.len() >= MAX_IDLE {
            evicted = kept.pop_front();
        }
        kept.push_back((key, warm));
        drop(idle);
        // Dropping a store releases its pool slot: not under the lock.
        drop(evicted);
    }

    /// Drops every kept instance and keeps no more (the engine is shutting down).
    pub(crate) fn close(&self) {
        let all = {
            let mut idle = self.lock();
            idle.closed = true;
            std::mem::take(&mut idle.kept)
        };
        drop(all);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
