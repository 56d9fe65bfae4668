//! Kill -9 under load: the real `steadfast serve` binary, driven over HTTP by several client
//! threads, is SIGKILLed at random moments and restarted on the same data directory and
//! port, again and again. Afterwards nothing the server acknowledged is lost and nothing is
//! journaled twice: every start that got a 2xx exists, every `approval_received` that got a
//! 2xx is in its instance's journal and the approval completed as approved, every saga
//! ended with the demo's output, and each activity of each journal completed exactly once.
//! Requests the kill cut off were not acknowledged; the clients resend them with the same
//! instance id, as a real client would (a 409 then means the first one had landed).
//!
//! The kill moments and the clients' choices come from a seeded PRNG: the seed is printed,
//! `STEADFAST_TORTURE_SEED` replays it and `STEADFAST_TORTURE_ROUNDS` sets how many kills
//! (`just torture N`). Thread scheduling still varies from run to run, so a seed replays
//! the same plan, not the same interleaving.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use steadfast_tests::Rng;

/// The seed when `STEADFAST_TORTURE_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5EED_F00D_CAFE_0001;
/// Kills when `STEADFAST_TORTURE_ROUNDS` is not set: enough for `cargo test` in a debug build.
const DEFAULT_ROUNDS: u64 = 6;
/// Client threads sending requests.
const WORKERS: u64 = 3;
/// New instances the clients may start per round, all threads together.
const STARTS_PER_ROUND: u64 = 36;
/// How long one API request may take before the client gives up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// A component upload compiles it (Cranelift, in a debug build): allow for that.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(180);
/// The first start of the server.
const FIRST_UP_WITHIN: Duration = Duration::from_secs(60);
/// A restart: the killed process's journal lock is released when it dies, and the engine
/// itself waits up to 5 s for it; the rest is recovery on a busy 2-core machine.
const RESTART_WITHIN: Duration = Duration::from_secs(30);
/// After the last restart: everything started has finished by then (plus 20 ms an instance).
const FINISH_WITHIN: Duration = Duration::from_secs(120);
const APPROVAL_EVENT: &str = "approval_received";

#[test]
fn acknowledged_work_survives_sigkill_at_random_moments() {
    let seed = env_u64("STEADFAST_TORTURE_SEED", DEFAULT_SEED);
    let rounds = env_u64("STEADFAST_TORTURE_ROUNDS", DEFAULT_ROUNDS);
    let repro = format!(
        "reproduce with STEADFAST_TORTURE_SEED={seed} cargo test -p steadfast --test kill_restart"
    );
    println!("kill_restart: {rounds} kills; {repro}");
    let mut rng = Rng(seed);

    // `dir` is declared first so it outlives the server guard, which reads the log on panic.
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::new(dir.path());
    server.start(FIRST_UP_WITHIN);
    let shared = Arc::new(Shared {
        port: server.port,
        token: RwLock::new(server.token()),
        budget: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let _stop_workers = StopOnDrop(Arc::clone(&shared));
    deploy_examples(&shared);

    let workers: Vec<JoinHandle<Result<Ledger, String>>> = (0..WORKERS)
        .map(|index| {
            let shared = Arc::clone(&shared);
            let seed = rng.next_u64();
            thread::spawn(move || worker(&shared, index, seed))
        })
        .collect();

    let mut kills = 0;
    for _ in 0..rounds {
        shared.budget.fetch_add(STARTS_PER_ROUND, Ordering::SeqCst);
        // Mostly somewhere in the traffic, sometimes right after the restart (mid-recovery).
        let up = if rng.below(4) == 0 {
            rng.below(100)
        } else {
            50 + rng.below(1200)
        };
        thread::sleep(Duration::from_millis(up)); // chooses the kill moment; asserts nothing
        server.kill();
        kills += 1;
        thread::sleep(Duration::from_millis(rng.below(300))); // clients meet a dead port
        server.start(RESTART_WITHIN);
        *shared.token.write().unwrap() = server.token();
        if workers.iter().any(JoinHandle::is_finished) {
            break; // a client met an answer that must not happen; it is reported below
        }
    }

    shared.stop.store(true, Ordering::SeqCst);
    let mut ledger = Ledger::default();
    for (index, handle) in workers.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(part)) => ledger.merge(part),
            Ok(Err(violation)) => panic!("client {index}: {violation}\n{repro}"),
            Err(_) => panic!("client {index} panicked (its message is above)\n{repro}"),
        }
    }
    let mid_run_events = ledger.approved.len();
    let cut_off = ledger.cut_off;

    // The last round ended with a restart. Resend what the kills left unanswered, then
    // approve every approval whose event was not acknowledged yet.
    let deadline = Instant::now() + FINISH_WITHIN;
    for (id, kind) in std::mem::take(&mut ledger.unanswered) {
        until_answered(
            deadline,
            &format!("resending the start of {id}"),
            &repro,
            || start(&shared, &id, kind, true),
        );
        ledger.acknowledge(id, kind);
    }
    for id in std::mem::take(&mut ledger.awaiting) {
        let resent = ledger.event_unanswered.contains(&id);
        until_answered(deadline, &format!("approving {id}"), &repro, || {
            approve(&shared, &id, resent)
        });
    }

    // Every acknowledged start exists, and every event acknowledged during the kills is in
    // its instance's journal (checked before waiting, so a lost event fails fast).
    for (id, kind) in &ledger.started {
        let reply = get(&shared, &format!("/v1/instances/{id}"), &repro);
        assert_eq!(
            reply.status,
            200,
            "instance {id} ({}) was acknowledged with a 2xx but after {kills} kills the server \
             answers: {}\n{repro}",
            kind.workflow(),
            reply.text
        );
    }
    for id in &ledger.approved {
        let history = history(&shared, id, &repro);
        assert!(
            history
                .iter()
                .any(|e| e["type"] == "event_raised" && e["name"] == APPROVAL_EVENT),
            "{APPROVAL_EVENT} for {id} was acknowledged with a 2xx during the kills but is \
             not in its journal: {history:#?}\n{repro}"
        );
    }

    // Everything finishes, with the demo's outputs.
    let count = u32::try_from(ledger.started.len()).unwrap_or(u32::MAX);
    let deadline = Instant::now() + FINISH_WITHIN + Duration::from_millis(20) * count;
    for (id, kind) in &ledger.started {
        let status = wait_finished(&shared, id, deadline, &repro);
        assert_eq!(
            status["runtime_status"],
            "COMPLETED",
            "{id} ({}) did not complete: {status:#}\n{repro}",
            kind.workflow()
        );
        assert_eq!(
            status["output"],
            kind.expected_output(id),
            "{id} ({}) completed with the wrong output\n{repro}",
            kind.workflow()
        );
    }

    // No step of any journal completed twice, and each completed the steps its path takes.
    for (id, kind) in &ledger.started {
        check_journal(id, *kind, &history(&shared, id, &repro), &repro);
    }

    println!(
        "kill_restart: {kills} kills, {} instances all correct ({mid_run_events} approvals \
         acknowledged between kills, {cut_off} requests left without an answer by the kills)",
        ledger.started.len()
    );
}

// ---------------------------------------------------------------------------------------
// What the clients send and what must come of it

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SagaSuccess,
    SagaFailure,
    Approval,
}

impl Kind {
    fn workflow(self) -> &'static str {
        match self {
            Kind::SagaSuccess | Kind::SagaFailure => "task_processing_saga",
            Kind::Approval => "approval_workflow",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Kind::SagaSuccess => "saga-ok",
            Kind::SagaFailure => "saga-fail",
            Kind::Approval => "approval",
        }
    }

    /// The demo's inputs, with the instance id as the task or request id so that each
    /// output names its own instance.
    fn input(self, id: &str) -> Value {
        match self {
            Kind::SagaSuccess | Kind::SagaFailure => json!({
                "task_id": id,
                "title": "Prepare quarterly report",
                "assignee": "alice@example.com",
                "priority": "high",
                "simulate_dashboard_failure": self == Kind::SagaFailure,
            }),
            Kind::Approval => json!({
                "request_id": id,
                "requester": "bob@company.com",
                "amount": 5000,
                "description": "Team offsite",
            }),
        }
    }

    /// What the demo prints for the same inputs.
    fn expected_output(self, id: &str) -> Value {
        match self {
            Kind::SagaSuccess => json!({"status": "success", "task_id": id, "error": null}),
            Kind::SagaFailure => json!({
                "status": "failed",
                "task_id": id,
                "error": "Dashboard service unavailable",
            }),
            Kind::Approval => json!({"status": "approved", "request_id": id, "approver": "m@x"}),
        }
    }

    /// The activities the workflow completes on its path, in the order it calls them.
    fn expected_activities(self) -> &'static [&'static str] {
        match self {
            Kind::SagaSuccess => &[
                "create_task_record",
                "reserve_assignee_capacity",
                "notify_assignee",
                "update_dashboard",
            ],
            Kind::SagaFailure => &[
                "create_task_record",
                "reserve_assignee_capacity",
                "notify_assignee",
                "update_dashboard",
                "send_cancellation_notice",
                "release_assignee_capacity",
                "delete_task_record",
            ],
            Kind::Approval => &[
                "send_approval_request",
                "execute_approved_action",
                "send_approval_confirmation",
            ],
        }
    }
}

/// `POST /v1/workflows/{name}/start`. `Ok(true)`: acknowledged; `Ok(false)`: no answer (the
/// server died), so the instance may or may not exist; `Err`: an answer that must not
/// happen. A resend may meet the instance its unanswered first attempt created (409).
fn start(shared: &Shared, id: &str, kind: Kind, resent: bool) -> Result<bool, String> {
    let body = json!({ "instance_id": id, "input": kind.input(id) });
    let path = format!("/v1/workflows/{}/start", kind.workflow());
    let Ok(reply) = shared.call("POST", &path, Some(&body)) else {
        return Ok(false);
    };
    match reply.status {
        201 if reply.body["instance_id"] == id => Ok(true),
        409 if resent && reply.error_code() == "instance_exists" => Ok(true),
        _ => Err(format!(
            "start of {id} ({}{}) answered HTTP {}: {}",
            kind.workflow(),
            if resent { ", resent" } else { "" },
            reply.status,
            reply.text
        )),
    }
}

/// `POST /v1/instances/{id}/events/approval_received`, to an instance whose start was
/// acknowledged. A resend may find the approval already finished by the unanswered first
/// attempt (409 `instance_not_running`); nothing else can finish it within the test.
fn approve(shared: &Shared, id: &str, resent: bool) -> Result<bool, String> {
    let decision = json!({"approved": true, "approver": "m@x"});
    let path = format!("/v1/instances/{id}/events/{APPROVAL_EVENT}");
    let Ok(reply) = shared.call("POST", &path, Some(&decision)) else {
        return Ok(false);
    };
    match reply.status {
        202 => Ok(true),
        409 if resent && reply.error_code() == "instance_not_running" => Ok(true),
        _ => Err(format!(
            "{APPROVAL_EVENT} to the acknowledged instance {id}{} answered HTTP {}: {}",
            if resent { " (resent)" } else { "" },
            reply.status,
            reply.text
        )),
    }
}

/// What one client saw acknowledged, and what it is still owed an answer for.
#[derive(Debug, Default)]
struct Ledger {
    /// Starts acknowledged: 201, or 409 `instance_exists` on a resend.
    started: BTreeMap<String, Kind>,
    /// Starts sent that got no answer yet.
    unanswered: Vec<(String, Kind)>,
    /// Acknowledged approvals whose `approval_received` is not acknowledged yet.
    awaiting: Vec<String>,
    /// Approvals whose `approval_received` was acknowledged between the kills.
    approved: BTreeSet<String>,
    /// Approvals whose `approval_received` was sent at least once without an answer.
    event_unanswered: BTreeSet<String>,
    /// Requests that got no answer.
    cut_off: u64,
}

impl Ledger {
    fn acknowledge(&mut self, id: String, kind: Kind) {
        if kind == Kind::Approval {
            self.awaiting.push(id.clone());
        }
        self.started.insert(id, kind);
    }

    fn merge(&mut self, other: Ledger) {
        self.started.extend(other.started);
        self.unanswered.extend(other.unanswered);
        self.awaiting.extend(other.awaiting);
        self.approved.extend(other.approved);
        self.event_unanswered.extend(other.event_unanswered);
        self.cut_off += other.cut_off;
    }
}

/// One client thread: resends its unanswered start first, otherwise sometimes approves one
/// of its waiting approvals, otherwise starts a new instance while the round's budget lasts.
/// Instance ids are `w{index}-...`, so the threads never share one.
fn worker(shared: &Shared, index: u64, seed: u64) -> Result<Ledger, String> {
    let mut rng = Rng(seed);
    let mut ledger = Ledger::default();
    let mut made = 0u32;
    while !shared.stop.load(Ordering::SeqCst) {
        let answered = if let Some((id, kind)) = ledger.unanswered.last().cloned() {
            let acked = start(shared, &id, kind, true)?;
            if acked {
                ledger.unanswered.pop();
                ledger.acknowledge(id, kind);
            }
            acked
        } else if !ledger.awaiting.is_empty() && rng.below(3) == 0 {
            let at = rng.below(ledger.awaiting.len() as u64) as usize;
            let id = ledger.awaiting[at].clone();
            let acked = approve(shared, &id, ledger.event_unanswered.contains(&id))?;
            if acked {
                ledger.awaiting.swap_remove(at);
                ledger.approved.insert(id);
            } else {
                ledger.event_unanswered.insert(id);
            }
            acked
        } else if shared.take_budget() {
            let kind = match rng.below(3) {
                0 => Kind::SagaSuccess,
                1 => Kind::SagaFailure,
                _ => Kind::Approval,
            };
            made += 1;
            let id = format!("w{index}-{}-{made:04}", kind.tag());
            let acked = start(shared, &id, kind, false)?;
            if acked {
                ledger.acknowledge(id, kind);
            } else {
                ledger.unanswered.push((id, kind));
            }
            acked
        } else {
            thread::sleep(Duration::from_millis(20)); // nothing to do until the next round
            continue;
        };
        if !answered {
            ledger.cut_off += 1;
        }
        // Pacing, so that a round's starts spread over the time before the kill.
        let pause = if answered { rng.below(25) } else { 25 };
        thread::sleep(Duration::from_millis(pause));
    }
    Ok(ledger)
}

/// Repeats `send` until it is answered; the server is up, so only a slow restart delays it.
fn until_answered(
    deadline: Instant,
    what: &str,
    repro: &str,
    mut send: impl FnMut() -> Result<bool, String>,
) {
    loop {
        match send() {
            Ok(true) => return,
            Ok(false) => assert!(
                Instant::now() < deadline,
                "{what}: no answer from the restarted server\n{repro}"
            ),
            Err(violation) => panic!("{what}: {violation}\n{repro}"),
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A GET of the checks, which obeys the token's rate limit as any client must: after
/// many kills there is much to check, faster than `requests_per_second` allows.
fn get(shared: &Shared, path: &str, repro: &str) -> Reply {
    for _ in 0..200 {
        let reply = shared.call("GET", path, None).unwrap_or_else(|e| {
            panic!("GET {path}: no answer from the restarted server: {e}\n{repro}")
        });
        if reply.status != 429 {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("GET {path}: still rate-limited after 10 s\n{repro}")
}

/// `GET /v1/instances/{id}/history`: the journal's entries, oldest first.
fn history(shared: &Shared, id: &str, repro: &str) -> Vec<Value> {
    let reply = get(shared, &format!("/v1/instances/{id}/history"), repro);
    assert_eq!(
        reply.status, 200,
        "history of {id}: {}\n{repro}",
        reply.text
    );
    match &reply.body["history"] {
        Value::Array(entries) => entries.clone(),
        _ => panic!(
            "history of {id} has no `history` array: {}\n{repro}",
            reply.text
        ),
    }
}

/// Long-polls `GET /v1/instances/{id}/wait` until the instance is terminal or `deadline`.
fn wait_finished(shared: &Shared, id: &str, deadline: Instant, repro: &str) -> Value {
    loop {
        let poll = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(10));
        let path = format!("/v1/instances/{id}/wait?timeout_ms={}", poll.as_millis());
        let reply = get(shared, &path, repro);
        assert_eq!(
            reply.status, 200,
            "waiting for {id}: {}\n{repro}",
            reply.text
        );
        let status = reply.body["runtime_status"].as_str().unwrap_or_default();
        if matches!(status, "COMPLETED" | "FAILED" | "TERMINATED" | "STALLED") {
            return reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "{id} is still {status} at the deadline after the last restart: {:#}\n{repro}",
            reply.body
        );
    }
}

/// Each activity of the journal is scheduled once and completed once per generation, and
/// the completed ones are exactly the steps the workflow's path takes.
fn check_journal(id: &str, kind: Kind, history: &[Value], repro: &str) {
    let key = |e: &Value| (e["generation"].as_u64(), e["seq"].as_u64());
    let mut scheduled = BTreeMap::new();
    let mut completed: BTreeMap<_, u32> = BTreeMap::new();
    for entry in history {
        match entry["type"].as_str() {
            Some("activity_scheduled") => {
                let name = entry["name"].as_str().unwrap_or("?").to_owned();
                let again = scheduled.insert(key(entry), name);
                assert!(
                    again.is_none(),
                    "{id}: the activity at (generation, seq) {:?} was scheduled twice in \
                     its journal: {history:#?}\n{repro}",
                    key(entry)
                );
            }
            Some("activity_completed") => *completed.entry(key(entry)).or_default() += 1,
            _ => {}
        }
    }
    for (at, times) in &completed {
        assert_eq!(
            *times,
            1,
            "{id}: the activity at (generation, seq) {at:?} ({}) completed {times} times in \
             its journal: {history:#?}\n{repro}",
            scheduled.get(at).map_or("never scheduled", String::as_str)
        );
    }
    assert_eq!(
        completed.keys().collect::<Vec<_>>(),
        scheduled.keys().collect::<Vec<_>>(),
        "{id}: the activities scheduled and those completed differ: {history:#?}\n{repro}"
    );
    let steps: Vec<&str> = scheduled.values().map(String::as_str).collect();
    assert_eq!(
        steps,
        kind.expected_activities(),
        "{id} ({}): the steps it completed, in order\n{repro}",
        kind.workflow()
    );
}

/// The example orchestrators and their activities, uploaded as a user deploys them; the
/// journal keeps them across every restart.
fn deploy_examples(shared: &Shared) {
    let token = shared.token.read().unwrap().clone();
    for (what, wasm) in [
        ("workflows", steadfast::examples::WORKFLOWS_WASM),
        ("activities", steadfast::examples::ACTIVITIES_WASM),
    ] {
        let reply = http(
            shared.port,
            &token,
            "POST",
            "/v1/components",
            "application/wasm",
            wasm,
            DEPLOY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("deploying the example {what}: {e}"));
        assert_eq!(
            reply.status, 201,
            "deploying the example {what}: {}",
            reply.text
        );
    }
}

// ---------------------------------------------------------------------------------------
// The server process

/// `steadfast serve` on a fixed loopback port and data directory; the child is SIGKILLed
/// when this is dropped, so a failing test leaves no server behind.
struct Server {
    port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Server {
    fn new(dir: &Path) -> Server {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        Server {
            port,
            data: dir.join("data"),
            log: dir.join("server.log"),
            child: None,
            starts: 0,
        }
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "===== kill_restart: start #{} =====", self.starts).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the steadfast binary: {e}"));
        self.child = Some(child);
    }

    /// Starts the server and waits until `/healthz` answers. A process that exits at once
    /// (the port or the journal lock of the killed one not free yet) is started again.
    fn start(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        self.spawn();
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("the server was just spawned")
                .try_wait()
                .unwrap();
            if let Some(exit) = exited {
                assert!(
                    Instant::now() < deadline,
                    "steadfast serve kept exiting ({exit}) for {within:?}; its log ends:\n{}",
                    self.log_tail()
                );
                thread::sleep(Duration::from_millis(100));
                self.spawn();
                continue;
            }
            if let Ok(reply) = http(
                self.port,
                "",
                "GET",
                "/healthz",
                "text/plain",
                b"",
                Duration::from_secs(2),
            ) && reply.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "steadfast serve did not answer /healthz within {within:?}; its log ends:\n{}",
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (`Child::kill` on Unix): no signal handler, no flush, no graceful anything.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        if let Some(exit) = child.try_wait().unwrap() {
            panic!(
                "steadfast serve died on its own ({exit}) before it was killed; its log ends:\n{}",
                self.log_tail()
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The admin token `serve` wrote on its first start (it keeps it on later ones).
    fn token(&self) -> String {
        let path = self.data.join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("--- the server's log ends ---\n{}", self.log_tail());
        }
    }
}

/// What the main thread and the clients share.
struct Shared {
    port: u16,
    token: RwLock<String>,
    /// New instances the clients may still start; the main thread adds some each round.
    budget: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Reply> {
        let token = self.token.read().unwrap().clone();
        let body = body.map(Value::to_string).unwrap_or_default();
        http(
            self.port,
            &token,
            method,
            path,
            "application/json",
            body.as_bytes(),
            IO_TIMEOUT,
        )
    }

    fn take_budget(&self) -> bool {
        self.budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }
}

/// Stops the client threads however the test ends.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one request per connection, `Connection: close`

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    text: String,
}

impl Reply {
    /// `error.code` of an error answer (`{"error": {"code": ..., "message": ...}}`).
    fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// Sends one request and reads the whole answer. Anything short of a complete response
/// (refused, reset, cut off, timed out) is an error: the request was not acknowledged.
fn http(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw).map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidData, why))
}

fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete response head")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| format!("response head: {e}"))?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|e| format!("Content-Length {value:?}: {e}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        if rest.len() != length {
            return Err(format!("body cut off: {} of {length} bytes", rest.len()));
        }
        rest.to_vec()
    } else {
        rest.to_vec()
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, body, text })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("body cut off in a chunk size")?;
        let size = std::str::from_utf8(&rest[..end]).map_err(|e| format!("chunk size: {e}"))?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|e| format!("chunk size {size:?}: {e}"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("body cut off in a chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// Seeded choices (`steadfast_tests::Rng`)

/// A number from the environment (decimal, or hex with `0x`), or `default` when unset.
fn env_u64(name: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    let digits = text.trim().replace('_', "");
    let parsed = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse::<u64>(),
    };
    parsed.unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}"))
}
