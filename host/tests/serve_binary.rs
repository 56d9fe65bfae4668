//! The `steadfast serve` binary itself: started as a user starts it, with a config file,
//! and its refusal to run without authentication where that would be unsafe.

use std::path::Path;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_run_without_auth_off_loopback_or_outside_dev() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str]| {
        let dir: &Path = dir.path();
        let dir = dir.to_owned();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
                .args(args)
                .arg("--data-dir")
                .arg(&dir)
                .output()
                .await
                .unwrap()
        }
    };
    for args in [
        &["serve", "--no-auth"][..],
        &["dev", "--no-auth", "--listen", "0.0.0.0:0"][..],
    ] {
        let out = run(args).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to serve without authentication"),
            "{err}"
        );
    }
    // Nor the gRPC endpoint: an unauthenticated dev keeps it on loopback too.
    let out = run(&["dev", "--no-auth", "--grpc-listen", "0.0.0.0:0"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve gRPC without authentication off loopback"),
        "{err}"
    );
}

/// `steadfast serve` started as a user starts it: a config file with per-tenant limits,
/// the bootstrap admin token in DATA_DIR/admin.token (0600), limits visible through the
/// API, a second server on the same data directory refused, and a graceful stop on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_its_config_and_shows_each_tenant_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let data = dir.path().join("data");
    let config = dir.path().join("steadfast.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\n\n[limits]\nfuel_per_run = 1000000\n\n[tenant_limits.acme]\nfuel_per_run = 7777\nmax_payload_bytes = 4096\n"
        ),
    )
    .unwrap();
    let server = tokio::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..600 {
        if client.get(format!("{url}/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "the server did not come up");

    let token_path = data.join("admin.token");
    let admin = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let limits = |token: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let answer = client
                .get(format!("{url}/v1/limits"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&answer.bytes().await.unwrap()).unwrap()
        }
    };
    assert_eq!(
        limits(admin.clone()).await["limits"]["fuel_per_run"],
        1_000_000
    );
    let created: Value = serde_json::from_slice(
        &client
            .post(format!("{url}/v1/tenants"))
            .bearer_auth(&admin)
            .body(r#"{"name": "acme"}"#)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let acme = limits(created["token"].as_str().unwrap().to_owned()).await;
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(acme["limits"]["fuel_per_run"], 7777);
    assert_eq!(acme["limits"]["max_payload_bytes"], 4096);

    // A second server on the same data directory is refused: one engine per journal.
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another Steadfast engine"), "{err}");

    // This test signals the server as an init system would (Unix only, like the project).
    {
        let pid = server.id().unwrap().to_string();
        let killed = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let out = server.wait_with_output().await.unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("steadfast stopped"), "{stdout}");
    }
}

/// `steadfast dev --no-auth`, as a developer runs it: a web page the developer opens must
/// not be able to drive it. A cross-origin "simple" request (text/plain, a foreign Origin
/// or Host) is refused before it reaches any route; the CLI's JSON requests work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_drive_an_unauthenticated_dev_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let _server = tokio::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args([
            "dev",
            "--no-auth",
            "--grpc-listen",
            "off",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    // A fresh connection per request: the server closes one whose body it refused unread.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut up = false;
    for _ in 0..1200 {
        if client.get(format!("{url}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "the dev server did not come up");
    let start = format!("{url}/v1/workflows/approval_workflow/start");
    let body = r#"{"instance_id": "from-a-page", "input": {"request_id": "r", "requester": "m", "amount": 5000, "description": "x"}}"#;
    // What a page can send without a preflight: text/plain, its own Origin.
    let page = client
        .post(&start)
        .header("content-type", "text/plain")
        .header("origin", "https://evil.example")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let rebound = client
        .post(&start)
        .header("host", format!("evil.example:{port}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let deploy = client
        .post(format!("{url}/v1/components"))
        .header("content-type", "text/plain")
        .body(steadfast::examples::WORKFLOWS_WASM.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(deploy.status(), 403);
    let status = client
        .get(format!("{url}/v1/instances/from-a-page"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 404, "nothing was started");
    // The CLI's way: JSON from a loopback origin.
    let cli = client
        .post(&start)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(cli.status(), 201);
}
