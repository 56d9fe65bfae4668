//! The web console in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver), against a real `steadfast dev` process.
//!
//! An operator finds a waiting approval, approves it with the button and sees it
//! COMPLETED with its timeline; rejects another; terminates one from the list; and a
//! read-only token is shown no action that would work. Screenshots of each page are
//! written to `target/console-screenshots/`.
//!
//! Chromium and chromedriver are installed with apt-get when missing (as root, or through
//! `sudo -n`): the test says what to install if it cannot.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

mod support;
use support::dev::{Dev, free_port, start_dev};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the page may take to show what an action changed.
const PATIENCE: Duration = Duration::from_secs(30);

/// Installs Debian's chromium and chromium-driver if they are missing.
fn ensure_browser() {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let script = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                  --no-install-recommends chromium chromium-driver";
    let status = if root {
        std::process::Command::new("sh")
            .args(["-c", script])
            .status()
    } else {
        std::process::Command::new("sudo")
            .args(["-n", "sh", "-c", script])
            .status()
    };
    assert!(
        status.is_ok_and(|s| s.success())
            && Path::new(CHROMIUM).exists()
            && Path::new(CHROMEDRIVER).exists(),
        "the console's browser test needs Debian's chromium and chromium-driver, and could \
         not install them; run: sudo apt-get install chromium chromium-driver"
    );
}

/// `target/console-screenshots/`, next to the build.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free port, and a headless Chromium session through it.
async fn browser() -> (Client, tokio::process::Child) {
    let port = free_port();
    let driver = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--disable-quic", "--no-first-run", "--disable-component-update",
                     "--disable-sync", "--window-size=1280,900"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return (client, driver),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no browser session through chromedriver: {last:?}");
}

/// Waits until the element matching `css` has text containing `want`.
async fn wait_for_text(client: &Client, css: &str, want: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if text.contains(want) {
                return text;
            }
            seen = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("'{css}' never showed '{want}'; last seen: '{seen}'");
}

/// Whether an element matching `css` is on the page and shown.
async fn shown(client: &Client, css: &str) -> bool {
    match client.find_all(Locator::Css(css)).await {
        Ok(elements) => {
            for element in elements {
                if element.is_displayed().await.unwrap_or(false) {
                    return true;
                }
            }
            false
        }
        Err(_) => false,
    }
}

async fn click(client: &Client, css: &str) {
    client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no '{css}' on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click '{css}': {e}"));
}

async fn fill(client: &Client, css: &str, text: &str) {
    let element = client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no '{css}' on the page: {e}"));
    element.clear().await.unwrap();
    element.send_keys(text).await.unwrap();
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshot_dir().join(name), png).unwrap();
}

async fn wait_for_status(dev: &Dev, id: &str, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = dev.status(id).await;
        if status["runtime_status"] == want {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {want}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_rejects_and_terminates_from_the_console() {
    ensure_browser();
    let dev = start_dev().await;
    for id in ["req-approve", "req-reject", "req-stop", "req-readonly"] {
        dev.start_approval(id).await;
    }
    let (browser, _driver) = browser().await;

    // Signed in by the link `dev` prints; the token leaves the address bar.
    browser.goto(&dev.console_link).await.unwrap();
    wait_for_text(&browser, "#instances", "req-approve").await;
    let address = browser.current_url().await.unwrap();
    assert!(
        !address.as_str().contains(&dev.admin),
        "the token stays out of the address bar: {address}"
    );
    screenshot(&browser, "instances.png").await;

    // The waiting approval: what it waits for, then the button.
    click(&browser, "a[href='#/instance/req-approve']").await;
    wait_for_text(&browser, "#waiting", "approval_received").await;
    wait_for_text(&browser, "#status", "RUNNING").await;
    screenshot(&browser, "instance-waiting.png").await;
    // No approver: refused in the page, nothing sent.
    click(&browser, "#approve").await;
    wait_for_text(&browser, "#alert", "pprover").await;
    assert_eq!(dev.status("req-approve").await["runtime_status"], "RUNNING");
    fill(&browser, "#approver", "manager@company.com").await;
    fill(&browser, "#reason", "Budget available").await;
    click(&browser, "#approve").await;
    wait_for_text(&browser, "#status", "COMPLETED").await;
    let timeline = wait_for_text(&browser, "#timeline", "approval_received").await;
    assert!(timeline.contains("Generation 0"), "{timeline}");
    let output = wait_for_text(&browser, "#output", "approved").await;
    assert!(output.contains("manager@company.com"), "{output}");
    let status = dev.status("req-approve").await;
    assert_eq!(status["output"]["status"], "approved", "{status}");
    assert_eq!(status["output"]["approver"], "manager@company.com");
    screenshot(&browser, "instance-completed.png").await;

    // Reject another, by address.
    browser
        .goto(&format!("{}/ui/#/instance/req-reject", dev.url))
        .await
        .unwrap();
    wait_for_text(&browser, "#waiting", "approval_received").await;
    fill(&browser, "#approver", "cfo@company.com").await;
    fill(&browser, "#reason", "Over budget").await;
    click(&browser, "#reject").await;
    wait_for_text(&browser, "#status", "COMPLETED").await;
    let status = dev.status("req-reject").await;
    assert_eq!(status["output"]["status"], "rejected", "{status}");

    // Terminate one from the list: select it, confirm in the dialog.
    browser
        .goto(&format!("{}/ui/#/instances?status=RUNNING", dev.url))
        .await
        .unwrap();
    wait_for_text(&browser, "#instances", "req-stop").await;
    click(&browser, "input.select[data-id='req-stop']").await;
    click(&browser, "#bulk-terminate").await;
    let dialog = wait_for_text(&browser, "#confirm", "req-stop").await;
    assert!(dialog.contains("Terminate"), "{dialog}");
    screenshot(&browser, "confirm-terminate.png").await;
    click(&browser, "#confirm-yes").await;
    wait_for_text(&browser, "#message", "1 of 1").await;
    wait_for_status(&dev, "req-stop", "TERMINATED").await;
    // The others were not touched.
    assert_eq!(
        dev.status("req-readonly").await["runtime_status"],
        "RUNNING"
    );

    // Deployments: the example workflows and what is pinned to them.
    click(&browser, "a[href='#/deployments']").await;
    let deployments = wait_for_text(&browser, "#deployments", "approval_workflow").await;
    assert!(
        deployments.contains("task_processing_saga"),
        "{deployments}"
    );
    screenshot(&browser, "deployments.png").await;

    // A read-only token: it sees the waiting approval, and no action it could not do.
    let (code, body) = dev
        .api(
            &dev.admin,
            "POST",
            "/v1/tokens",
            Some(json!({"scopes": ["read"], "label": "viewer"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let viewer = body["token"].as_str().unwrap().to_owned();
    click(&browser, "#signout").await;
    fill(&browser, "#token", &viewer).await;
    click(&browser, "#login button[type='submit']").await;
    wait_for_text(&browser, "#account", "default").await;
    browser
        .goto(&format!("{}/ui/#/instances", dev.url))
        .await
        .unwrap();
    wait_for_text(&browser, "#instances", "req-readonly").await;
    for action in ["#bulk-terminate", "#bulk-suspend", "#bulk-resume"] {
        assert!(!shown(&browser, action).await, "a viewer sees {action}");
    }
    browser
        .goto(&format!("{}/ui/#/instance/req-readonly", dev.url))
        .await
        .unwrap();
    wait_for_text(&browser, "#waiting", "approval_received").await;
    for action in [
        "#approve",
        "#reject",
        "#raise",
        "#terminate",
        "#suspend",
        "#purge",
    ] {
        assert!(!shown(&browser, action).await, "a viewer sees {action}");
    }
    screenshot(&browser, "instance-read-only.png").await;
    // And the API agrees: the viewer's token cannot approve.
    let (code, _) = dev
        .api(
            &viewer,
            "POST",
            "/v1/instances/req-readonly/events/approval_received",
            Some(json!({"approved": true, "approver": "viewer"})),
        )
        .await;
    assert_eq!(code, 403);

    // A wrong token is refused at sign-in with the API's words.
    click(&browser, "#signout").await;
    fill(&browser, "#token", "not-a-token").await;
    click(&browser, "#login button[type='submit']").await;
    wait_for_text(&browser, "#alert", "token").await;
    browser.close().await.unwrap();
}

/// The console's files carry the headers that keep other sites from framing or
/// scripting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_files_forbid_framing_and_foreign_scripts() {
    let dev = start_dev().await;
    let client = reqwest::Client::new();
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/ui", dev.url))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status().as_u16(), 308);
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let response = client
            .get(format!("{}{path}", dev.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("frame-ancestors 'none'") && policy.contains("script-src 'self'"),
            "{path}: {policy}"
        );
        let body = response.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        // Offline: nothing is loaded from another host.
        assert!(
            !body.contains("https://") && !body.contains("http://"),
            "{path} refers to another host"
        );
    }
}
