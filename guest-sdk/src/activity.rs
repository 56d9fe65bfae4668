//! Support for activity components.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::activity_bindings::steadfast::workflow::activity_context as host;
use crate::activity_bindings::steadfast::workflow::types::{ErrorInfo, LogLevel};

/// Write an info-level line to the host's log, tagged with the activity. A component
/// built for `wasm32-wasip2` may as well print: its stdout and stderr reach the same log.
/// The host keeps up to 64 KiB of one call's output and counts the rest.
///
/// ```no_run
/// steadfast_sdk::log("Creating task record: task-123");
/// ```
pub fn log(message: impl AsRef<str>) {
    host::log(LogLevel::Info, message.as_ref());
}

#[doc(hidden)]
pub fn __run_activity<I, O>(
    input: &str,
    activity: fn(I) -> Result<O, Error>,
) -> Result<String, ErrorInfo>
where
    I: DeserializeOwned,
    O: Serialize,
{
    let input: I = serde_json::from_str(input)
        .map_err(|e| Error::bad_payload("the activity input", e).into_activity_wit())?;
    let output = activity(input).map_err(Error::into_activity_wit)?;
    serde_json::to_string(&output).map_err(|e| {
        Error::new(
            "bad_payload",
            format!("the activity output cannot be serialised: {e}"),
        )
        .into_activity_wit()
    })
}
