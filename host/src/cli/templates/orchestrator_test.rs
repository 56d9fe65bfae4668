//! Tests of `{{workflow}}`: the crate is built for wasm and run by the real Steadfast
//! engine on a temporary journal and a virtual clock; its activity is a fake.

use std::time::Duration;

use steadfast_testkit::{RuntimeStatus, TestEnv, Value, json};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn env() -> steadfast_testkit::Result<TestEnv> {
    let env = TestEnv::new()?;
    env.deploy(&steadfast_testkit::this_crate!()?)?;
    env.activity("send_approval_request", |call| Ok(json!({ "sent_for": call.input["request_id"] })));
    Ok(env)
}

fn request(amount: f64) -> Value {
    json!({
        "request_id": "REQ-001",
        "requester": "bob",
        "amount": amount,
        "description": "New laptop",
    })
}

#[test]
fn an_approval_completes_the_request() -> steadfast_testkit::Result<()> {
    let env = env()?;
    let run = env.start("{{workflow}}", request(5000.0))?;
    assert_eq!(env.custom_status(&run)?, Some(json!({ "stage": "waiting_for_approval" })));
    env.advance(DAY)?;
    env.raise(&run, "approval_received", json!({ "approved": true, "approver": "manager@company.com" }))?;
    let output: Value = env.output(&run)?;
    assert_eq!(output["status"], "approved");
    assert_eq!(output["approver"], "manager@company.com");
    assert_eq!(env.activities_run(), ["send_approval_request"]);
    // The journal replays on this build: the workflow is deterministic.
    env.replay_check(&run)
}

#[test]
fn a_rejection_says_why() -> steadfast_testkit::Result<()> {
    let env = env()?;
    let run = env.start("{{workflow}}", request(5000.0))?;
    env.raise(
        &run,
        "approval_received",
        json!({ "approved": false, "approver": "manager@company.com", "reason": "Over budget" }),
    )?;
    let output: Value = env.output(&run)?;
    assert_eq!(output["status"], "rejected");
    assert_eq!(output["reason"], "Over budget");
    env.replay_check(&run)
}

#[test]
fn three_days_without_a_decision_time_out() -> steadfast_testkit::Result<()> {
    let env = env()?;
    let run = env.start("{{workflow}}", request(5000.0))?;
    // Three days pass in microseconds on the virtual clock.
    env.advance(3 * DAY - Duration::from_secs(1))?;
    assert_eq!(env.status(&run)?, RuntimeStatus::Running);
    env.advance(Duration::from_secs(1))?;
    assert_eq!(env.output::<Value>(&run)?["status"], "timeout");
    env.replay_check(&run)
}

#[test]
fn small_amounts_need_no_approval() -> steadfast_testkit::Result<()> {
    let env = env()?;
    let run = env.start("{{workflow}}", request(250.0))?;
    assert_eq!(env.output::<Value>(&run)?["status"], "auto_approved");
    assert!(env.activities_run().is_empty());
    Ok(())
}
