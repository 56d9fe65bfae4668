//! The runtime status of an instance and the one state machine that moves it.
//!
//! Every status change in the journal is a conditional update against the source states
//! [`Transition::sources`] allows, so a racing writer loses cleanly instead of undoing a
//! terminal state: once COMPLETED, FAILED, TERMINATED or STALLED is committed, nothing
//! changes the instance again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an instance is in its life. Names follow Dapr's runtime statuses, plus `STALLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuntimeStatus {
    /// Started for a later time not yet reached: it exists and takes events, which wait
    /// in its journal; its code has not run.
    Pending,
    Running,
    Completed,
    Failed,
    Terminated,
    Suspended,
    /// Stopped because its code diverged from its journal or trapped; needs a person.
    Stalled,
    ContinuedAsNew,
}

impl RuntimeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Pending => "PENDING",
            RuntimeStatus::Running => "RUNNING",
            RuntimeStatus::Completed => "COMPLETED",
            RuntimeStatus::Failed => "FAILED",
            RuntimeStatus::Terminated => "TERMINATED",
            RuntimeStatus::Suspended => "SUSPENDED",
            RuntimeStatus::Stalled => "STALLED",
            RuntimeStatus::ContinuedAsNew => "CONTINUED_AS_NEW",
        }
    }

    /// True once the instance will make no further progress on its own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RuntimeStatus::Completed
                | RuntimeStatus::Failed
                | RuntimeStatus::Terminated
                | RuntimeStatus::Stalled
        )
    }
}

/// What can happen to an instance's status. [`Transition::apply`] is the only place that
/// decides whether it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Its start time came: a PENDING instance begins to run.
    Start,
    /// Its workflow journals a step: it stays RUNNING (the fence every step writes
    /// through).
    Step,
    /// An operator suspends it: it stops running; what arrives meanwhile is kept.
    Suspend,
    /// An operator resumes it.
    Resume,
    /// Its workflow returned a value.
    Complete,
    /// Its workflow returned an error, trapped, or went over a limit.
    Fail,
    /// Its code no longer matches its journal (or trapped while replaying).
    Stall,
    /// An operator (or a parent's termination) ends it.
    Terminate,
    /// It ends a generation and starts the next one: it stays RUNNING.
    ContinueAsNew,
}

/// The table of allowed transitions: (transition, from, to).
const TRANSITIONS: &[(Transition, RuntimeStatus, RuntimeStatus)] = {
    use RuntimeStatus::*;
    use Transition as T;
    &[
        (T::Start, Pending, Running),
        (T::Step, Running, Running),
        (T::Suspend, Running, Suspended),
        (T::Resume, Suspended, Running),
        (T::Complete, Running, Completed),
        (T::Fail, Running, Failed),
        (T::Stall, Running, Stalled),
        (T::ContinueAsNew, Running, Running),
        (T::Terminate, Running, Terminated),
        (T::Terminate, Suspended, Terminated),
        (T::Terminate, Pending, Terminated),
    ]
};

/// A transition the state machine does not allow from the instance's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an instance that is {from} cannot {transition}")]
pub struct Refused {
    pub from: RuntimeStatus,
    pub transition: Transition,
}

impl Transition {
    /// The status an instance in `from` moves to, or why it may not.
    pub fn apply(self, from: RuntimeStatus) -> Result<RuntimeStatus, Refused> {
        TRANSITIONS
            .iter()
            .find(|(t, f, _)| *t == self && *f == from)
            .map(|(_, _, to)| *to)
            .ok_or(Refused {
                from,
                transition: self,
            })
    }

    /// Every status this transition may start from, for conditional writes
    /// (`... WHERE status IN (sources)`).
    pub fn sources(self) -> Vec<RuntimeStatus> {
        TRANSITIONS
            .iter()
            .filter(|(t, _, _)| *t == self)
            .map(|(_, from, _)| *from)
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Step => "journal a step",
            Transition::Suspend => "suspend",
            Transition::Resume => "resume",
            Transition::Complete => "complete",
            Transition::Fail => "fail",
            Transition::Stall => "stall",
            Transition::Terminate => "terminate",
            Transition::ContinueAsNew => "continue as new",
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RuntimeStatus {
    /// Whether its workflow may journal steps and have work dispatched: only while
    /// RUNNING. A SUSPENDED instance still has completions and events journaled for it
    /// (see [`RuntimeStatus::accepts_deliveries`]), delivered when it resumes.
    pub fn runs(self) -> bool {
        self == RuntimeStatus::Running
    }

    /// Whether completions (activity, timer and child results) and raised events are
    /// journaled for it: while it lives, suspended or not.
    pub fn accepts_deliveries(self) -> bool {
        matches!(
            self,
            RuntimeStatus::Pending | RuntimeStatus::Running | RuntimeStatus::Suspended
        )
    }

    /// Whether it counts against its tenant's live-instance limit: every state that is
    /// not terminal (kept so by triggers in the journal).
    pub fn is_live(self) -> bool {
        !self.is_terminal() && self != RuntimeStatus::ContinuedAsNew
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "PENDING" => RuntimeStatus::Pending,
            "RUNNING" => RuntimeStatus::Running,
            "COMPLETED" => RuntimeStatus::Completed,
            "FAILED" => RuntimeStatus::Failed,
            "TERMINATED" => RuntimeStatus::Terminated,
            "SUSPENDED" => RuntimeStatus::Suspended,
            "STALLED" => RuntimeStatus::Stalled,
            "CONTINUED_AS_NEW" => RuntimeStatus::ContinuedAsNew,
            other => {
                return Err(format!(
                    "unknown status '{other}'; expected PENDING, RUNNING, COMPLETED, FAILED, \
                     TERMINATED, SUSPENDED, STALLED or CONTINUED_AS_NEW"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RuntimeStatus; 8] = [
        RuntimeStatus::Pending,
        RuntimeStatus::Running,
        RuntimeStatus::Completed,
        RuntimeStatus::Failed,
        RuntimeStatus::Terminated,
        RuntimeStatus::Suspended,
        RuntimeStatus::Stalled,
        RuntimeStatus::ContinuedAsNew,
    ];
    const TRANSITIONS: [Transition; 9] = [
        Transition::Start,
        Transition::Step,
        Transition::Suspend,
        Transition::Resume,
        Transition::Complete,
        Transition::Fail,
        Transition::Stall,
        Transition::Terminate,
        Transition::ContinueAsNew,
    ];

    #[test]
    fn terminal_means_terminal() {
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            for t in TRANSITIONS {
                assert_eq!(
                    t.apply(from),
                    Err(Refused {
                        from,
                        transition: t
                    }),
                    "{t} from {from}"
                );
            }
        }
    }

    #[test]
    fn only_a_running_instance_ends_or_suspends() {
        for t in [
            Transition::Step,
            Transition::Complete,
            Transition::Fail,
            Transition::Stall,
            Transition::ContinueAsNew,
            Transition::Suspend,
        ] {
            assert_eq!(t.sources(), vec![RuntimeStatus::Running], "{t}");
        }
        assert_eq!(
            Transition::Terminate.apply(RuntimeStatus::Suspended),
            Ok(RuntimeStatus::Terminated)
        );
        assert_eq!(
            Transition::Resume.apply(RuntimeStatus::Suspended),
            Ok(RuntimeStatus::Running)
        );
        assert!(Transition::Resume.apply(RuntimeStatus::Running).is_err());
    }

    #[test]
    fn a_pending_instance_starts_or_is_terminated_and_nothing_else() {
        assert_eq!(
            Transition::Start.apply(RuntimeStatus::Pending),
            Ok(RuntimeStatus::Running)
        );
        assert_eq!(
            Transition::Terminate.apply(RuntimeStatus::Pending),
            Ok(RuntimeStatus::Terminated)
        );
        for t in TRANSITIONS {
            if !matches!(t, Transition::Start | Transition::Terminate) {
                assert!(t.apply(RuntimeStatus::Pending).is_err(), "{t}");
            }
        }
        assert!(!RuntimeStatus::Pending.runs());
        assert!(RuntimeStatus::Pending.accepts_deliveries());
    }

    #[test]
    fn every_transition_lands_on_a_known_state_and_sources_agree_with_apply() {
        for t in TRANSITIONS {
            for from in ALL {
                assert_eq!(
                    t.apply(from).is_ok(),
                    t.sources().contains(&from),
                    "{t} {from}"
                );
            }
        }
    }
}
