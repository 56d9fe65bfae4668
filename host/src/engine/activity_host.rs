//! The store data of an activity component and the host functions it may call.
//!
//! An activity component runs with WASI (clocks, randomness, stdio into nothing) plus
//! `wasi:http`, whose requests go through the tenant's allow-list ([`super::egress`]). Its
//! environment and filesystem are empty unless the tenant's limits grant variables or
//! directories; sockets are not linked at all.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::activity::steadfast::workflow::{activity_context, types};
use super::egress::{Egress, parse_rules};

/// What an activity component's store holds: who it runs for (for its log lines), the
/// limits it runs under and its WASI state.
pub(crate) struct ActivityState {
    pub(crate) activity: String,
    pub(crate) instance: String,
    pub(crate) started: std::time::Instant,
    meter: super::limits::GuestMeter,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    /// The allow-list, and the first request it refused during this call.
    pub(crate) egress: Egress,
}

impl ActivityState {
    /// The state for one call of `activity` for `tenant`, with what its limits grant.
    /// Fails only if a granted directory cannot be opened or a rule does not parse (both
    /// are checked when the engine opens, so this means the host changed since).
    pub(crate) fn new(
        tenant: &str,
        activity: String,
        instance: String,
        limits: &super::Limits,
        ledger: std::sync::Arc<super::limits::Ledger>,
    ) -> Result<Self, String> {
        let mut wasi = WasiCtxBuilder::new();
        for (name, value) in &limits.activity_env {
            wasi.env(name, value);
        }
        for (guest, host) in &limits.activity_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| format!("cannot open granted directory {}: {e}", host.display()))?;
        }
        Ok(ActivityState {
            activity,
            instance,
            started: std::time::Instant::now(),
            meter: super::limits::GuestMeter::new(limits, ledger),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            egress: Egress::new(tenant, parse_rules(&limits.http_allow)?),
        })
    }
}

impl WasiView for ActivityState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ActivityState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl super::limits::Metered for ActivityState {
    fn step_started(&self) -> std::time::Instant {
        self.started
    }

    fn meter(&mut self) -> &mut super::limits::GuestMeter {
        &mut self.meter
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
