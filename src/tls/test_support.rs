//! Helpers shared by the TLS tests: a health server behind the same certificate check the
//! real server runs, a client call against it, and the `openssl` command line.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server, ServerTlsConfig};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use super::{
    PkiLayout, client_tls_config, install_crypto_provider, organization_from_request,
    parse_certificates, server_tls_config,
};

pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The whole source chain of an error, for assertions and for the test log.
pub(super) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

pub(super) fn first_cert_der(path: &Path) -> Vec<u8> {
    let pem = fs::read(path).unwrap();
    parse_certificates(path, &pem).unwrap()[0].as_ref().to_vec()
}

#[cfg(unix)]
pub(super) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A test server: the standard health service behind an interceptor that does what the
/// real server must do before any handler, i.e. map the peer certificate to an
/// organisation or refuse with UNAUTHENTICATED. Organisations seen are recorded.
pub(super) struct TestServer {
    pub(super) addr: SocketAddr,
    pub(super) seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) async fn start_server(tls: ServerTlsConfig) -> TestServer {
    install_crypto_provider();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let interceptor = move |request: tonic::Request<()>| {
        let org = organization_from_request(&request)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        recorder.lock().unwrap().push(org);
        Ok(request)
    };
    let health = HealthServer::with_interceptor(
        HealthService::from_health_reporter(HealthReporter::new()),
        interceptor,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(health);
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    TestServer { addr, seen, task }
}

pub(super) fn dev_server_tls(layout: &PkiLayout) -> ServerTlsConfig {
    server_tls_config(
        &layout.server_cert(),
        &layout.server_key(),
        &layout.ca_cert(),
    )
    .unwrap()
}

pub(super) fn profile_tls(layout: &PkiLayout, org: &str) -> ClientTlsConfig {
    let profile = layout.client_dir(org);
    client_tls_config(
        &profile.join("ca.pem"),
        &profile.join("cert.pem"),
        &profile.join("key.pem"),
        "localhost",
    )
    .unwrap()
}

/// A refusal by the server's certificate check: the RPC fails with a transport error
/// (never a handler's status).
pub(super) fn assert_refused_after_handshake(refused: &(Option<Code>, String)) {
    assert!(
        matches!(
            refused.0,
            None | Some(Code::Unknown) | Some(Code::Unavailable)
        ),
        "{refused:?}"
    );
    assert!(refused.1.contains("transport error"), "{refused:?}");
}

/// Connects and calls health Check. `Err` carries the error chain text and, for an
/// RPC error, its code (`None` when the connection itself failed).
pub(super) async fn health_check(
    addr: SocketAddr,
    tls: ClientTlsConfig,
) -> Result<ServingStatus, (Option<Code>, String)> {
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .map_err(|e| (None, chain(&e)))?
        .tls_config(tls)
        .map_err(|e| (None, chain(&e)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let channel: Channel = endpoint.connect().await.map_err(|e| (None, chain(&e)))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| (Some(status.code()), chain(&status)))?;
    Ok(response.into_inner().status())
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr if it fails.
pub(super) fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs the `openssl` command-line tool (apt-get install openssl): {e}")
        });
    assert!(
        output.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}
