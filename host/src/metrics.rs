//! What the host counts and times, in Prometheus's text format (OpenMetrics) at `/metrics`.
//!
//! One [`Metrics`] per engine, no global registry: two engines in one process (a test, an
//! embedding application) count apart. Recording a sample costs a read lock on its
//! family, a label set built (a few small allocations) and, for a histogram, a short
//! write lock; there is no switch to turn metrics off.
//!
//! **Invariant:** no label value is chosen by running guest code or an anonymous caller:
//! tenants exist only once an admin created them, workflow and activity names only once a
//! component declaring them was deployed (so a tenant's label sets grow only with its
//! deploys, which `deploys_per_minute` bounds), an activity a workflow calls by a name
//! nobody registered is counted as `<unregistered>`, and an HTTP route is the route's
//! pattern, not the path asked for. Every label value is escaped as the text format
//! requires, so a name with quotes or newlines cannot forge a sample.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A label value, escaped when written (`\\`, `\"`, `\n`), whatever its text.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Text(pub String);

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text(text.to_owned())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text(text)
    }
}

impl EncodeLabelValue for Text {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A workflow of a tenant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkflowLabels {
    pub tenant: Text,
    pub workflow: Text,
}

/// How a workflow's run (a generation) ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    pub tenant: Text,
    pub workflow: Text,
    /// `completed`, `failed`, `stalled`, `terminated` or `continued_as_new`.
    pub outcome: &'static str,
}

/// An activity of a tenant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActivityLabels {
    pub tenant: Text,
    pub activity: Text,
}

/// An activity attempt and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub tenant: Text,
    pub activity: Text,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// An HTTP request by route pattern.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: Text,
}

/// An answered HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub method: &'static str,
    pub route: Text,
    pub status: u16,
}

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms to about 65 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// 1 ms to about 260 s, doubling: HTTP requests, long polls (up to 300 s) included.
fn request_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

/// 100 µs to about 3 s, doubling: journal commits and steps.
fn fast_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The host's metrics. Cheap to clone handles live inside; share it by `Arc`.
pub struct Metrics {
    registry: Registry,
    pub workflow_starts: Family<WorkflowLabels, Counter>,
    pub workflow_ends: Family<EndLabels, Counter>,
    pub activity_attempts: Family<AttemptLabels, Counter>,
    pub activity_retries: Family<ActivityLabels, Counter>,
    pub activity_duration: Timings<ActivityLabels>,
    /// From a step's write being asked for to its being durable.
    pub step_duration: Histogram,
    pub journal_commit_duration: Histogram,
    pub journal_writes_per_commit: Histogram,
    pub compile_duration: Histogram,
    pub http_requests: Family<ResponseLabels, Counter>,
    pub http_duration: Timings<RouteLabels>,
    /// Read when scraped (see [`Gauges`]).
    resident: Gauge,
    activity_slots_in_use: Gauge,
    timers_pending: Gauge,
    status_waiters: Gauge,
}

/// The levels that are read from the engine when the metrics are scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub resident: usize,
    pub activity_slots_in_use: usize,
    pub timers_pending: usize,
    pub status_waiters: usize,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("steadfast");
        let metrics = Metrics {
            workflow_starts: Family::default(),
            workflow_ends: Family::default(),
            activity_attempts: Family::default(),
            activity_retries: Family::default(),
            activity_duration: Family::new_with_constructor(seconds),
            step_duration: fast_seconds(),
            journal_commit_duration: fast_seconds(),
            journal_writes_per_commit: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            compile_duration: seconds(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(request_seconds),
            resident: Gauge::default(),
            activity_slots_in_use: Gauge::default(),
            timers_pending: Gauge::default(),
            status_waiters: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "workflow_starts",
            "Workflow instances started, by tenant and workflow",
            metrics.workflow_starts.clone(),
        );
        registry.register(
            "workflow_ends",
            "Workflow runs ended, by outcome (completed, failed, stalled, terminated, continued_as_new)",
            metrics.workflow_ends.clone(),
        );
        registry.register(
            "activity_attempts",
            "Activity attempts, by outcome (ok, error)",
            metrics.activity_attempts.clone(),
        );
        registry.register(
            "activity_retries",
            "Failed activity attempts that were scheduled to run again",
            metrics.activity_retries.clone(),
        );
        registry.register_with_unit(
            "activity_duration",
            "Wall-clock time of one activity attempt",
            Unit::Seconds,
            metrics.activity_duration.clone(),
        );
        registry.register_with_unit(
            "step_duration",
            "From a workflow step's write being asked for to its being durable",
            Unit::Seconds,
            metrics.step_duration.clone(),
        );
        registry.register_with_unit(
            "journal_commit_duration",
            "Time of one journal transaction (a group commit), from BEGIN to COMMIT",
            Unit::Seconds,
            metrics.journal_commit_duration.clone(),
        );
        registry.register(
            "journal_writes_per_commit",
            "Writes folded into one journal transaction",
            metrics.journal_writes_per_commit.clone(),
        );
        registry.register_with_unit(
            "compile_duration",
            "Time to compile one uploaded component",
            Unit::Seconds,
            metrics.compile_duration.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status",
            metrics.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (a long poll counts its wait)",
            Unit::Seconds,
            metrics.http_duration.clone(),
        );
        registry.register(
            "resident_instances",
            "Workflow instances in memory",
            metrics.resident.clone(),
        );
        registry.register(
            "activity_slots_in_use",
            "Activities executing now (the host-wide pool's slots taken)",
            metrics.activity_slots_in_use.clone(),
        );
        registry.register(
            "timers_pending",
            "Durable timers and retry timers not yet due",
            metrics.timers_pending.clone(),
        );
        registry.register(
            "status_waiters",
            "Callers waiting for an instance to change status (long polls)",
            metrics.status_waiters.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts a workflow run's end.
    pub fn workflow_ended(&self, tenant: &str, workflow: &str, outcome: &'static str) {
        self.workflow_ends
            .get_or_create(&EndLabels {
                tenant: tenant.into(),
                workflow: workflow.into(),
                outcome,
            })
            .inc();
    }

    /// Counts and times one activity attempt.
    pub fn activity_attempted(&self, tenant: &str, activity: &str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.activity_attempts
            .get_or_create(&AttemptLabels {
                tenant: tenant.into(),
                activity: activity.into(),
                outcome,
            })
            .inc();
        self.activity_duration
            .get_or_create(&ActivityLabels {
                tenant: tenant.into(),
                activity: activity.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a failed attempt that will run again.
    pub fn activity_retried(&self, tenant: &str, activity: &str) {
        self.activity_retries
            .get_or_create(&ActivityLabels {
                tenant: tenant.into(),
                activity: activity.into(),
            })
            .inc();
    }

    /// Counts a started instance (by the API, or as a child of another).
    pub fn workflow_started(&self, tenant: &str, workflow: &str) {
        self.workflow_starts
            .get_or_create(&WorkflowLabels {
                tenant: tenant.into(),
                workflow: workflow.into(),
            })
            .inc();
    }

    /// Every metric in the OpenMetrics text format, with the levels in `gauges`.
    pub fn render(&self, gauges: Gauges) -> String {
        let level = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.resident.set(level(gauges.resident));
        self.activity_slots_in_use
            .set(level(gauges.activity_slots_in_use));
        self.timers_pending.set(level(gauges.timers_pending));
        self.status_waiters.set(level(gauges.status_waiters));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The media type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_name_cannot_forge_a_sample() {
        let metrics = Metrics::new();
        let hostile = "x\"} 1\nsteadfast_workflow_starts_total{tenant=\"victim\",workflow=\"y\\";
        metrics.workflow_started("acme", hostile);
        let text = metrics.render(Gauges::default());
        let starts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("steadfast_workflow_starts_total"))
            .collect();
        assert_eq!(starts.len(), 1, "{text}");
        assert!(!text.contains("tenant=\"victim\""), "{text}");
        assert!(
            starts[0].contains(r#"workflow="x\"} 1\nsteadfast_workflow_starts_total{tenant=\"victim\",workflow=\"y\\""#),
            "{}",
            starts[0]
        );
    }
}
