//! The wasmtime side: how guests are compiled and what every guest runs under.
//!
//! - Determinism: NaN canonicalisation and deterministic relaxed SIMD are on, threads off,
//!   so a guest computes the same bits on every machine and every replay.
//! - Compiled code is cached on disk by digest and engine version, so a restarted host
//!   deserialises components instead of compiling them again.
//!
//! **Invariant:** this module knows wasmtime but not SQLite, HTTP or the journal.

use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::model::Digest;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the upload is not a WebAssembly component ({0}); build it for wasm32 and wrap it with \
         `wasm-tools component new`, or use the steadfast guest build"
    )]
    NotAComponent(String),
    #[error("the component failed to compile: {0}")]
    Compile(String),
    #[error("the component imports {}, which {role} may not use: {advice}", .imports.join(", "))]
    ForbiddenImports {
        /// "orchestrators" or "activity components".
        role: &'static str,
        imports: Vec<String>,
        advice: &'static str,
    },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// Largest linear memory a guest may grow to.
pub const MAX_MEMORY_BYTES: usize = 64 << 20;

/// The wasmtime engine plus the compiled-code cache.
pub struct Sandbox {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

impl Sandbox {
    /// An engine configured for Steadfast guests; compiled code is cached in `cache_dir`.
    /// `capacity` is how many component instances may be alive at once (resident
    /// instances, running activities and headroom): the pooling allocator reserves slots
    /// for them up front, so instantiating costs no `mmap` and dropping no `munmap`.
    pub fn new(cache_dir: Option<&Path>, capacity: u32) -> Result<Sandbox, SandboxError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.cranelift_nan_canonicalization(true);
        config.relaxed_simd_deterministic(true);
        // Threads stay off: the `threads` cargo feature of wasmtime is not enabled.
        // A small address-space reservation per linear memory (instead of the default
        // 4 GiB) so thousands of pool slots fit in the address space.
        config.memory_reservation(MAX_MEMORY_BYTES as u64);
        config.memory_guard_size(64 << 10);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(capacity)
            .total_core_instances(capacity.saturating_mul(4))
            .total_memories(capacity.saturating_mul(2))
            .total_tables(capacity.saturating_mul(4))
            .total_stacks(capacity)
            .max_memory_size(MAX_MEMORY_BYTES);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        // Deterministic CPU limits (fuel) and a wall-clock backstop (epochs).
        config.consume_fuel(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(e.to_string()))?;
        spawn_epoch_ticker(&engine);
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                SandboxError::Engine(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        Ok(Sandbox {
            engine,
            cache_dir: cache_dir.map(Path::to_path_buf),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes`, or loads the cached compilation of the same digest.
    pub fn compile(&self, digest: &Digest, bytes: &[u8]) -> Result<Component, SandboxError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(SandboxError::NotAComponent(
                "it does not start with the wasm magic number".into(),
            ));
        }
        // A core module has layer 0 in bytes 6..8; a component has layer 1.
        if bytes.len() >= 8 && bytes[6..8] == [0, 0] {
            return Err(SandboxError::NotAComponent(
                "it is a core wasm module".into(),
            ));
        }
        let cached = self.cache_path(digest);
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the file is one this process family wrote with `serialize` into our
            // own cache directory, named by the digest of the source and the engine's
            // compatibility hash; wasmtime also checks the header before using it.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-code cache entry")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
        if let Some(path) = &cached {
            match component.serialize() {
                Ok(compiled) => {
                    let tmp = path.with_extension("tmp");
                    if let Err(e) =
                        std::fs::write(&tmp, compiled).and_then(|()| std::fs::rename(&tmp, path))
                    {
                        tracing::warn!(path = %path.display(), error = %e, "could not cache compiled code");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not serialise compiled code"),
            }
        }
        Ok(component)
    }

    /// The names a component imports that are not in `allowed` (by prefix), e.g.
    /// `wasi:filesystem/types@0.2.0`.
    pub fn foreign_imports(&self, component: &Component, allowed: &[&str]) -> Vec<String> {
        component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .filter(|name| !allowed.iter().any(|prefix| name.starts_with(prefix)))
            .collect()
    }

    /// What each kind of guest may import. Orchestrators get no ambient authority at all:
    /// nothing but the Steadfast contract. Activity components get WASI without sockets: their
    /// way to the network is `wasi:http`, checked against the tenant's allow-list, and their
    /// filesystem and environment are empty unless the tenant's limits grant them.
    pub fn check_imports(&self, component: &Component) -> Result<(), SandboxError> {
        const ORCHESTRATOR: &[&str] = &["steadfast:workflow/"];
        const ACTIVITY: &[&str] = &[
            "steadfast:workflow/",
            "wasi:io/",
            "wasi:clocks/",
            "wasi:random/",
            "wasi:cli/",
            "wasi:filesystem/",
            "wasi:http/types",
            "wasi:http/outgoing-handler",
        ];
        let is_orchestrator = self
            .export_names(component)
            .iter()
            .any(|name| name.starts_with("steadfast:workflow/workflows"));
        if is_orchestrator {
            let imports = self.foreign_imports(component, ORCHESTRATOR);
            if !imports.is_empty() {
                return Err(SandboxError::ForbiddenImports {
                    role: "orchestrators",
                    imports,
                    advice: "they import only the steadfast:workflow interfaces (no files, sockets, \
                             clocks or environment), so that replay is deterministic; build for \
                             wasm32-unknown-unknown or remove the dependency that pulls them in",
                });
            }
        } else {
            let imports = self.foreign_imports(component, ACTIVITY);
            if !imports.is_empty() {
                return Err(SandboxError::ForbiddenImports {
                    role: "activity components",
                    imports,
                    advice: "they get WASI without sockets and reach the network only through \
                             wasi:http, checked against the tenant's http_allow list; use \
                             steadfast_sdk::http instead",
                });
            }
        }
        Ok(())
    }

    /// The names a component exports, e.g. `steadfast:workflow/workflows@0.1.0`.
    pub fn export_names(&self, component: &Component) -> Vec<String> {
        component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    fn cache_path(&self, digest: &Digest) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        Some(dir.join(format!(
            "{}-{:016x}.cwasm",
            digest.as_str(),
            hasher.finish()
        )))
    }
}

/// How often the epoch advances: the granularity of the wall-clock limit and of yielding.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let _ = std::thread::Builder::new()
        .name("steadfast-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
}
