//! The vocabulary every other module shares: ids, timestamps, journal events, statuses and
//! the clock. It imports nothing else of ours, and nothing of wasmtime, SQLite or HTTP.

mod clock;
mod event;
mod ids;
mod status;

pub use clock::{Clock, SystemClock, VirtualClock};
pub use event::{ErrorInfo, Event, Outcome, RetryPolicy};
pub use ids::{Digest, InstanceId, Tenant, Timestamp};
pub use status::{Refused, RuntimeStatus, Transition};
