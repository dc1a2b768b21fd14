//! The benchmark's pgbench baselines run against the schema as it is now: a migration that renames a
//! column the scripts write would otherwise break them silently, until someone measures again.

use std::process::Command;

use crate::helpers::postgres_url;

/// Runs `referral-exchange-bench` with `args` and `--json`; the outcomes it wrote.
fn bench(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("dir");
    let json = dir.path().join("outcome.json");
    let output = Command::new(env!("CARGO_BIN_EXE_referral-exchange-bench"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run the benchmark");
    assert!(
        output.status.success(),
        "referral-exchange-bench {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json")
}

/// Runs `referral-exchange-bench --scenario <scenario> --baseline` for a second at two clients; returns
/// its outcome.
fn bench_with_baseline(scenario: &str) -> serde_json::Value {
    let url = postgres_url();
    let args = ["--scenario", scenario, "--clients", "2", "--duration", "1"];
    bench(&[&args[..], &["--database-url", &url, "--baseline"]].concat())[0].clone()
}

#[test]
fn the_create_and_lifecycle_baselines_commit_on_the_current_schema() {
    for scenario in ["create", "roundtrip"] {
        let outcome = bench_with_baseline(scenario);
        assert_eq!(outcome["errors"], 0, "{scenario}: {outcome}");
        assert!(
            outcome["operations"].as_u64().unwrap_or(0) > 0,
            "{scenario}: {outcome}"
        );
        // pgbench's own failures abort the run above; here: it committed something.
        let baseline = outcome["baselinePerSecond"].as_f64().unwrap_or(0.0);
        assert!(baseline > 0.0, "{scenario}: {outcome}");
        // And the minimal rows' baseline, in tables made like the current ones.
        let minimal = outcome["minimalBaselinePerSecond"].as_f64().unwrap_or(0.0);
        assert!(minimal > 0.0, "{scenario}: {outcome}");
        // What each wrote per operation, read from PostgreSQL: one referral per create or
        // lifecycle (a run's last calls may still be in flight when it ends), exactly one per
        // pgbench script, and WAL behind both.
        let inserted = |footprint: &serde_json::Value, table: &str| {
            footprint["tables"]
                .as_array()
                .and_then(|tables| tables.iter().find(|t| t[0] == table))
                .and_then(|t| t[1][0].as_f64())
        };
        let ours = &outcome["footprint"];
        let referrals = inserted(ours, "referrals").unwrap_or(0.0);
        assert!((0.9..=1.2).contains(&referrals), "{scenario}: {ours}");
        assert!(
            ours["walBytes"].as_f64().unwrap_or(0.0) > 0.0,
            "{scenario}: {ours}"
        );
        let theirs = &outcome["minimalFootprint"];
        assert_eq!(
            inserted(theirs, "bench_min_referrals"),
            Some(1.0),
            "{scenario}: {theirs}"
        );
        assert!(theirs["rows"].as_f64().unwrap_or(0.0) < ours["rows"].as_f64().unwrap_or(0.0));
    }
}

/// Delivery beside RabbitMQ (issue 19): both deliver, every message exactly once (the benchmark
/// checks that and fails otherwise), and the ratio is theirs. Needs the RabbitMQ of the machine
/// (127.0.0.1:5672, guest/guest; `.ci/run` starts it).
#[test]
fn delivery_runs_beside_rabbitmq_with_the_same_durability() {
    let outcomes = bench(&[
        "--scenario",
        "delivery",
        "--clients",
        "4",
        "--duration",
        "2",
        "--rabbitmq",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    ]);
    let (ours, peer) = (&outcomes[0], &outcomes[1]);
    assert_eq!(ours["scenario"], "delivery", "{outcomes}");
    assert_eq!(peer["engine"], "rabbitmq", "{outcomes}");
    for outcome in [ours, peer] {
        assert!(outcome["operations"].as_u64().unwrap_or(0) > 0, "{outcome}");
        assert_eq!(outcome["errors"], 0, "{outcome}");
    }
    let (rate, peer_rate) = (
        ours["perSecond"].as_f64().unwrap_or(0.0),
        peer["perSecond"].as_f64().unwrap_or(0.0),
    );
    let ratio = ours["ratioToPeer"].as_f64().unwrap_or(0.0);
    assert!((ratio - rate / peer_rate).abs() < 1e-9, "{outcomes}");
    // The peer's bodies are as large as our pulled messages.
    assert!(ours["messageBytes"].as_u64().unwrap_or(0) > 100, "{ours}");
}

/// Refused before anything runs: without a PostgreSQL to run pgbench against, or for a scenario that
/// has no baseline, a ten-second run would end in the error anyway.
#[test]
fn a_baseline_is_refused_up_front_without_postgresql_or_for_a_scenario_without_one() {
    for (scenario, refusal) in [
        ("read", "--baseline is for the create and roundtrip"),
        ("create", "the pgbench baseline needs --database-url"),
    ] {
        let started = std::time::Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_referral-exchange-bench"))
            .args(["--scenario", scenario, "--baseline"])
            .output()
            .expect("run the benchmark");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(refusal), "{stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "refused only after a run: {:?}",
            started.elapsed()
        );
    }
}

/// The benchmark is its own binary: the server's help, which operators read, does not offer it.
#[test]
fn the_server_binary_has_no_bench_subcommand() {
    let output = Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("serve"), "{help}");
    assert!(!help.to_lowercase().contains("bench"), "{help}");
    let output = Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
        .args(["bench", "--scenario", "create"])
        .output()
        .expect("run bench");
    assert!(!output.status.success(), "bench is no subcommand any more");
}

/// The audit log's growth: nine audit events per lifecycle (each call of it processes someone's
/// data), and none for a receiver that only long-polls an empty mailbox.
#[test]
fn the_audit_log_grows_with_referrals_not_with_polling() {
    let outcomes = bench(&[
        "--scenario",
        "auditlog",
        "--lifecycles",
        "2",
        "--clients",
        "2",
        "--wait-seconds",
        "1",
        "--duration",
        "3",
    ]);
    let lifecycle = &outcomes[0];
    assert_eq!(lifecycle["per"], "lifecycle", "{outcomes}");
    assert_eq!(lifecycle["auditEventsPer"], 9.0, "{outcomes}");
    assert!(
        lifecycle["auditBytesPer"].as_f64().unwrap_or(0.0) > 0.0,
        "{outcomes}"
    );
    let idle = &outcomes[1];
    assert_eq!(idle["per"], "idle receiver hour", "{outcomes}");
    assert!(
        idle["operations"].as_u64().unwrap_or(0) >= 2,
        "the receivers polled: {outcomes}"
    );
    assert_eq!(idle["auditEventsPer"], 0.0, "{outcomes}");
    assert_eq!(idle["auditBytesPer"], 0.0, "{outcomes}");
}
