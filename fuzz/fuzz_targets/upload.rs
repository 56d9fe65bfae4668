//! Component uploads: any bytes through what `deploy` does before a component is
//! accepted — the wasm/component header checks, compilation, and the import policy.
//! Nothing may panic; every refusal must be an error value.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use steadfast::sandbox::{CompileLimits, Sandbox, precheck};

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(None, 16).expect("the sandbox engine builds"))
}

fuzz_target!(|bytes: &[u8]| {
    let sandbox = sandbox();
    if precheck(bytes, &CompileLimits::default()).is_err() {
        return;
    }
    if let Ok(component) = sandbox.compile(bytes) {
        let _ = sandbox.check_imports(&component);
        let _ = sandbox.export_names(&component);
    }
});
