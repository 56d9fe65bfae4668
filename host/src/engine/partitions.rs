//! An engine on a journal shared with other hosts (PostgreSQL): it runs only the
//! instances of the partitions it leases, recovers a partition's instances when it takes
//! the lease, lets them go when it loses it, and acts on what other hosts wrote for them.
//!
//! **Invariant:** nothing is activated, dispatched or fired for an instance whose
//! partition this host does not hold ([`Shared::owns`] is checked where each begins), and
//! every write of an activation is fenced by the lease's epoch in the journal, so a host
//! that lost a lease and has not noticed yet still writes nothing.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::Shared;
use super::timers::TimerJob;
use crate::journal::leases::{LeaseChange, PARTITIONS, partition_of};
use crate::model::{Event, InstanceId, RuntimeStatus};

impl Shared {
    /// Loads the deployed components this engine has not loaded yet, and every
    /// workflow's versions: at startup, and on a shared journal as other hosts deploy.
    pub(crate) async fn load_deployments(self: &Arc<Self>) -> Result<(), super::EngineError> {
        let known: std::collections::HashSet<crate::model::Digest> =
            self.registry().component_digests();
        let journal_reads = Arc::clone(self);
        let (fresh, versions, owners) = tokio::task::spawn_blocking(move || {
            let journal = &journal_reads.journal;
            Ok::<_, crate::journal::JournalError>((
                journal.components_except(&known)?,
                journal.workflow_versions()?,
                journal.component_owners()?,
            ))
        })
        .await
        .map_err(|e| crate::journal::JournalError::Storage(e.to_string()))??;
        for stored in fresh {
            match self.load_stored(&stored.digest, stored.bytes).await {
                Ok(inspected) => self.accept(&stored.digest, &inspected).await,
                Err(e) => {
                    tracing::error!(digest = %stored.digest.short(), error = %e, "cannot load a deployed component");
                }
            }
        }
        let mut registry = self.registry_mut();
        for (tenant, workflow, version, digest) in versions {
            registry.set_version(&tenant, &workflow, version, digest);
        }
        for (tenant, digest) in owners {
            registry.own_activities(&tenant, &digest);
        }
        Ok(())
    }

    /// Whether this host runs `id` now (always, on SQLite).
    pub(crate) fn owns(&self, id: &InstanceId) -> bool {
        self.journal.owns(id)
    }

    /// Timers, queued activities and running instances of `partitions` (every one with
    /// `None`), after a restart or when their leases are taken.
    pub(crate) fn recover_instances(
        self: &Arc<Self>,
        partitions: Option<&[u32]>,
    ) -> Result<(), crate::journal::JournalError> {
        // Each partition is recovered once while held: the lease thread's first round
        // (before the engine opened) and the engine's own recovery both name it.
        let fresh: Vec<u32> = {
            let mut recovered = self.recovered.lock().unwrap_or_else(|p| p.into_inner());
            let asked = match partitions {
                None => self.journal.held_partitions(),
                Some(list) => list.to_vec(),
            };
            asked.into_iter().filter(|p| recovered.insert(*p)).collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let recovered = self.recover_these(&fresh);
        if recovered.is_err() {
            // Not recovered after all: the next lease change that names them tries again.
            let mut recovered = self.recovered.lock().unwrap_or_else(|p| p.into_inner());
            for partition in &fresh {
                recovered.remove(partition);
            }
        }
        recovered
    }

    fn recover_these(self: &Arc<Self>, fresh: &[u32]) -> Result<(), crate::journal::JournalError> {
        let wanted = |id: &InstanceId| fresh.contains(&partition_of(id.as_str())) && self.owns(id);
        for (instance, generation, seq, fire_at) in self.journal.pending_timers()? {
            if wanted(&instance) {
                self.timers.add(
                    fire_at,
                    TimerJob::Fire {
                        instance,
                        generation,
                        seq,
                    },
                );
            }
        }
        for job in self.journal.pending_activities()? {
            if wanted(&job.instance) {
                self.dispatch_activity(job);
            }
        }
        let now = self.clock.now();
        let (mut activated, mut waiting) = (0usize, 0usize);
        // Every partition (a restart on SQLite): no need to narrow the scan.
        let narrowed = (fresh.len() < PARTITIONS as usize).then_some(fresh);
        for instance in self.journal.running_instances(narrowed)? {
            if !wanted(&instance.id) {
                continue;
            }
            if instance.waiting && self.orchestrator_pre(&instance.component).is_some() {
                // Nothing new since it went back to waiting: it stays in the journal
                // until something comes for it, which activates it. (One whose code is
                // not deployed here is activated, and stalls now saying so.)
                waiting += 1;
                continue;
            }
            activated += 1;
            self.activate_at(instance.id, instance.start_at, now);
        }
        tracing::debug!(activated, waiting, "instances recovered");
        Ok(())
    }

    /// Acts on what another host wrote for `id`, which this host runs: a start, a raised
    /// event, a child's result, a termination, a suspension or a resumption.
    pub(crate) fn reconcile(
        self: &Arc<Self>,
        id: InstanceId,
    ) -> Result<(), crate::journal::JournalError> {
        if !self.owns(&id) {
            return Ok(());
        }
        let Some(record) = self.journal.instance(&id)? else {
            self.request_eviction(&id);
            self.status_changed(&id);
            return Ok(());
        };
        match record.status {
            RuntimeStatus::Pending => {
                self.activate_at(id, record.start_at, self.clock.now());
            }
            RuntimeStatus::Running if self.is_resident(&id) => {
                // Hand over what it may not have; an activation ignores what it has.
                for stored in self.journal.history(&id)? {
                    if stored.generation == record.generation
                        && matches!(
                            stored.event,
                            Event::EventRaised { .. } | Event::ChildCompleted { .. }
                        )
                    {
                        let guard = self.work.guard();
                        self.deliver(
                            id.clone(),
                            stored.generation,
                            stored.pos,
                            stored.event,
                            guard,
                        );
                    }
                }
            }
            RuntimeStatus::Running => self.activate(id),
            _ => {
                self.request_eviction(&id);
                self.status_changed(&id);
            }
        }
        Ok(())
    }

    fn is_resident(&self, id: &InstanceId) -> bool {
        self.resident
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Asks the resident instance `id` to leave memory (it leaves when next idle).
    pub(crate) fn request_eviction(&self, id: &InstanceId) {
        let resident = self.resident.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = resident.get(id) {
            let _ = r.tx.send(super::activation::Msg::Evict(None));
        }
    }

    /// Lets the resident instances of `partitions` go: their next write would be refused.
    fn release(&self, partitions: &[u32]) {
        let ids: Vec<InstanceId> = self
            .resident
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|id| partitions.contains(&partition_of(id.as_str())))
            .cloned()
            .collect();
        for id in ids {
            self.request_eviction(&id);
        }
    }
}

/// Acts on a wake-up again, every second, a few times.
async fn retry_reconcile(shared: Arc<Shared>, id: InstanceId) {
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let (again, target) = (Arc::clone(&shared), id.clone());
        match tokio::task::spawn_blocking(move || again.reconcile(target)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => tracing::warn!(instance = %id, error = %e, "cannot act on a wake-up"),
            Err(e) => tracing::warn!(instance = %id, error = %e, "cannot act on a wake-up"),
        }
    }
}

/// How often a host on a shared journal looks for what other hosts deployed.
const DEPLOYMENT_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows the lease changes and wake-ups of a shared journal, and what other hosts
/// deploy, until the engine is gone.
pub(crate) async fn follow(
    shared: Weak<Shared>,
    mut changes: mpsc::UnboundedReceiver<LeaseChange>,
) {
    let mut deployments = tokio::time::interval(DEPLOYMENT_POLL);
    deployments.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let change = tokio::select! {
            change = changes.recv() => match change {
                Some(change) => change,
                None => return,
            },
            _ = deployments.tick() => {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if let Err(e) = shared.load_deployments().await {
                    tracing::warn!(error = %e, "cannot load other hosts' deployments");
                }
                continue;
            }
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let LeaseChange::Status(ids) = &change {
            for id in ids {
                shared.status_changed(id);
            }
            continue;
        }
        // Journal reads block: off the async workers.
        let outcome = tokio::task::spawn_blocking(move || match change {
            LeaseChange::Gained(partitions) => {
                tracing::info!(?partitions, "recovering the instances of partitions taken");
                shared.recover_instances(Some(&partitions))
            }
            LeaseChange::Lost(partitions) => {
                tracing::info!(?partitions, "leases lost: their instances leave memory");
                {
                    let mut recovered = shared.recovered.lock().unwrap_or_else(|p| p.into_inner());
                    for partition in &partitions {
                        recovered.remove(partition);
                    }
                }
                shared.release(&partitions);
                Ok(())
            }
            LeaseChange::Status(_) => Ok(()),
            LeaseChange::Wake(ids) => {
                for id in ids {
                    if let Err(e) = shared.reconcile(id.clone()) {
                        // Its wake-up row is gone: try again here rather than leave the
                        // instance waiting for the next restart or takeover.
                        tracing::warn!(instance = %id, error = %e, "cannot act on a wake-up; trying again");
                        let again = Arc::clone(&shared);
                        shared.runtime.spawn(retry_reconcile(again, id));
                    }
                }
                Ok(())
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "shared journal: recovery failed"),
            Err(e) => tracing::error!(error = %e, "shared journal: a task panicked"),
        }
    }
}
