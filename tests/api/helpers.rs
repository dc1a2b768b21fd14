//! The test harness: a real server on 127.0.0.1:0 with a freshly generated PKI, over a real SQLite file
//! or a PostgreSQL database of its own, and clients that speak mutual TLS to it.

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use referral_exchange::{
    access::{CORRELATION_ID_HEADER, USER_ID_HEADER},
    clock::ManualClock,
    config::TlsFiles,
    mailbox::DeliveryPolicy,
    proto::v1::{
        self as pb, audit_service_client::AuditServiceClient,
        consent_service_client::ConsentServiceClient,
        directory_service_client::DirectoryServiceClient,
        mailbox_service_client::MailboxServiceClient,
        referral_service_client::ReferralServiceClient,
        reporting_service_client::ReportingServiceClient,
    },
    server::{self, RunningServer},
    tls,
};
use tempfile::TempDir;
use tonic::{
    Code, Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Organisations the test PKI issues certificates for.
pub const ORGS: &[&str] = &[
    "kela",
    "hva-15",
    "hva-12",
    "helsinki",
    "aland-478",
    "auditor-dpo",
    "hva-22",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs the test `$name`, an ordinary `async fn $name(db: Db)` written beside the call, once on
/// SQLite and once on PostgreSQL: as `$name::sqlite` and `$name::postgres`.
macro_rules! both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Db::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Db::Postgres).await
            }
        }
    };
}
pub(crate) use both_engines;

/// A monday in 2025 at 10:00 Helsinki time: the default start of the test clock.
pub fn default_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 3, 8, 0, 0)
        .single()
        .expect("valid time")
}

/// A database that exists for one test and is removed after it.
pub enum TestDb {
    Sqlite {
        _dir: TempDir,
        url: String,
    },
    /// A database the test manages itself (a private cluster's): nothing to remove here.
    External {
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub async fn create(db: Db) -> TestDb {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite:{}", dir.path().join("test.db").display());
                TestDb::Sqlite { _dir: dir, url }
            }
            Db::Postgres => {
                let admin_url = postgres_url();
                let mut admin = admin_connection(&admin_url).await;
                sweep_stale_databases(&mut admin).await;
                let name = format!(
                    "rx_test_{}_{}",
                    Utc::now().timestamp(),
                    uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .get(..12)
                        .unwrap_or("x")
                );
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create database");
                let url = with_database(&admin_url, &name);
                TestDb::Postgres {
                    admin_url,
                    name,
                    url,
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. }
            | TestDb::Postgres { url, .. }
            | TestDb::External { url } => url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop cannot await; a short-lived runtime on its own thread can.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        let mut admin = admin_connection(&admin_url).await;
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    });
                }
            })
            .join();
        }
    }
}

/// The connection the tests create their databases through. A missing database (a fresh
/// PostgreSQL has no `test`) is created first, through the server's `postgres` database; any other
/// failure says which step failed (server, login, database) and stops the tests: they fail, never
/// skip, without PostgreSQL.
pub(crate) async fn admin_connection(url: &str) -> sqlx::PgConnection {
    use std::str::FromStr;

    use sqlx::{Connection, postgres::PgConnectOptions};
    let options = PgConnectOptions::from_str(url)
        .unwrap_or_else(|e| panic!("REFERRAL_EXCHANGE_TEST_POSTGRES_URL is not a URL: {e}"));
    let fail = |e: &sqlx::Error| -> ! {
        panic!(
            "PostgreSQL is required for the tests: {}. Set REFERRAL_EXCHANGE_TEST_POSTGRES_URL for \
             another server",
            referral_exchange::store::postgres::connect_error(&options, e)
        )
    };
    match sqlx::PgConnection::connect_with(&options).await {
        Ok(connection) => connection,
        Err(e) if is_missing_database(&e) => {
            let database = options.get_database().unwrap_or("test").to_owned();
            let maintenance = options.clone().database("postgres");
            let mut admin = sqlx::PgConnection::connect_with(&maintenance)
                .await
                .unwrap_or_else(|e| fail(&e));
            let create = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
            // Another test binary may have created it meanwhile.
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
                && !e.to_string().contains("already exists")
            {
                fail(&e);
            }
            sqlx::PgConnection::connect_with(&options)
                .await
                .unwrap_or_else(|e| fail(&e))
        }
        Err(e) => fail(&e),
    }
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

/// Databases left behind by a test run that was killed: older than an hour.
async fn sweep_stale_databases(admin: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'rx_test_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let cutoff = Utc::now().timestamp() - 3600;
    for name in names {
        let created = name.split('_').nth(2).and_then(|t| t.parse::<i64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *admin)
            .await;
        }
    }
}

/// The PostgreSQL server the tests use: `REFERRAL_EXCHANGE_TEST_POSTGRES_URL`, or the local one.
pub fn postgres_url() -> String {
    std::env::var("REFERRAL_EXCHANGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// `url` with its database replaced by `name`.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{url}/{name}"),
    }
}

/// The data key every test store and server seals with: fixed, so that a restart, a second replica
/// or a store opened beside the server reads what the others wrote.
pub fn data_keys() -> Arc<referral_exchange::sealing::DataKeys> {
    Arc::new(referral_exchange::sealing::DataKeys::new(&[9; 32], &[]))
}

pub struct TestApp {
    pub server: Option<RunningServer>,
    pub clock: ManualClock,
    pub pki: TempDir,
    pub db: TestDb,
    pub engine: Db,
}

impl TestApp {
    pub async fn spawn(db: Db) -> TestApp {
        Self::spawn_at(db, default_start()).await
    }

    pub async fn spawn_at(engine: Db, start: DateTime<Utc>) -> TestApp {
        Self::spawn_with(engine, start, |_| {}).await
    }

    /// A server whose settings `adjust` may change (delivery policy, schedules…).
    pub async fn spawn_with(
        engine: Db,
        start: DateTime<Utc>,
        adjust: impl FnOnce(&mut server::Settings),
    ) -> TestApp {
        let db = TestDb::create(engine).await;
        Self::spawn_on(engine, db, start, adjust).await
    }

    /// A server on an existing database: a second replica, or a restart.
    pub async fn spawn_on(
        engine: Db,
        db: TestDb,
        start: DateTime<Utc>,
        adjust: impl FnOnce(&mut server::Settings),
    ) -> TestApp {
        Self::try_spawn_on(engine, db, start, adjust)
            .await
            .map_err(|(e, _)| e)
            .expect("server starts")
    }

    /// [`TestApp::spawn_on`], or why the server refused to start (with the database back).
    pub async fn try_spawn_on(
        engine: Db,
        db: TestDb,
        start: DateTime<Utc>,
        adjust: impl FnOnce(&mut server::Settings),
    ) -> Result<TestApp, (anyhow::Error, TestDb)> {
        let pki = tempfile::tempdir().expect("temp dir");
        tls::write_dev_pki(pki.path(), ORGS).expect("dev pki");
        let layout = tls::PkiLayout::new(pki.path());
        let clock = ManualClock::new(start);
        let mut settings = server::Settings::new(
            "127.0.0.1:0".parse().expect("addr"),
            db.url().to_owned(),
            TlsFiles {
                cert: layout.server_cert(),
                key: layout.server_key(),
                client_ca: layout.ca_cert(),
                crls: Vec::new(),
            },
            vec![7; 32],
            data_keys(),
        );
        settings.clock = Arc::new(clock.clone());
        // Waiting pulls look again often: lease expiry in tests comes from the manual clock.
        settings.delivery = DeliveryPolicy {
            poll_interval: Duration::from_millis(50),
            ..DeliveryPolicy::default()
        };
        // Background rounds run once at start; tests run further rounds themselves, at the moment
        // (of the manual clock) they choose.
        settings.background.interval = Duration::from_secs(3600);
        // The HTTP face too, on a port of its own.
        settings.http = Some(server::HttpSettings::new(
            "127.0.0.1:0".parse().expect("addr"),
        ));
        adjust(&mut settings);
        let server = match server::start(settings).await {
            Ok(server) => server,
            Err(e) => return Err((e, db)),
        };
        // The background tasks' first rounds run at start; a test that moves the clock must not
        // race them (a late first round would do at the new time what the test means to do).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !server.background_settled() {
            assert!(
                std::time::Instant::now() < deadline,
                "the background tasks' first rounds did not settle"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(TestApp {
            server: Some(server),
            clock,
            pki,
            db,
            engine,
        })
    }

    /// The running server's use cases, to run background rounds directly.
    pub fn exchange(&self) -> &std::sync::Arc<referral_exchange::exchange::Exchange> {
        &self.server.as_ref().expect("running").exchange
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").addr
    }

    pub fn http_port(&self) -> u16 {
        self.server
            .as_ref()
            .and_then(|s| s.http_addr)
            .expect("the HTTP face is on")
            .port()
    }

    /// An HTTP/1.1 connection to the HTTP face with `org`'s certificate, sending `x-user-id: user`.
    pub async fn rest(&self, org: &str, user: Option<&str>) -> crate::rest::Rest {
        let dir = self.profile(org);
        let config = crate::rest::tls_config(
            &dir.join("ca.pem"),
            Some((&dir.join("cert.pem"), &dir.join("key.pem"))),
        );
        let rest = crate::rest::Rest::connect(self.http_port(), config).await;
        match user {
            Some(user) => rest.header(USER_ID_HEADER, user),
            None => rest,
        }
    }

    pub fn profile(&self, org: &str) -> PathBuf {
        tls::PkiLayout::new(self.pki.path()).client_dir(org)
    }

    /// A channel authenticated as `org`.
    pub async fn channel(&self, org: &str) -> Channel {
        self.channel_at(&self.profile(org)).await
    }

    /// A channel authenticated with the profile (`ca.pem`, `cert.pem`, `key.pem`) in `dir`.
    pub async fn channel_at(&self, dir: &std::path::Path) -> Channel {
        let tls = tls::client_tls_config(
            &dir.join("ca.pem"),
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
            "localhost",
        )
        .expect("client tls");
        Endpoint::from_shared(format!("https://127.0.0.1:{}", self.addr().port()))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    /// Clients for every service, as `user` of `org`.
    pub async fn as_user(&self, org: &str, user: &str) -> Clients {
        Clients::new(
            self.channel(org).await,
            Metadata {
                user: Some(user.to_owned()),
                correlation: None,
            },
        )
    }

    pub async fn kela(&self) -> Clients {
        self.as_user("kela", "handler-1").await
    }

    pub async fn receiver(&self, org: &str) -> Clients {
        self.as_user(org, "worker-1").await
    }

    pub async fn auditor(&self) -> Clients {
        Clients::new(
            self.channel("auditor-dpo").await,
            Metadata {
                user: Some("dpo-1".into()),
                correlation: None,
            },
        )
    }

    /// Runs `sql` on a raw connection to the test database, as an attacker with database access
    /// would, and returns the first column of each row as text.
    pub async fn sql(&self, sql: &str) -> Result<Vec<String>, sqlx::Error> {
        sql_text(self.engine, self.db.url(), sql).await
    }

    /// Every stored audit event's columns as text, for searching what the log holds.
    pub async fn audit_table_text(&self) -> String {
        self.sql(
            "SELECT organization || '|' || user_id || '|' || method || '|' || resources || '|' || \
             subject_pseudonyms || '|' || correlation_id || '|' || disclosures FROM audit_events",
        )
        .await
        .expect("read the audit table")
        .join("\n")
    }

    pub async fn audit_event_count(&self) -> i64 {
        let count = self
            .sql("SELECT CAST(COUNT(*) AS TEXT) FROM audit_events")
            .await
            .expect("count");
        count.first().and_then(|c| c.parse().ok()).expect("a count")
    }

    /// Stops the server and hands back its database, for a restart on it.
    pub async fn stop_keeping_db(mut self) -> TestDb {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
        self.db
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Runs `sql` on a raw connection to the `engine` database at `url` (a test's own, or the one a
/// server binary runs on) and returns the first column of each row as text.
pub async fn sql_text(engine: Db, url: &str, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::{Connection, Row};
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match engine {
        Db::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            let rows = sqlx::query(sql).fetch_all(&mut conn).await?;
            rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            let rows = sqlx::query(sql).fetch_all(&mut conn).await?;
            rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
        }
    }
}

/// Adds `x-user-id` and `x-correlation-id` to every request.
#[derive(Clone)]
pub struct Metadata {
    pub user: Option<String>,
    pub correlation: Option<String>,
}

impl Interceptor for Metadata {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(user) = &self.user {
            request.metadata_mut().insert(
                USER_ID_HEADER,
                user.parse().map_err(|_| Status::internal("bad header"))?,
            );
        }
        if let Some(c) = &self.correlation {
            request.metadata_mut().insert(
                CORRELATION_ID_HEADER,
                c.parse().map_err(|_| Status::internal("bad header"))?,
            );
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Metadata>;

#[derive(Clone)]
pub struct Clients {
    pub referrals: ReferralServiceClient<Svc>,
    pub consents: ConsentServiceClient<Svc>,
    pub mailbox: MailboxServiceClient<Svc>,
    pub audit: AuditServiceClient<Svc>,
    pub directory: DirectoryServiceClient<Svc>,
    pub reporting: ReportingServiceClient<Svc>,
}

impl Clients {
    pub fn new(channel: Channel, metadata: Metadata) -> Self {
        Self {
            referrals: ReferralServiceClient::with_interceptor(channel.clone(), metadata.clone()),
            consents: ConsentServiceClient::with_interceptor(channel.clone(), metadata.clone()),
            mailbox: MailboxServiceClient::with_interceptor(channel.clone(), metadata.clone()),
            audit: AuditServiceClient::with_interceptor(channel.clone(), metadata.clone()),
            directory: DirectoryServiceClient::with_interceptor(channel.clone(), metadata.clone()),
            reporting: ReportingServiceClient::with_interceptor(channel, metadata),
        }
    }
}

// --- request builders

pub const PIC: &str = "131052-308T";
/// Jyväskylä: organised by the Central Finland wellbeing services county, hva-15.
pub const JYVASKYLA: &str = "179";
pub const HELSINKI: &str = "091";

/// The consent `name` as `clients` read it.
pub async fn get_consent(clients: &mut Clients, name: &str) -> pb::Consent {
    clients
        .consents
        .get_consent(pb::GetConsentRequest { name: name.into() })
        .await
        .expect("get consent")
        .into_inner()
}

/// The audit events of calls to `method` (its short name, e.g. `GetReferral`), as `auditor` lists
/// them, oldest first.
pub async fn audit_events_of(auditor: &mut Clients, method: &str) -> Vec<pb::AuditEvent> {
    auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: method.into(),
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events
}

pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn subject(code: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        personal_identity_code: code.into(),
        ..Default::default()
    })
}

pub fn oral_consent(code: &str, recipients: &[&str]) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        consent: Some(pb::Consent {
            subject: subject(code),
            purpose: pb::consent::Purpose::SocialWelfareReferral as i32,
            recipients: recipients
                .iter()
                .map(|r| format!("organizations/{r}"))
                .collect(),
            form: pb::consent::Form::Oral as i32,
            given_by: pb::consent::GivenBy::Subject as i32,
            ..Default::default()
        }),
        request_id: new_request_id(),
    }
}

pub fn written_consent(
    code: &str,
    recipients: &[&str],
    expire: DateTime<Utc>,
) -> pb::RecordConsentRequest {
    let mut request = oral_consent(code, recipients);
    if let Some(c) = request.consent.as_mut() {
        c.form = pb::consent::Form::Written as i32;
        c.expire_time = Some(pbjson_types::Timestamp {
            seconds: expire.timestamp(),
            nanos: 0,
        });
        c.evidence_reference = "Y100-2025-0001".into();
    }
    request
}

pub fn referral(code: &str, municipality: &str, consent: &str) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        referral: Some(pb::Referral {
            kind: pb::referral::Kind::NeedForSocialWork as i32,
            subject: subject(code),
            home_municipality_code: municipality.into(),
            reasons: vec![
                pb::referral::Reason::Housing as i32,
                pb::referral::Reason::Debt as i32,
            ],
            reason_text: "Rent arrears; asked for help with housing.".into(),
            deadline_group: pb::referral::DeadlineGroup::NoStatutoryGroup as i32,
            basis: Some(pb::referral::Basis::Consent(consent.into())),
            ..Default::default()
        }),
        request_id: new_request_id(),
    }
}

pub fn notification(code: &str, municipality: &str) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        referral: Some(pb::Referral {
            kind: pb::referral::Kind::NeedNotificationWithoutConsent as i32,
            subject: subject(code),
            home_municipality_code: municipality.into(),
            reasons: vec![pb::referral::Reason::Health as i32],
            reason_text: "Client appears unable to look after own safety.".into(),
            urgent: true,
            deadline_group: pb::referral::DeadlineGroup::NoStatutoryGroup as i32,
            basis: Some(pb::referral::Basis::StatutoryGround(
                pb::referral::StatutoryGround::UnableToCareForSelf as i32,
            )),
            ..Default::default()
        }),
        request_id: new_request_id(),
    }
}

/// Records an oral consent for `recipients` and refers `code` to the organiser of `municipality`.
pub async fn consent_and_refer(
    kela: &mut Clients,
    code: &str,
    municipality: &str,
    recipients: &[&str],
) -> pb::Referral {
    let consent = kela
        .consents
        .record_consent(oral_consent(code, recipients))
        .await
        .expect("consent")
        .into_inner();
    kela.referrals
        .create_referral(referral(code, municipality, &consent.name))
        .await
        .expect("referral")
        .into_inner()
}

/// The test clock's time plus `s` seconds, as a proto timestamp.
pub fn timestamp_after(clock: &ManualClock, s: i64) -> pbjson_types::Timestamp {
    use referral_exchange::clock::Clock;
    let t = clock.now() + chrono::Duration::seconds(s);
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

pub fn seconds(s: i64) -> Option<pbjson_types::Duration> {
    Some(pbjson_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

pub async fn pull(clients: &mut Clients, max: i32) -> Vec<pb::Message> {
    clients
        .mailbox
        .pull_messages(pb::PullMessagesRequest {
            max_messages: max,
            lease_duration: seconds(60),
            wait_duration: None,
        })
        .await
        .expect("pull")
        .into_inner()
        .messages
}

pub async fn ack(clients: &mut Clients, ack_ids: Vec<String>) -> Vec<pb::AckResult> {
    clients
        .mailbox
        .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
        .await
        .expect("ack")
        .into_inner()
        .results
}

/// Pulls and acknowledges every message of the mailbox.
pub async fn drain(clients: &mut Clients) -> Vec<pb::Message> {
    let messages = pull(clients, 100).await;
    if !messages.is_empty() {
        let results = ack(clients, messages.iter().map(|m| m.ack_id.clone()).collect()).await;
        assert!(
            results.iter().all(|r| r.applied),
            "every fresh ack applies: {results:?}"
        );
    }
    messages
}

/// The receiver takes delivery of `name`: pulls its mailbox and acknowledges everything.
pub async fn receive(receiver: &mut Clients, name: &str) -> pb::Referral {
    let messages = drain(receiver).await;
    assert!(
        messages
            .iter()
            .any(|m| m.referral.as_ref().is_some_and(|r| r.name == name)),
        "the routed referral is in the mailbox"
    );
    receiver
        .referrals
        .get_referral(pb::GetReferralRequest { name: name.into() })
        .await
        .expect("get")
        .into_inner()
}

pub fn change_fields(r: &pb::Referral) -> (String, String, String) {
    (r.name.clone(), r.etag.clone(), new_request_id())
}

/// The `ErrorInfo.reason` of a status.
pub fn reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// `(field, reason)` of each field violation of a status.
pub fn violations(status: &Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.reason.clone()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got OK: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// Migrates `url` up to and including `version` (everything when `None`).
pub async fn migrate(db: Db, url: &str, version: Option<i64>) {
    match db {
        Db::Sqlite => {
            let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
                .expect("url")
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.expect("pool");
            let migrator = sqlx::migrate!("migrations/sqlite");
            match version {
                Some(v) => migrator.run_to(v, &pool).await,
                None => migrator.run(&pool).await,
            }
            .expect("migrate");
            pool.close().await;
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.expect("pool");
            let migrator = sqlx::migrate!("migrations/postgres");
            match version {
                Some(v) => migrator.run_to(v, &pool).await,
                None => migrator.run(&pool).await,
            }
            .expect("migrate");
            pool.close().await;
        }
    }
}
