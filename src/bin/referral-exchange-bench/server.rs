//! The server under test: the real binary started as a child process on 127.0.0.1:0, on a database of
//! its own, so that its memory can be measured and nothing of the benchmark runs inside it.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sqlx::Connection;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use referral_exchange::{access::USER_ID_HEADER, tls};

/// A database created for one benchmark run and dropped after it.
pub struct BenchDatabase {
    pub url: String,
    admin_url: Option<String>,
    name: String,
}

impl BenchDatabase {
    /// A fresh database: a new SQLite file in `dir`, or a new database on the PostgreSQL server of
    /// `postgres_url` (which must allow CREATE DATABASE).
    pub async fn create(postgres_url: Option<&str>, dir: &Path) -> anyhow::Result<Self> {
        let name = format!(
            "rx_bench_{}_{}",
            chrono::Utc::now().timestamp(),
            std::process::id()
        );
        match postgres_url {
            None => Ok(Self {
                url: format!("sqlite:{}", dir.join("bench.db").display()),
                admin_url: None,
                name,
            }),
            Some(admin_url) => {
                let mut admin = sqlx::PgConnection::connect(admin_url)
                    .await
                    .context("connecting to PostgreSQL")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await?;
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url, |(base, _)| base);
                Ok(Self {
                    url: format!("{base}/{name}"),
                    admin_url: Some(admin_url.to_owned()),
                    name,
                })
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.admin_url.is_some()
    }

    pub async fn drop_database(self) -> anyhow::Result<()> {
        if let Some(admin_url) = &self.admin_url {
            let mut admin = sqlx::PgConnection::connect(admin_url).await?;
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await?;
        }
        Ok(())
    }
}

/// Where a running server is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The HTTP face, if the server serves it.
    pub http: Option<SocketAddr>,
    pub pki: PathBuf,
}

/// Adds the acting person to every request.
#[derive(Clone)]
pub struct User(pub tonic::metadata::AsciiMetadataValue);

impl tonic::service::Interceptor for User {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(USER_ID_HEADER, self.0.clone());
        Ok(request)
    }
}

pub type Authenticated = InterceptedService<Channel, User>;

impl Target {
    /// A channel authenticated as `org` (from the server's development PKI), acting as `user`.
    pub async fn channel(&self, org: &str, user: &str) -> anyhow::Result<Authenticated> {
        let dir = tls::PkiLayout::new(&self.pki).client_dir(org);
        let tls = tls::client_tls_config(
            &dir.join("ca.pem"),
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
            "localhost",
        )?;
        let channel = Endpoint::from_shared(format!("https://{}", self.addr))?
            .tls_config(tls)?
            .connect()
            .await?;
        Ok(InterceptedService::new(
            channel,
            User(user.parse().context("user id")?),
        ))
    }
}

/// One server process.
/// The pseudonym key every server process of one run uses, beside their data directories: the
/// database refuses a key it was not written with (`referral_exchange::keys`), and each data
/// directory would otherwise get a development key of its own (the wake-up scenario's two processes,
/// the data-size mode's restarts).
fn shared_key(data_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = data_dir.parent().unwrap_or(data_dir).join(name);
    if !path.exists() {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        referral_exchange::config::write_secret(&path, &hex::encode(key))?;
    }
    Ok(path)
}

pub struct ServerProcess {
    child: Child,
    target: Target,
}

impl ServerProcess {
    /// Starts `binary serve` on `database_url` with a development PKI in `data_dir` and the run's
    /// shared pseudonym and data keys (unless `extra` names others).
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        database_url: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
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
            .arg(data_dir)
            .args(["--database-url", database_url])
            .env(
                "REFERRAL_EXCHANGE_PSEUDONYM_KEY_FILE",
                shared_key(data_dir, "pseudonym.key")?,
            )
            // Binaries from before sealing ignore it; those after share it like the pseudonym key.
            .env(
                "REFERRAL_EXCHANGE_DATA_KEY_FILE",
                shared_key(data_dir, "data.key")?,
            )
            // The benchmark measures throughput, not the per-organisation limits (src/limits.rs):
            // lifted, by environment so that binaries from before the limits start too.
            .env("REFERRAL_EXCHANGE_ORG_REQUESTS_PER_SECOND", "1000000")
            .env("REFERRAL_EXCHANGE_ORG_BURST", "1000000")
            .env("REFERRAL_EXCHANGE_ORG_CONCURRENT_CALLS", "100000")
            .env("REFERRAL_EXCHANGE_MAX_CONCURRENT_CALLS", "1000000")
            .args(extra)
            .env("RUST_LOG", "warn,referral_exchange::server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("server stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let (addr, http) = match wait_until_serving(&mut lines) {
            Ok(addrs) => addrs,
            Err(e) => {
                // Not yet a ServerProcess, whose drop would stop it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            target: Target {
                addr,
                http,
                pki: data_dir.join("pki"),
            },
        })
    }

    pub fn target(&self) -> Target {
        self.target.clone()
    }

    /// Peak resident set size so far (Linux `VmHWM`), in MiB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Stops the server as an orchestrator would (SIGTERM) and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait()?;
        Ok(())
    }
}

/// Reads the server's log until it says where it serves (gRPC, and the HTTP face if on), for up to
/// a minute.
fn wait_until_serving(
    lines: &mut std::io::Lines<BufReader<std::process::ChildStderr>>,
) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            bail!("the server did not start within a minute");
        }
        let Some(line) = lines.next() else {
            bail!("the server exited before serving")
        };
        let json: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        if json["fields"]["message"] == "serving" {
            let addr = json["fields"]["addr"].as_str().context("addr")?.parse()?;
            let http = json["fields"]["http"].as_str().and_then(|a| a.parse().ok());
            return Ok((addr, http));
        }
    }
}

impl Drop for ServerProcess {
    /// A run that fails half-way (a scenario's error, a server that never said "serving") must not
    /// leave its server behind: one kept serving for an hour, on a database already dropped.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
