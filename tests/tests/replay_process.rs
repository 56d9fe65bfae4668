//! Determinism by construction: the same journal replays to identical state in a fresh
//! host process. The test binary runs itself again as that second process.

use std::path::Path;

use steadfast::{RuntimeStatus, StartOptions, VirtualClock};
use steadfast_tests::{START, TESTING_V1_WASM, id, open, runtime};

/// Set in the second process: the data directory to reopen.
const SECOND_PROCESS_DIR: &str = "STEADFAST_REPLAY_DATA_DIR";
const TEST_NAME: &str = "the_same_journal_replays_to_identical_state_in_a_fresh_process";

#[test]
fn the_same_journal_replays_to_identical_state_in_a_fresh_process() {
    if let Ok(dir) = std::env::var(SECOND_PROCESS_DIR) {
        return second_process(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();

    // First process (this one): `entropy` reads time, randomness, a guid, hash order and
    // float bits, publishes them as its custom status, and waits for `go`.
    let first = runtime();
    let published = first.block_on(async {
        let engine = open(dir.path(), &VirtualClock::new(START)).await;
        engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
        let options = StartOptions {
            instance_id: Some("entropy".into()),
            ..StartOptions::default()
        };
        let entropy = engine.start("entropy", "null", options).await.unwrap();
        engine.settle().await;
        engine.status(&entropy).unwrap().custom_status.unwrap()
    });
    drop(first);

    // Second process: another pid, another id seed, a clock an hour later. It replays the
    // journal, receives `go`, and the workflow returns the values it computed there.
    let run = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(SECOND_PROCESS_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "second process failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let replayed = stdout
        .lines()
        .find_map(|line| line.split_once("REPLAYED OUTPUT ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no output line in:\n{stdout}"));
    let published: serde_json::Value = serde_json::from_str(&published).unwrap();
    let replayed: serde_json::Value = serde_json::from_str(replayed).unwrap();
    assert_eq!(replayed, published);
    assert_eq!(published["now"], START.0, "time is the journal's");
}

fn second_process(dir: &Path) {
    runtime().block_on(async {
        let later = VirtualClock::new(START.plus_ms(3_600_000));
        let engine = open(dir, &later).await;
        let entropy = id("entropy");
        engine.raise_event(&entropy, "go", "null").await.unwrap();
        engine.settle().await;
        let status = engine.status(&entropy).unwrap();
        assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
        println!("REPLAYED OUTPUT {}", status.output.unwrap());
    });
}
