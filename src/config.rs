//! Configuration of `referral-exchange serve`: flags, each with a `REFERRAL_EXCHANGE_*` environment
//! variable, and defaults that run a complete development instance with nothing else installed.
//!
//! | flag | environment | default |
//! |---|---|---|
//! | `--listen` | `REFERRAL_EXCHANGE_LISTEN` | `127.0.0.1:50051` |
//! | `--http-listen` | `REFERRAL_EXCHANGE_HTTP_LISTEN` | `127.0.0.1:8443` (`''` turns the HTTP face off) |
//! | `--xroad-security-server-cert` | `REFERRAL_EXCHANGE_XROAD_SECURITY_SERVER_CERTS` (comma-separated) | none |
//! | `--xroad-client-map` | `REFERRAL_EXCHANGE_XROAD_CLIENT_MAP` | none (no X-Road client is mapped) |
//! | `--data-dir` | `REFERRAL_EXCHANGE_DATA_DIR` | `./var` |
//! | `--database-url` | `REFERRAL_EXCHANGE_DATABASE_URL` | `sqlite:<data-dir>/referral-exchange.db` |
//! | `--tls-cert`, `--tls-key`, `--client-ca` | `REFERRAL_EXCHANGE_TLS_CERT`, `…_TLS_KEY`, `…_CLIENT_CA` | a development PKI in `<data-dir>/pki` |
//! | `--client-crl` | `REFERRAL_EXCHANGE_CLIENT_CRLS` (comma-separated) | none |
//! | `--max-connection-age-seconds` | `REFERRAL_EXCHANGE_MAX_CONNECTION_AGE_SECONDS` | `3600` |
//! | `--org-requests-per-second`, `--org-burst` | `REFERRAL_EXCHANGE_ORG_REQUESTS_PER_SECOND`, `…_ORG_BURST` | `200`, `400` |
//! | `--org-concurrent-calls`, `--max-concurrent-calls` | `REFERRAL_EXCHANGE_ORG_CONCURRENT_CALLS`, `…_MAX_CONCURRENT_CALLS` | `64`, `256` |
//! | `--pseudonym-key-file` | `REFERRAL_EXCHANGE_PSEUDONYM_KEY_FILE` | a development key in `<data-dir>/pseudonym.key` |
//! | `--previous-pseudonym-key-file` | `REFERRAL_EXCHANGE_PREVIOUS_PSEUDONYM_KEY_FILES` (comma-separated) | none |
//! | `--data-key-file` | `REFERRAL_EXCHANGE_DATA_KEY_FILE` | a development key in `<data-dir>/data.key` |
//! | `--previous-data-key-file` | `REFERRAL_EXCHANGE_PREVIOUS_DATA_KEY_FILES` (comma-separated) | none |
//! | `--audit-signing-key-file` | `REFERRAL_EXCHANGE_AUDIT_SIGNING_KEY_FILE` | a development key in `<data-dir>/audit-signing.key` |
//! | `--audit-log-origin` | `REFERRAL_EXCHANGE_AUDIT_LOG_ORIGIN` | the key's name, or `referral-exchange/audit-log` |
//! | `--audit-sequencer-interval-ms` | `REFERRAL_EXCHANGE_AUDIT_SEQUENCER_INTERVAL_MS` | `1000` |
//! | `--log-format` | `REFERRAL_EXCHANGE_LOG_FORMAT` | `text` |
//! | `--max-delivery-attempts` | `REFERRAL_EXCHANGE_MAX_DELIVERY_ATTEMPTS` | `10` |
//! | `--message-retention-days` | `REFERRAL_EXCHANGE_MESSAGE_RETENTION_DAYS` | `90` |
//! | `--content-retention-days` | `REFERRAL_EXCHANGE_CONTENT_RETENTION_DAYS` | `90` (`0`: erased at the next background round) |
//! | `--receipt-deadline-working-days` | `REFERRAL_EXCHANGE_RECEIPT_DEADLINE_WORKING_DAYS` | `3` |
//! | `--min-cell-size` | `REFERRAL_EXCHANGE_MIN_CELL_SIZE` | `5` (below 3 refused at start) |
//! | `--background-interval-seconds` | `REFERRAL_EXCHANGE_BACKGROUND_INTERVAL_SECONDS` | `5` |
//! | `--takeover-seconds` | `REFERRAL_EXCHANGE_TAKEOVER_SECONDS` | `10` |
//! | `--no-migrate` | `REFERRAL_EXCHANGE_NO_MIGRATE` | off: migrate on start |
//! | `--health-listen` | `REFERRAL_EXCHANGE_HEALTH_LISTEN` | none |
//! | `--drain-seconds` | `REFERRAL_EXCHANGE_DRAIN_SECONDS` | `0` |
//! | `--group-commit-max` | `REFERRAL_EXCHANGE_GROUP_COMMIT_MAX` | `32` (at most 64) |
//! | `--group-commit-lanes` | `REFERRAL_EXCHANGE_GROUP_COMMIT_LANES` | `4` |
//! | `--cpu-affinity` | `REFERRAL_EXCHANGE_CPU_AFFINITY` | `auto`: one CPU for SQLite, all for PostgreSQL |
//!
//! The development defaults announce themselves loudly at start-up: a production deployment names its
//! certificates and keys explicitly (see `deploy/README.md`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::{
    audit::{MIN_KEY_BYTES, note::NoteSigner},
    sealing::DataKeys,
    tls,
};

/// The audit log's origin (the first line of its checkpoints and the name of its key) when none is
/// configured. A deployment should name itself, e.g. `referral-exchange.example.fi/audit-log`.
pub const DEFAULT_AUDIT_LOG_ORIGIN: &str = "referral-exchange/audit-log";

/// The largest group-commit batch: PostgreSQL's PGPROC_MAX_CACHED_SUBXIDS (see `--group-commit-max`).
pub const MAX_GROUP_COMMIT: u64 = 64;

/// Organisations the development PKI issues client certificates for on first start.
pub const DEV_ORGANIZATIONS: &[&str] = &["kela", "hva-15", "helsinki", "auditor-dpo"];

pub use crate::telemetry::LogFormat;

/// Which CPUs the server's threads may run on (see [`crate::affinity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum CpuAffinity {
    /// One CPU with SQLite, all with PostgreSQL.
    #[default]
    Auto,
    /// The CPU the server starts on.
    One,
    /// Whatever the process was allowed at start (the operating system's choice).
    All,
}

impl CpuAffinity {
    /// Whether a server on `database_url` keeps to one CPU.
    pub fn one_cpu_for(self, database_url: &str) -> bool {
        match self {
            CpuAffinity::Auto => database_url.starts_with("sqlite:"),
            CpuAffinity::One => true,
            CpuAffinity::All => false,
        }
    }
}

/// A listen address that may be switched off with an empty value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    if text.is_empty() {
        return Ok(OptionalAddr(None));
    }
    text.parse()
        .map(|addr| OptionalAddr(Some(addr)))
        .map_err(|e| format!("{e}: an address such as 127.0.0.1:8443, or '' for none"))
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC over mutual TLS.
    #[arg(
        long,
        env = "REFERRAL_EXCHANGE_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// Address of the HTTP face (REST/JSON over HTTPS with the same PKI, for X-Road); '' turns it off.
    #[arg(
        long,
        env = "REFERRAL_EXCHANGE_HTTP_LISTEN",
        default_value = "127.0.0.1:8443",
        value_parser = parse_optional_addr
    )]
    pub http_listen: OptionalAddr,

    /// The TLS certificate (PEM) of a provider X-Road security server allowed to call the HTTP face on
    /// behalf of X-Road clients (repeatable). Calls over it are identified by `X-Road-Client`.
    #[arg(
        long = "xroad-security-server-cert",
        env = "REFERRAL_EXCHANGE_XROAD_SECURITY_SERVER_CERTS",
        value_delimiter = ','
    )]
    pub xroad_security_server_certs: Vec<PathBuf>,

    /// Which organisation each X-Road client subsystem is: lines `FI/GOV/0245437-2/referrals = kela`
    /// (`#` comments). Re-read on SIGHUP. Unmapped clients are refused.
    #[arg(long, env = "REFERRAL_EXCHANGE_XROAD_CLIENT_MAP")]
    pub xroad_client_map: Option<PathBuf>,

    /// Directory for the embedded database and the development PKI and key.
    #[arg(long, env = "REFERRAL_EXCHANGE_DATA_DIR", default_value = "var")]
    pub data_dir: PathBuf,

    /// `sqlite:PATH` or `postgres://…`. Default: an SQLite file in the data directory.
    #[arg(long, env = "REFERRAL_EXCHANGE_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Server certificate chain (PEM). With --tls-key and --client-ca; without all three a
    /// development PKI is used.
    #[arg(long, env = "REFERRAL_EXCHANGE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// Server private key (PEM).
    #[arg(long, env = "REFERRAL_EXCHANGE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) that client certificates must chain to.
    #[arg(long, env = "REFERRAL_EXCHANGE_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// Certificate revocation list (PEM, repeatable) of the client CA: a revoked client
    /// certificate is refused at the handshake. A CRL past its next update refuses every
    /// certificate of its CA until a fresh one is given. Re-read, with the certificate, key and
    /// client CA, on SIGHUP.
    #[arg(
        long = "client-crl",
        env = "REFERRAL_EXCHANGE_CLIENT_CRLS",
        value_delimiter = ','
    )]
    pub client_crls: Vec<PathBuf>,

    /// Seconds a client connection (gRPC or HTTP) may live; then the server closes it gracefully
    /// (calls in flight finish; a `StreamMessages` stream ends at the same age) and the client
    /// reconnects, with a new handshake against the current certificate, CA and CRLs. Bounds how
    /// long a revoked or rotated identity outlives its revocation.
    #[arg(long, env = "REFERRAL_EXCHANGE_MAX_CONNECTION_AGE_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_connection_age_seconds: u64,

    /// Calls per second one organisation may make (all its systems and people together, on every
    /// edge); over it, RESOURCE_EXHAUSTED (HTTP 429) with RetryInfo. See src/limits.rs.
    #[arg(long, env = "REFERRAL_EXCHANGE_ORG_REQUESTS_PER_SECOND", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub org_requests_per_second: u32,

    /// Calls one organisation may make at once above its rate, in a burst.
    #[arg(long, env = "REFERRAL_EXCHANGE_ORG_BURST", default_value_t = 400,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub org_burst: u32,

    /// Calls of one organisation running at once (a waiting long-poll counts).
    #[arg(long, env = "REFERRAL_EXCHANGE_ORG_CONCURRENT_CALLS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub org_concurrent_calls: u32,

    /// Calls running at once in all organisations together (long-polls included): a bound on the
    /// work one process takes on.
    #[arg(long, env = "REFERRAL_EXCHANGE_MAX_CONCURRENT_CALLS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_calls: u32,

    /// File holding the pseudonym key as hex (at least 32 bytes). Losing it makes old audit events
    /// unsearchable by identity code. The database remembers the key it was written with and the
    /// server refuses to start with another; see deploy/README.md on rotation.
    #[arg(long, env = "REFERRAL_EXCHANGE_PSEUDONYM_KEY_FILE")]
    pub pseudonym_key_file: Option<PathBuf>,

    /// Pseudonym keys rotated out (repeatable): what was recorded under them stays findable by
    /// identity code; nothing new is written under them. See deploy/README.md on rotation.
    #[arg(
        long = "previous-pseudonym-key-file",
        env = "REFERRAL_EXCHANGE_PREVIOUS_PSEUDONYM_KEY_FILES",
        value_delimiter = ','
    )]
    pub previous_pseudonym_key_files: Vec<PathBuf>,

    #[command(flatten)]
    pub data_keys: DataKeyArgs,

    /// File holding the Ed25519 key that signs the audit log's checkpoints, as a signed-note signer
    /// key (`PRIVATE+KEY+<name>+<key id>+<base64>`, as `referral-exchange audit generate-key` or
    /// Go's `note.GenerateKey` write it). Auditors verify with its public half; losing it means
    /// starting a new log origin.
    #[arg(long, env = "REFERRAL_EXCHANGE_AUDIT_SIGNING_KEY_FILE")]
    pub audit_signing_key_file: Option<PathBuf>,

    /// The audit log's origin: the first line of every checkpoint and the name of the signing key.
    /// Default: the key file's name, or `referral-exchange/audit-log` for a new development key.
    #[arg(long, env = "REFERRAL_EXCHANGE_AUDIT_LOG_ORIGIN")]
    pub audit_log_origin: Option<String>,

    /// How often (milliseconds) the audit sequencer adds new events to the tree and signs a
    /// checkpoint.
    #[arg(
        long,
        env = "REFERRAL_EXCHANGE_AUDIT_SEQUENCER_INTERVAL_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(10..=600_000)
    )]
    pub audit_sequencer_interval_ms: u64,

    #[arg(long, env = "REFERRAL_EXCHANGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Deliveries without an acknowledgement after which a message goes to the dead letters.
    #[arg(long, env = "REFERRAL_EXCHANGE_MAX_DELIVERY_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub max_delivery_attempts: i32,

    /// Days acknowledged messages stay in the mailbox history.
    #[arg(long, env = "REFERRAL_EXCHANGE_MESSAGE_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub message_retention_days: i64,

    /// Days a referral's personal content (identity code, name, phone, free texts) is kept after it
    /// closes (COMPLETED, REJECTED, CANCELLED), and a consent's after it stops being ACTIVE; then it is
    /// erased, leaving the coded skeleton, with an audit event each. 0: at the next background round.
    #[arg(long, env = "REFERRAL_EXCHANGE_CONTENT_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(i64).range(0..=3650))]
    pub content_retention_days: i64,

    /// Working days a receiver's system has to take delivery of a referral before Kela is told.
    #[arg(long, env = "REFERRAL_EXCHANGE_RECEIPT_DEADLINE_WORKING_DAYS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=30))]
    pub receipt_deadline_working_days: u32,

    /// Statistics cells counting fewer distinct people are suppressed, and so are the cells that
    /// would give them away. At least 3: a smaller value is refused at start.
    #[arg(long, env = "REFERRAL_EXCHANGE_MIN_CELL_SIZE", default_value_t = crate::domain::statistics::DEFAULT_MIN_CELL_SIZE)]
    pub min_cell_size: u64,

    /// How often the deployment-wide background tasks (deadline watch, mailbox sweeper) run.
    #[arg(long, env = "REFERRAL_EXCHANGE_BACKGROUND_INTERVAL_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub background_interval_seconds: u64,

    /// How soon another replica takes over a background task whose replica died.
    #[arg(long, env = "REFERRAL_EXCHANGE_TAKEOVER_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub takeover_seconds: u64,

    /// Do not migrate on start; refuse to start if the schema is behind (run `migrate` as its own
    /// step, e.g. a Kubernetes Job before the rollout).
    #[arg(long, env = "REFERRAL_EXCHANGE_NO_MIGRATE")]
    pub no_migrate: bool,

    /// Also serve grpc.health.v1 without TLS on this address, for probes that cannot present a client
    /// certificate. Serves nothing else.
    #[arg(long, env = "REFERRAL_EXCHANGE_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Seconds to keep serving after reporting NOT_SERVING on SIGTERM, for load balancers to notice.
    #[arg(long, env = "REFERRAL_EXCHANGE_DRAIN_SECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub drain_seconds: u64,

    /// Calls whose transactions commit together at most (one fsync for the batch, each call still
    /// atomic); 1 commits every call on its own. At most 64: each member writes in a savepoint, a
    /// subtransaction, and PostgreSQL keeps the ids of only 64 of them per session in shared memory;
    /// a transaction with more makes every other session's snapshots look them up on disk.
    #[arg(long, env = "REFERRAL_EXCHANGE_GROUP_COMMIT_MAX", default_value_t = crate::store::group::DEFAULT_MAX_MEMBERS as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_GROUP_COMMIT))]
    pub group_commit_max: u64,

    /// Group-commit batches open at a time, each on its own database connection.
    #[arg(long, env = "REFERRAL_EXCHANGE_GROUP_COMMIT_LANES", default_value_t = crate::store::group::DEFAULT_LANES as u64,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub group_commit_lanes: u64,

    /// CPUs the server runs on: `auto` keeps a SQLite server on one CPU, where its single writer's
    /// hand-offs between threads cost least, and leaves a PostgreSQL server on all of them.
    #[arg(long, env = "REFERRAL_EXCHANGE_CPU_AFFINITY", value_enum, default_value_t = CpuAffinity::Auto)]
    pub cpu_affinity: CpuAffinity,
}

/// The keys personal content is sealed with at rest (`crate::sealing`): `serve` and `keys rewrap`.
#[derive(Debug, Clone, Args)]
pub struct DataKeyArgs {
    /// File holding the data key as hex (at least 32 bytes), which seals identity codes, names,
    /// phones and free texts in the database. Never stored in the database; losing it loses that
    /// content. The database remembers the key it was written with and the server refuses another;
    /// see deploy/README.md ("Keys") on rotation.
    #[arg(long, env = "REFERRAL_EXCHANGE_DATA_KEY_FILE")]
    pub data_key_file: Option<PathBuf>,

    /// Data keys rotated out (repeatable): what is still sealed under them stays readable until
    /// `referral-exchange keys rewrap` has moved it to the current key.
    #[arg(
        long = "previous-data-key-file",
        env = "REFERRAL_EXCHANGE_PREVIOUS_DATA_KEY_FILES",
        value_delimiter = ','
    )]
    pub previous_data_key_files: Vec<PathBuf>,
}

impl DataKeyArgs {
    /// The file the data key is read from: the configured one, or the development key's.
    pub fn path(&self, data_dir: &Path) -> PathBuf {
        self.data_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("data.key"))
    }

    /// The data keys: from the configured files, or a development key created on first use.
    pub fn keys(&self, data_dir: &Path) -> anyhow::Result<DataKeys> {
        let current = key_or_development(
            self.data_key_file.as_deref(),
            &self.path(data_dir),
            "data key",
            "data-key-file",
        )?;
        Ok(DataKeys::new(
            &current,
            &read_keys(&self.previous_data_key_files)?,
        ))
    }
}

/// `referral-exchange migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Directory of the default SQLite database.
    #[arg(long, env = "REFERRAL_EXCHANGE_DATA_DIR", default_value = "var")]
    pub data_dir: PathBuf,

    /// `sqlite:PATH` or `postgres://…`. Default: the SQLite file in the data directory.
    #[arg(long, env = "REFERRAL_EXCHANGE_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl MigrateArgs {
    pub fn database_url(&self) -> String {
        default_database_url(&self.database_url, &self.data_dir)
    }
}

/// The database URL given, or the SQLite file in `data_dir`.
pub fn default_database_url(url: &Option<String>, data_dir: &Path) -> String {
    url.clone()
        .unwrap_or_else(|| format!("sqlite:{}", data_dir.join("referral-exchange.db").display()))
}

/// TLS material as files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM) of the client CA(s).
    pub crls: Vec<PathBuf>,
}

impl ServeArgs {
    pub fn database_url(&self) -> String {
        default_database_url(&self.database_url, &self.data_dir)
    }

    /// The configured TLS files, or a development PKI (created on first use).
    pub fn tls_files(&self) -> anyhow::Result<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => Ok(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
                crls: self.client_crls.clone(),
            }),
            (None, None, None) => {
                let dir = self.data_dir.join("pki");
                let report = tls::write_dev_pki(&dir, DEV_ORGANIZATIONS)?;
                if report.created_ca {
                    tracing::warn!(
                        dir = %dir.display(),
                        organizations = ?DEV_ORGANIZATIONS,
                        "CREATED A DEVELOPMENT PKI: a CA, a server certificate for localhost and client \
                         certificates. For development only; give --tls-cert, --tls-key and --client-ca in production"
                    );
                } else {
                    tracing::warn!(dir = %dir.display(), "using the development PKI: not for production");
                }
                let layout = tls::PkiLayout::new(&dir);
                Ok(TlsFiles {
                    cert: layout.server_cert(),
                    key: layout.server_key(),
                    client_ca: layout.ca_cert(),
                    crls: self.client_crls.clone(),
                })
            }
            _ => anyhow::bail!(
                "give all of --tls-cert, --tls-key and --client-ca, or none for a development PKI"
            ),
        }
    }

    /// The file the pseudonym key is read from: the configured one, or the development key's.
    pub fn pseudonym_key_path(&self) -> PathBuf {
        self.pseudonym_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("pseudonym.key"))
    }

    /// The pseudonym key: from the configured file, or a development key created on first use.
    pub fn pseudonym_key(&self) -> anyhow::Result<Vec<u8>> {
        key_or_development(
            self.pseudonym_key_file.as_deref(),
            &self.pseudonym_key_path(),
            "pseudonym key",
            "pseudonym-key-file",
        )
    }
}

/// The key in `file`, or, without one, the development key at `development` (created on first use),
/// announced loudly: production names its key files (`--<flag>`).
fn key_or_development(
    file: Option<&Path>,
    development: &Path,
    what: &str,
    flag: &str,
) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = file {
        return read_key(path);
    }
    if development.exists() {
        tracing::warn!(path = %development.display(), "using the development {what}: not for production");
    } else {
        write_new_key(development)?;
        tracing::warn!(
            path = %development.display(),
            "CREATED A DEVELOPMENT {}: give --{flag} in production",
            what.to_uppercase()
        );
    }
    read_key(development)
}

/// The keys in `files`, in order.
fn read_keys(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    files.iter().map(|path| read_key(path)).collect()
}

impl ServeArgs {
    /// The checkpoint signing key: from the configured file, or a development key created on first
    /// use. Its name is the log's origin; a configured origin must match it.
    pub fn audit_signer(&self) -> anyhow::Result<NoteSigner> {
        let signer = match &self.audit_signing_key_file {
            Some(path) => read_signer(path)?,
            None => {
                let path = self.data_dir.join("audit-signing.key");
                if !path.exists() {
                    let origin = self
                        .audit_log_origin
                        .as_deref()
                        .unwrap_or(DEFAULT_AUDIT_LOG_ORIGIN);
                    let signer = NoteSigner::generate(origin)
                        .with_context(|| format!("audit log origin {origin:?}"))?;
                    write_secret(&path, &signer.to_signer_key())?;
                    tracing::warn!(
                        path = %path.display(),
                        verifier_key = %signer.verifier(),
                        "CREATED A DEVELOPMENT AUDIT LOG SIGNING KEY: checkpoints signed with it prove \
                         nothing outside development; give --audit-signing-key-file in production"
                    );
                } else {
                    tracing::warn!(path = %path.display(), "using the development audit log signing key: not for production");
                }
                read_signer(&path)?
            }
        };
        if let Some(origin) = &self.audit_log_origin
            && origin != signer.name()
        {
            anyhow::bail!(
                "--audit-log-origin is {origin:?} but the signing key is named {:?}: the origin is the key's name",
                signer.name()
            );
        }
        Ok(signer)
    }
}

fn read_signer(path: &Path) -> anyhow::Result<NoteSigner> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    NoteSigner::parse(&text)
        .with_context(|| format!("{}: not a signed-note signer key", path.display()))
}

/// Writes `text` to a new file readable by its owner only.
pub fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{text}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

impl ServeArgs {
    /// The keys of `--previous-pseudonym-key-file`.
    pub fn previous_pseudonym_keys(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        read_keys(&self.previous_pseudonym_key_files)
    }
}

fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let key = hex::decode(text.trim())
        .with_context(|| format!("{}: the key must be hex", path.display()))?;
    anyhow::ensure!(
        key.len() >= MIN_KEY_BYTES,
        "{}: the key must be at least {MIN_KEY_BYTES} bytes",
        path.display()
    );
    Ok(key)
}

fn write_new_key(path: &Path) -> anyhow::Result<()> {
    use rand::RngCore;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, hex::encode(key).as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn an_empty_http_listen_turns_the_http_face_off() {
        assert_eq!(parse_optional_addr(""), Ok(OptionalAddr(None)));
        assert_eq!(
            parse_optional_addr("0.0.0.0:8443"),
            Ok(OptionalAddr(Some("0.0.0.0:8443".parse().expect("addr"))))
        );
        assert!(parse_optional_addr("8443").is_err());
    }

    #[test]
    fn a_group_commit_batch_stays_within_postgres_cached_subtransactions() {
        let at = |n: u64| Serve::try_parse_from(["serve", "--group-commit-max", &n.to_string()]);
        assert_eq!(
            at(MAX_GROUP_COMMIT).map(|s| s.args.group_commit_max).ok(),
            Some(64)
        );
        let refused = at(MAX_GROUP_COMMIT + 1).err().map(|e| e.kind());
        assert_eq!(refused, Some(clap::error::ErrorKind::ValueValidation));
    }
}
