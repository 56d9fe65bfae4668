//! Host-side bindings generated from `wit/steadfast.wit`.

pub mod orchestrator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "orchestrator",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "steadfast:workflow/context.task": crate::engine::activation::TaskRep },
    });
}

pub mod activity {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "activity-worker",
        imports: { default: trappable },
        exports: { default: async },
    });
}

/// Both worlds' `log-level` as the host's `tracing` level.
macro_rules! log_level_into_tracing {
    ($world:ident) => {
        impl From<$world::steadfast::workflow::types::LogLevel> for tracing::Level {
            fn from(level: $world::steadfast::workflow::types::LogLevel) -> Self {
                use $world::steadfast::workflow::types::LogLevel as L;
                match level {
                    L::Trace => tracing::Level::TRACE,
                    L::Debug => tracing::Level::DEBUG,
                    L::Info => tracing::Level::INFO,
                    L::Warn => tracing::Level::WARN,
                    L::Error => tracing::Level::ERROR,
                }
            }
        }
    };
}

log_level_into_tracing!(orchestrator);
log_level_into_tracing!(activity);
