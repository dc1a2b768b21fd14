//! PostgreSQL over TLS, on a private cluster this test starts with `ssl = on` and only `hostssl` lines
//! in `pg_hba.conf`, with a CA and server certificate the test makes: the server works through
//! `sslmode=verify-full` and `sslrootcert`, refuses to start when the CA is not the one that issued the
//! server's certificate (and says so), and a connection without TLS is refused by PostgreSQL.

use std::{path::Path, process::Command, time::Duration};

use referral_exchange::{proto::v1 as pb, tls};

use crate::{cluster::PrivateCluster, helpers::*};

/// A cluster that speaks TLS only, with the server certificate of the test PKI in `pki` (issued for
/// 127.0.0.1 and localhost).
fn tls_only_cluster(pki: &Path) -> PrivateCluster {
    let layout = tls::PkiLayout::new(pki);
    let cluster = PrivateCluster::init();
    cluster.write_file(
        "server.crt",
        &std::fs::read(layout.server_cert()).expect("server certificate"),
    );
    cluster.write_file(
        "server.key",
        &std::fs::read(layout.server_key()).expect("server key"),
    );
    cluster.configure("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'");
    // No `host` and no `local` line: a connection without TLS has nowhere to go.
    cluster.write_file("pg_hba.conf", b"hostssl all all 127.0.0.1/32 trust\n");
    cluster.up();
    cluster
}

fn url_with(cluster: &PrivateCluster, query: &str) -> String {
    format!("{}?{query}", cluster.url())
}

/// A CA and a server certificate for 127.0.0.1, made by the test.
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    tls::write_dev_pki(dir.path(), &[]).expect("a CA and a server certificate");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reaches_postgresql_over_tls_with_verify_full() {
    let pki = pki();
    let cluster = tls_only_cluster(pki.path());
    let ca = tls::PkiLayout::new(pki.path()).ca_cert();
    let url = url_with(
        &cluster,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let app = TestApp::spawn_on(
        Db::Postgres,
        TestDb::External { url },
        default_start(),
        |_| {},
    )
    .await;

    let mut kela = app.kela().await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();
    let read = kela
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: created.name.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(read.name, created.name);

    // PostgreSQL's own view: every session of the server is encrypted.
    let sessions = app
        .sql(
            "SELECT CAST(s.ssl AS TEXT) || ' ' || s.version FROM pg_stat_ssl s \
             JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.application_name LIKE 'referral-exchange/%'",
        )
        .await
        .expect("pg_stat_ssl");
    assert!(!sessions.is_empty(), "the server has sessions");
    assert!(
        sessions.iter().all(|s| s.starts_with("true TLSv1.")),
        "every session over TLS: {sessions:?}"
    );
    app.stop().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_refuses_to_start_and_says_why() {
    let pki = pki();
    let cluster = tls_only_cluster(pki.path());
    // A CA of its own that never issued the server's certificate.
    let stranger = self::pki();
    let wrong_ca = tls::PkiLayout::new(stranger.path()).ca_cert();
    let url = url_with(
        &cluster,
        &format!("sslmode=verify-full&sslrootcert={}", wrong_ca.display()),
    );

    let data = tempfile::tempdir().expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--database-url", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not refuse to start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "refused to start: {stderr}");
    let port = cluster.port();
    for expected in [
        format!("TLS with PostgreSQL at 127.0.0.1:{port} failed"),
        "certificate is not trusted".to_owned(),
        "sslrootcert".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} in {stderr}");
    }

    // The same explanation from the store's connect_error, which every connection goes through.
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
    use sqlx::Connection as _;
    let error = sqlx::PgConnection::connect_with(&options)
        .await
        .expect_err("refused");
    let explained = referral_exchange::store::postgres::connect_error(&options, &error);
    assert!(
        explained.contains("certificate is not trusted"),
        "{explained}"
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_tls_is_refused_by_postgresql() {
    let pki = pki();
    let cluster = tls_only_cluster(pki.path());
    let ca = tls::PkiLayout::new(pki.path()).ca_cert();
    use sqlx::Connection as _;

    let plain = url_with(&cluster, "sslmode=disable");
    let error = sqlx::PgConnection::connect(&plain)
        .await
        .expect_err("refused without TLS");
    let message = error.to_string();
    assert!(
        message.contains("no pg_hba.conf entry") && message.contains("no encryption"),
        "{message}"
    );
    let options: sqlx::postgres::PgConnectOptions = plain.parse().expect("url");
    let explained = referral_exchange::store::postgres::connect_error(&options, &error);
    assert!(
        explained.contains("over TLS only") && explained.contains("sslmode"),
        "{explained}"
    );

    // The same cluster with TLS, as a check that the refusal was about TLS and nothing else.
    let verified = url_with(
        &cluster,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let mut connection = sqlx::PgConnection::connect(&verified)
        .await
        .expect("connects over TLS");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl);
    drop(cluster);
}
