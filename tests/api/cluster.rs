//! A PostgreSQL cluster of a test's own: initdb in a temporary directory, its own port on 127.0.0.1,
//! configured by the test before it starts (e.g. TLS only), stopped and removed on drop.

use std::{path::PathBuf, process::Command};

pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivateCluster {
    /// A new cluster, started, accepting everyone from 127.0.0.1 without a password.
    pub fn start() -> PrivateCluster {
        let cluster = Self::init();
        cluster.up();
        cluster
    }

    /// A new cluster, not started: the test may change its configuration first.
    pub fn init() -> PrivateCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = tempfile::tempdir().expect("dir");
        // PostgreSQL refuses to run as root: then the cluster belongs to the `postgres` user.
        if is_root() {
            chown_to_postgres(dir.path());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = PrivateCluster { dir, bin, port };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        cluster
    }

    /// The data directory.
    pub fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Writes `contents` to `name` in the data directory, owned by the server's user and readable by
    /// it alone (as PostgreSQL requires of a private key).
    pub fn write_file(&self, name: &str, contents: &[u8]) {
        let path = self.dir.path().join("data").join(name);
        std::fs::write(&path, contents).expect("write into the data directory");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if is_root() {
            chown_to_postgres(&path);
        }
    }

    /// Appends `lines` to `postgresql.conf`.
    pub fn configure(&self, lines: &str) {
        use std::io::Write as _;
        let path = self.dir.path().join("data").join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open postgresql.conf");
        writeln!(file, "\n{lines}").expect("append to postgresql.conf");
    }

    /// `tool` of the cluster's PostgreSQL, as the `postgres` user when the tests run as root.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = self
            .command(tool)
            .args(args)
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    pub fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Stops the cluster the way a crash would: `-m immediate` kills every backend at once, with no
    /// checkpoint and no goodbye to the clients; the next [`PrivateCluster::up`] replays the WAL
    /// before it accepts connections again.
    pub fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.as_str(), "-m", "immediate", "stop"])
            .output();
    }
}

fn chown_to_postgres(path: &std::path::Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success());
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
