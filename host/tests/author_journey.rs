//! What a new author does, outside the workspace, with nothing but the `steadfast` binary
//! and the stock toolchain: `steadfast new` a workflow crate and an activity crate,
//! `cargo test` each (the test kit's tests), `steadfast build` them, deploy both to a
//! running `steadfast serve`, start the workflow, raise the approval event, and see the
//! instance COMPLETED with the expected output.
//!
//! The crates' builds share this workspace's target directory, so the registry crates the
//! test kit links (wasmtime, SQLite, ...) are compiled once, for the workspace and for
//! them; only the carried engine crate itself (another path) compiles again. Each step's
//! time is printed (`--nocapture` shows it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace's target directory: the binary under test is `<target>/<profile>/steadfast`.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_steadfast"))
        .ancestors()
        .nth(2)
        .expect("the binary sits in <target>/<profile>/")
        .to_path_buf()
}

/// Runs `program args` in `dir` as an author would, with the journey's environment.
fn run(dir: &Path, home: &Path, program: &str, args: &[&str]) -> Output {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("STEADFAST_HOME", home)
        .env("CARGO_TARGET_DIR", target_dir())
        // The outer `cargo test`'s settings are not the author's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let name = Path::new(program)
        .file_name()
        .map_or(program.into(), |n| n.to_string_lossy());
    eprintln!(
        "[journey] {name} {} in {}: {:.1} s",
        args.join(" "),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "{name} {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn steadfast(dir: &Path, home: &Path, args: &[&str]) -> Output {
    run(dir, home, env!("CARGO_BIN_EXE_steadfast"), args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `steadfast serve` on a free loopback port, killed when dropped.
struct Serve {
    child: std::process::Child,
    url: String,
    admin: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(root: &Path) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("a free port")
        .port();
    let data = root.join("server-data");
    let child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("steadfast serve starts");
    let url = format!("http://127.0.0.1:{port}");
    let token = data.join("admin.token");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if up && token.is_file() {
            break;
        }
        assert!(Instant::now() < deadline, "steadfast serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin = std::fs::read_to_string(&token)
        .expect("the admin token")
        .trim()
        .to_owned();
    Serve { child, url, admin }
}

impl Serve {
    /// The CLI against this server, as the admin, answering in JSON.
    fn cli(&self, dir: &Path, home: &Path, args: &[&str]) -> Value {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args(["-o", "json"])
            .args(args)
            .current_dir(dir)
            .env("STEADFAST_HOME", home)
            .env("CARGO_TARGET_DIR", target_dir())
            .env("STEADFAST_SERVER", &self.url)
            .env("STEADFAST_TOKEN", &self.admin)
            .output()
            .expect("the CLI runs");
        assert!(
            output.status.success(),
            "steadfast {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!(
            "[journey] steadfast {}: {:.1} s",
            args.join(" "),
            started.elapsed().as_secs_f64()
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "steadfast {args:?} printed no JSON ({e}): {}",
                stdout(&output)
            )
        })
    }
}

#[test]
fn a_new_author_goes_from_new_to_a_completed_workflow() {
    // Outside the workspace, as a new author's machine would be.
    let root = tempfile::Builder::new()
        .prefix("steadfast-author-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary directory");
    assert!(!root.path().starts_with(env!("CARGO_MANIFEST_DIR")));
    let (root, home) = (root.path(), root.path().join("steadfast-home"));

    // 1. Two new crates: the workflow, and the activity it calls.
    let created = steadfast(root, &home, &["new", "expense-approval"]);
    assert!(
        stdout(&created).contains("expense_approval"),
        "{}",
        stdout(&created)
    );
    steadfast(root, &home, &["new", "approval-notifier", "--activity"]);
    let workflow = root.join("expense-approval");
    let activity = root.join("approval-notifier");
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "src/lib.rs",
        "tests/workflow.rs",
    ] {
        assert!(workflow.join(file).is_file(), "{file} was not written");
    }
    // The SDK the crates use is the one the binary carries, written under STEADFAST_HOME.
    let manifest = std::fs::read_to_string(workflow.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&home.join("sdk").display().to_string()),
        "{manifest}"
    );

    // 2. Their tests, with the test kit: the engine in-process, on a virtual clock.
    let tested = run(&workflow, &home, "cargo", &["test"]);
    let report = stdout(&tested);
    assert!(report.contains("test result: ok. 4 passed"), "{report}");
    let tested = run(&activity, &home, "cargo", &["test"]);
    assert!(
        stdout(&tested).contains("test result: ok. 2 passed"),
        "{}",
        stdout(&tested)
    );
    // A second run is what an author sees while editing.
    run(&workflow, &home, "cargo", &["test"]);

    // 3. `steadfast build`: the component, checked as a deploy checks it.
    let built: Value = serde_json::from_str(&stdout(&steadfast(
        &workflow,
        &home,
        &["build", "-o", "json"],
    )))
    .expect("build -o json prints JSON");
    assert_eq!(built["kind"], "orchestrator");
    assert_eq!(built["names"], serde_json::json!(["expense_approval"]));
    let path = PathBuf::from(built["path"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        built["bytes"].as_u64().unwrap()
    );
    let built = stdout(&steadfast(&activity, &home, &["build"]));
    assert!(
        built.contains("activities: send_approval_request"),
        "{built}"
    );

    // 4. Deploy both (a crate folder builds, then deploys) to a real server.
    let server = serve(root);
    let deployed = server.cli(&workflow, &home, &["deploy", "."]);
    assert_eq!(deployed["kind"], "orchestrator", "{deployed}");
    let deployed = server.cli(root, &home, &["deploy", "approval-notifier"]);
    assert_eq!(deployed["kind"], "activity", "{deployed}");

    // 5. Start, raise the decision, and wait for the end.
    let input = r#"{"request_id": "REQ-7", "requester": "bob", "amount": 5000.0, "description": "New laptop"}"#;
    server.cli(
        root,
        &home,
        &[
            "workflow",
            "start",
            "expense_approval",
            "--id",
            "req-7",
            "--input",
            input,
        ],
    );
    let decision =
        r#"{"approved": true, "approver": "manager@company.com", "reason": "Within budget"}"#;
    server.cli(
        root,
        &home,
        &[
            "workflow",
            "raise-event",
            "req-7/approval_received",
            "--input",
            decision,
        ],
    );
    let ended = server.cli(
        root,
        &home,
        &["workflow", "wait", "req-7", "--timeout", "60"],
    );
    assert_eq!(ended["runtime_status"], "COMPLETED", "{ended}");
    let output = &ended["output"];
    assert_eq!(output["status"], "approved", "{ended}");
    assert_eq!(output["approver"], "manager@company.com", "{ended}");
    assert_eq!(output["request_id"], "REQ-7", "{ended}");
}

/// `steadfast ARGS` in `dir` that must fail: its stderr.
fn refused(dir: &Path, home: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(args)
        .current_dir(dir)
        .env("STEADFAST_HOME", home)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("the CLI runs");
    assert!(!output.status.success(), "steadfast {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn new_and_build_say_what_is_wrong_and_overwrite_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (root, home) = (root.path(), root.path().join("home"));

    let e = refused(root, &home, &["new", "Expense Approval"]);
    assert!(e.contains("lowercase letters"), "{e}");

    std::fs::create_dir(root.join("taken")).unwrap();
    std::fs::write(root.join("taken/notes.txt"), "mine").unwrap();
    let e = refused(root, &home, &["new", "taken"]);
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(
        std::fs::read_to_string(root.join("taken/notes.txt")).unwrap(),
        "mine"
    );

    std::fs::write(root.join("a-file"), "mine").unwrap();
    let e = refused(root, &home, &["new", "flow", "--path", "a-file"]);
    assert!(e.contains("is a file"), "{e}");
    assert_eq!(
        std::fs::read_to_string(root.join("a-file")).unwrap(),
        "mine"
    );

    let e = refused(root, &home, &["new", "serde"]);
    assert!(e.contains("dependencies"), "{e}");

    let e = refused(root, &home, &["new", "elsewhere", "--sdk", "/nonexistent"]);
    assert!(e.contains("--sdk takes a Steadfast source tree"), "{e}");
    assert!(!root.join("elsewhere").exists());

    let e = refused(root, &home, &["build", "taken"]);
    assert!(
        e.contains("has no Cargo.toml") && e.contains("steadfast new"),
        "{e}"
    );
    let e = refused(root, &home, &["deploy", "taken"]);
    assert!(e.contains("has no Cargo.toml"), "{e}");
}
