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
