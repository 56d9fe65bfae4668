//! The wasmtime side: how guests are compiled and what every guest runs under.
//!
//! - Determinism: NaN canonicalisation and deterministic relaxed SIMD are on, threads off,
//!   so a guest computes the same bits on every machine and every replay.
//! - Uploads are checked before they are compiled ([`precheck`]): world, imports and size
//!   bounds, so no compiler time is spent on what would be refused.
//! - Compiled code of accepted components is cached on disk by digest and engine version
//!   (files 0600 in a 0700 directory), so a restarted host deserialises components instead
//!   of compiling them again; a cache file is loaded only if its bytes match the SHA-256
//!   the journal recorded when it was written.
//!
//! **Invariant:** this module knows wasmtime but not SQLite, HTTP or the journal.

use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::model::Digest;

mod precheck;

use precheck::check_world;
pub use precheck::{CompileLimits, precheck, synthetic_component};

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
    #[error(
        "the component is too large to compile here: {0}; split it, or raise the server's [compile] limits"
    )]
    TooLarge(String),
    #[error(
        "the component implements neither the steadfast:workflow orchestrator world nor the \
         activity-worker world ({0}); build it with steadfast-sdk, or generate its bindings \
         from wit/steadfast.wit"
    )]
    NotOurWorld(String),
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// Core instances one component may create (its modules and the shims between them).
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Creates `dir` (and its parents) readable by this user only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `path` readable by this user only (also when it already existed with a wider
/// mode).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
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
            .max_memory_size(MAX_MEMORY_BYTES)
            // Per component, so one tenant's component cannot take many slots at once
            // (ours stay well under these).
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(4)
            .max_tables_per_component(8);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        // Deterministic CPU limits (fuel) and a wall-clock backstop (epochs).
        config.consume_fuel(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(e.to_string()))?;
        spawn_epoch_ticker(&engine);
        if let Some(dir) = cache_dir {
            create_private_dir(dir).map_err(|e| {
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

    /// Compiles `bytes` (checked first with [`precheck`]). Nothing is written to disk:
    /// [`Sandbox::store`] caches the result once the component is accepted.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, SandboxError> {
        Component::new(&self.engine, bytes).map_err(|e| SandboxError::Compile(format!("{e:#}")))
    }

    /// The cached compilation of `digest`, if there is one whose bytes have the SHA-256
    /// `expected` (recorded in the journal when it was stored). A file that does not
    /// match is removed and ignored: write access to the cache is not code execution.
    pub fn load_cached(&self, digest: &Digest, expected: &str) -> Option<Component> {
        let path = self.cache_path(digest)?;
        let compiled = std::fs::read(&path).ok()?;
        if Digest::of(&compiled).as_str() != expected {
            tracing::warn!(path = %path.display(), "compiled-code cache entry does not match its recorded digest; compiling again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: the bytes are exactly those this host serialised and recorded the
        // digest of (checked above), for an engine with the same compatibility hash (part
        // of the file name); wasmtime checks the header again.
        match unsafe { Component::deserialize(&self.engine, &compiled) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-code cache entry");
                None
            }
        }
    }

    /// Caches an accepted component's compiled code (mode 0600); returns the SHA-256 of
    /// what was written, for the journal to record, or `None` if nothing could be cached.
    pub fn store(&self, digest: &Digest, component: &Component) -> Option<String> {
        let path = self.cache_path(digest)?;
        let compiled = component
            .serialize()
            .map_err(|e| tracing::warn!(error = %e, "could not serialise compiled code"))
            .ok()?;
        // A name of its own, so two stores of one digest never write the same file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
        match write_private(&tmp, &compiled).and_then(|()| std::fs::rename(&tmp, &path)) {
            Ok(()) => Some(Digest::of(&compiled).as_str().to_owned()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not cache compiled code");
                let _ = std::fs::remove_file(&tmp);
                None
            }
        }
    }

    /// The cache file's name for `digest` (its key in the journal's record of digests).
    pub fn cache_key(&self, digest: &Digest) -> Option<String> {
        self.cache_path(digest)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Checks a compiled component's world and imports, as [`precheck`] did on its bytes
    /// (the compiled types are the authority).
    pub fn check_imports(&self, component: &Component) -> Result<(), SandboxError> {
        let exports = self.export_names(component);
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        check_world(&exports, &imports)
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
