//! The server as operators and tools see it: health, reflection for grpcurl, a graceful stop on
//! SIGTERM, and logs that never carry an identity code.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use referral_exchange::proto::v1 as pb;
use tokio_stream::StreamExt;

use crate::helpers::*;

/// The services a reflection client of version `$version` (`v1` or `v1alpha`) lists.
macro_rules! list_services {
    ($app:expr, $version:ident) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new($app.channel("kela").await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("reflection")
            .into_inner();
        match stream
            .next()
            .await
            .and_then(Result::ok)
            .and_then(|r| r.message_response)
        {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => panic!("unexpected reflection response {other:?}"),
        }
    }};
}

both_engines!(health_and_both_reflection_versions_are_served);
async fn health_and_both_reflection_versions_are_served(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(app.channel("hva-15").await);
    for service in [
        "",
        "referral_exchange.v1.ReferralService",
        "referral_exchange.v1.MailboxService",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    for services in [list_services!(app, v1), list_services!(app, v1alpha)] {
        for expected in [
            "referral_exchange.v1.ReferralService",
            "referral_exchange.v1.ConsentService",
            "referral_exchange.v1.MailboxService",
            "referral_exchange.v1.AuditService",
            "referral_exchange.v1.DirectoryService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} in {services:?}"
            );
        }
    }
    app.stop().await;
}

/// Whether reflection (version `v1alpha`, what grpcurl speaks) finds the file defining `symbol`.
async fn reflection_finds(app: &TestApp, symbol: &str) -> bool {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(app.channel("kela").await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream.next().await.and_then(Result::ok);
    matches!(
        response.and_then(|r| r.message_response),
        Some(MessageResponse::FileDescriptorResponse(files)) if !files.file_descriptor_proto.is_empty()
    )
}

/// grpcurl decodes a refusal's details by asking reflection for their types.
#[tokio::test]
async fn reflection_serves_the_error_detail_types_of_refusals() {
    let app = TestApp::spawn(Db::Sqlite).await;
    for symbol in ["google.rpc.ErrorInfo", "google.rpc.BadRequest"] {
        assert!(reflection_finds(&app, symbol).await, "{symbol}");
    }
    assert!(!reflection_finds(&app, "google.rpc.NoSuchDetail").await);
    app.stop().await;
}

/// The database a server binary of a test runs on: a fresh PostgreSQL one, or none for SQLite (the
/// server then makes its file in its data directory).
pub(crate) async fn binary_database(db: Db) -> Option<TestDb> {
    match db {
        Db::Sqlite => None,
        Db::Postgres => Some(TestDb::create(Db::Postgres).await),
    }
}

/// A server process that ends with its test: killed when dropped, so that a test that fails half-way
/// leaves no server running behind it.
pub(crate) struct ServerChild(pub(crate) std::process::Child);

impl std::ops::Deref for ServerChild {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ServerChild {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        // Nothing to do for one the test already stopped and waited for.
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the real binary on port 0 in `dir` and returns it with the address it logged.
pub(crate) fn start_binary(
    dir: &std::path::Path,
    database_url: Option<&str>,
) -> (ServerChild, std::net::SocketAddr) {
    start_binary_with(dir, database_url, &[])
}

/// [`start_binary`] with extra environment variables for the server.
pub(crate) fn start_binary_with(
    dir: &std::path::Path,
    database_url: Option<&str>,
    env: &[(&str, &str)],
) -> (ServerChild, std::net::SocketAddr) {
    let (child, addr, _log) = start_binary_logged(dir, database_url, env);
    (child, addr)
}

/// The server's log lines (JSON) after the one that reported its address, as they come.
pub(crate) type ServerLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`start_binary_with`], keeping the server's log for the test to read.
pub(crate) fn start_binary_logged(
    dir: &std::path::Path,
    database_url: Option<&str>,
    env: &[(&str, &str)],
) -> (ServerChild, std::net::SocketAddr, ServerLog) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_referral-exchange"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    command.envs(env.iter().copied());
    let mut child = ServerChild(command.spawn().expect("start the binary"));
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let serving: String;
    let addr = loop {
        assert!(
            Instant::now() < deadline,
            "the server did not report its address"
        );
        let line = lines
            .next()
            .expect("server exited before serving")
            .expect("read stderr");
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
            && json["fields"]["message"] == "serving"
        {
            serving = line.clone();
            // An address or "off", never Rust's debug spelling of an absent one.
            let health = json["fields"]["health"].as_str().unwrap_or_default();
            assert!(
                health == "off" || health.parse::<std::net::SocketAddr>().is_ok(),
                "health: {health:?}"
            );
            break json["fields"]["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("socket addr");
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe. The log starts with the line
    // that reported the addresses (see [`http_addr`]).
    let log = ServerLog::new(std::sync::Mutex::new(vec![serving]));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(mut kept) = kept.lock() {
                kept.push(line);
            }
        }
    });
    (child, addr, log)
}

/// The HTTP face's address in the "serving" line at the start of `log`.
pub(crate) fn http_addr(log: &ServerLog) -> std::net::SocketAddr {
    let lines = log.lock().expect("log");
    let json: serde_json::Value =
        serde_json::from_str(lines.first().expect("serving line")).expect("json");
    json["fields"]["http"]
        .as_str()
        .expect("http")
        .parse()
        .expect("the HTTP face is on")
}

pub(crate) async fn binary_client(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    org: &str,
    user: &str,
) -> Clients {
    let profile = referral_exchange::tls::PkiLayout::new(dir.join("pki")).client_dir(org);
    let tls = referral_exchange::tls::client_tls_config(
        &profile.join("ca.pem"),
        &profile.join("cert.pem"),
        &profile.join("key.pem"),
        "localhost",
    )
    .expect("tls");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    Clients::new(
        channel,
        Metadata {
            user: Some(user.into()),
            correlation: None,
        },
    )
}

both_engines!(sigterm_lets_calls_in_flight_finish_then_exits_zero);
async fn sigterm_lets_calls_in_flight_finish_then_exits_zero(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = binary_database(db).await;
    let (mut child, addr) = start_binary(dir.path(), database.as_ref().map(TestDb::url));
    assert!(
        dir.path().join("pki/clients/kela/cert.pem").exists(),
        "created a development PKI"
    );
    assert!(
        dir.path().join("pseudonym.key").exists(),
        "created a development pseudonym key"
    );
    let hva15 = binary_client(dir.path(), addr, "hva-15", "worker-1").await;
    let mut kela = binary_client(dir.path(), addr, "kela", "handler-1").await;

    // In flight at SIGTERM: a long-poll (20 s) and a stream.
    let mut poller = hva15.clone();
    let in_flight = tokio::spawn(async move {
        poller
            .mailbox
            .pull_messages(pb::PullMessagesRequest {
                max_messages: 1,
                lease_duration: seconds(30),
                wait_duration: seconds(20),
            })
            .await
    });
    let mut stream = kela
        .mailbox
        .stream_messages(pb::StreamMessagesRequest {
            lease_duration: seconds(30),
            max_outstanding_messages: 5,
        })
        .await
        .expect("stream")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let answer = in_flight.await.expect("task");
    assert!(answer.is_ok(), "the call in flight finished: {answer:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the long-poll ended early, not at its 20 s"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "the stream ended cleanly: {end:?}");
    drop(hva15);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

both_engines!(a_restarted_server_reuses_its_development_pki_and_answers_retries_the_same);
async fn a_restarted_server_reuses_its_development_pki_and_answers_retries_the_same(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = binary_database(db).await;
    let (mut child, addr) = start_binary(dir.path(), database.as_ref().map(TestDb::url));
    let ca = std::fs::read(dir.path().join("pki/ca.pem")).expect("ca");
    let mut kela = binary_client(dir.path(), addr, "kela", "handler-1").await;
    let request = notification(PIC, JYVASKYLA);
    let first = kela
        .referrals
        .create_referral(request.clone())
        .await
        .expect("create")
        .into_inner();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;

    let (mut child, addr) = start_binary(dir.path(), database.as_ref().map(TestDb::url));
    assert_eq!(
        std::fs::read(dir.path().join("pki/ca.pem")).expect("ca"),
        ca,
        "the same CA after a restart"
    );
    let mut kela = binary_client(dir.path(), addr, "kela", "handler-1").await;
    let retry = kela
        .referrals
        .create_referral(request)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        retry, first,
        "a retry after a restart returns the first result"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

/// The CPUs each thread of process `pid` may run on, as the kernel lists them ("0-1", "1").
fn allowed_cpus(pid: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|cpus| cpus.trim().to_string())
        })
        .collect()
}

both_engines!(a_sqlite_server_keeps_to_one_cpu_and_a_postgres_server_to_all_unless_told);
async fn a_sqlite_server_keeps_to_one_cpu_and_a_postgres_server_to_all_unless_told(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let database = binary_database(db).await;
    let url = database.as_ref().map(TestDb::url);
    let ours = allowed_cpus("self")
        .into_iter()
        .next()
        .expect("this test's CPUs");
    let single = |cpus: &str| !cpus.contains(['-', ',']);

    for (setting, one_cpu) in [("auto", db == Db::Sqlite), ("one", true), ("all", false)] {
        let (mut child, addr) = start_binary_with(
            dir.path(),
            url,
            &[("REFERRAL_EXCHANGE_CPU_AFFINITY", setting)],
        );
        // Serving, and the store's connection threads started: every thread is counted.
        let mut kela = binary_client(dir.path(), addr, "kela", "handler-1").await;
        kela.referrals
            .create_referral(notification(PIC, JYVASKYLA))
            .await
            .expect("create");
        let threads = allowed_cpus(&child.id().to_string());
        assert!(
            threads.len() > 2,
            "{setting}: read the server's threads: {threads:?}"
        );
        if one_cpu {
            assert!(
                threads
                    .iter()
                    .all(|cpus| single(cpus) && cpus == &threads[0]),
                "{setting}: one CPU for all: {threads:?}"
            );
        } else {
            assert!(
                threads.iter().all(|cpus| cpus == &ours),
                "{setting}: as allowed to the test ({ours}): {threads:?}"
            );
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
}
