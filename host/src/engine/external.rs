//! Activities run by external worker processes: a Dapr SDK worker (or any Durable Task
//! worker) connected over gRPC receives its tenant's activity calls that no Wasm or native
//! activity answers, runs them in the user's own process and language, and sends the
//! result back.
//!
//! **Invariants:**
//! - A worker receives only its own tenant's tasks, and only activity tasks: orchestrators
//!   are always Wasm components.
//! - Delivery is at-least-once: a task whose worker disconnects (or abandons it) before
//!   answering goes to another worker, without using up an attempt; a task unanswered
//!   within `limits.activity_timeout_ms` fails as `time_limit`, and the retry policy
//!   decides as for any activity. Each result is journaled once, by the caller: an answer
//!   for a task no longer waited for (a second delivery, a timed-out one) is dropped.
//! - An activity name is sent to workers only if no Wasm or native activity has it, and
//!   only once the tenant has had a worker connect since the engine started; before that
//!   it fails at once as `unknown_activity`, as it always did.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::model::ErrorInfo;

/// One activity call, as sent to a worker.
#[derive(Debug, Clone)]
pub struct ExternalTask {
    /// Names this delivery; the worker answers with it.
    pub token: String,
    pub name: String,
    /// JSON text.
    pub input: String,
    /// The calling instance's local id.
    pub instance: String,
    pub task_id: i32,
    /// Names the call across deliveries (the same for every retry of it).
    pub execution_id: String,
}

/// The connected workers of every tenant, and the deliveries waiting for an answer.
#[derive(Default)]
pub(crate) struct ExternalWorkers {
    inner: Mutex<Inner>,
    /// Wakes dispatchers waiting for a worker to connect.
    connected: Notify,
}

#[derive(Default)]
struct Inner {
    tenants: HashMap<String, TenantWorkers>,
    pending: HashMap<String, Pending>,
    next: u64,
}

#[derive(Default)]
struct TenantWorkers {
    workers: Vec<(u64, mpsc::Sender<ExternalTask>)>,
    /// Round-robin position.
    turn: usize,
    /// A worker of the tenant has connected since the engine started.
    ever: bool,
    /// Activity names a worker of the tenant answered, and when it last did.
    answered: BTreeMap<String, Instant>,
}

struct Pending {
    tenant: String,
    worker: u64,
    name: String,
    reply: oneshot::Sender<Result<String, ErrorInfo>>,
}

/// What a worker sees of the tasks sent to it; dropped when the worker goes away.
pub(crate) struct WorkerStream {
    pub(crate) tasks: mpsc::Receiver<ExternalTask>,
    pub(crate) tenant: String,
    pub(crate) id: u64,
}

fn lock(workers: &ExternalWorkers) -> std::sync::MutexGuard<'_, Inner> {
    workers.inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl ExternalWorkers {
    /// Tenants known (from the journal) to use external workers: their calls wait for a
    /// worker to connect, also right after a restart.
    pub(crate) fn remember(&self, tenants: impl IntoIterator<Item = String>) {
        let mut inner = lock(self);
        for tenant in tenants {
            inner.tenants.entry(tenant).or_default().ever = true;
        }
    }

    /// Every worker's stream ends (the server is stopping); deliveries wait for workers
    /// of the next start, from the journal.
    pub(crate) fn close_all(&self) {
        let mut inner = lock(self);
        for workers in inner.tenants.values_mut() {
            workers.workers.clear();
        }
    }

    /// Whether delivery `token` is still waited for (a worker's stream skips those that
    /// are not: their dispatcher timed out or went away).
    pub(crate) fn is_pending(&self, token: &str) -> bool {
        lock(self).pending.contains_key(token)
    }

    /// A worker of `tenant` connects; its tasks arrive on the returned stream. True in
    /// the second place if it is the tenant's first since the engine started.
    pub(crate) fn connect(&self, tenant: &str) -> (WorkerStream, bool) {
        let (tx, rx) = mpsc::channel(64);
        let (id, first) = {
            let mut inner = lock(self);
            inner.next += 1;
            let id = inner.next;
            let workers = inner.tenants.entry(tenant.to_owned()).or_default();
            workers.workers.push((id, tx));
            let first = !workers.ever;
            workers.ever = true;
            (id, first)
        };
        self.connected.notify_waiters();
        (
            WorkerStream {
                tasks: rx,
                tenant: tenant.to_owned(),
                id,
            },
            first,
        )
    }

    /// The worker is gone: the deliveries it had not answered go to other workers.
    pub(crate) fn disconnect(&self, tenant: &str, worker: u64) {
        let mut inner = lock(self);
        if let Some(workers) = inner.tenants.get_mut(tenant) {
            workers.workers.retain(|(id, _)| *id != worker);
        }
        // Dropping a reply tells its dispatcher to deliver again.
        inner
            .pending
            .retain(|_, p| !(p.tenant == tenant && p.worker == worker));
    }

    /// A worker of `tenant` answers delivery `token`; false if nobody waits for it (a
    /// duplicate, a delivery that timed out, or another tenant's token).
    pub(crate) fn complete(
        &self,
        tenant: &str,
        token: &str,
        result: Result<String, ErrorInfo>,
    ) -> bool {
        let mut inner = lock(self);
        let ours = inner.pending.get(token).is_some_and(|p| p.tenant == tenant);
        if !ours {
            return false;
        }
        let pending = inner.pending.remove(token).expect("checked above");
        if result.is_ok()
            && let Some(workers) = inner.tenants.get_mut(tenant)
        {
            workers.answered.insert(pending.name, Instant::now());
        }
        pending.reply.send(result).is_ok()
    }

    /// A worker gives delivery `token` back (it is shutting down): it goes to another.
    pub(crate) fn abandon(&self, tenant: &str, token: &str) -> bool {
        let mut inner = lock(self);
        let ours = inner.pending.get(token).is_some_and(|p| p.tenant == tenant);
        ours && inner.pending.remove(token).is_some()
    }

    /// Whether activity calls of `tenant` that nothing else answers go to workers.
    pub(crate) fn serves(&self, tenant: &str) -> bool {
        lock(self).tenants.get(tenant).is_some_and(|w| w.ever)
    }

    /// The tenant's connected workers, and the activity names they answered (most
    /// recent first).
    pub fn live(&self, tenant: &str) -> (usize, Vec<String>) {
        let inner = lock(self);
        let Some(workers) = inner.tenants.get(tenant) else {
            return (0, Vec::new());
        };
        let mut names: Vec<(&String, &Instant)> = workers.answered.iter().collect();
        names.sort_by(|a, b| b.1.cmp(a.1));
        (
            workers.workers.len(),
            names.into_iter().map(|(n, _)| n.clone()).collect(),
        )
    }

    /// Runs `task` on a worker of `tenant`, delivering it again to another worker if
    /// its worker goes away, until `within` has passed.
    pub(crate) async fn run(
        &self,
        tenant: &str,
        mut task: ExternalTask,
        within: Duration,
    ) -> Result<String, ErrorInfo> {
        let deadline = tokio::time::Instant::now() + within;
        let timed_out = || {
            ErrorInfo::new(
                "time_limit",
                format!(
                    "no external worker answered activity '{}' within {} ms \
                     (limits.activity_timeout_ms)",
                    task.name,
                    within.as_millis()
                ),
            )
        };
        loop {
            // Asked for before looking, so a worker connecting in between is not missed.
            let connected = self.connected.notified();
            let (worker, sender, reply) = {
                let mut inner = lock(self);
                // Unguessable: a token answers for a delivery.
                let mut secret = [0u8; 16];
                let _ = getrandom::fill(&mut secret);
                task.token = secret.iter().map(|b| format!("{b:02x}")).collect();
                let chosen = inner.tenants.get_mut(tenant).and_then(|workers| {
                    workers.workers.retain(|(_, tx)| !tx.is_closed());
                    if workers.workers.is_empty() {
                        return None;
                    }
                    workers.turn = (workers.turn + 1) % workers.workers.len();
                    Some(workers.workers[workers.turn].clone())
                });
                match chosen {
                    Some((worker, sender)) => {
                        let (reply, answer) = oneshot::channel();
                        inner.pending.insert(
                            task.token.clone(),
                            Pending {
                                tenant: tenant.to_owned(),
                                worker,
                                name: task.name.clone(),
                                reply,
                            },
                        );
                        (worker, sender, Some(answer))
                    }
                    None => (0, mpsc::channel(1).0, None),
                }
            };
            let Some(answer) = reply else {
                // No worker now: wait for one to connect.
                if tokio::time::timeout_at(deadline, connected).await.is_err() {
                    return Err(timed_out());
                }
                continue;
            };
            // Forgotten however this delivery ends: answered, timed out, or the caller gone
            // (its instance terminated).
            let delivery = Delivery {
                workers: self,
                token: task.token.clone(),
            };
            match sender.try_send(task.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // The worker went away before it took the task.
                    self.disconnect(tenant, worker);
                    continue;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // This worker has a backlog: another one, or this one a little later.
                    drop(delivery);
                    if tokio::time::timeout_at(
                        deadline,
                        tokio::time::sleep(Duration::from_millis(20)),
                    )
                    .await
                    .is_err()
                    {
                        return Err(timed_out());
                    }
                    continue;
                }
            }
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(result)) => return result,
                // Its worker went away or gave it back: deliver again, after a breath so a
                // worker that keeps giving tasks back cannot spin the host.
                Ok(Err(_)) => {
                    drop(delivery);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_) => return Err(timed_out()),
            }
        }
    }
}

/// A delivery waited for; dropping it forgets the delivery.
struct Delivery<'a> {
    workers: &'a ExternalWorkers,
    token: String,
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        lock(self.workers).pending.remove(&self.token);
    }
}
