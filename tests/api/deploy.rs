//! `deploy/` is checked against the binary without a container engine: every manifest parses, and
//! names only flags, environment variables, ports, probes and secrets the binary really has; the server
//! builds from exactly the files the Dockerfile copies; compose's set-up commands run as written and
//! give the image's user files it can read.

use std::{collections::BTreeSet, path::Path, process::Command};

use yaml_rust2::{Yaml, YamlLoader};

fn deploy(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&deploy(path))
        .unwrap_or_else(|e| panic!("{path} does not parse: {e}"))
}

/// The `--flags` and `REFERRAL_EXCHANGE_*` variables a subcommand's help lists.
fn known(subcommand: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let output = Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
        .args([subcommand, "--help"])
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&output.stdout).to_string();
    let flags = help
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(',')
                .split('=')
                .next()
                .unwrap_or(w)
                .to_owned()
        })
        .collect();
    let envs = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_owned)
        .collect();
    (flags, envs)
}

fn s(y: &Yaml) -> &str {
    y.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {y:?}"))
}

fn list(y: &Yaml) -> &Vec<Yaml> {
    y.as_vec()
        .unwrap_or_else(|| panic!("expected a list, got {y:?}"))
}

/// A flag argument such as `--listen=0.0.0.0:50051` is one the binary has; returns its value.
fn check_flag<'a>(arg: &'a str, flags: &BTreeSet<String>) -> Option<&'a str> {
    let (flag, value) = arg
        .split_once('=')
        .map_or((arg, None), |(f, v)| (f, Some(v)));
    assert!(flags.contains(flag), "{flag} is not a flag of the binary");
    value
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// An environment variable the service reads: its own, or a standard OpenTelemetry one.
fn assert_known_env(name: &str, envs: &BTreeSet<String>) {
    assert!(
        envs.contains(name) || name.starts_with("OTEL_"),
        "{name} is not read by the binary"
    );
}

#[test]
fn the_kubernetes_manifests_use_what_the_binary_has() {
    let (flags, envs) = known("serve");
    let (_, migrate_envs) = known("migrate");
    let docs: Vec<Yaml> = [
        "deployment.yaml",
        "service.yaml",
        "poddisruptionbudget.yaml",
        "migrate-job.yaml",
    ]
    .iter()
    .flat_map(|f| yaml(&format!("kubernetes/{f}")))
    .collect();
    let by_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind}"))
    };

    let deployment = by_kind("Deployment");
    assert!(
        deployment["spec"]["replicas"].as_i64().unwrap_or(0) >= 2,
        "at least two replicas"
    );
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &list(&pod["containers"])[0];
    assert!(s(&container["image"]).contains("referral-exchange"));
    let args: Vec<&str> = list(&container["args"]).iter().map(s).collect();
    assert_eq!(args[0], "serve");
    let mut listen = None;
    let mut http = None;
    let mut health = None;
    for arg in &args[1..] {
        let value = check_flag(arg, &flags);
        if arg.starts_with("--listen=") {
            listen = value.map(port_of);
        }
        if arg.starts_with("--http-listen=") {
            http = value.map(port_of);
        }
        if arg.starts_with("--health-listen=") {
            health = value.map(port_of);
        }
    }
    let (listen, health) = (listen.expect("--listen"), health.expect("--health-listen"));
    let ports: Vec<(String, i64)> = list(&container["ports"])
        .iter()
        .map(|p| {
            (
                s(&p["name"]).to_owned(),
                p["containerPort"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        ports.contains(&("grpc".into(), listen)),
        "the gRPC port is the one it listens on"
    );
    assert!(
        ports.contains(&("health".into(), health)),
        "the health port is the one it serves health on"
    );
    let http = http.expect("--http-listen");
    assert!(
        ports.contains(&("https".into(), http)),
        "the https port is the HTTP face's"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["grpc"]["port"].as_i64(),
            Some(health),
            "{probe} asks the health port"
        );
    }
    assert!(
        !container["resources"]["requests"]["memory"].is_badvalue(),
        "memory request"
    );
    assert!(
        !container["resources"]["requests"]["cpu"].is_badvalue(),
        "cpu request"
    );

    let mounts: Vec<String> = list(&container["volumeMounts"])
        .iter()
        .map(|m| s(&m["mountPath"]).to_owned())
        .collect();
    let secret_volumes: BTreeSet<String> = list(&pod["volumes"])
        .iter()
        .map(|v| s(&v["secret"]["secretName"]).to_owned())
        .collect();
    let mut files = BTreeSet::new();
    for env in list(&container["env"]) {
        let name = s(&env["name"]);
        assert_known_env(name, &envs);
        if let Some(value) = env["value"].as_str()
            && value.starts_with('/')
        {
            assert!(
                mounts.iter().any(|m| value.starts_with(m.as_str())),
                "{name}={value} is on no mounted volume"
            );
            files.insert(name.to_owned());
        }
    }
    for needed in [
        "REFERRAL_EXCHANGE_TLS_CERT",
        "REFERRAL_EXCHANGE_TLS_KEY",
        "REFERRAL_EXCHANGE_CLIENT_CA",
        "REFERRAL_EXCHANGE_PSEUDONYM_KEY_FILE",
        "REFERRAL_EXCHANGE_AUDIT_SIGNING_KEY_FILE",
    ] {
        assert!(
            files.contains(needed),
            "{needed} names a file from a Secret"
        );
    }
    assert_eq!(
        secret_volumes.len(),
        4,
        "TLS, client CA, keys and the database's CA come from Secrets"
    );
    // PostgreSQL is reached over TLS, verified against a CA file both the replicas and the migration
    // Job have mounted (the URL itself is in the Secret, see deploy/README.md).
    assert!(
        mounts
            .iter()
            .any(|m| m == "/etc/referral-exchange/database-ca"),
        "the database's CA is mounted: {mounts:?}"
    );

    let service = by_kind("Service");
    let targets: Vec<&str> = list(&service["spec"]["ports"])
        .iter()
        .map(|p| s(&p["targetPort"]))
        .collect();
    assert_eq!(targets, ["grpc", "https"], "gRPC and the HTTP face");
    assert_eq!(&service["spec"]["selector"], labels);

    let pdb = by_kind("PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let min_available = pdb["spec"]["minAvailable"].as_i64().unwrap_or(0);
    assert!(
        min_available >= 1 && min_available < deployment["spec"]["replicas"].as_i64().unwrap_or(0)
    );

    let job = by_kind("Job");
    let job_container = &list(&job["spec"]["template"]["spec"]["containers"])[0];
    assert_eq!(
        list(&job_container["args"])
            .iter()
            .map(s)
            .collect::<Vec<_>>(),
        vec!["migrate"]
    );
    assert_eq!(
        s(&job_container["image"]),
        s(&container["image"]),
        "the Job migrates with the same image"
    );
    for env in list(&job_container["env"]) {
        assert_known_env(s(&env["name"]), &migrate_envs);
    }
    let job_mounts: Vec<&str> = list(&job_container["volumeMounts"])
        .iter()
        .map(|m| s(&m["mountPath"]))
        .collect();
    assert_eq!(job_mounts, ["/etc/referral-exchange/database-ca"]);
}

#[test]
fn the_compose_stack_and_the_collector_config_use_what_the_binary_has() {
    let (_, envs) = known("serve");
    let compose = &yaml("compose.yaml")[0];
    let services = &compose["services"];
    for name in [
        "postgres",
        "migrate",
        "exchange-1",
        "exchange-2",
        "otel-collector",
    ] {
        assert!(!services[name].is_badvalue(), "service {name}");
    }
    assert_eq!(
        list(&services["migrate"]["command"])
            .iter()
            .map(s)
            .collect::<Vec<_>>(),
        vec!["migrate"]
    );
    // The replicas share one definition (a YAML anchor); check it.
    let exchange = &compose["x-exchange"];
    let env = exchange["environment"].as_hash().expect("environment");
    for (name, value) in env {
        assert_known_env(s(name), &envs);
        if s(name) == "OTEL_EXPORTER_OTLP_ENDPOINT" {
            assert!(
                s(value).contains("otel-collector:4317"),
                "exports to the collector service"
            );
        }
    }
    // Both the replicas and the migration reach PostgreSQL over TLS and verify it; PostgreSQL takes
    // TLS connections only.
    for (who, env) in [
        ("the replicas", &exchange["environment"]),
        ("the migration", &services["migrate"]["environment"]),
    ] {
        let url = s(&env["REFERRAL_EXCHANGE_DATABASE_URL"]);
        assert!(
            url.contains("sslmode=verify-full") && url.contains("sslrootcert=/run/secrets/"),
            "{who}: {url}"
        );
    }
    let postgres = list(&services["postgres"]["entrypoint"])
        .iter()
        .map(s)
        .collect::<Vec<_>>()
        .join(" ");
    for setting in ["-c ssl=on", "-c hba_file=/etc/postgresql/pg_hba.conf"] {
        assert!(postgres.contains(setting), "{setting} in {postgres}");
    }
    let hba = deploy("postgres/pg_hba.conf");
    let rules: Vec<&str> = hba
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        rules.contains(&"hostssl") && rules.iter().all(|r| ["local", "hostssl"].contains(r)),
        "no connection over the network without TLS: {rules:?}"
    );
    let collector = &yaml("otel-collector.yaml")[0];
    assert!(
        !collector["receivers"]["otlp"]["protocols"]["grpc"].is_badvalue(),
        "the collector takes OTLP/gRPC"
    );
}

#[test]
fn the_dockerfile_builds_a_small_non_root_image_of_the_binary() {
    let (flags, _) = known("serve");
    let dockerfile = deploy("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    let runtime = &lines[*stages.last().expect("a stage")..];
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as non-root: {user}"
    );
    let copies: Vec<&&str> = runtime.iter().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(copies.len(), 1, "the runtime stage copies the binary only");
    assert!(copies[0].contains("--from=") && copies[0].contains("referral-exchange"));
    let entrypoint = runtime
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    assert!(entrypoint.contains("referral-exchange"));
    let exposed: BTreeSet<i64> = runtime
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().filter_map(|p| p.parse().ok()))
        .collect();
    let cmd = runtime
        .iter()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    assert_eq!(cmd[0], "serve");
    let mut ports = BTreeSet::new();
    let mut args = cmd[1..].iter().peekable();
    while let Some(arg) = args.next() {
        check_flag(arg, &flags);
        // `--flag value`: the value is the next word unless that is a flag itself.
        let value = args.next_if(|next| !next.starts_with("--"));
        if arg == "--listen" || arg == "--http-listen" || arg == "--health-listen" {
            ports.insert(port_of(value.expect("an address")));
        }
    }
    assert_eq!(exposed, ports, "EXPOSE lists the ports it listens on");
}

/// One `COPY` of the build stage: its sources (paths from the repository root) and where each lands,
/// relative to the stage's `WORKDIR`.
struct Copy {
    sources: Vec<String>,
    destination: String,
}

impl Copy {
    /// Where each source lands: `COPY a b dir/` puts `a` and `b` into `dir`; `COPY src src` copies
    /// the file or directory `src` as `src`.
    fn placements(&self) -> Vec<(String, std::path::PathBuf)> {
        let destination = Path::new(&self.destination);
        let into_directory = self.sources.len() > 1 || self.destination.ends_with('/');
        self.sources
            .iter()
            .map(|source| {
                let target = if into_directory {
                    destination.join(Path::new(source).file_name().expect("a file name"))
                } else {
                    destination.to_path_buf()
                };
                (source.clone(), normalised(&target))
            })
            .collect()
    }
}

/// The build stage's `COPY` lines and `RUN` commands.
fn build_stage(dockerfile: &str) -> (Vec<Copy>, Vec<String>) {
    let mut copies = Vec::new();
    let mut runs = Vec::new();
    let mut workdir = String::from("/");
    let mut stage = 0;
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stage += 1;
        } else if stage == 1 {
            if let Some(dir) = line.strip_prefix("WORKDIR ") {
                workdir = dir.trim().to_owned();
            } else if let Some(args) = line.strip_prefix("COPY ") {
                let words: Vec<&str> = args.split_whitespace().collect();
                assert!(
                    !words.iter().any(|w| w.starts_with("--")),
                    "a build-stage COPY with options: {line}"
                );
                if let Some((destination, sources)) = words.split_last() {
                    // An absolute destination inside the WORKDIR, as a relative one.
                    let destination = destination
                        .strip_prefix(workdir.as_str())
                        .map(|d| format!("./{}", d.trim_start_matches('/')))
                        .unwrap_or_else(|| (*destination).to_owned());
                    assert!(
                        !destination.starts_with('/'),
                        "a COPY outside the WORKDIR {workdir}: {line}"
                    );
                    copies.push(Copy {
                        sources: sources
                            .iter()
                            .map(|w| w.trim_end_matches('/').to_owned())
                            .collect(),
                        destination,
                    });
                }
            } else if let Some(command) = line.strip_prefix("RUN ") {
                runs.push(command.to_owned());
            }
        }
    }
    (copies, runs)
}

/// The build stage's `COPY` sources (`COPY a b dest` copies `a` and `b`), paths from the repository
/// root, and its `RUN` commands.
fn build_stage_copies(dockerfile: &str) -> (Vec<String>, Vec<String>) {
    let (copies, runs) = build_stage(dockerfile);
    let sources = copies.into_iter().flat_map(|c| c.sources).collect();
    (sources, runs)
}

/// `dir/../x` and `./x` as `x`; paths from the repository root.
fn normalised(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every `.rs` file under `dir`, skipping `skip`.
fn rust_files(dir: &Path, skip: &Path, out: &mut Vec<std::path::PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path == skip {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, skip, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The image builds the server binary and nothing else, from the files it copies: a file the library
/// or the server embeds from outside them (as the benchmark's pgbench scripts once were) breaks the
/// image build, which no other test runs.
#[test]
fn the_dockerfile_builds_only_the_server_from_what_it_copies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (copies, runs) = build_stage_copies(&deploy("Dockerfile"));
    let builds: Vec<&String> = runs.iter().filter(|r| r.contains("cargo build")).collect();
    assert_eq!(builds.len(), 1, "one cargo build: {runs:?}");
    assert!(
        builds[0].contains("--bin referral-exchange")
            && !builds[0].contains("--bins")
            && !builds[0].contains("--all-targets")
            && !builds[0].contains("referral-exchange-bench"),
        "builds the server binary only: {}",
        builds[0]
    );
    let copied = |path: &Path| {
        copies
            .iter()
            .any(|c| path == Path::new(c) || path.starts_with(c))
    };
    // Cargo reads the whole manifest, so every target it names must be in the image's sources.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    for line in manifest.lines() {
        if let Some(path) = line.trim().strip_prefix("path = ") {
            let path = path.trim_matches('"');
            assert!(
                copied(Path::new(path)),
                "Cargo.toml names {path}, not copied"
            );
        }
    }
    // What the library and the server binary embed (the benchmark, under src/bin/, is not built).
    let mut files = Vec::new();
    rust_files(&root.join("src"), &root.join("src/bin"), &mut files);
    let mut embedded = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        let dir = file
            .parent()
            .expect("a directory")
            .strip_prefix(root)
            .expect("in the repository");
        // Paths relative to the file, to the manifest, or to askama's `templates/` directory.
        for (pattern, base) in [
            ("include_str!(\"", None),
            ("include_bytes!(\"", None),
            ("migrate!(\"", Some("")),
            ("#[template(path = \"", Some("templates")),
        ] {
            for rest in text.split(pattern).skip(1) {
                let literal = rest.split('"').next().unwrap_or_default();
                let path = match base {
                    Some(base) => normalised(&Path::new(base).join(literal)),
                    None => normalised(&dir.join(literal)),
                };
                assert!(
                    copied(&path),
                    "{} embeds {}, which the Dockerfile does not copy ({copies:?})",
                    file.display(),
                    path.display()
                );
                embedded += 1;
            }
        }
    }
    assert!(embedded > 0, "found the embedded files");
}

/// Copies the file or directory `from` to `to`, every file with a modification time of now: a copy
/// keeps no mtime of the tree it came from, so cargo cannot take any of it for already built.
fn copy_touched(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
        let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        for entry in entries {
            let entry = entry.expect("a directory entry");
            copy_touched(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        std::fs::File::options()
            .write(true)
            .open(to)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .unwrap_or_else(|e| panic!("touching {}: {e}", to.display()));
    }
}

/// The directory this test binary was built in (`<dir>/debug/deps/api-…`), whose compiled
/// dependencies a build of the image's sources can reuse.
fn own_build_dir() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .filter(|dir| dir.join("debug").is_dir())
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(Into::into))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Cargo gives a package the same identity wherever its workspace root is, so the build of the copy
/// left its fingerprints where the checkout's build looks for them, naming the copy's files: the
/// next `cargo build` of the checkout would compare those files, not the checkout's, and keep a
/// stale build script and crate after an edit. Removing the package's fingerprints makes that
/// build compile the crate again (the dependencies stay reused).
fn forget_the_copy(build_dir: &Path) {
    let fingerprints = build_dir.join("debug/.fingerprint");
    let Ok(entries) = std::fs::read_dir(&fingerprints) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("referral-exchange-")
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The image's server binary builds from exactly the files the Dockerfile's build stage copies, put
/// into a directory that holds nothing else, with the Dockerfile's own `cargo build` command: a file
/// the build needs and the image lacks (a module, an `include_str!`, a migration, a proto) fails here
/// as it would fail `docker build`, which CI cannot run.
///
/// Debug, not the image's `--release`: a missing file fails compilation the same way in both (files
/// are read when macros expand and modules load, before any optimisation), and an optimised build
/// would add minutes on CI's two cores without checking anything more. `--offline --locked`: nothing
/// is fetched, and the copied `Cargo.lock` must already be complete. `--jobs 1` leaves the other core
/// to the tests running beside this one.
///
/// Where it builds: the context is copied to a fixed place in this test's own build directory,
/// wiped first (so it holds the copied files only) and every file touched (so cargo cannot take the
/// copy for an already-built tree). Intermediate artifacts go to this test's build directory
/// (`CARGO_BUILD_BUILD_DIR`), so the compiled dependencies are reused and only the crate itself is
/// compiled; the final binary goes to a directory of its own (`CARGO_TARGET_DIR`), so that it never
/// replaces `target/debug/referral-exchange` while other tests run that binary. A fixed place keeps
/// the package's identity the same from run to run, so its artifacts are replaced, not piled up.
#[test]
fn the_server_builds_from_exactly_the_files_the_dockerfile_copies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (copies, runs) = build_stage(&deploy("Dockerfile"));
    let build_dir = own_build_dir();
    let context = build_dir.join("dockerfile-context");
    let artifacts = build_dir.join("dockerfile-artifacts");
    if context.exists() {
        std::fs::remove_dir_all(&context).expect("remove the previous context");
    }
    std::fs::create_dir_all(&context).expect("context directory");
    for copy in &copies {
        for (source, target) in copy.placements() {
            let from = root.join(&source);
            assert!(
                from.exists(),
                "the Dockerfile copies {source}, which does not exist"
            );
            copy_touched(&from, &context.join(target));
        }
    }

    let build = runs
        .iter()
        .find(|r| r.trim_start().starts_with("cargo build"))
        .expect("a cargo build in the build stage");
    let args: Vec<&str> = build
        .split_whitespace()
        .skip(1)
        .filter(|a| *a != "--release")
        .collect();
    assert!(
        args.contains(&"--locked"),
        "the image builds --locked: {build}"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(&args)
        .arg("--offline")
        // One job: the other tests of this binary run meanwhile, some of them timing-sensitive, and
        // CI has two cores.
        .args(["--jobs", "1"])
        .current_dir(&context)
        .env("CARGO_BUILD_BUILD_DIR", &build_dir)
        .env("CARGO_TARGET_DIR", &artifacts)
        .output()
        .expect("run cargo");
    forget_the_copy(&build_dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
    assert!(
        output.status.success(),
        "`{build}` (debug, --offline) fails on exactly the files the Dockerfile copies:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        artifacts.join("debug/referral-exchange").is_file(),
        "built the server binary"
    );
}

/// The image's user, numerically: distroless' `nonroot` is uid and gid 65532.
fn image_user() -> (u32, u32) {
    let dockerfile = deploy("Dockerfile");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER");
    let id = |name: &str| match name {
        "nonroot" => 65532,
        number => number
            .parse()
            .unwrap_or_else(|_| panic!("USER {user}: unknown name {name}")),
    };
    let (u, g) = user
        .trim()
        .split_once(':')
        .unwrap_or((user.trim(), user.trim()));
    (id(u), id(g))
}

/// Whether a file of `meta` grants `bits` (4 read, 1 execute) to `uid`/`gid`, as the kernel decides
/// for a process without supplementary groups: owner bits, else group bits, else other bits.
fn grants(meta: &std::fs::Metadata, uid: u32, gid: u32, bits: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    if meta.uid() == uid {
        mode >> 6 & bits == bits
    } else if meta.gid() == gid {
        mode >> 3 & bits == bits
    } else {
        mode & bits == bits
    }
}

/// compose.yaml's opening comment sets up `./secrets`; its indented lines are the commands, run here
/// as written (`cargo run --` being the binary under test) in an empty directory, as one shell script
/// as a pasted block would run. Then every file the replicas are given under the secrets mount exists
/// and is readable by the image's user through it (a bind mount keeps the host's owners and modes),
/// private keys are readable by nobody else, and the user really reads each one.
#[test]
fn the_compose_set_up_commands_run_as_written_and_the_image_user_can_read_the_secrets() {
    use std::os::unix::{fs::MetadataExt, process::CommandExt};
    let text = deploy("compose.yaml");
    let commands: Vec<String> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("#   "))
        .map(|l| {
            l.replace(
                "cargo run -- ",
                &format!("{} ", env!("CARGO_BIN_EXE_referral-exchange")),
            )
        })
        .collect();
    assert!(
        commands.len() >= 3,
        "set-up commands in the comment: {commands:?}"
    );
    assert!(
        !commands.iter().any(|c| c.contains("cargo ")),
        "every command runs the binary: {commands:?}"
    );
    let dir = tempfile::tempdir().expect("dir");
    let output = Command::new("sh")
        .args(["-euc", &commands.join("\n")])
        .current_dir(dir.path())
        .output()
        .expect("sh");
    assert!(
        output.status.success(),
        "the set-up commands fail: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let compose = &yaml("compose.yaml")[0];
    let exchange = &compose["x-exchange"];
    assert!(
        exchange["user"].is_badvalue(),
        "the replicas run as the image's user"
    );
    let (uid, gid) = image_user();
    // `./secrets:/run/secrets:ro`: host paths from the compose file's directory.
    let mounts: Vec<(String, String)> = list(&exchange["volumes"])
        .iter()
        .map(|v| {
            let mut parts = s(v).split(':');
            let host = parts.next().unwrap_or_default().to_owned();
            let container = parts.next().unwrap_or_default().to_owned();
            (host, container)
        })
        .collect();
    let compose_dir = dir.path().join("deploy");
    let mut checked = 0;
    for (name, value) in exchange["environment"].as_hash().expect("environment") {
        let (name, value) = (s(name), value.as_str().unwrap_or_default());
        let Some((host, rest)) = mounts.iter().find_map(|(host, container)| {
            value
                .strip_prefix(container.as_str())
                .map(|rest| (host, rest.trim_start_matches('/')))
        }) else {
            continue;
        };
        let mount_root = normalised(&compose_dir.join(host));
        let file = mount_root.join(rest);
        let meta = std::fs::metadata(&file).unwrap_or_else(|e| {
            panic!("{name}={value}: the set-up made no {}: {e}", file.display())
        });
        assert!(
            grants(&meta, uid, gid, 4),
            "{name}: {} (mode {:o}, owner {}:{}) is not readable by {uid}:{gid}",
            file.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        // Every directory from the mount down to the file is traversable.
        for ancestor in file
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(&mount_root))
        {
            let meta = std::fs::metadata(ancestor).expect("a directory");
            assert!(
                grants(&meta, uid, gid, 1),
                "{name}: {} is not traversable by {uid}:{gid}",
                ancestor.display()
            );
        }
        if name.ends_with("_KEY") || name.ends_with("_KEY_FILE") {
            assert_eq!(
                meta.mode() & 0o007,
                0,
                "{name}: {} is readable by everyone",
                file.display()
            );
        }
        // And really: a process of that user and group alone reads it.
        let read = Command::new("cat")
            .arg(&file)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("cat");
        assert!(
            read.status.success() && !read.stdout.is_empty(),
            "{name}: {uid}:{gid} cannot read {}: {}",
            file.display(),
            String::from_utf8_lossy(&read.stderr)
        );
        checked += 1;
    }
    assert_eq!(
        checked, 6,
        "TLS certificate, key and client CA, pseudonym, data and signing keys"
    );

    // The CA the replicas' database URL names is there for them, and it vouches for the certificate
    // the set-up made PostgreSQL, under the host name the URL uses: what sqlx's rustls will check.
    let url = s(&exchange["environment"]["REFERRAL_EXCHANGE_DATABASE_URL"]);
    let ca = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("sslrootcert=/run/secrets/"))
        .expect("sslrootcert under /run/secrets");
    let secrets = compose_dir.join("secrets");
    let ca_meta = std::fs::metadata(secrets.join(ca)).expect("the database's CA");
    assert!(
        grants(&ca_meta, uid, gid, 4),
        "{ca} readable by {uid}:{gid}"
    );
    let certificates =
        |path: &Path| referral_exchange::tls::read_certificates(path).expect("PEM certificates");
    let mut roots = rustls::RootCertStore::empty();
    for root in certificates(&secrets.join(ca)) {
        roots.add(root).expect("a CA certificate");
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let host = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split([':', '/']).next())
        .expect("host");
    let server = certificates(&secrets.join("postgres/server.crt"));
    let (leaf, intermediates) = server.split_first().expect("PostgreSQL's certificate");
    use rustls::client::danger::ServerCertVerifier as _;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &rustls::pki_types::ServerName::try_from(host.to_owned()).expect("host name"),
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("PostgreSQL's certificate for {host}: {e}"));
}
