//! Several `steadfast serve` processes on one PostgreSQL journal, started as a user
//! starts them, on a private PostgreSQL server (see `support::postgres`).
//!
//! One run, in phases, each checked in the journal itself:
//! 1. three hosts; the tutorial's sagas and approvals started through all three and each
//!    approval approved through another host than the one that started it: every one
//!    completes once, with the demo's output, and no activity completes twice;
//! 2. a fourth host joins and takes a share of the partitions;
//! 3. SIGKILL of a host with work in flight: its partitions are taken by the others and its
//!    instances finish; the failover time is printed;
//! 4. a host frozen with SIGSTOP past its lease, then resumed: the others took its
//!    partitions and it writes not one row after that.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::postgres::Postgres;

/// Instances in phase 1, half sagas and half approvals (`STEADFAST_PG_INSTANCES`).
const DEFAULT_INSTANCES: usize = 1_000;
/// A short lease, so the failover phases take seconds.
const LEASE_MS: u64 = 3_000;
/// Requests in flight at once from the test.
const CONCURRENCY: usize = 24;

struct Host {
    name: String,
    url: String,
    process: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Host {
    fn start(name: &str, journal: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let port = support::dev::free_port();
        let log = dir.path().join("host.log");
        let out = std::fs::File::create(&log).unwrap();
        let process = Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--grpc-listen",
                "off",
                "--journal",
                journal,
                "--host-id",
                name,
                "--lease-ms",
                &LEASE_MS.to_string(),
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env(
                "RUST_LOG",
                "warn,steadfast::journal::leases=info,steadfast::engine::partitions=info",
            )
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let host = Host {
            name: name.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            process,
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{name} did not start: {}",
                host.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        host
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.process.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {}", self.name);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    token: String,
}

impl Api {
    async fn call(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"));
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn saga_input(id: &str) -> Value {
    json!({"task_id": id, "title": "Prepare quarterly report", "assignee": "alice@example.com",
           "priority": "high", "simulate_dashboard_failure": false})
}

fn approval_input(id: &str) -> Value {
    json!({"request_id": id, "requester": "bob@company.com", "amount": 5000,
           "description": "Team offsite"})
}

fn expected(id: &str) -> Value {
    if id.starts_with("saga") {
        json!({"status": "success", "task_id": id, "error": null})
    } else {
        json!({"status": "approved", "request_id": id, "approver": "m@x"})
    }
}

/// Starts `ids` (sagas and approvals by prefix) through the hosts in turn.
async fn start_all(api: &Api, hosts: &[String], ids: &[String]) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        if tasks.len() >= CONCURRENCY {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (api, host, id) = (api.clone(), hosts[i % hosts.len()].clone(), id.clone());
        tasks.spawn(async move {
            let (workflow, input) = if id.starts_with("saga") {
                ("task_processing_saga", saga_input(&id))
            } else {
                ("approval_workflow", approval_input(&id))
            };
            let (status, body) = api
                .call(
                    &host,
                    "POST",
                    &format!("/v1/workflows/{workflow}/start"),
                    Some(json!({"instance_id": id, "input": input})),
                )
                .await;
            assert_eq!(status, 201, "start {id} on {host}: {body}");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Approves the approvals among `ids` through the host after the one that started them.
async fn approve_all(api: &Api, hosts: &[String], ids: &[String]) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        if !id.starts_with("approval") {
            continue;
        }
        if tasks.len() >= CONCURRENCY {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (api, host, id) = (
            api.clone(),
            hosts[(i + 1) % hosts.len()].clone(),
            id.clone(),
        );
        tasks.spawn(async move {
            let (status, body) = api
                .call(
                    &host,
                    "POST",
                    &format!("/v1/instances/{id}/events/approval_received"),
                    Some(json!({"approved": true, "approver": "m@x"})),
                )
                .await;
            if status != 202 && status != 200 {
                let (_, instance) = api
                    .call(&host, "GET", &format!("/v1/instances/{id}"), None)
                    .await;
                panic!("approve {id} on {host}: {status} {body}; the instance: {instance}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Waits until every instance of `ids` completed, asking the hosts in turn; checks outputs.
async fn wait_all(api: &Api, hosts: &[String], ids: &[String], within: Duration) -> Duration {
    let began = Instant::now();
    let mut left: BTreeSet<String> = ids.iter().cloned().collect();
    let mut turn = 0;
    while !left.is_empty() {
        assert!(
            began.elapsed() < within,
            "{} of {} instances not completed within {within:?}, e.g. {:?}",
            left.len(),
            ids.len(),
            left.iter().take(5).collect::<Vec<_>>()
        );
        let mut done = Vec::new();
        for id in left.iter().take(200) {
            turn += 1;
            let host = &hosts[turn % hosts.len()];
            let (status, body) = api
                .call(host, "GET", &format!("/v1/instances/{id}"), None)
                .await;
            assert_eq!(status, 200, "{id}: {body}");
            match body["runtime_status"].as_str() {
                Some("COMPLETED") => {
                    let output: Value = match &body["output"] {
                        Value::String(text) => serde_json::from_str(text).unwrap(),
                        other => other.clone(),
                    };
                    assert_eq!(output, expected(id), "{id}");
                    done.push(id.clone());
                }
                Some("RUNNING") | Some("PENDING") => {}
                other => panic!("{id} is {other:?}: {body}"),
            }
        }
        for id in &done {
            left.remove(id);
        }
        if done.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    began.elapsed()
}

/// Owners of the 64 partitions, by host.
fn owners(db: &mut postgres::Client) -> BTreeMap<String, usize> {
    let mut owners = BTreeMap::new();
    for row in db
        .query(
            "SELECT owner FROM partitions WHERE owner IS NOT NULL AND expires_at > now()",
            &[],
        )
        .unwrap()
    {
        *owners.entry(row.get::<_, String>(0)).or_default() += 1;
    }
    owners
}

/// No activity, timer or child result journaled twice, no instance ended twice.
fn check_exactly_once(db: &mut postgres::Client) {
    let twice: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT instance FROM history
               WHERE kind IN ('activity_completed', 'timer_fired', 'child_completed',
                              'workflow_completed', 'workflow_failed')
               GROUP BY instance, generation, kind, data::json->>'seq' HAVING count(*) > 1) AS twice",
            &[],
        )
        .unwrap()
        .get(0);
    if twice > 0 {
        let sample: Vec<String> = db
            .query(
                "SELECT instance, kind, CAST(data::json->>'seq' AS BIGINT), count(*) FROM history
                 WHERE kind IN ('activity_completed', 'timer_fired', 'child_completed',
                                'workflow_completed', 'workflow_failed')
                 GROUP BY instance, generation, kind, data::json->>'seq'
                 HAVING count(*) > 1 LIMIT 5",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:?} x{}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, Option<i64>>(2),
                    r.get::<_, i64>(3)
                )
            })
            .collect();
        panic!("{twice} steps journaled twice, e.g. {sample:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_share_one_postgres_journal_and_take_over_from_each_other() {
    let instances: usize = std::env::var("STEADFAST_PG_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_INSTANCES);
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.url.clone();
    let db_url = pg.url.clone();
    println!("journal: {url}");
    let db = move || postgres::Client::connect(&db_url, postgres::NoTls).unwrap();

    // Phase 1: three hosts, started one after another (the first creates the schema).
    let mut hosts = vec![Host::start("host-a", &url)];
    hosts.push(Host::start("host-b", &url));
    hosts.push(Host::start("host-c", &url));
    let api = Api {
        client: reqwest::Client::new(),
        token: hosts[0].admin_token(),
    };
    for (what, wasm) in [
        ("workflows", steadfast::examples::WORKFLOWS_WASM),
        ("activities", steadfast::examples::ACTIVITIES_WASM),
    ] {
        let response = api
            .client
            .post(format!("{}/v1/components", hosts[0].url))
            .bearer_auth(&api.token)
            .header("content-type", "application/wasm")
            .body(wasm.to_vec())
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            201,
            "deploying the example {what}"
        );
    }
    // The other hosts load what the first deployed from the journal.
    for host in &hosts {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, body) = api.call(&host.url, "GET", "/v1/workflows", None).await;
            if body.to_string().contains("approval_workflow") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never loaded the deployment",
                host.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let shares = tokio::task::spawn_blocking({
        let db = db.clone();
        move || wait_for_owners(&mut db(), 3)
    })
    .await
    .unwrap();
    println!("phase 1: partitions per host {shares:?}");

    let urls: Vec<String> = hosts.iter().map(|h| h.url.clone()).collect();
    let ids: Vec<String> = (0..instances)
        .map(|i| {
            if i % 2 == 0 {
                format!("saga-{i}")
            } else {
                format!("approval-{i}")
            }
        })
        .collect();
    let began = Instant::now();
    start_all(&api, &urls, &ids).await;
    approve_all(&api, &urls, &ids).await;
    wait_all(&api, &urls, &ids, Duration::from_secs(900)).await;
    println!(
        "phase 1: {instances} sagas and approvals through 3 hosts in {:?}",
        began.elapsed()
    );
    let (by_host, completed): (BTreeMap<String, i64>, i64) = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            let mut db = db();
            check_exactly_once(&mut db);
            let mut by_host = BTreeMap::new();
            for row in db
                .query(
                    "SELECT written_by, count(*) FROM history WHERE kind = 'workflow_completed'
                     GROUP BY written_by",
                    &[],
                )
                .unwrap()
            {
                by_host.insert(row.get::<_, String>(0), row.get::<_, i64>(1));
            }
            let completed = by_host.values().sum();
            (by_host, completed)
        }
    })
    .await
    .unwrap();
    assert_eq!(
        completed as usize, instances,
        "each instance completed once"
    );
    assert_eq!(
        by_host.len(),
        3,
        "all three hosts ran instances: {by_host:?}"
    );
    println!("phase 1: completions per host {by_host:?}");

    // Phase 2: a fourth host joins and takes a share.
    hosts.push(Host::start("host-d", &url));
    let shares = tokio::task::spawn_blocking({
        let db = db.clone();
        move || wait_for_owners(&mut db(), 4)
    })
    .await
    .unwrap();
    assert!(
        shares.get("host-d").copied().unwrap_or(0) >= 8,
        "{shares:?}"
    );
    println!("phase 2: after host-d joined {shares:?}");

    // Phase 3: SIGKILL host-b while approvals wait in every host's partitions and sagas
    // are being started; the approvals are approved through the survivors after the kill,
    // so those host-b ran finish only once its partitions are taken over.
    let urls: Vec<String> = hosts.iter().map(|h| h.url.clone()).collect();
    let waiting: Vec<String> = (0..120).map(|i| format!("approval-kill-{i}")).collect();
    start_all(&api, &urls, &waiting).await;
    let survivors: Vec<String> = [0, 2, 3].iter().map(|&i| hosts[i].url.clone()).collect();
    let racing: Vec<String> = (0..60).map(|i| format!("saga-kill-{i}")).collect();
    let starts = {
        let (api, survivors, racing) = (api.clone(), survivors.clone(), racing.clone());
        tokio::spawn(async move { start_all(&api, &survivors, &racing).await })
    };
    hosts[1].signal("KILL");
    let killed_at = Instant::now();
    starts.await.unwrap();
    approve_all(&api, &survivors, &waiting).await;
    let failover = tokio::task::spawn_blocking({
        let db = db.clone();
        move || wait_until_taken_from(&mut db(), "host-b")
    })
    .await
    .unwrap()
    .duration_since(killed_at);
    let mut both = waiting.clone();
    both.extend(racing.iter().cloned());
    wait_all(&api, &survivors, &both, Duration::from_secs(300)).await;
    let finished = killed_at.elapsed();
    let ran_on_b: i64 = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            db().query_one(
                "SELECT count(DISTINCT instance) FROM history
                 WHERE instance LIKE 'default/approval-kill-%' AND written_by = 'host-b'
                   AND kind = 'activity_completed'",
                &[],
            )
            .unwrap()
            .get(0)
        }
    })
    .await
    .unwrap();
    println!(
        "phase 3: host-b killed while running {ran_on_b} waiting approvals; its partitions taken over \
         in {failover:?} (lease {LEASE_MS} ms); all {} finished {finished:?} after the kill",
        both.len()
    );
    assert!(
        ran_on_b > 0,
        "host-b ran some of the approvals before it was killed"
    );
    assert!(
        failover < Duration::from_millis(LEASE_MS * 2 + 5_000),
        "{failover:?}"
    );

    // Phase 4: freeze host-c past its lease while approvals wait in its partitions and
    // sagas are being started, then let it go on: it must write nothing after.
    let awake: Vec<String> = [0, 3].iter().map(|&i| hosts[i].url.clone()).collect();
    let frozen: Vec<String> = (0..120).map(|i| format!("approval-freeze-{i}")).collect();
    start_all(&api, &survivors, &frozen).await;
    let racing: Vec<String> = (0..60).map(|i| format!("saga-freeze-{i}")).collect();
    let starts = {
        let (api, awake, racing) = (api.clone(), awake.clone(), racing.clone());
        tokio::spawn(async move { start_all(&api, &awake, &racing).await })
    };
    hosts[2].signal("STOP");
    starts.await.unwrap();
    approve_all(&api, &awake, &frozen).await;
    let taken: i64 = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            let mut db = db();
            wait_until_taken_from(&mut db, "host-c");
            db.query_one(
                "SELECT count(*) FROM history WHERE written_by = 'host-c'",
                &[],
            )
            .unwrap()
            .get(0)
        }
    })
    .await
    .unwrap();
    hosts[2].signal("CONT");
    let mut both = frozen.clone();
    both.extend(racing.iter().cloned());
    wait_all(&api, &awake, &both, Duration::from_secs(300)).await;
    // Give host-c time to try whatever it had in hand, then look again.
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 2)).await;
    let after: i64 = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            let mut db = db();
            check_exactly_once(&mut db);
            db.query_one(
                "SELECT count(*) FROM history WHERE written_by = 'host-c'",
                &[],
            )
            .unwrap()
            .get(0)
        }
    })
    .await
    .unwrap();
    assert_eq!(
        after,
        taken,
        "host-c wrote {} rows after it lost its leases; its log:\n{}",
        after - taken,
        hosts[2].log_text()
    );
    let fenced = hosts[2].log_text().matches("lost").count();
    println!(
        "phase 4: host-c frozen past its lease wrote nothing after ({taken} rows before; \
         {fenced} log lines about lost leases after it woke)"
    );
    drop(hosts);
}

/// Waits until the other hosts hold all 64 partitions and `host` none; returns when.
fn wait_until_taken_from(db: &mut postgres::Client, host: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owners = owners(db);
        if !owners.contains_key(host) && owners.values().sum::<usize>() == 64 {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{host}'s partitions were never taken: {owners:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `n` hosts hold all 64 partitions and none holds more than its fair share.
fn wait_for_owners(db: &mut postgres::Client, n: usize) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owners = owners(db);
        let share = 64_usize.div_ceil(n);
        if owners.len() == n
            && owners.values().sum::<usize>() == 64
            && owners.values().all(|&c| c <= share)
        {
            return owners;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never settled on {n} hosts: {owners:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Moving up: a journal kept in SQLite, with a finished saga and an approval waiting,
/// copied by `steadfast journal copy` into PostgreSQL; a host started on the copy finishes
/// the approval and serves the saga's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_journal_moves_to_postgres_and_carries_on() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = steadfast::Engine::open(steadfast::EngineConfig::new(dir.path()))
            .await
            .unwrap();
        steadfast::examples::install(&engine).await.unwrap();
        let options = |id: &str| steadfast::engine::StartOptions {
            instance_id: Some(id.to_owned()),
            ..Default::default()
        };
        let saga = engine
            .start(
                "task_processing_saga",
                &saga_input("saga-moved").to_string(),
                options("saga-moved"),
            )
            .await
            .unwrap();
        engine.wait_for_completion(&saga).await.unwrap();
        let approval = engine
            .start(
                "approval_workflow",
                &approval_input("approval-moved").to_string(),
                options("approval-moved"),
            )
            .await
            .unwrap();
        // Waiting for the approver once its first activity is journaled.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine
            .history(&approval)
            .unwrap()
            .iter()
            .any(|e| e.event.kind() == "event_wait_started")
        {
            assert!(Instant::now() < deadline, "the approval never waited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        engine.shutdown().await;
    }
    // The engine's journal lock goes with its writer thread, a moment after shutdown.
    let mut copied = None;
    for _ in 0..100 {
        let out = Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args(["journal", "copy", "--from"])
            .arg(dir.path())
            .args(["--to", &pg.url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            copied = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
        assert!(stderr.contains("in use"), "journal copy failed: {stderr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let copied = copied.expect("the SQLite journal stayed locked");
    assert!(copied.contains("instances"), "{copied}");

    // A second copy into the same database is refused and writes nothing.
    let again = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["journal", "copy", "--from"])
        .arg(dir.path())
        .args(["--to", &pg.url])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds 2 instances"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let host = Host::start("host-moved", &pg.url);
    let api = Api {
        client: reqwest::Client::new(),
        token: host.admin_token(),
    };
    let urls = vec![host.url.clone()];
    approve_all(&api, &urls, &["approval-moved".to_owned()]).await;
    wait_all(
        &api,
        &urls,
        &["saga-moved".to_owned(), "approval-moved".to_owned()],
        Duration::from_secs(120),
    )
    .await;
    let (_, history) = api
        .call(
            &host.url,
            "GET",
            "/v1/instances/approval-moved/history",
            None,
        )
        .await;
    assert!(
        history.to_string().contains("send_approval_request"),
        "the approval's journal came along: {history}"
    );
}
