//! # Steadfast test kit
//!
//! Test a workflow component from its own crate's `cargo test`, on the host: the kit
//! builds the crate for wasm, loads the component into a real Steadfast engine running
//! in-process on a temporary SQLite journal, and gives the test a **virtual clock**, so
//! three days of timers pass in microseconds.
//!
//! Activities are **fakes**: closures the test registers by name, which can fail, take
//! time on the virtual clock, and are recorded, so a test can assert which ran, in which
//! order, with which input. After a run, [`TestEnv::replay_check`] replays the instance's
//! journal on the current build and reports any nondeterminism.
//!
//! ```no_run
//! use std::time::Duration;
//! use steadfast_testkit::{TestEnv, json};
//!
//! # fn main() -> steadfast_testkit::Result<()> {
//! let env = TestEnv::new()?;
//! env.deploy(&steadfast_testkit::this_crate!()?)?;
//! env.activity("send_approval_request", |call| Ok(call.input.clone()));
//! let run = env.start("approval_workflow", json!({"request_id": "r1", "amount": 5000.0}))?;
//! env.advance(Duration::from_secs(3 * 24 * 3600))?; // no decision within three days
//! assert_eq!(env.output::<steadfast_testkit::Value>(&run)?["status"], "timeout");
//! env.replay_check(&run)?;
//! # Ok(()) }
//! ```
//!
//! "Write your own workflow" in the repository's README walks through a whole crate.
//!
//! A [`TestEnv`] runs its own async runtime and blocks on it: use it from plain `#[test]`
//! functions, not from inside `#[tokio::test]` or another runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use steadfast::engine::Compatibility;
use steadfast::{Engine, EngineConfig, StartOptions};

pub use serde_json::{Value, json};
pub use steadfast::model::Event;
pub use steadfast::{Deployment, ErrorInfo, InstanceId, RuntimeStatus, Timestamp};

/// What the kit's calls return: any failure, with what went wrong in words.
pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

/// Where every [`TestEnv`]'s clock starts: 2026-01-01 00:00:00 UTC.
pub const EPOCH: Timestamp = Timestamp(1_767_225_600_000);

/// Builds the crate the calling test belongs to for wasm and returns its component:
/// `steadfast_testkit::this_crate!()?`. Built once per test process.
#[macro_export]
macro_rules! this_crate {
    () => {
        $crate::build_crate(::std::env!("CARGO_MANIFEST_DIR"))
    };
}

/// Builds the guest crate in `dir` as `steadfast build` does (same target, same wrapping)
/// and returns the component's bytes. Each crate is built once per process.
pub fn build_crate(dir: impl AsRef<Path>) -> Result<Vec<u8>> {
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, Vec<u8>>>> = OnceLock::new();
    let dir = dir.as_ref().to_path_buf();
    // Held across the build: tests running in parallel wait for the one build.
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(bytes) = built.get(&dir) {
        return Ok(bytes.clone());
    }
    let guest = steadfast_guest_build::describe(&dir).map_err(|e| anyhow!(e))?;
    let bytes = guest.build(true).map_err(|e| anyhow!(e))?;
    built.insert(dir, bytes.clone());
    Ok(bytes)
}

/// One call of a fake activity, as the test registered it and the workflow made it.
/// Calls are recorded in the order their attempts started; activities a workflow runs at
/// once (a fan-out) start in the order the engine dispatched them.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub activity: String,
    pub input: Value,
    /// 1 for the first attempt; retries count up.
    pub attempt: u32,
    pub instance: InstanceId,
    /// The virtual time the attempt started.
    pub at: Timestamp,
}

/// An in-process Steadfast engine on a temporary journal and a virtual clock.
///
/// Every call that makes work (start, raise, advance, terminate) returns only once the
/// engine has nothing left to do at the current virtual time (every instance waits on a
/// timer, an event or nothing), so a test reads like a script.
pub struct TestEnv {
    engine: Option<Engine>,
    /// What panicked inside fakes, re-raised by the next call that waits.
    panics: Arc<Mutex<Vec<String>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    runtime: tokio::runtime::Runtime,
    // Dropped last: the journal lives here.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("journal", &self.journal_path())
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

impl TestEnv {
    /// A fresh engine with its clock at [`EPOCH`].
    pub fn new() -> Result<TestEnv> {
        TestEnv::starting_at(EPOCH)
    }

    /// A fresh engine with its clock at `start`.
    pub fn starting_at(start: Timestamp) -> Result<TestEnv> {
        let dir = tempfile::Builder::new()
            .prefix("steadfast-test-")
            .tempdir()
            .context("creating the test journal's directory")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the test runtime")?;
        let clock = steadfast::VirtualClock::new(start);
        let config = EngineConfig::new(dir.path()).with_clock(Arc::new(clock));
        let engine = runtime
            .block_on(Engine::open(config))
            .context("opening the test engine")?;
        Ok(TestEnv {
            engine: Some(engine),
            panics: Arc::default(),
            calls: Arc::default(),
            runtime,
            _dir: dir,
        })
    }

    fn engine(&self) -> &Engine {
        self.engine
            .as_ref()
            .expect("the engine lives as long as the TestEnv")
    }

    fn block_on<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    /// Waits until nothing can run at the current virtual time. Panics if a fake
    /// panicked meanwhile (an `assert!` inside a fake fails the test here).
    pub fn settle(&self) {
        self.block_on(self.engine().settle());
        self.raise_fake_panics();
    }

    fn raise_fake_panics(&self) {
        let panics = std::mem::take(&mut *self.panics.lock().unwrap_or_else(|p| p.into_inner()));
        if !panics.is_empty() {
            panic!("{}", panics.join("\n"));
        }
    }

    /// Deploys a component (workflows or activities), checked as a server checks it.
    pub fn deploy(&self, component: &[u8]) -> Result<Deployment> {
        self.block_on(self.engine().deploy(component.to_vec()))
            .context("deploying the component")
    }

    /// Registers a fake activity: `run` answers each call, right away on the virtual
    /// clock. Return `Err(ErrorInfo::new(kind, message))` to fail the attempt (the
    /// workflow's retry policy decides what happens next). A fake takes precedence over
    /// an activity component exporting the same name.
    pub fn activity<F, O>(&self, name: &str, run: F)
    where
        F: Fn(&Call) -> Result<O, ErrorInfo> + Send + Sync + 'static,
        O: Serialize,
    {
        self.fake(name, None, run);
    }

    /// Like [`TestEnv::activity`], for an activity that takes `duration` of virtual time:
    /// its answer arrives once the clock has moved that far past the attempt's start (so a
    /// timer racing it can win). `run` is called when the duration has passed; if the
    /// instance ends first, it is not called.
    pub fn activity_taking<F, O>(&self, name: &str, duration: Duration, run: F)
    where
        F: Fn(&Call) -> Result<O, ErrorInfo> + Send + Sync + 'static,
        O: Serialize,
    {
        self.fake(name, Some(duration), run);
    }

    fn fake<F, O>(&self, name: &str, duration: Option<Duration>, run: F)
    where
        F: Fn(&Call) -> Result<O, ErrorInfo> + Send + Sync + 'static,
        O: Serialize,
    {
        let run = Arc::new(run);
        let (calls, panics) = (Arc::clone(&self.calls), Arc::clone(&self.panics));
        self.engine().register_activity(name, move |ctx, input| {
            let (run, calls, panics) = (Arc::clone(&run), Arc::clone(&calls), Arc::clone(&panics));
            async move {
                let call = Call {
                    activity: ctx.activity.clone(),
                    input,
                    attempt: ctx.attempt,
                    instance: ctx.instance.clone(),
                    at: ctx.now().unwrap_or(Timestamp(0)),
                };
                calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(call.clone());
                if let Some(duration) = duration
                    && !ctx.sleep(duration).await
                {
                    return Err(ErrorInfo::new(
                        "cancelled",
                        "the instance ended while the activity took its time",
                    ));
                }
                let answered =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&call)));
                let output = match answered {
                    Ok(answer) => answer?,
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".to_owned());
                        panics
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("the fake '{}' panicked: {what}", call.activity));
                        return Err(ErrorInfo::new("fake_panicked", what));
                    }
                };
                serde_json::to_value(output).map_err(|e| {
                    ErrorInfo::new("bad_output", format!("the fake's output is not JSON: {e}"))
                })
            }
        });
    }

    /// Starts `workflow` with `input` under a generated id and runs it as far as it goes
    /// at the current virtual time.
    pub fn start(&self, workflow: &str, input: impl Serialize) -> Result<InstanceId> {
        self.start_with(workflow, StartOptions::default(), input)
    }

    /// Starts `workflow` as instance `id`.
    pub fn start_as(&self, workflow: &str, id: &str, input: impl Serialize) -> Result<InstanceId> {
        let options = StartOptions {
            instance_id: Some(id.to_owned()),
            ..StartOptions::default()
        };
        self.start_with(workflow, options, input)
    }

    /// Starts `workflow` with the engine's own [`StartOptions`] (id, later start time).
    pub fn start_with(
        &self,
        workflow: &str,
        options: StartOptions,
        input: impl Serialize,
    ) -> Result<InstanceId> {
        let input = serde_json::to_string(&input).context("the input is not JSON")?;
        let id = self
            .block_on(self.engine().start(workflow, &input, options))
            .with_context(|| format!("starting {workflow}"))?;
        self.settle();
        Ok(id)
    }

    /// Raises event `name` with `payload` to `id` and lets the instance react.
    pub fn raise(&self, id: &InstanceId, name: &str, payload: impl Serialize) -> Result<()> {
        let payload = serde_json::to_string(&payload).context("the payload is not JSON")?;
        self.block_on(self.engine().raise_event(id, name, &payload))
            .with_context(|| format!("raising '{name}' to {id}"))?;
        self.settle();
        Ok(())
    }

    /// Moves the virtual clock forward by `by`, firing every timer on the way, in order,
    /// and letting the workflows react to each.
    pub fn advance(&self, by: Duration) -> Result<()> {
        self.block_on(self.engine().advance_by(by))?;
        self.raise_fake_panics();
        Ok(())
    }

    /// Moves the clock to the next timer and fires it. `None` when no timer is pending.
    /// Besides the workflows' timers, that may be an activity's next attempt or the end
    /// of a fake's duration ([`TestEnv::activity_taking`]).
    pub fn advance_to_next_timer(&self) -> Result<Option<Timestamp>> {
        let next = self.block_on(self.engine().advance_to_next_timer())?;
        self.raise_fake_panics();
        Ok(next)
    }

    /// The virtual time.
    pub fn now(&self) -> Timestamp {
        self.engine().now()
    }

    /// The instance's status.
    pub fn status(&self, id: &InstanceId) -> Result<RuntimeStatus> {
        Ok(self.engine().status(id)?.status)
    }

    /// The output of a COMPLETED instance, deserialised. Any other status is an error
    /// that names the status (and the failure, for a FAILED one).
    pub fn output<T: DeserializeOwned>(&self, id: &InstanceId) -> Result<T> {
        let record = self.engine().status(id)?;
        match (record.status, record.output) {
            (RuntimeStatus::Completed, Some(output)) => serde_json::from_str(&output)
                .with_context(|| format!("{id}'s output {output} is not of the type asked for")),
            (status, _) => match record.error {
                Some(error) => bail!(
                    "{id} is {status}, not COMPLETED: {}: {}",
                    error.kind,
                    error.message
                ),
                None => bail!("{id} is {status}, not COMPLETED"),
            },
        }
    }

    /// The failure of a FAILED instance.
    pub fn failure(&self, id: &InstanceId) -> Result<ErrorInfo> {
        let record = self.engine().status(id)?;
        match (record.status, record.error) {
            (RuntimeStatus::Failed, Some(error)) => Ok(error),
            (status, _) => bail!("{id} is {status}, not FAILED"),
        }
    }

    /// What the workflow last set with `set-custom-status`.
    pub fn custom_status(&self, id: &InstanceId) -> Result<Option<Value>> {
        let record = self.engine().status(id)?;
        record
            .custom_status
            .map(|text| serde_json::from_str(&text).context("the custom status is not JSON"))
            .transpose()
    }

    /// The instance's journal, in order: its current generation (after a continue-as-new,
    /// the earlier generations are gone, which is what keeps an eternal workflow's history
    /// bounded), with the events it carried over.
    pub fn history(&self, id: &InstanceId) -> Result<Vec<Event>> {
        Ok(self
            .engine()
            .history(id)?
            .into_iter()
            .map(|stored| stored.event)
            .collect())
    }

    /// Every call the fakes answered, in the order the attempts started.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The names of the activities called, in the order the attempts started (a retried
    /// activity appears once per attempt).
    pub fn activities_run(&self) -> Vec<String> {
        self.calls().into_iter().map(|call| call.activity).collect()
    }

    /// Replays `id`'s journal on the build it ran on, with no side effects, and fails if
    /// the code asks for anything other than what the journal recorded, in the same order
    /// (or, for a finished run, ends differently).
    pub fn replay_check(&self, id: &InstanceId) -> Result<()> {
        self.replay_on(id, None)
    }

    /// Replays `id`'s journal on another build of its workflow. To check that a change is
    /// safe for instances already running, keep the old build's `.wasm` (e.g. in
    /// `tests/fixtures/`), deploy it, run the instance on it, then replay its journal on
    /// the new build (`this_crate!()`).
    pub fn replay_check_on(&self, id: &InstanceId, component: &[u8]) -> Result<()> {
        self.replay_on(id, Some(component.to_vec()))
    }

    fn replay_on(&self, id: &InstanceId, component: Option<Vec<u8>>) -> Result<()> {
        match self.block_on(self.engine().replay_check(id, component))? {
            Compatibility::Compatible => Ok(()),
            Compatibility::Incompatible(why) => bail!("{id} does not replay: {why}"),
        }
    }

    /// Terminates an instance.
    pub fn terminate(&self, id: &InstanceId, reason: &str) -> Result<()> {
        self.block_on(self.engine().terminate(id, reason))?;
        self.settle();
        Ok(())
    }

    /// The engine itself, for anything the kit does not wrap (async).
    pub fn engine_handle(&self) -> Engine {
        self.engine().clone()
    }

    /// The SQLite journal of this environment (deleted with it).
    pub fn journal_path(&self) -> PathBuf {
        self.engine().journal_path()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            self.runtime.block_on(engine.shutdown());
        }
    }
}
