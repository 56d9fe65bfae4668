//! The runtime status of an instance.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an instance is in its life. Names follow Dapr's runtime statuses, plus `STALLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuntimeStatus {
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

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "RUNNING" => RuntimeStatus::Running,
            "COMPLETED" => RuntimeStatus::Completed,
            "FAILED" => RuntimeStatus::Failed,
            "TERMINATED" => RuntimeStatus::Terminated,
            "SUSPENDED" => RuntimeStatus::Suspended,
            "STALLED" => RuntimeStatus::Stalled,
            "CONTINUED_AS_NEW" => RuntimeStatus::ContinuedAsNew,
            other => {
                return Err(format!(
                    "unknown status '{other}'; expected RUNNING, COMPLETED, FAILED, TERMINATED, \
                     SUSPENDED, STALLED or CONTINUED_AS_NEW"
                ));
            }
        })
    }
}
