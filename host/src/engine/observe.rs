//! What the engine tells operators about itself: its [`Metrics`], and the levels read
//! from its state when they are scraped.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Engine, EngineError, Shared};
use crate::metrics::{Gauges, Metrics};
use crate::model::InstanceId;
use crate::traces::{InstanceTrace, RunInfo};

impl Engine {
    /// The engine's metrics, for recording from outside (the HTTP layer times requests).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Every metric in the OpenMetrics text format, with the current levels.
    pub fn render_metrics(&self) -> String {
        let shared = &self.shared;
        let resident = shared
            .resident
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let status_waiters = shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(HashMap::len)
            .sum();
        let free = shared.activity_slots.available_permits();
        shared.metrics.render(Gauges {
            resident,
            activity_slots_in_use: shared.activity_slot_total.saturating_sub(free),
            timers_pending: shared.timers.len(),
            status_waiters,
        })
    }
}

impl Shared {
    /// The trace of `id`'s spans, or `None` when traces are off (then nothing is read).
    /// A journal read: call it where blocking is fine, or use [`Self::instance_trace_off_thread`].
    pub(crate) fn instance_trace(&self, id: &InstanceId) -> Option<InstanceTrace> {
        if !self.traces.is_on() {
            return None;
        }
        let (traceparent, incarnation) = self.journal.trace_identity(id).ok().flatten()?;
        Some(
            self.traces
                .instance(id, incarnation, traceparent.as_deref()),
        )
    }

    /// [`Self::instance_trace`] on a blocking thread, for async code.
    pub(crate) async fn instance_trace_off_thread(
        self: &Arc<Self>,
        id: &InstanceId,
    ) -> Option<InstanceTrace> {
        if !self.traces.is_on() {
            return None;
        }
        let (shared, id) = (Arc::clone(self), id.clone());
        tokio::task::spawn_blocking(move || shared.instance_trace(&id))
            .await
            .ok()
            .flatten()
    }

    pub(crate) fn traces(&self) -> &crate::traces::Traces {
        &self.traces
    }
}

impl Engine {
    /// Whether spans are exported.
    pub fn traces_on(&self) -> bool {
        self.shared.traces.is_on()
    }

    /// Sends the spans still buffered (call before the process exits).
    pub fn flush_traces(&self) {
        self.shared.traces.shutdown();
    }

    /// Records, in the caller's trace, that it raised event `name` for `id` (nothing when
    /// traces are off).
    pub fn trace_event_raised(&self, id: &InstanceId, name: &str, traceparent: Option<&str>) {
        let Some(trace) = self.shared.instance_trace(id) else {
            return;
        };
        let generation = match self.shared.journal.instance(id) {
            Ok(Some(record)) => record.generation,
            _ => return,
        };
        self.shared.traces.request(
            traceparent,
            &trace,
            generation,
            format!("raise event {name}"),
            vec![opentelemetry::KeyValue::new(
                "steadfast.event",
                name.to_owned(),
            )],
        );
    }

    /// Emits the run span of an instance that was terminated (a journal read; call it
    /// off the async workers). The generation's start is not kept apart from its history,
    /// so the span starts at the instance's creation.
    pub(crate) fn trace_terminated(&self, record: &crate::engine::InstanceRecord) {
        let Some(trace) = self.shared.instance_trace(&record.id) else {
            return;
        };
        let version = self.version_of(record);
        self.shared.traces.run(
            &trace,
            &RunInfo {
                tenant: record.id.tenant(),
                workflow: &record.workflow,
                version,
                generation: record.generation,
            },
            record.created_at,
            "terminated",
            None,
        );
    }
}

impl Engine {
    /// A worker process of `tenant` connects: it is sent the tenant's activity calls that
    /// no Wasm or native activity answers.
    pub(crate) async fn connect_worker(
        &self,
        tenant: &crate::model::Tenant,
    ) -> Result<super::WorkerStream, EngineError> {
        let (stream, first) = self.shared.external.connect(tenant.as_str());
        if first {
            // Remembered, so the tenant's calls in flight at a restart wait for a worker.
            self.shared
                .journal
                .mark_external_workers(tenant.as_str().to_owned())
                .await?;
        }
        Ok(stream)
    }

    /// Whether a worker's delivery `token` is still waited for.
    pub(crate) fn delivery_pending(&self, token: &str) -> bool {
        self.shared.external.is_pending(token)
    }

    /// Ends every worker's stream (the server is stopping).
    pub(crate) fn close_workers(&self) {
        self.shared.external.close_all();
    }

    /// The worker went away; what it had not answered goes to another.
    pub(crate) fn disconnect_worker(&self, tenant: &str, worker: u64) {
        self.shared.external.disconnect(tenant, worker);
    }

    /// A worker's answer to delivery `token`; false if nobody waits for it any more.
    pub(crate) fn worker_answered(
        &self,
        tenant: &crate::model::Tenant,
        token: &str,
        result: Result<String, crate::model::ErrorInfo>,
    ) -> bool {
        self.shared
            .external
            .complete(tenant.as_str(), token, result)
    }

    /// A worker gives delivery `token` back: it goes to another worker.
    pub(crate) fn worker_abandoned(&self, tenant: &crate::model::Tenant, token: &str) -> bool {
        self.shared.external.abandon(tenant.as_str(), token)
    }

    /// The tenant's connected workers, and the activity names they have answered.
    pub fn workers(&self, tenant: &crate::model::Tenant) -> (usize, Vec<String>) {
        self.shared.external.live(tenant.as_str())
    }
}
