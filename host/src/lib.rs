//! # Steadfast
//!
//! A durable workflow runner whose orchestrators are sandboxed WebAssembly components.
//! Embed it as a library ([`engine::Engine`]) or run the `steadfast` binary.
//!
//! # Layout
//! - [`model`]: ids, timestamps, journal events, statuses and the clock; imports nothing
//!   else of ours.
//! - [`journal`]: the SQLite journal; the only module that knows SQL.
//! - [`sandbox`]: the wasmtime engine configuration and compiled-code cache.
//! - [`engine`]: replay, the WIT host functions, resident instances, activities, timers.
//! - [`examples`]: the tutorial's example components, embedded, and their native activity.
//! - [`api`]: the HTTP API (and its Dapr-compatible paths); the only module that knows HTTP.
//! - [`cli`]: the subcommands; the only module that prints for people.

pub mod api;
pub mod cli;
pub mod engine;
pub mod examples;
pub mod journal;
pub mod metrics;
pub mod model;
pub mod sandbox;
pub mod traces;

pub use engine::{
    ActivityContext, Deployment, Engine, EngineConfig, EngineError, ReusePolicy, StartOptions,
};
pub use model::{ErrorInfo, InstanceId, RuntimeStatus, Timestamp, VirtualClock};
