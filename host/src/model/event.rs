//! Journal events: everything that happens to an instance, in the order it happened.
//!
//! Two families share one sequence per instance:
//! - **commands and decisions** the workflow makes (`seq` = the position of the request in
//!   the workflow's run, 0, 1, 2, ...). Replay re-runs the workflow and compares each
//!   request with the recorded one at the same `seq`;
//! - **completions** that arrive from outside (activity results, timer firings, raised
//!   events), keyed by the `seq` of the task they complete (or by event name).

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// A failure a workflow can handle, as carried by the WIT `error-info` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub kind: String,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// The result of a task: JSON text, or a handled failure.
pub type Outcome = Result<String, ErrorInfo>;

/// How an activity is retried (the WIT `retry-policy`, in host terms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub first_retry_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub max_retry_interval_ms: u64,
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_retryable_kinds: Vec<String>,
}

/// The shortest wait before an activity's next attempt.
pub const MIN_RETRY_DELAY_MS: u64 = 10;

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 = the first retry), or `None` when the
    /// policy allows no further attempt for this error at this time.
    pub fn delay_before(
        &self,
        next_attempt: u32,
        error_kind: &str,
        elapsed_ms: u64,
    ) -> Option<u64> {
        if next_attempt > self.max_attempts
            || self.non_retryable_kinds.iter().any(|k| k == error_kind)
        {
            return None;
        }
        let exponent = i32::try_from(next_attempt.saturating_sub(2)).unwrap_or(i32::MAX);
        let coefficient = if self.backoff_coefficient.is_finite() && self.backoff_coefficient >= 1.0
        {
            self.backoff_coefficient
        } else {
            1.0
        };
        let delay = (self.first_retry_interval_ms as f64) * coefficient.powi(exponent);
        let delay = delay.min(self.max_retry_interval_ms as f64) as u64;
        // A failing activity is not retried in a tight loop, whatever the policy says:
        // each failed attempt is a journal write.
        let delay = delay.max(MIN_RETRY_DELAY_MS);
        match self.retry_timeout_ms {
            Some(limit) if elapsed_ms.saturating_add(delay) > limit => None,
            _ => Some(delay),
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A generation began (the first, or one after continue-as-new).
    WorkflowStarted {
        workflow: String,
        input: String,
    },
    ActivityScheduled {
        seq: u32,
        name: String,
        input: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry: Option<RetryPolicy>,
    },
    /// An attempt failed and another is due at `retry_at`.
    ActivityAttemptFailed {
        seq: u32,
        attempt: u32,
        error: ErrorInfo,
        retry_at: Timestamp,
    },
    ActivityCompleted {
        seq: u32,
        attempts: u32,
        result: Outcome,
    },
    ChildScheduled {
        seq: u32,
        name: String,
        input: String,
        instance_id: String,
    },
    ChildCompleted {
        seq: u32,
        result: Outcome,
    },
    /// `after_ms` is what the workflow asked for when it gave a delay rather than a time.
    TimerCreated {
        seq: u32,
        fire_at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_ms: Option<u64>,
    },
    TimerFired {
        seq: u32,
    },
    EventWaitStarted {
        seq: u32,
        name: String,
    },
    EventRaised {
        name: String,
        payload: String,
    },
    /// The outcome of a `when-any`: which of `tasks` (by seq) was observed first.
    WhenAnyResolved {
        seq: u32,
        tasks: Vec<u32>,
        winner: u32,
    },
    /// A `now()` call and the time it returned.
    TimeRead {
        seq: u32,
        at: Timestamp,
    },
    WorkflowCompleted {
        output: String,
    },
    WorkflowFailed {
        error: ErrorInfo,
    },
    /// The workflow stopped because its code no longer matches its journal, or trapped.
    WorkflowStalled {
        reason: String,
    },
    ContinuedAsNew {
        input: String,
    },
    WorkflowTerminated {
        reason: String,
    },
    Suspended {
        reason: String,
    },
    Resumed {
        reason: String,
    },
    /// A patch marker: code guarded by `patched(name)` ran in this execution.
    Patched {
        seq: u32,
        name: String,
    },
}

impl Event {
    /// The request sequence number, for events the workflow itself produces.
    pub fn command_seq(&self) -> Option<u32> {
        match self {
            Event::ActivityScheduled { seq, .. }
            | Event::ChildScheduled { seq, .. }
            | Event::TimerCreated { seq, .. }
            | Event::EventWaitStarted { seq, .. }
            | Event::WhenAnyResolved { seq, .. }
            | Event::TimeRead { seq, .. }
            | Event::Patched { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The snake_case name stored in the journal's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::WorkflowStarted { .. } => "workflow_started",
            Event::ActivityScheduled { .. } => "activity_scheduled",
            Event::ActivityAttemptFailed { .. } => "activity_attempt_failed",
            Event::ActivityCompleted { .. } => "activity_completed",
            Event::ChildScheduled { .. } => "child_scheduled",
            Event::ChildCompleted { .. } => "child_completed",
            Event::TimerCreated { .. } => "timer_created",
            Event::TimerFired { .. } => "timer_fired",
            Event::EventWaitStarted { .. } => "event_wait_started",
            Event::EventRaised { .. } => "event_raised",
            Event::WhenAnyResolved { .. } => "when_any_resolved",
            Event::TimeRead { .. } => "time_read",
            Event::WorkflowCompleted { .. } => "workflow_completed",
            Event::WorkflowFailed { .. } => "workflow_failed",
            Event::WorkflowStalled { .. } => "workflow_stalled",
            Event::ContinuedAsNew { .. } => "continued_as_new",
            Event::WorkflowTerminated { .. } => "workflow_terminated",
            Event::Suspended { .. } => "suspended",
            Event::Resumed { .. } => "resumed",
            Event::Patched { .. } => "patched",
        }
    }

    /// A short description of a command, for divergence messages:
    /// `call-activity 'reserve_assignee_capacity'`.
    pub fn describe(&self) -> String {
        match self {
            Event::ActivityScheduled { name, .. } => format!("call-activity '{name}'"),
            Event::ChildScheduled { name, .. } => format!("call-child-workflow '{name}'"),
            Event::TimerCreated {
                fire_at,
                after_ms: Some(ms),
                ..
            } => {
                format!("create-timer (after {ms} ms, firing {fire_at})")
            }
            Event::TimerCreated { fire_at, .. } => format!("create-timer (at {fire_at})"),
            Event::EventWaitStarted { name, .. } => format!("wait-for-external-event '{name}'"),
            Event::WhenAnyResolved { tasks, .. } => format!("when-any over tasks {tasks:?}"),
            Event::TimeRead { .. } => "now()".to_owned(),
            Event::Patched { name, .. } => format!("patched('{name}')"),
            other => other.kind().replace('_', " "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first_retry_interval_ms: 10_000,
            backoff_coefficient: 2.0,
            max_retry_interval_ms: 30_000,
            max_attempts: 4,
            retry_timeout_ms: None,
            non_retryable_kinds: vec!["invalid".into()],
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        assert_eq!(p.delay_before(2, "x", 0), Some(10_000));
        assert_eq!(p.delay_before(3, "x", 0), Some(20_000));
        assert_eq!(p.delay_before(4, "x", 0), Some(30_000));
        assert_eq!(p.delay_before(5, "x", 0), None, "max attempts reached");
    }

    #[test]
    fn no_policy_retries_in_a_tight_loop() {
        let p = RetryPolicy {
            first_retry_interval_ms: 0,
            max_retry_interval_ms: 0,
            max_attempts: u32::MAX,
            ..policy()
        };
        assert_eq!(p.delay_before(2, "x", 0), Some(MIN_RETRY_DELAY_MS));
        assert_eq!(p.delay_before(1_000_000, "x", 0), Some(MIN_RETRY_DELAY_MS));
    }

    #[test]
    fn non_retryable_kinds_and_timeouts_stop_retries() {
        let mut p = policy();
        assert_eq!(p.delay_before(2, "invalid", 0), None);
        p.retry_timeout_ms = Some(15_000);
        assert_eq!(p.delay_before(2, "x", 4_000), Some(10_000));
        assert_eq!(p.delay_before(2, "x", 6_000), None);
    }

    #[test]
    fn events_round_trip_through_json() {
        let e = Event::ActivityCompleted {
            seq: 3,
            attempts: 1,
            result: Err(ErrorInfo::new("unavailable", "down")),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""type":"activity_completed""#), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
}
