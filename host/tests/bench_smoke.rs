//! The benchmark in its tiny configuration, so it never rots. Timings are not asserted;
//! that the scenarios run to the end and report every figure is.

#[test]
fn the_smoke_bench_runs_every_scenario_and_writes_every_figure() {
    // Under cargo's scratch directory in `target/`, on the disk the build is on, not a
    // `/tmp` that may be tmpfs (which the bench refuses).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let json = dir.path().join("bench.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["bench", "--smoke", "--json"])
        .arg(&json)
        .arg("--dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "saga_seq_wf_per_s",
        "saga_conc_wf_per_s",
        "saga_http_conc_wf_per_s",
        "activity_steps_per_s",
        "sqlite_baseline_rows_per_s",
        "journal_vs_sqlite_pct",
        "event_latency_p50_ms",
        "event_latency_p99_ms",
        "event_http_latency_p50_ms",
        "monitor_gen_per_s",
        "monitor_rss_growth_pct",
        "monitor_db_growth_pct",
        "resume_1k_events_ms",
        "replay_events_per_s",
        "idle_100k_rss_mb",
        "start_wf_per_s",
        "restart_ms",
        "restart_10k_running_ms",
        "restart_first_decision_ms",
        "fsync_ms",
    ] {
        let value = figures[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {figures}"));
        assert!(value.is_finite() && value >= 0.0, "{key} = {value}");
    }
    assert_eq!(
        figures["monitor_journal_rows"], 5.0,
        "the monitor's journal stays one generation long"
    );
    assert!(figures["filesystem"].is_string(), "{figures}");
    assert_eq!(
        figures["runs"]["saga_seq_wf_per_s"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "one smoke run, its sample kept: {figures}"
    );
}

/// On a filesystem kept in memory an fsync costs nothing: the bench says so and stops
/// rather than print figures that would flatter a durable journal.
#[test]
fn the_bench_refuses_a_data_directory_kept_in_memory() {
    // A tmpfs this process may write to: /dev/shm, as Linux mounts it, or any other.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let tmpfs: Vec<&str> = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"tmpfs")).then(|| fields[1])
        })
        .collect();
    let dir = ["/dev/shm"]
        .into_iter()
        .chain(tmpfs.iter().copied())
        .filter(|mount| tmpfs.contains(mount))
        .find_map(|mount| tempfile::tempdir_in(mount).ok())
        .unwrap_or_else(|| panic!("this test needs a writable tmpfs (such as /dev/shm): {mounts}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["bench", "--smoke", "--only", "s6", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran on tmpfs: {stderr}");
    assert!(
        stderr.contains("tmpfs") && stderr.contains("--allow-memory-fs"),
        "{stderr}"
    );
    // Told it is fine, it runs and still says what it measured on.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args([
            "bench",
            "--smoke",
            "--only",
            "s6",
            "--allow-memory-fs",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("WARNING") && stdout.contains("tmpfs"),
        "{stdout}"
    );
}
