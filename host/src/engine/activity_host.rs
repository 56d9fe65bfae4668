//! The store data of an activity component and the host functions it may call.

use super::bindings::activity::steadfast::workflow::{activity_context, types};

/// What an activity component's store holds: who it runs for (for its log lines) and
/// the limits it runs under.
pub(crate) struct ActivityState {
    pub(crate) activity: String,
    pub(crate) instance: String,
    pub(crate) started: std::time::Instant,
    pub(crate) limits: wasmtime::StoreLimits,
}

impl ActivityState {
    pub(crate) fn new(activity: String, instance: String, limits: &super::Limits) -> Self {
        ActivityState {
            activity,
            instance,
            started: std::time::Instant::now(),
            limits: super::limits::store_limits(limits),
        }
    }
}

impl super::limits::Metered for ActivityState {
    fn step_started(&self) -> std::time::Instant {
        self.started
    }

    fn store_limits(&mut self) -> &mut wasmtime::StoreLimits {
        &mut self.limits
    }
}

impl types::Host for ActivityState {}

impl activity_context::Host for ActivityState {
    fn log(&mut self, level: types::LogLevel, message: String) -> wasmtime::Result<()> {
        let (activity, instance) = (self.activity.as_str(), self.instance.as_str());
        match level {
            types::LogLevel::Trace => {
                tracing::trace!(target: "steadfast::activity", activity, instance, "{message}")
            }
            types::LogLevel::Debug => {
                tracing::debug!(target: "steadfast::activity", activity, instance, "{message}")
            }
            types::LogLevel::Info => {
                tracing::info!(target: "steadfast::activity", activity, instance, "{message}")
            }
            types::LogLevel::Warn => {
                tracing::warn!(target: "steadfast::activity", activity, instance, "{message}")
            }
            types::LogLevel::Error => {
                tracing::error!(target: "steadfast::activity", activity, instance, "{message}")
            }
        }
        Ok(())
    }
}
