//! A deterministic simulation of the engine, in the manner of FoundationDB's and
//! TigerBeetle's simulators: one seed chooses a random schedule of operations — starts,
//! raised events, terminate, suspend, resume, purge, a start that replaces an instance
//! with the same id, evictions, injected storage faults, a deploy with migration, clock
//! jumps and **crashes** (the journal writer's queue is abandoned, the
//! runtime with every task of the engine dropped mid-flight, and a new engine opened on
//! the same file) — over a mix of real workflows on the virtual clock. After every
//! operation the engine is checked against a reference model of what was acknowledged:
//!
//! - every acknowledged start exists (until an acknowledged purge);
//! - a terminal status never changes; no activity starts for an instance after its
//!   termination committed, or after it was seen to end;
//! - an instance started for later stays PENDING, with no request journaled, until its
//!   start time;
//! - the tenant's live-instance counter equals the live instances;
//! - per generation, the journal's request positions are contiguous and no activity is
//!   completed twice;
//! - in the end, every instance not terminated completes with the reference output, which
//!   consumes every acknowledged event exactly once (carried across continue-as-new).
//!
//! The engine runs on a single-threaded runtime driven by the simulation, so a seed
//! decides the interleaving of the engine's tasks; the journal writer and the epoch ticker
//! are real threads, so a seed reproduces its schedule, and nearly always its failure.
//! A failing seed prints the command that runs it again. `cargo test` runs a fixed set of
//! seeds; `just sim N` runs a campaign of N.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use steadfast::model::{Clock, ErrorInfo, Event, Tenant};
use steadfast::{
    Engine, EngineConfig, InstanceId, RuntimeStatus, StartOptions, VirtualClock, examples,
};
use steadfast_tests::{Rng, START, TESTING_V1_WASM, TESTING_V2_WASM};

/// Seeds `cargo test` runs, and operations per seed.
const SEEDS: u64 = 100;
const OPS: usize = 120;

#[test]
fn the_engine_keeps_its_promises_under_random_schedules_and_crashes() {
    let seeds: Vec<u64> = match std::env::var("STEADFAST_SIM_SEED") {
        Ok(seed) => vec![parse_seed(&seed)],
        Err(_) => {
            let count = std::env::var("STEADFAST_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(SEEDS);
            let first = std::env::var("STEADFAST_SIM_FIRST")
                .ok()
                .map(|s| parse_seed(&s))
                .unwrap_or(1);
            (first..first + count).collect()
        }
    };
    let ops = std::env::var("STEADFAST_SIM_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(OPS);
    let template = tempfile::tempdir().unwrap();
    let compiled = warm_code_cache(template.path());
    let mut totals = Totals::default();
    for seed in &seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Sim::new(*seed, ops, &compiled).run()
        }));
        match outcome {
            Ok(stats) => totals.add(&stats),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "seed {seed} violated an invariant: {message}\n\
                     reproduce with: STEADFAST_SIM_SEED={seed} cargo test -p steadfast-tests \
                     --test simulation -- --nocapture"
                );
            }
        }
    }
    println!(
        "simulated {} seeds, {} operations: {} crashes, {} instances, {} activity executions \
         ({} repeated after a crash), {} events acknowledged; no invariant violated",
        seeds.len(),
        totals.ops,
        totals.crashes,
        totals.instances,
        totals.executions,
        totals.repeats,
        totals.events
    );
}

fn parse_seed(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("not a seed: {s}"))
}

/// Compiles the components once, into a cache every seed's data directory starts with.
fn warm_code_cache(dir: &Path) -> PathBuf {
    let runtime = current_thread();
    runtime.block_on(async {
        let clock = VirtualClock::new(START);
        let mut config = EngineConfig::new(dir).with_clock(Arc::new(clock));
        if let Some(journal) = steadfast_tests::postgres::backend_for(dir) {
            config.journal = journal;
        }
        let engine = Engine::open(config).await.unwrap();
        examples::install(&engine).await.unwrap();
        engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
        engine.deploy(TESTING_V2_WASM.to_vec()).await.unwrap();
        engine.shutdown().await;
    });
    dir.join("compiled")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[derive(Default)]
struct Totals {
    ops: usize,
    crashes: usize,
    instances: usize,
    executions: u64,
    repeats: u64,
    events: usize,
}

impl Totals {
    fn add(&mut self, s: &Totals) {
        self.ops += s.ops;
        self.crashes += s.crashes;
        self.instances += s.instances;
        self.executions += s.executions;
        self.repeats += s.repeats;
        self.events += s.events;
    }
}

/// What the native activities saw: every execution, with the moment it happened in.
#[derive(Default)]
struct Effects {
    /// The simulation's moment: it moves on before every operation and right after each
    /// acknowledged termination.
    moment: AtomicU64,
    /// (instance, activity, moment) of every execution.
    executions: Mutex<Vec<(String, String, u64)>>,
    /// (instance, activity, input, attempt) of every execution: the same call seen twice
    /// was run again after a crash.
    calls: Mutex<Vec<String>>,
}

impl Effects {
    fn tick(&self) -> u64 {
        self.moment.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The kinds of workflow the simulation starts, and what each must end with.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Saga { fail: bool },
    Approval,
    Collector,
    FanOut(Vec<u64>),
    Parent,
    Flaky,
    Counter(u64),
    Looper(u64),
    Changing,
}

/// The reference model's view of one instance.
#[derive(Debug)]
struct Expected {
    kind: Kind,
    started_at: u64,
    /// Acknowledged events: (name, payload, clock time).
    events: Vec<(String, Value, u64)>,
    /// Events acknowledged for its child (`wait_go`), for a parent.
    child_events: Vec<Value>,
    /// The terminal status once seen, which must never change.
    terminal: Option<RuntimeStatus>,
    /// The moment right after its termination was acknowledged.
    terminated_in: Option<u64>,
    /// The moment its terminal status was first seen.
    ended_at: Option<u64>,
    /// When it was started for, if later than its start call.
    start_at: Option<u64>,
    purged: bool,
}

struct Sim {
    seed: u64,
    ops: usize,
    rng: Rng,
    dir: tempfile::TempDir,
    clock: VirtualClock,
    runtime: Option<tokio::runtime::Runtime>,
    engine: Option<Engine>,
    effects: Arc<Effects>,
    model: BTreeMap<String, Expected>,
    next_id: u64,
    next_item: u64,
    migrated: bool,
    stats: Totals,
    /// The last operations, for the failure message.
    trail: Vec<String>,
}

impl Sim {
    fn new(seed: u64, ops: usize, compiled: &Path) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(compiled, &dir.path().join("compiled"));
        let mut sim = Sim {
            seed,
            ops,
            rng: Rng(seed),
            dir,
            clock: VirtualClock::new(START),
            runtime: None,
            engine: None,
            effects: Arc::default(),
            model: BTreeMap::new(),
            next_id: 0,
            next_item: 0,
            migrated: false,
            stats: Totals::default(),
            trail: Vec::new(),
        };
        sim.open();
        let engine = sim.engine();
        sim.block_on(async move {
            examples::install(&engine).await.unwrap();
            engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
        });
        sim
    }

    fn engine(&self) -> Engine {
        self.engine.clone().expect("engine open")
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.as_ref().expect("runtime").block_on(f)
    }

    fn config(&self) -> EngineConfig {
        let mut config = EngineConfig::new(self.dir.path())
            .with_clock(Arc::new(self.clock.clone()))
            .with_max_resident(4);
        if let Some(journal) = steadfast_tests::postgres::backend_for(self.dir.path()) {
            config.journal = journal;
        }
        config.limits.max_history_per_generation = 40;
        let effects = &self.effects;
        let record = |effects: &Arc<Effects>, ctx: &steadfast::ActivityContext, input: &Value| {
            let op = effects.moment.load(Ordering::SeqCst);
            effects.executions.lock().unwrap().push((
                ctx.instance.to_string(),
                ctx.activity.clone(),
                op,
            ));
            effects.calls.lock().unwrap().push(format!(
                "{} {} {input} {}",
                ctx.instance, ctx.activity, ctx.attempt
            ));
        };
        let e = Arc::clone(effects);
        config = config.with_activity("double", move |ctx, input| {
            record(&e, &ctx, &input);
            async move { Ok(json!(input.as_u64().unwrap_or(0) * 2)) }
        });
        let e = Arc::clone(effects);
        config = config.with_activity("flaky", move |ctx, input| {
            record(&e, &ctx, &input);
            async move {
                if ctx.attempt < 2 {
                    Err(ErrorInfo::new("flaky", "the first attempt fails"))
                } else {
                    Ok(json!({ "attempt": ctx.attempt }))
                }
            }
        });
        for (name, answer) in [
            ("tick", json!(null)),
            ("step_a", json!("a")),
            ("step_b", json!("b")),
            ("step_c", json!("c")),
        ] {
            let e = Arc::clone(effects);
            config = config.with_activity(name, move |ctx, input| {
                record(&e, &ctx, &input);
                let answer = answer.clone();
                async move { Ok(answer) }
            });
        }
        config
    }

    fn open(&mut self) {
        let runtime = current_thread();
        let config = self.config();
        let engine = runtime
            .block_on(Engine::open(config))
            .unwrap_or_else(|e| self.fail(&format!("the engine does not open: {e}")));
        self.runtime = Some(runtime);
        self.engine = Some(engine);
    }

    /// The host dies: nothing queued for the journal is committed, every task stops
    /// where it is. Then a new host opens the same file.
    fn crash(&mut self) {
        let engine = self.engine.take().expect("engine");
        engine.crash();
        drop(engine);
        drop(self.runtime.take());
        self.stats.crashes += 1;
        self.open();
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "seed {}: {why}\nlast operations:\n  {}",
            self.seed,
            self.trail
                .iter()
                .rev()
                .take(25)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    }

    fn note(&mut self, what: String) {
        self.trail.push(what);
    }

    fn run(mut self) -> Totals {
        for op in 0..self.ops {
            self.effects.tick();
            self.step();
            self.stats.ops += 1;
            // Sometimes let everything finish, sometimes leave work in flight.
            let engine = self.engine();
            match self.rng.below(3) {
                0 => self.block_on(engine.settle()),
                1 => {
                    let n = self.rng.below(20);
                    self.block_on(async move {
                        for _ in 0..n {
                            tokio::task::yield_now().await;
                        }
                    })
                }
                _ => {}
            }
            self.check(op % 10 == 9);
        }
        self.effects.tick();
        self.finish();
        self.check(true);
        self.check_outputs();
        let calls = self.effects.calls.lock().unwrap();
        self.stats.executions = calls.len() as u64;
        let distinct: HashSet<&String> = calls.iter().collect();
        // At least once: a call whose result was not yet durable at a crash runs again.
        self.stats.repeats = (calls.len() - distinct.len()) as u64;
        self.stats.instances = self.model.len();
        drop(calls);
        self.stats
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=21 => self.start(),
            22..=46 => self.raise(),
            47..=55 => self.advance(),
            56..=59 => self.terminate(),
            60..=63 => self.suspend(),
            64..=69 => self.resume(),
            70..=72 => self.purge(),
            73..=78 => self.evict(),
            79..=83 => {
                self.note("crash".into());
                self.crash();
            }
            84 => self.deploy_v2(),
            85..=86 => self.replace(),
            87 => {
                let n = 1 + self.rng.below(2) as u32;
                self.note(format!("inject {n} storage faults"));
                self.engine().inject_journal_faults(n);
            }
            _ => {
                let engine = self.engine();
                self.note("settle".into());
                self.block_on(engine.settle());
            }
        }
    }

    fn start(&mut self) {
        self.next_id += 1;
        let local = format!("i{}", self.next_id);
        self.start_as(local, steadfast::ReusePolicy::Error);
    }

    /// Starts a new instance under the id of an existing one, which is terminated if it
    /// still runs and purged first.
    fn replace(&mut self) {
        let candidates: Vec<String> = self
            .model
            .iter()
            .filter(|(_, e)| !e.purged)
            .map(|(id, _)| id.clone())
            .collect();
        if let Some(local) = self.rng.pick(&candidates).cloned() {
            self.start_as(local, steadfast::ReusePolicy::TerminateExisting);
        }
    }

    fn start_as(&mut self, local: String, reuse: steadfast::ReusePolicy) {
        let (kind, workflow, input) = match self.rng.below(10) {
            0 | 1 => {
                let fail = self.rng.chance(50);
                let order = json!({
                    "task_id": local, "title": "t", "assignee": "alice@example.com",
                    "priority": "high", "simulate_dashboard_failure": fail,
                });
                (Kind::Saga { fail }, "task_processing_saga", order)
            }
            2 => {
                let request = json!({"request_id": local, "requester": "bob", "amount": 5000.0, "description": "x"});
                (Kind::Approval, "approval_workflow", request)
            }
            3 => (Kind::Collector, "collector", json!({"items": []})),
            4 => {
                let n = 1 + self.rng.below(4);
                let items: Vec<u64> = (0..n).map(|_| self.rng.below(100)).collect();
                (Kind::FanOut(items.clone()), "fan_out", json!(items))
            }
            5 => (
                Kind::Parent,
                "parent_of",
                json!({"workflow": "wait_go", "input": null}),
            ),
            6 => (Kind::Flaky, "flaky_retry", json!(null)),
            7 => {
                let limit = self.rng.below(4);
                (
                    Kind::Counter(limit),
                    "counter",
                    json!({"n": 0, "limit": limit}),
                )
            }
            8 => {
                let limit = 5 + self.rng.below(20);
                (
                    Kind::Looper(limit),
                    "looper",
                    json!({"n": 0, "limit": limit}),
                )
            }
            _ => (Kind::Changing, "changing", json!(null)),
        };
        // Some approvals are started for an hour later: PENDING until then.
        let start_at = (kind == Kind::Approval && self.rng.chance(30))
            .then(|| self.clock.now().plus_ms(3_600_000));
        let engine = self.engine();
        let options = StartOptions {
            instance_id: Some(local.clone()),
            reuse,
            start_at,
            ..StartOptions::default()
        };
        let text = input.to_string();
        let started = self.block_on(async move { engine.start(workflow, &text, options).await });
        self.note(format!(
            "start {local} {workflow} ({reuse:?}) -> {}",
            started.is_ok()
        ));
        match started {
            Ok(_) => {
                self.model.insert(
                    local,
                    Expected {
                        kind,
                        started_at: self.clock.now().0,
                        events: Vec::new(),
                        child_events: Vec::new(),
                        terminal: None,
                        terminated_in: None,
                        ended_at: None,
                        start_at: start_at.map(|at| at.0),
                        purged: false,
                    },
                );
            }
            Err(e) => self.fail(&format!("start {workflow} was refused: {e}")),
        }
    }

    fn live(&self, pred: impl Fn(&Expected) -> bool) -> Vec<String> {
        self.model
            .iter()
            .filter(|(_, e)| !e.purged && e.terminated_in.is_none() && pred(e))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn raise(&mut self) {
        let candidates = self.live(|e| {
            matches!(
                e.kind,
                Kind::Approval | Kind::Collector | Kind::Parent | Kind::Changing
            )
        });
        let Some(local) = self.rng.pick(&candidates).cloned() else {
            return;
        };
        let kind = self.model[&local].kind.clone();
        let (target, name, payload) = match kind {
            Kind::Approval => {
                let approved = self.rng.chance(70);
                (
                    local.clone(),
                    "approval_received",
                    json!({"approved": approved, "approver": format!("m{}", self.rng.below(9)), "reason": "r"}),
                )
            }
            Kind::Collector => {
                self.next_item += 1;
                (local.clone(), "item", json!(self.next_item))
            }
            Kind::Parent => (
                format!("{local}:0:0"),
                "go",
                json!(format!("go {}", self.rng.below(1000))),
            ),
            _ => (local.clone(), "go", json!(1)),
        };
        let engine = self.engine();
        let id = InstanceId::new(&target).unwrap();
        let text = payload.to_string();
        let raised = self.block_on(async move { engine.raise_event(&id, name, &text).await });
        self.note(format!(
            "raise {target} {name} {payload} -> {}",
            raised.is_ok()
        ));
        if raised.is_ok() {
            self.stats.events += 1;
            let now = self.clock.now().0;
            let expected = self.model.get_mut(&local).unwrap();
            if target == local {
                expected.events.push((name.to_owned(), payload, now));
            } else {
                expected.child_events.push(payload);
            }
        }
    }

    fn advance(&mut self) {
        let by = *self
            .rng
            .pick(&[
                1_000u64,
                30_000,
                300_000,
                3_600_000,
                86_400_000,
                4 * 86_400_000,
            ])
            .unwrap();
        self.note(format!("advance {by} ms"));
        let engine = self.engine();
        self.block_on(async move {
            engine
                .advance_by(std::time::Duration::from_millis(by))
                .await
                .unwrap()
        });
    }

    fn terminate(&mut self) {
        let candidates = self.live(|_| true);
        let Some(local) = self.rng.pick(&candidates).cloned() else {
            return;
        };
        let engine = self.engine();
        let id = InstanceId::new(&local).unwrap();
        let done = self.block_on(async move { engine.terminate(&id, "simulated").await });
        self.note(format!(
            "terminate {local} -> {:?}",
            done.as_ref().map(|v| v.len())
        ));
        if let Ok(terminated) = done {
            // Anything that starts from now on started after the commit.
            let op = self.effects.tick();
            for instance in terminated {
                if let Some(e) = self.model.get_mut(instance.local()) {
                    e.terminated_in = Some(op);
                }
            }
        }
    }

    fn suspend(&mut self) {
        let candidates = self.live(|_| true);
        let Some(local) = self.rng.pick(&candidates).cloned() else {
            return;
        };
        let engine = self.engine();
        let id = InstanceId::new(&local).unwrap();
        let done = self.block_on(async move { engine.suspend(&id, "simulated").await });
        self.note(format!("suspend {local} -> {}", done.is_ok()));
    }

    fn resume(&mut self) {
        let candidates = self.live(|_| true);
        let Some(local) = self.rng.pick(&candidates).cloned() else {
            return;
        };
        let engine = self.engine();
        let id = InstanceId::new(&local).unwrap();
        let done = self.block_on(async move { engine.resume(&id, "simulated").await });
        self.note(format!("resume {local} -> {}", done.is_ok()));
    }

    fn purge(&mut self) {
        let candidates: Vec<String> = self
            .model
            .iter()
            .filter(|(_, e)| !e.purged && e.terminal.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let Some(local) = self.rng.pick(&candidates).cloned() else {
            return;
        };
        let engine = self.engine();
        let id = InstanceId::new(&local).unwrap();
        let done = self.block_on(async move { engine.purge(&id, false).await });
        self.note(format!("purge {local} -> {done:?}"));
        match done {
            Ok(_) => {
                self.model.get_mut(&local).unwrap().purged = true;
                // Its child goes with it.
                if let Some(child) = self.model.get_mut(&format!("{local}:0:0")) {
                    child.purged = true;
                }
            }
            Err(e) => self.fail(&format!("purging ended instance {local} failed: {e}")),
        }
    }

    fn evict(&mut self) {
        let candidates = self.live(|_| true);
        let Some(local) = self.rng.pick(&candidates).cloned() else {
            return;
        };
        let engine = self.engine();
        let id = InstanceId::new(&local).unwrap();
        let left = self.block_on(async move { engine.evict(&id).await });
        self.note(format!("evict {local} -> {left}"));
    }

    /// Deploys v2 of the testing component with migration: every instance whose journal
    /// replays on it moves; `changing` instances past their first step do not.
    fn deploy_v2(&mut self) {
        if self.migrated {
            return;
        }
        self.migrated = true;
        let engine = self.engine();
        let report = self.block_on(async move {
            engine
                .check_deploy(&Tenant::default_tenant(), TESTING_V2_WASM.to_vec(), true)
                .await
        });
        match report {
            Ok((_, checks)) => {
                let moved = checks.iter().filter(|c| c.migrated).count();
                self.note(format!(
                    "deploy v2 --migrate: {moved} of {} moved",
                    checks.len()
                ));
            }
            Err(e) => self.fail(&format!("deploy v2 failed: {e}")),
        }
    }

    /// Lets every instance finish: resumes the suspended, sends what each waits for, and
    /// runs the clock until no timer is left.
    fn finish(&mut self) {
        let engine = self.engine();
        // Past the pause after which an activation that hit a host fault comes back, so a
        // parent whose first step failed has started its child before it is sent its go.
        self.block_on(async move {
            engine
                .advance_by(std::time::Duration::from_secs(5))
                .await
                .unwrap()
        });
        let engine = self.engine();
        self.block_on(engine.settle());
        let live = self.live(|_| true);
        for local in &live {
            let id = InstanceId::new(local).unwrap();
            let engine = self.engine();
            let status = self.block_on(async { engine.status(&id) });
            if let Ok(record) = status
                && record.status == RuntimeStatus::Suspended
            {
                let engine = self.engine();
                self.block_on(async move { engine.resume(&id, "finishing").await.unwrap() });
            }
        }
        self.block_on(engine.settle());
        for local in live {
            let kind = self.model[&local].kind.clone();
            match kind {
                Kind::Collector => {
                    let engine = self.engine();
                    let id = InstanceId::new(&local).unwrap();
                    self.block_on(async move {
                        engine.raise_event(&id, "item", r#""stop""#).await.unwrap()
                    });
                    self.model.get_mut(&local).unwrap().events.push((
                        "item".into(),
                        json!("stop"),
                        0,
                    ));
                }
                Kind::Changing => {
                    let engine = self.engine();
                    let id = InstanceId::new(&local).unwrap();
                    // It may have had its go already, and finished.
                    let _ = self.block_on(async move { engine.raise_event(&id, "go", "1").await });
                }
                Kind::Parent => {
                    // The child exists once the parent's first step is journaled.
                    let engine = self.engine();
                    self.block_on(engine.settle());
                    let child = InstanceId::new(format!("{local}:0:0")).unwrap();
                    let engine = self.engine();
                    let raised = self.block_on(async move {
                        engine.raise_event(&child, "go", r#""final go""#).await
                    });
                    if raised.is_ok() {
                        self.model
                            .get_mut(&local)
                            .unwrap()
                            .child_events
                            .push(json!("final go"));
                    }
                }
                _ => {}
            }
        }
        let engine = self.engine();
        let idle = self.block_on(async move {
            engine.settle().await;
            // Bounded, so an instance that never stops asking for timers fails the seed
            // instead of hanging it.
            for _ in 0..10_000 {
                if engine.advance_to_next_timer().await.unwrap().is_none() {
                    return true;
                }
            }
            false
        });
        if !idle {
            self.fail("timers kept firing after 10,000 advances");
        }
    }

    /// The invariants that hold after every operation.
    fn check(&mut self, deep: bool) {
        let engine = self.engine();
        let tenant = Tenant::default_tenant();
        let (counter, counted) = engine.tenant_load(&tenant).unwrap();
        if counter != counted {
            self.fail(&format!(
                "the live-instance counter says {counter}, the journal holds {counted}"
            ));
        }
        let executions = self.effects.executions.lock().unwrap().clone();
        let locals: Vec<String> = self.model.keys().cloned().collect();
        for local in locals {
            let expected = &self.model[&local];
            if expected.purged {
                continue;
            }
            let id = InstanceId::new(&local).unwrap();
            let record = match engine.status(&id) {
                Ok(record) => record,
                Err(e) => self.fail(&format!("acknowledged start {local} is gone: {e}")),
            };
            if let Some(was) = expected.terminal
                && record.status != was
            {
                self.fail(&format!(
                    "{local} was {was} and is now {}: a terminal state changed",
                    record.status
                ));
            }
            if let Some(op) = expected.terminated_in {
                if record.status != RuntimeStatus::Terminated {
                    self.fail(&format!(
                        "{local} was terminated at moment {op} and is now {}",
                        record.status
                    ));
                }
                let prefix = local.clone();
                if let Some((_, activity, at)) = executions
                    .iter()
                    .find(|(i, _, at)| *i == prefix && *at >= op)
                {
                    self.fail(&format!(
                        "activity '{activity}' of {local} started at moment {at}, after its \
                         termination committed (moment {op})"
                    ));
                }
            }
            if let Some(ended) = expected.ended_at
                && let Some((_, activity, at)) = executions
                    .iter()
                    .find(|(i, _, at)| *i == local && *at > ended)
            {
                self.fail(&format!(
                    "activity '{activity}' of {local} started at moment {at}, after the \
                     instance was seen {} at moment {ended}",
                    record.status
                ));
            }
            if let Some(at) = expected.start_at
                && self.clock.now().0 < at
                && expected.terminated_in.is_none()
            {
                let requests = engine
                    .history(&id)
                    .unwrap()
                    .iter()
                    .filter(|e| e.event.command_seq().is_some())
                    .count();
                if record.status != RuntimeStatus::Pending || requests > 0 {
                    self.fail(&format!(
                        "{local} was started for {at} and is {} with {requests} requests \
                         journaled at {}",
                        record.status,
                        self.clock.now().0
                    ));
                }
            }
            if record.status.is_terminal() {
                let moment = self.effects.moment.load(Ordering::SeqCst);
                let entry = self.model.get_mut(&local).unwrap();
                entry.terminal = Some(record.status);
                entry.ended_at.get_or_insert(moment);
            }
            if deep {
                self.check_journal(&engine, &id);
            }
        }
    }

    /// Per generation: request positions 0, 1, 2, ... without gaps, and each activity
    /// completed at most once.
    fn check_journal(&self, engine: &Engine, id: &InstanceId) {
        let history = engine.history(id).unwrap();
        let mut next: HashMap<u32, u32> = HashMap::new();
        let mut completed: HashSet<(u32, u32)> = HashSet::new();
        for entry in &history {
            if let Some(seq) = entry.event.command_seq() {
                let expected = next.entry(entry.generation).or_default();
                if seq != *expected {
                    self.fail(&format!(
                        "{id}: generation {} has request {seq} where {expected} belongs",
                        entry.generation
                    ));
                }
                *expected += 1;
            }
            if let Event::ActivityCompleted { seq, .. } = entry.event
                && !completed.insert((entry.generation, seq))
            {
                self.fail(&format!(
                    "{id}: activity {seq} of generation {} is completed twice",
                    entry.generation
                ));
            }
        }
    }

    /// In the end every instance that was not terminated has completed with the output
    /// the reference model expects.
    fn check_outputs(&self) {
        let engine = self.engine();
        for (local, expected) in &self.model {
            if expected.purged || expected.terminated_in.is_some() {
                continue;
            }
            let id = InstanceId::new(local).unwrap();
            let record = engine.status(&id).unwrap();
            if record.status != RuntimeStatus::Completed {
                self.fail(&format!(
                    "{local} ({:?}) ended {} instead of COMPLETED: {:?}",
                    expected.kind, record.status, record.error
                ));
            }
            let output: Value = serde_json::from_str(record.output.as_deref().unwrap()).unwrap();
            if let Err(why) = expected.accepts(local, &output) {
                self.fail(&format!("{local}: {why}"));
            }
        }
    }
}

impl Expected {
    /// Whether `output` is what this instance must end with.
    fn accepts(&self, local: &str, output: &Value) -> Result<(), String> {
        const THREE_DAYS: u64 = 3 * 86_400_000;
        let want = match &self.kind {
            Kind::Saga { fail: false } => {
                json!({"status": "success", "task_id": local, "error": null})
            }
            Kind::Saga { fail: true } => json!({
                "status": "failed", "task_id": local, "error": "Dashboard service unavailable"
            }),
            Kind::Collector => {
                let items: Vec<Value> = self
                    .events
                    .iter()
                    .map(|(_, payload, _)| payload.clone())
                    .take_while(|payload| *payload != json!("stop"))
                    .collect();
                json!(items)
            }
            Kind::FanOut(items) => json!(items.iter().sum::<u64>() * 2),
            Kind::Parent => match self.child_events.first() {
                Some(first) => first.clone(),
                None => return Err("completed without its child hearing a go".into()),
            },
            Kind::Flaky => json!({"attempt": 2}),
            Kind::Counter(limit) => json!({"n": limit}),
            Kind::Looper(limit) => json!(limit),
            Kind::Changing => json!("b"),
            Kind::Approval => {
                return match output["status"].as_str() {
                    Some("timeout") => match self.events.first() {
                        Some((_, _, at)) if *at < self.started_at + THREE_DAYS => Err(format!(
                            "timed out although a decision was acknowledged at {at}, \
                             within three days of its start at {}",
                            self.started_at
                        )),
                        _ => Ok(()),
                    },
                    Some(status) => {
                        let Some((_, decision, _)) = self.events.first() else {
                            return Err(format!("{status} without any decision: {output}"));
                        };
                        let approved = decision["approved"].as_bool() == Some(true);
                        let right = if approved { "approved" } else { "rejected" };
                        if status != right || output["approver"] != decision["approver"] {
                            Err(format!(
                                "ended {output} but the first decision was {decision}"
                            ))
                        } else {
                            Ok(())
                        }
                    }
                    None => Err(format!("unexpected output {output}")),
                };
            }
        };
        if *output == want {
            Ok(())
        } else {
            Err(format!("output {output}, the model expects {want}"))
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
