//! Activity instances kept between calls.
//!
//! Instantiating an activity component for every call costs more than most calls: a pool
//! slot's memory is faulted in copy-on-write from the component's image, and released
//! with `madvise`, whose TLB shootdowns interrupt the other cores. So an instance whose
//! call returned (with its output or with an error the guest chose) is kept here and
//! serves a later call of the **same tenant's same component** under the same limits,
//! the way one worker process serves many calls in Temporal or Dapr. What a call leaves
//! in the guest's globals is seen by that tenant's later calls of that component, never
//! by another tenant's and never by another component.
//!
//! Each call starts afresh where the host keeps state: fuel, the time limit and the
//! log's budget and tags are reset, and the egress check forgets the last refusal. An
//! instance is dropped, never kept, if its call trapped, ran out of time or made a
//! request the allow-list refused; if it holds more than [`MAX_RESOURCES`] host resources
//! after a call; after [`MAX_CALLS`] calls; or when the tenant's limits changed. At most
//! [`MAX_IDLE`] instances wait here (the oldest goes first), [`MAX_IDLE_PER_COMPONENT`]
//! of one tenant's component, so the pooling allocator's headroom stays for everything
//! else.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use wasmtime::Store;

use super::Limits;
use super::activity_host::ActivityState;
use super::bindings::activity::ActivityWorker;
use crate::model::Digest;

/// Instances kept across all tenants and components.
pub(crate) const MAX_IDLE: usize = 64;
/// Instances kept of one tenant's component.
pub(crate) const MAX_IDLE_PER_COMPONENT: usize = 32;
/// Calls one instance serves before it is dropped, which bounds what a slow leak in the
/// guest can grow to.
pub(crate) const MAX_CALLS: u32 = 10_000;
/// Host resources (WASI streams, HTTP handles) an instance may hold after a call and
/// still be kept.
pub(crate) const MAX_RESOURCES: usize = 64;

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
    idle: Mutex<VecDeque<(Key, Warm)>>,
}

impl WarmPool {
    /// A kept instance of `tenant`'s `component`, made under `limits`, if there is one.
    pub(crate) fn take(
        &self,
        tenant: &str,
        component: &Digest,
        limits: &Arc<Limits>,
    ) -> Option<Warm> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.lock();
            let mut found = None;
            // The newest first: its memory is the likeliest still in the caches.
            let mut at = idle.len();
            while at > 0 {
                at -= 1;
                let (key, _) = &idle[at];
                if key.tenant != tenant || key.component != *component {
                    continue;
                }
                let entry = idle.remove(at).expect("index in range");
                if Arc::ptr_eq(&entry.1.limits, limits) {
                    let mut warm = entry.1;
                    warm.store.data_mut().set_kept(false);
                    found = Some(warm);
                    break;
                }
                // Made under limits the tenant no longer has.
                stale.push(entry);
            }
            found
        };
        // Dropping a store releases its pool slot: not under the lock.
        drop(stale);
        found
    }

    /// Keeps `warm` for a later call of `tenant`'s `component`, if there is room.
    pub(crate) fn give_back(&self, tenant: &str, component: &Digest, mut warm: Warm) {
        if warm.calls >= MAX_CALLS || warm.store.data_mut().resources_held() > MAX_RESOURCES {
            return;
        }
        let key = Key {
            tenant: tenant.to_owned(),
            component: component.clone(),
        };
        let evicted = {
            let mut idle = self.lock();
            if idle.iter().filter(|(k, _)| *k == key).count() >= MAX_IDLE_PER_COMPONENT {
                return;
            }
            let evicted = (idle.len() >= MAX_IDLE).then(|| idle.pop_front()).flatten();
            warm.store.data_mut().set_kept(true);
            idle.push_back((key, warm));
            evicted
        };
        drop(evicted);
    }

    /// Drops every kept instance (the engine is shutting down).
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *self.lock());
        drop(all);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Key, Warm)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
