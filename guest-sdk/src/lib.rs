//! # Steadfast SDK
//!
//! Write durable workflows in plain Rust and compile them to a WebAssembly component that
//! the Steadfast host runs, journals and replays.
//!
//! A workflow is a function `fn(&Context, Input) -> Result<Output, Error>`. Everything it
//! does that touches the outside world goes through the [`Context`]: activities, child
//! workflows, timers and external events are [`Task`]s; waiting on one suspends the
//! component inside the host until the task finishes (the code reads as blocking code).
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use steadfast_sdk::{Context, Error};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Order { id: String }
//!
//! fn ship(ctx: &Context, order: Order) -> Result<String, Error> {
//!     ctx.call_activity("reserve_stock", &order).wait()?;
//!     let label: String = ctx.call_activity("print_label", &order).get()?;
//!     Ok(label)
//! }
//!
//! steadfast_sdk::workflows! { "ship" => ship }
//! # fn main() {}
//! ```
//!
//! # Getting started
//!
//! `steadfast new NAME` writes a crate with one workflow and its tests; `cargo test` runs
//! them with the test kit (`steadfast-testkit`: the real engine in-process, a virtual
//! clock, fake activities, a replay check); `steadfast build` makes the component and
//! `steadfast deploy .` ships it. The walk-through is "Write your own workflow" in
//! Steadfast's README.
//!
//! # Determinism
//!
//! The host replays a workflow from its journal after a restart, so a workflow must make
//! the same requests in the same order every time it runs on the same journal. The
//! component model makes that the default rather than a discipline:
//!
//! - Orchestrators are built for `wasm32-unknown-unknown`: they import nothing but the
//!   Steadfast contract. There is no clock, file, socket, environment or entropy to reach.
//!   `std::time::SystemTime::now()` and OS randomness are unavailable; use
//!   [`Context::now_ms`], [`Context::random`] and [`Context::new_guid`], whose values are
//!   journaled or derived from the instance identity.
//! - The host compiles guests with NaN canonicalisation and deterministic relaxed SIMD, and
//!   without threads, so float arithmetic gives the same bits on every machine.
//! - `HashMap` iteration order is fixed for a given binary (its hasher is seeded without
//!   entropy), but prefer `BTreeMap` where order is visible.
//! - If a changed workflow asks for something the journal did not record, the host stops
//!   the instance in the `STALLED` state and names the journal position, what was recorded
//!   and what was asked, instead of guessing.
//!
//! Logging through [`Context::log`] is silent while replaying, so each line appears once.

#[cfg(feature = "activity")]
mod activity;
#[cfg(feature = "workflow")]
mod context;
mod error;
#[cfg(feature = "http")]
pub mod http;
mod retry;
#[cfg(feature = "workflow")]
mod saga;

#[cfg(feature = "activity")]
pub use activity::{__run_activity, log};
#[cfg(feature = "workflow")]
pub use context::{__run_workflow, Context, Task};
pub use error::Error;
pub use retry::RetryPolicy;
#[cfg(feature = "workflow")]
pub use saga::Saga;
pub use serde_json::{Value, json};

/// Generated bindings for the `orchestrator` world. Not part of the stable API.
#[cfg(feature = "workflow")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "orchestrator",
        pub_export_macro: true,
        export_macro_name: "export_orchestrator",
        default_bindings_module: "steadfast_sdk::bindings",
    });
}

/// Generated bindings for the `activity-worker` world. Not part of the stable API.
#[cfg(feature = "activity")]
#[doc(hidden)]
pub mod activity_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "activity-worker",
        pub_export_macro: true,
        export_macro_name: "export_activity_worker",
        default_bindings_module: "steadfast_sdk::activity_bindings",
    });
}

/// Declares the workflows a component exports, by name.
///
/// Each function has the shape `fn(&Context, I) -> Result<O, Error>` where `I` is
/// deserialised from the instance's JSON input and `O` serialised as its output.
///
/// ```no_run
/// use steadfast_sdk::{Context, Error};
///
/// fn hello(ctx: &Context, name: String) -> Result<String, Error> {
///     ctx.log(format!("greeting {name}"));
///     Ok(format!("hello, {name}"))
/// }
///
/// steadfast_sdk::workflows! { "hello" => hello }
/// # fn main() {}
/// ```
#[cfg(feature = "workflow")]
#[macro_export]
macro_rules! workflows {
    ($($name:literal => $func:path),+ $(,)?) => {
        struct __SteadfastWorkflows;

        impl $crate::bindings::exports::steadfast::workflow::workflows::Guest
            for __SteadfastWorkflows
        {
            fn names() -> ::std::vec::Vec<::std::string::String> {
                ::std::vec![$(::std::string::String::from($name)),+]
            }

            fn run(
                name: ::std::string::String,
                input: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::steadfast::workflow::types::ErrorInfo,
            > {
                match name.as_str() {
                    $($name => $crate::__run_workflow(&input, $func),)+
                    other => ::std::result::Result::Err(
                        $crate::Error::new("unknown_workflow", ::std::format!(
                            "this component has no workflow named '{other}'"
                        )).into_wit(),
                    ),
                }
            }
        }

        // Exported only from the wasm build: a host build of the crate (its tests) has
        // no component model to export to, and the export names do not link there.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export_orchestrator!(
            __SteadfastWorkflows with_types_in $crate::bindings
        );

        // On the host, this keeps the workflows reachable (not "never used").
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        #[allow(dead_code)]
        pub fn __steadfast_workflows() {
            let _ = <__SteadfastWorkflows as $crate::bindings::exports::steadfast::workflow::workflows::Guest>::run;
        }
    };
}

/// Declares the activities an activity component exports, by name.
///
/// Each function has the shape `fn(I) -> Result<O, Error>`. Activities may be retried,
/// so make them idempotent. The error's `kind` is what a workflow's
/// [`RetryPolicy::non_retryable_kinds`] matches to stop retrying at once.
///
/// ```no_run
/// use steadfast_sdk::Error;
///
/// fn charge(amount: u64) -> Result<bool, Error> {
///     steadfast_sdk::log(format!("charging {amount}"));
///     Ok(true)
/// }
///
/// steadfast_sdk::activities! { "charge" => charge }
/// # fn main() {}
/// ```
#[cfg(feature = "activity")]
#[macro_export]
macro_rules! activities {
    ($($name:literal => $func:path),+ $(,)?) => {
        struct __SteadfastActivities;

        impl $crate::activity_bindings::exports::steadfast::workflow::activities::Guest
            for __SteadfastActivities
        {
            fn names() -> ::std::vec::Vec<::std::string::String> {
                ::std::vec![$(::std::string::String::from($name)),+]
            }

            fn run(
                name: ::std::string::String,
                input: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::activity_bindings::steadfast::workflow::types::ErrorInfo,
            > {
                match name.as_str() {
                    $($name => $crate::__run_activity(&input, $func),)+
                    other => ::std::result::Result::Err(
                        $crate::Error::new("unknown_activity", ::std::format!(
                            "this component has no activity named '{other}'"
                        )).into_activity_wit(),
                    ),
                }
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::activity_bindings::export_activity_worker!(
            __SteadfastActivities with_types_in $crate::activity_bindings
        );

        // On the host, this keeps the activities reachable (not "never used").
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        #[allow(dead_code)]
        pub fn __steadfast_activities() {
            let _ = <__SteadfastActivities as $crate::activity_bindings::exports::steadfast::workflow::activities::Guest>::run;
        }
    };
}
