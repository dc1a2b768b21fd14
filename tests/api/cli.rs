//! The command-line client as people and scripts use it, against the real server binary: the
//! README's tour (extracted from README.md and run twice), exit codes of acknowledgements that did
//! not apply, retries with `--request-id`, and errors that say what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helpers::*;
use crate::server::{ServerChild, ServerLog, binary_database, start_binary_logged};

/// The built binary, which the tour calls `cargo run -q --`.
const BIN: &str = env!("CARGO_BIN_EXE_referral-exchange");

/// A server binary on its own data directory `<dir>/var`, the layout the README assumes (the
/// tour's commands run in `<dir>`, where `var/pki/clients/<org>` are the profiles).
struct Tour {
    dir: tempfile::TempDir,
    _database: Option<TestDb>,
    _server: ServerChild,
    endpoint: String,
    /// The HTTP face, as the curl tour names it.
    http: String,
    log: ServerLog,
}

impl Tour {
    async fn start(db: Db) -> Tour {
        let dir = tempfile::tempdir().expect("dir");
        let database = binary_database(db).await;
        let (server, addr, log) = start_binary_logged(
            &dir.path().join("var"),
            database.as_ref().map(TestDb::url),
            &[],
        );
        let http = format!(
            "https://localhost:{}",
            crate::server::http_addr(&log).port()
        );
        Tour {
            dir,
            _database: database,
            _server: server,
            endpoint: format!("https://{addr}"),
            http,
            log,
        }
    }

    fn profile(&self, org: &str) -> PathBuf {
        self.dir.path().join("var/pki/clients").join(org)
    }

    /// `referral-exchange client --profile <org> [--user <user>] <args>` in the tour's directory.
    fn client(&self, org: &str, user: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command
            .current_dir(self.dir.path())
            .env("REFERRAL_EXCHANGE_ENDPOINT", &self.endpoint)
            // Tables unwrapped: a wrapped table's line breaks fall between different ids in each run.
            .env("COLUMNS", "10000")
            .env_remove("REFERRAL_EXCHANGE_USER")
            .arg("client")
            .arg("--profile")
            .arg(self.profile(org));
        if let Some(user) = user {
            command.args(["--user", user]);
        }
        command.args(args).output().expect("run the client")
    }

    /// A person starts the server and then reads the README; by the time they paste, the audit log
    /// has its first signed checkpoint (the sequencer signs about once a second), which the tour's
    /// auditor part reads. Waits for that instead of racing it.
    async fn wait_for_checkpoint(&self) {
        let mut waited = 0;
        while !self
            .client("auditor-dpo", None, &["get-checkpoint"])
            .status
            .success()
        {
            waited += 1;
            assert!(waited < 100, "no audit checkpoint within 10 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` with bash in the tour's directory, `cargo run -q -- …` meaning the built
    /// binary, and fails on the first failing command (as a person pasting it would notice).
    fn run_script(&self, script: &str) -> Output {
        let prelude = format!(
            "set -euo pipefail\n\
             cargo() {{\n\
               if [ \"$1 $2 $3\" != 'run -q --' ]; then echo \"unexpected: cargo $*\" >&2; return 97; fi\n\
               shift 3; '{BIN}' \"$@\"\n\
             }}\n"
        );
        Command::new("bash")
            .current_dir(self.dir.path())
            .env("REFERRAL_EXCHANGE_ENDPOINT", &self.endpoint)
            // Tables unwrapped: a wrapped table's line breaks fall between different ids in each run.
            .env("COLUMNS", "10000")
            .env_remove("REFERRAL_EXCHANGE_USER")
            .arg("-c")
            .arg(prelude + script)
            .output()
            .expect("run bash")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The ```sh blocks of the README section headed `heading` (e.g. `## A five-minute tour`), up to the
/// next heading (of any level). Headings are only looked for outside code blocks, where `#` starts
/// comments.
fn tour_script(readme: &str, heading: &str) -> String {
    let mut in_section = false;
    let mut fence: Option<bool> = None; // Some(is_sh) inside a code block
    let mut script = String::new();
    for line in readme.lines() {
        match fence {
            None if line.starts_with("```") => {
                fence = Some(line.trim() == "```sh");
            }
            None if line.starts_with('#') => {
                in_section = line.trim() == heading;
            }
            None => {}
            Some(_) if line.starts_with("```") => fence = None,
            Some(true) if in_section => {
                script.push_str(line);
                script.push('\n');
            }
            Some(_) => {}
        }
    }
    script
}

/// The shape of an output line: ids, numbers, times and padding made equal, so that two runs of
/// the same commands compare equal although their referrals, times and counts differ. JSON
/// strings holding a digit (ids, times, ack ids: UUIDs always hold their version digit) become
/// `"~"`; in text (the report table) every word holding a digit, and an empty cell's `-`, becomes
/// `0`.
fn shape(line: &str) -> String {
    let mut blurred = String::new();
    let mut rest = line;
    while let Some(open) = rest.find('"') {
        blurred.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('"').unwrap_or(after.len());
        let content = &after[..close];
        if content.chars().any(|c| c.is_ascii_digit()) {
            blurred.push_str("\"~\"");
        } else {
            blurred.push('"');
            blurred.push_str(content);
            blurred.push('"');
        }
        rest = after.get(close + 1..).unwrap_or("");
    }
    blurred.push_str(rest);
    if line.contains('"') {
        let mut out = String::new();
        for c in blurred.chars() {
            if c.is_ascii_digit() {
                if !out.ends_with('0') {
                    out.push('0');
                }
            } else if !c.is_whitespace() {
                out.push(c);
            }
        }
        out
    } else {
        blurred
            .split_whitespace()
            .map(|word| {
                if word == "-" || word.chars().any(|c| c.is_ascii_digit()) {
                    "0"
                } else {
                    word
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The distinct shapes of the lines of `output`, sorted. Lines about the auditor's own calls are
/// left out: the second run's audit trail rightly shows the first run's auditor reading it.
fn shapes(output: &str) -> Vec<String> {
    let mut shapes: Vec<String> = output
        .lines()
        .filter(|line| !line.contains("organizations/auditor-"))
        .map(shape)
        .collect();
    shapes.sort();
    shapes.dedup();
    shapes
}

both_engines!(the_readme_tour_runs_twice_with_the_same_output);
async fn the_readme_tour_runs_twice_with_the_same_output(db: Db) {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let script = tour_script(&readme, "## A five-minute tour");
    assert!(
        script.contains("rx acknowledge-messages") && script.contains("audit verify"),
        "the tour's commands were found:\n{script}"
    );
    let tour = Tour::start(db).await;
    tour.wait_for_checkpoint().await;
    let mut outputs = Vec::new();
    for run in 1..=2 {
        let output = tour.run_script(&script);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(
            output.status.success(),
            "run {run} of the tour failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        assert!(!stderr.contains("error"), "run {run}: {stderr}");
        // The tour's own referral went all the way, and Kela heard of each step.
        assert!(stdout.contains("\"COMPLETED\""), "run {run}: {stdout}");
        assert!(stdout.contains("\"applied\":true"), "run {run}: {stdout}");
        for state in ["RECEIVED", "ACCEPTED", "IN_PROGRESS", "COMPLETED"] {
            assert_eq!(
                stdout
                    .lines()
                    .filter(|l| l.starts_with("{\"state\":") && l.contains(&format!("\"{state}\"")))
                    .count(),
                1,
                "run {run}: Kela got exactly this run's {state}:\n{stdout}"
            );
        }
        outputs.push(stdout);
    }
    assert_eq!(
        shapes(&outputs[0]),
        shapes(&outputs[1]),
        "both runs print the same shape\nfirst:\n{}\nsecond:\n{}",
        outputs[0],
        outputs[1]
    );
}

both_engines!(the_readme_curl_tour_runs_twice_for_all_three_users);
async fn the_readme_curl_tour_runs_twice_for_all_three_users(db: Db) {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let script = tour_script(&readme, "## The same tour over HTTP (curl)");
    assert!(
        script.contains("H=https://localhost:8443") && script.contains(":acknowledge"),
        "the curl tour was found:\n{script}"
    );
    let tour = Tour::start(db).await;
    // The README names the default port; this server has its own.
    let script = script.replace("https://localhost:8443", &tour.http);
    tour.wait_for_checkpoint().await;
    let mut last_stdout = String::new();
    for run in 1..=2 {
        let output = tour.run_script(&script);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(
            output.status.success(),
            "run {run} of the curl tour failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        assert!(stderr.is_empty(), "run {run}: {stderr}");
        assert!(
            stdout.contains(r#"{"recipient":"organizations/hva-15","state":"REQUESTED"}"#),
            "run {run}: {stdout}"
        );
        assert!(stdout.contains(r#""applied":true"#), "run {run}: {stdout}");
        assert!(
            stdout.contains(r#"{"state":"COMPLETED","outcome":"SERVICES_STARTED"}"#),
            "run {run}: {stdout}"
        );
        for state in ["RECEIVED", "ACCEPTED", "IN_PROGRESS", "COMPLETED"] {
            assert_eq!(
                stdout
                    .lines()
                    .filter(|l| l.starts_with("{\"state\":")
                        && l.contains("\"time\"")
                        && l.contains(&format!("\"{state}\"")))
                    .count(),
                1,
                "run {run}: Kela got exactly this run's {state}:\n{stdout}"
            );
        }
        // The auditor saw Kela's and the receiver's calls over HTTP, and the signed checkpoint.
        for who in [
            r#""organization":"organizations/kela","userId":"handler-1","method":"/referral_exchange.v1.ReferralService/CreateReferral""#,
            r#""organization":"organizations/hva-15","userId":"worker-7","method":"/referral_exchange.v1.ReferralService/CompleteReferral""#,
        ] {
            assert!(stdout.contains(who), "run {run}: {who}\n{stdout}");
        }
        assert!(
            stdout.contains("referral-exchange/audit-log"),
            "run {run}: {stdout}"
        );
        last_stdout = stdout;
    }
    // The export: the leaves up to the latest checkpoint, one JSON object per line, in order (how
    // many depends on how far the sequencer had come; the tour printed the count last).
    let export = std::fs::read_to_string(tour.dir.path().join("export.ndjson")).expect("export");
    let printed: usize = last_stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("the tour prints the export's line count last");
    assert_eq!(export.lines().count(), printed, "{export}");
    for (index, line) in export.lines().enumerate() {
        let event: serde_json::Value =
            serde_json::from_str(line).expect("one JSON object per line");
        assert!(event["leafData"].is_string(), "{line}");
        assert_eq!(event["leafIndex"], index.to_string(), "{line}");
    }
}

both_engines!(an_acknowledgement_that_did_not_apply_exits_3_and_says_why);
async fn an_acknowledgement_that_did_not_apply_exits_3_and_says_why(db: Db) {
    let tour = Tour::start(db).await;
    // What `jq -r '.messages[0].ackId'` gives for an empty pull.
    let output = tour.client(
        "hva-15",
        Some("worker-7"),
        &["acknowledge-messages", "null"],
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(stdout["results"][0]["ackId"], "null", "{stdout}");
    let stderr = text(&output.stderr);
    let report: serde_json::Value = serde_json::from_str(stderr.trim()).expect("one JSON line");
    assert_eq!(report["code"], "NOT_APPLIED");
    assert_eq!(report["notApplied"][0]["ackId"], "null");
    assert_eq!(report["notApplied"][0]["reason"], "UNKNOWN_ACK_ID");

    let output = tour.client(
        "hva-15",
        Some("worker-7"),
        &["modify-leases", "null", "--lease-seconds", "30"],
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        text(&output.stderr).contains("UNKNOWN_ACK_ID"),
        "{output:?}"
    );

    // An empty pull with --ack acknowledges nothing and succeeds.
    let output = tour.client("hva-15", Some("worker-7"), &["pull-messages", "--ack"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(text(&output.stdout).trim(), "{}");
}

both_engines!(a_retry_with_the_same_request_id_sends_the_same_consent);
async fn a_retry_with_the_same_request_id_sends_the_same_consent(db: Db) {
    let tour = Tour::start(db).await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let record = |extra: &[&str]| {
        let mut args = vec![
            "record-consent",
            "--identity-code",
            PIC,
            "--recipient",
            "hva-15",
            "--form",
            "written",
            "--given-by",
            "subject",
            "--request-id",
            &request_id,
        ];
        args.extend_from_slice(extra);
        tour.client("kela", Some("handler-1"), &args)
    };
    let anchored = ["--valid-from", "2030-01-01T00:00:00Z", "--valid-days", "30"];
    let first = record(&anchored);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let retry = record(&anchored);
    assert_eq!(retry.status.code(), Some(0), "{retry:?}");
    assert_eq!(text(&first.stdout), text(&retry.stdout), "the same consent");

    // Counting from now cannot be repeated: refused before anything is sent.
    let refused = record(&["--valid-days", "30"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("--expire-time") && stderr.contains("drop --request-id"),
        "{stderr}"
    );

    // Without a given id, the computed end is printed so that a retry can send it.
    let output = tour.client(
        "kela",
        Some("handler-1"),
        &[
            "record-consent",
            "--identity-code",
            PIC,
            "--recipient",
            "hva-15",
            "--form",
            "written",
            "--given-by",
            "subject",
            "--valid-days",
            "30",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = text(&output.stderr);
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{name} on stderr: {stderr}"))
    };
    let (generated, expire) = (field("request_id: "), field("expire_time: "));
    let retry = tour.client(
        "kela",
        Some("handler-1"),
        &[
            "record-consent",
            "--identity-code",
            PIC,
            "--recipient",
            "hva-15",
            "--form",
            "written",
            "--given-by",
            "subject",
            "--expire-time",
            &expire,
            "--request-id",
            &generated,
        ],
    );
    assert_eq!(retry.status.code(), Some(0), "{retry:?}");
    assert_eq!(
        text(&output.stdout),
        text(&retry.stdout),
        "the same consent"
    );
}

both_engines!(errors_say_what_to_do);
async fn errors_say_what_to_do(db: Db) {
    let tour = Tour::start(db).await;
    let error_json = |output: &Output| -> serde_json::Value {
        // The last line: mutating commands announce their request_id first.
        let stderr = text(&output.stderr);
        serde_json::from_str(stderr.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {output:?}"))
    };

    // An organisation that does not exist, however it is misspelt: the same answer, before the
    // database, naming the field, the rule and the flag.
    for recipient in ["hva-99", "espoo", "HVA-15", "aland-999"] {
        let output = tour.client(
            "kela",
            Some("handler-1"),
            &[
                "record-consent",
                "--identity-code",
                PIC,
                "--recipient",
                recipient,
                "--form",
                "oral",
                "--given-by",
                "subject",
            ],
        );
        assert_eq!(output.status.code(), Some(1), "{recipient}: {output:?}");
        let error = error_json(&output);
        assert_eq!(error["code"], "INVALID_ARGUMENT", "{recipient}: {error}");
        let violation = &error["fieldViolations"][0];
        assert_eq!(violation["field"], "consent.recipients[0]", "{recipient}");
        assert_eq!(violation["reason"], "UNKNOWN_ORGANIZATION", "{recipient}");
        assert_eq!(violation["flag"], "--recipient", "{recipient}");
        let description = violation["description"].as_str().unwrap_or_default();
        assert!(
            description.starts_with("no such organisation")
                && description.contains("list-organizations"),
            "{recipient}: {description}"
        );
    }

    // A missing --user names the flag and its variable.
    let output = tour.client("kela", None, &["list-referrals"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let hint = error_json(&output)["hint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        hint.contains("--user") && hint.contains("REFERRAL_EXCHANGE_USER"),
        "{hint}"
    );

    // Range errors name the flag; the API's field name stays.
    let output = tour.client(
        "hva-15",
        Some("worker-7"),
        &["pull-messages", "--lease-seconds", "5"],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let error = error_json(&output);
    assert_eq!(error["fieldViolations"][0]["field"], "lease_duration");
    assert_eq!(error["fieldViolations"][0]["flag"], "--lease-seconds");
    assert!(
        error["hint"]
            .as_str()
            .is_some_and(|h| h.starts_with("--lease-seconds: must be between 10 s and 600 s")),
        "{error}"
    );

    // A certificate without clientAuth (the server's own) is refused before connecting.
    let pki = tour.dir.path().join("var/pki");
    let output = tour.client(
        "kela",
        Some("handler-1"),
        &[
            "--cert",
            pki.join("server.pem").to_str().unwrap_or_default(),
            "--key",
            pki.join("server.key").to_str().unwrap_or_default(),
            "list-referrals",
        ],
    );
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("server.pem") && stderr.contains("no clientAuth extended key usage"),
        "{stderr}"
    );

    // A client certificate from another CA (with the right CA for the server): the server
    // refuses it at the handshake and logs why and from where; the client names its certificate.
    let other = tempfile::tempdir().expect("dir");
    referral_exchange::tls::write_dev_pki(other.path(), &["kela"]).expect("other PKI");
    let other_kela = other.path().join("clients/kela");
    let output = tour.client(
        "kela",
        Some("handler-1"),
        &[
            "--cert",
            other_kela.join("cert.pem").to_str().unwrap_or_default(),
            "--key",
            other_kela.join("key.pem").to_str().unwrap_or_default(),
            "list-referrals",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "refused the client certificate {}",
            other_kela.join("cert.pem").display()
        )),
        "{stderr}"
    );
    let refusal = wait_for_refusal(&tour.log, "UnknownIssuer|BadSignature").await;
    assert!(
        refusal["fields"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("--client-ca")),
        "{refusal}"
    );

    // A certificate without clientAuth, from a client that does not check (not this CLI): the
    // server logs the reason.
    let tls = referral_exchange::tls::client_tls_config_pem(
        &std::fs::read(pki.join("ca.pem")).expect("ca"),
        &std::fs::read(pki.join("server.pem")).expect("cert"),
        &std::fs::read(pki.join("server.key")).expect("key"),
        "localhost",
    );
    let channel = tonic::transport::Endpoint::from_shared(tour.endpoint.clone())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await;
    if let Ok(channel) = channel {
        let answer = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        assert!(answer.is_err(), "refused: {answer:?}");
    }
    let refusal = wait_for_refusal(&tour.log, "extended key usage|InvalidPurpose").await;
    assert!(
        refusal["fields"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("clientAuth")),
        "{refusal}"
    );
    // Never a certificate's names in the log.
    let log = tour.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert!(!log.contains("urn:referral-exchange"), "{log}");

    // A server certificate from another CA: the error names the CA file used.
    let other_ca = other.path().join("ca.pem");
    let output = tour.client(
        "kela",
        Some("handler-1"),
        &[
            "--ca",
            other_ca.to_str().unwrap_or_default(),
            "list-referrals",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("not issued by the CA in {}", other_ca.display())),
        "{stderr}"
    );
}

/// The server's "TLS handshake refused" log line whose reason matches one of the `|`-separated
/// words, waiting a little for it (the server logs once it has the client's alert or data).
async fn wait_for_refusal(log: &ServerLog, reasons: &str) -> serde_json::Value {
    for _ in 0..50 {
        let found = log.lock().ok().and_then(|lines| {
            lines.iter().rev().find_map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = &json["fields"];
                let reason = fields["reason"].as_str()?;
                (fields["message"] == "TLS handshake refused"
                    && reasons.split('|').any(|r| reason.contains(r)))
                .then_some(json)
            })
        });
        if let Some(json) = found {
            assert!(
                json["fields"]["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("127.0.0.1:")),
                "the peer's address: {json}"
            );
            return json;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = log.lock().map(|l| l.join("\n")).unwrap_or_default();
    panic!("no handshake refusal with {reasons} in the server's log:\n{log}");
}
