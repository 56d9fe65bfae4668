//! The store data of an activity component and the host functions it may call.
//!
//! An activity component runs with WASI (clocks, randomness, stdout and stderr into the
//! host's log through [`super::guest_log`]) plus
//! `wasi:http`, whose requests go through the tenant's allow-list ([`super::egress`]). Its
//! environment and filesystem are empty unless the tenant's limits grant variables or
//! directories; sockets are not linked at all.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::activity::steadfast::workflow::{activity_context, types};
use super::egress::{Egress, parse_rules};
use super::guest_log::{GuestLog, Stream};

/// What an activity component's store holds: its log, the limits it runs under and its
/// WASI state.
pub(crate) struct ActivityState {
    /// The time the call has run (not waited), for the time limit.
    pub(crate) clock: std::sync::Arc<super::limits::StepClock>,
    pub(crate) log: GuestLog,
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
        activity: &str,
        instance: &str,
        limits: &super::Limits,
        ledger: std::sync::Arc<super::limits::Ledger>,
    ) -> Result<Self, String> {
        let log = GuestLog::activity(activity, instance);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(log.stdio(Stream::Stdout))
            .stderr(log.stdio(Stream::Stderr));
        for (name, value) in &limits.activity_env {
            wasi.env(name, value);
        }
        for (guest, host) in &limits.activity_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| format!("cannot open granted directory {}: {e}", host.display()))?;
        }
        Ok(ActivityState {
            clock: std::sync::Arc::default(),
            log,
            meter: super::limits::GuestMeter::new(limits, ledger),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            egress: Egress::new(tenant, parse_rules(&limits.http_allow)?),
        })
    }
}

impl ActivityState {
    /// Readies a kept instance's state for another call (see [`super::warm`]): the log
    /// takes the call's tags and a full budget, the time limit starts from zero, and the
    /// egress check forgets the last call's refusal.
    pub(crate) fn next_call(&mut self, activity: &str, instance: &str) {
        self.log.next_call(activity, instance);
        self.clock = std::sync::Arc::default();
        self.egress.next_call();
    }

    /// Why this instance must not serve another call, if it must not: it made an
    /// outgoing request (whose task, and a refusal found by it, may outlive the call),
    /// opened stdout or stderr (whose bytes may still be on their way to the log), holds
    /// more than `max_resources` host resources, or has grown its memory past
    /// `max_memory` bytes.
    pub(crate) fn unfit_to_keep(
        &mut self,
        max_resources: usize,
        max_memory: usize,
    ) -> Option<&'static str> {
        if self.egress.sent {
            Some("made an outgoing request")
        } else if self.log.wrote_stdio() {
            Some("opened stdout or stderr")
        } else if self.meter.held() > max_memory {
            Some("holds too much memory")
        } else if self.table.iter_mut().count() > max_resources {
            Some("holds too many resources")
        } else {
            None
        }
    }

    /// Books the store's memory as kept between calls (or live again).
    pub(crate) fn set_kept(&mut self, kept: bool) {
        self.meter.set_kept(kept);
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
    fn step_clock(&self) -> Option<&super::limits::StepClock> {
        Some(&self.clock)
    }

    fn meter(&mut self) -> &mut super::limits::GuestMeter {
        &mut self.meter
    }
}

impl types::Host for ActivityState {}

impl activity_context::Host for ActivityState {
    fn log(&mut self, level: types::LogLevel, message: String) -> wasmtime::Result<()> {
        self.log.line(level.into(), &message);
        Ok(())
    }
}
