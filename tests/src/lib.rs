//! Shared setup for the end-to-end tests: an engine on a real SQLite file in a temporary
//! directory, on a virtual clock, with real `.wasm` components deployed.

pub mod postgres;

use std::path::Path;
use std::sync::Arc;

use steadfast::model::Timestamp;
use steadfast::{Engine, EngineConfig, InstanceId, VirtualClock};

/// The `workflows/testing` component.
pub const TESTING_V1_WASM: &[u8] = include_bytes!(env!("STEADFAST_TESTING_V1_WASM"));
/// The same crate built with `--features v2`: `changing` makes an extra call.
pub const TESTING_V2_WASM: &[u8] = include_bytes!(env!("STEADFAST_TESTING_V2_WASM"));

/// Workflows that attack the host, one way each (`workflows/hostile`).
pub const HOSTILE_WASM: &[u8] = include_bytes!(env!("STEADFAST_HOSTILE_WASM"));
/// The hostile crate built with `effectful_names`: its `names` export calls the host.
pub const HOSTILE_NAMES_WASM: &[u8] = include_bytes!(env!("STEADFAST_HOSTILE_NAMES_WASM"));
/// An orchestrator built for wasm32-wasip2 that imports `wasi:filesystem`.
pub const HOSTILE_WASI_WASM: &[u8] = include_bytes!(env!("STEADFAST_HOSTILE_WASI_WASM"));
/// An activity component (`wasm32-wasip2`) reporting the environment and files it sees.
pub const WASI_PROBE_WASM: &[u8] = include_bytes!(env!("STEADFAST_WASI_PROBE_WASM"));
/// An activity component whose `names` sleeps for an hour in WASI.
pub const SLEEPY_NAMES_WASM: &[u8] = include_bytes!(env!("STEADFAST_SLEEPY_NAMES_WASM"));
/// The WASI probe with `raw_socket` (imports `wasi:sockets`).
pub const WASI_SOCKETS_WASM: &[u8] = include_bytes!(env!("STEADFAST_WASI_SOCKETS_WASM"));

/// 2026-11-25 09:00:00 UTC, where every test's virtual clock starts.
pub const START: Timestamp = Timestamp(1_795_597_200_000);

/// Opens an engine on `dir` with `clock`.
pub async fn open(dir: &Path, clock: &VirtualClock) -> Engine {
    Engine::open(config(dir, clock))
        .await
        .expect("engine opens")
}

/// The configuration [`open`] uses, to add native activities to before opening. The
/// journal is SQLite in `dir`, or PostgreSQL when the test binary runs the suites there
/// (see [`postgres`]).
pub fn config(dir: &Path, clock: &VirtualClock) -> EngineConfig {
    let mut config = EngineConfig::new(dir).with_clock(Arc::new(clock.clone()));
    if let Some(journal) = postgres::backend_for(dir) {
        config.journal = journal;
    }
    config
}

/// A virtual clock at [`START`].
pub fn clock() -> VirtualClock {
    VirtualClock::new(START)
}

/// A two-worker runtime, for tests that drop one to crash a host.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Starts the example approval of 5,000 (so it waits for a decision) as `request_id`,
/// at once or at `start_at`, and lets it settle.
pub async fn start_approval(
    engine: &Engine,
    request_id: &str,
    start_at: Option<Timestamp>,
) -> InstanceId {
    let request = serde_json::json!({
        "request_id": request_id,
        "requester": "bob",
        "amount": 5000.0,
        "description": "x",
    });
    let options = steadfast::StartOptions {
        instance_id: Some(request_id.into()),
        start_at,
        ..steadfast::StartOptions::default()
    };
    let id = engine
        .start("approval_workflow", &request.to_string(), options)
        .await
        .expect("the approval starts");
    engine.settle().await;
    id
}

pub fn id(s: &str) -> InstanceId {
    InstanceId::new(s).expect("valid id")
}

/// Parses the output of a finished instance.
pub fn output(engine: &Engine, id: &InstanceId) -> serde_json::Value {
    let record = engine.status(id).expect("status");
    let text = record
        .output
        .clone()
        .unwrap_or_else(|| panic!("{id} has no output: {record:?}"));
    serde_json::from_str(&text).expect("output is JSON")
}

/// What the host wrote to its `tracing` log on this thread while the guard lives: use it
/// from a current-thread runtime so the engine's tasks log on the thread that set it.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Starts capturing the log lines `filter` (an `EnvFilter` directive) lets through.
    pub fn start(filter: &str) -> (LogCapture, tracing::dispatcher::DefaultGuard) {
        use tracing_subscriber::util::SubscriberInitExt as _;
        let capture = LogCapture::default();
        let guard = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(filter)
            .with_writer({
                let capture = capture.clone();
                move || capture.clone()
            })
            .set_default();
        (capture, guard)
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log capture")).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log capture").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Seeded choices for the simulation and the crash tests (splitmix64): tiny, and the same
/// sequence for the same seed on every machine.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items`, or `None` if there are none.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }
}
