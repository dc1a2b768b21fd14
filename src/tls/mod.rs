//! Mutual TLS: loading PEM material into tonic and the rules the exchange trusts peers by.
//!
//! * here: the runtime configuration (server and client rustls/tonic configs, the crypto
//!   provider, PEM files read and checked up front so that errors name the file);
//! * `incoming.rs`: the server's TLS handshakes, each refusal logged with its reason and peer;
//! * `identity.rs`: which organisation a client certificate speaks for;
//! * `dev_pki.rs`: the development PKI written by `referral-exchange dev-pki`;
//! * `test_support.rs`: a health server behind the real certificate check, for the tests.
//!
//! # Trust model
//!
//! * **The CA is the federation's trust anchor.** The server trusts exactly the CA
//!   certificate(s) in its `client_ca` file and nothing else (no system roots). Any client
//!   certificate that chains to it, is within its validity period and carries the
//!   `clientAuth` extended key usage is a member of the exchange; every other peer is
//!   refused during the TLS handshake, before a single gRPC byte is read. Whoever holds the
//!   CA key can create organisations, so in production the CA key stays with the federation
//!   operator: the server only needs `ca.pem`, `server.pem` and `server.key`.
//! * **The organisation comes from the URI SAN, never from the CN.** A client certificate
//!   names its organisation in exactly one subject alternative name
//!   `urn:referral-exchange:organizations/<id>` ([`ORGANIZATION_URI_PREFIX`]). The CN is
//!   free text meant for people (CAs routinely put display names there, and TLS stacks have
//!   stopped reading it); a URI SAN is a typed identifier that the CA puts there on purpose. The role (referrer,
//!   receiver, auditor) then follows from the id, which the caller checks.
//! * **The handshake proves membership; the request layer proves identity.** A certificate
//!   signed by the CA but without (or with two) organisation SANs passes the handshake,
//!   because rustls only checks the chain. The server must refuse such requests with
//!   `UNAUTHENTICATED`: run [`organization_from_request`] (or
//!   [`organization_from_certificate`]) before any handler logic.
//! * **`x-user-id` is never used for authorisation.** It names the person acting inside the
//!   calling organisation and goes into the audit trail, but the organisation's systems can
//!   put anything there; the certificate, not the metadata, decides what a caller may do.
//!
//! # Notes on tonic 0.14 TLS (verified by the tests below)
//!
//! * `Server::tls_config` also applies to `serve_with_incoming`: the incoming TCP streams
//!   are wrapped in TLS. A failed handshake is logged at `debug` level, without the peer, and
//!   the connection dropped; the server keeps serving others. That is why the real server does
//!   its handshakes itself ([`tls_incoming`], from [`server_rustls_config`]) and logs each
//!   refusal with its reason and peer; [`server_tls_config`] remains for the tests' servers.
//! * `Request::peer_certs()` is only `Some` when the incoming stream is a
//!   `tokio::net::TcpStream` (tonic looks for `TlsConnectInfo<TcpConnectInfo>`); with any
//!   other IO type it is `None`, and [`organization_from_request`] then refuses the request.
//! * tonic's `Identity::from_pem` / `Certificate::from_pem` do not parse anything; errors
//!   surface later, without the file name, from `Server::tls_config` or
//!   `Endpoint::tls_config`. The file-based functions here therefore parse and check the
//!   material up front (certificate present, key present, key matches certificate, CA usable
//!   as trust anchor) so that a misconfiguration is reported at startup with its path.
//! * Under TLS 1.3 the client sends its certificate last and considers the handshake done
//!   before the server has judged it, so a refused client (no certificate, or one from
//!   another CA) sees `Endpoint::connect()` succeed and its first RPC fail with `UNKNOWN`
//!   "transport error", whose source is the server's alert: `CertificateRequired` (no
//!   certificate), `UnknownCA` (unknown issuer) or `DecryptError` (an issuer with the same
//!   name as the trusted CA, e.g. another development PKI: the signature does not verify).
//!   No request reaches a handler. A client refusing the *server* (wrong CA, wrong name)
//!   fails in `connect()` instead, with "invalid peer certificate: ...".

mod dev_pki;
mod identity;
mod incoming;
mod pinned;
#[cfg(test)]
mod test_support;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub use dev_pki::{
    DevPkiReport, PkiLayout, write_dev_crl, write_dev_personal_certificate, write_dev_pki,
};
pub use identity::{
    CertificateIdentityError, CertifiedParty, ORGANIZATION_URI_PREFIX, USER_URI_PREFIX,
    claims_from_peer, organization_from_certificate, organization_from_request,
    party_from_certificate,
};
pub use incoming::tls_incoming;

/// How long a peer may take to complete the TLS handshake. tonic has no default, so a peer
/// that opens TCP connections and never finishes the handshake would hold them forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors reading, checking or writing TLS material. Every variant names the file or the
/// item concerned, because these errors are read by an operator at startup.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file or directory could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file does not hold the PEM material expected.
    #[error("parsing {path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The material parses but does not make a usable TLS configuration (e.g. the key does
    /// not belong to the certificate, or the CA file holds no usable trust anchor).
    #[error("{context}: {reason}")]
    Unusable {
        /// Which files or settings.
        context: String,
        /// What rustls said.
        reason: String,
    },
    /// Generating a key or certificate failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The rcgen error.
        source: rcgen::Error,
    },
    /// An existing CA in the PKI directory cannot be used to issue more certificates.
    #[error("cannot reuse the CA in {path}: {reason}")]
    CaReuse {
        /// The PKI directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An organisation id that cannot be used as a directory name and URI.
    #[error("invalid organisation id {org:?}: {reason}")]
    InvalidOrganization {
        /// The id given.
        org: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Installs rustls' ring provider as the process default (idempotent).
///
/// tonic builds its rustls configs with the process-default provider. With only `ring`
/// compiled in rustls would pick it by itself, but if any dependency ever enables
/// `aws-lc-rs` as well, rustls cannot choose and panics at the first TLS use; installing
/// it explicitly at startup makes that impossible. A second call (or a provider installed
/// by someone else first) is fine, so the "already installed" result is ignored.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// The ring provider as an `Arc`, for the up-front checks (which must not depend on
/// whether [`install_crypto_provider`] has run yet).
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads PEM files into tonic's server TLS config requiring client certificates signed by
/// `client_ca`.
///
/// `cert` may hold a chain (leaf first). `client_ca` may hold several CA certificates,
/// which is how a CA rollover is done: trust old and new side by side for a while. Client
/// certificates are mandatory (tonic's `client_auth_optional` stays `false`), so an
/// unauthenticated peer never reaches a handler. A handshake timeout of 10 s is set because
/// tonic has none by default.
///
/// The files are parsed and checked here (see the module docs) so that a broken file is
/// reported with its path rather than as an anonymous "transport error" later.
pub fn server_tls_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<ServerTlsConfig, TlsError> {
    server_rustls_config(cert, key, client_ca, &[])?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .client_ca_root(Certificate::from_pem(read(client_ca)?))
        .timeout(HANDSHAKE_TIMEOUT))
}

/// The same server configuration as [`server_tls_config`] as a rustls config (offering HTTP/2 by
/// ALPN, as tonic does), for [`tls_incoming`], which does the handshakes itself so that it can log
/// the refused ones.
pub fn server_rustls_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    crls: &[PathBuf],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = server_config(cert, key, client_ca, crls, &[], false)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The HTTP listener's TLS: the gRPC listener's certificate and client CA, HTTP/2 and HTTP/1.1 by
/// ALPN, and the `pinned` client certificates (X-Road security servers, see [`pinned`]) accepted
/// as well. A client certificate is asked for but not required at the handshake, so that anyone may
/// read `/openapi.json` (the service description X-Road registration needs); every API call without
/// one is refused as UNAUTHENTICATED, and audited, by the HTTP edge.
pub fn http_server_rustls_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    crls: &[PathBuf],
    pinned: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = server_config(cert, key, client_ca, crls, pinned, true)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the certificates in a PEM file, for pinning.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(path, &read(path)?)
}

fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    crls: &[PathBuf],
    pinned: &[CertificateDer<'static>],
    optional_client_certificate: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let ca_pem = read(client_ca)?;

    let chain = parse_certificates(cert, &cert_pem)?;
    let private_key = parse_private_key(key, &key_pem)?;
    let roots = parse_trust_anchors(client_ca, &ca_pem)?;
    let mut revoked = Vec::new();
    for crl in crls {
        revoked.extend(parse_crls(crl, &read(crl)?)?);
    }

    let provider = ring_provider();
    let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if !revoked.is_empty() {
        // A CRL past its nextUpdate is refused rather than trusted: an attacker who stops the
        // operator's CRL updates must not keep a revoked certificate working. Certificates whose
        // issuer has no CRL here are accepted (intermediate CAs without one stay usable).
        builder = builder
            .with_crls(revoked)
            .enforce_revocation_expiration()
            .allow_unknown_revocation_status();
    }
    if optional_client_certificate {
        builder = builder.allow_unauthenticated();
    }
    let mut verifier = builder.build().map_err(|e| TlsError::Unusable {
        context: format!("client CA {}", client_ca.display()),
        reason: e.to_string(),
    })?;
    if !pinned.is_empty() {
        verifier = Arc::new(pinned::CaOrPinned {
            ca: verifier,
            pinned: pinned.to_vec(),
            algorithms: provider.signature_verification_algorithms,
        });
    }
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(chain, private_key)
        })
        .map_err(|e| TlsError::Unusable {
            context: format!(
                "server certificate {} with key {}",
                cert.display(),
                key.display()
            ),
            reason: e.to_string(),
        })
}

/// Client side: trust `ca`, present `cert`/`key`; `domain` is the server name to verify
/// (e.g. "localhost"), which lets a client connect by IP address and still check the name
/// in the server certificate.
///
/// Only `ca` is trusted (no system roots): the exchange's server is part of the federation
/// and certified by its CA. The files are checked up front like in [`server_tls_config`].
pub fn client_tls_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    domain: &str,
) -> Result<ClientTlsConfig, TlsError> {
    ServerName::try_from(domain).map_err(|e| TlsError::Unusable {
        context: format!("server name {domain:?}"),
        reason: e.to_string(),
    })?;
    // Everything tonic would find wrong later, found now with the file named.
    client_rustls_config(ca, Some((cert, key)))?;
    Ok(client_tls_config_pem(
        &read(ca)?,
        &read(cert)?,
        &read(key)?,
        domain,
    ))
}

/// The client side of mutual TLS as a rustls configuration, for HTTP clients of the HTTP face
/// (the benchmark, the tests): trusting `ca`, presenting `identity` (certificate and key files;
/// none for the unauthenticated `/openapi.json`), speaking HTTP/1.1.
pub fn http_client_rustls_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = client_rustls_config(ca, identity)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn client_rustls_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = parse_trust_anchors(ca, &read(ca)?)?;
    let builder = rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Unusable {
            context: "TLS versions".into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    let Some((cert, key)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = parse_certificates(cert, &read(cert)?)?;
    check_client_auth_usage(cert, &chain[0])?;
    let private_key = parse_private_key(key, &read(key)?)?;
    builder
        .with_client_auth_cert(chain, private_key)
        .map_err(|e| TlsError::Unusable {
            context: format!(
                "client certificate {} with key {}",
                cert.display(),
                key.display()
            ),
            reason: e.to_string(),
        })
}

/// Same as [`client_tls_config`] from in-memory PEM. Nothing is checked here; invalid PEM
/// shows up as an error from `Endpoint::tls_config` or `connect`.
pub fn client_tls_config_pem(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    domain: &str,
) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(domain)
}

/// Refuses a client certificate whose extended key usage leaves out `clientAuth`: the server
/// refuses it during the handshake, and under TLS 1.3 the client then only sees its first call
/// fail with "connection closed", which points nowhere. A certificate without the extension at
/// all is accepted by the server (no restriction), so only a present extension is checked.
fn check_client_auth_usage(path: &Path, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        // rustls will say what is wrong with it.
        return Ok(());
    };
    match parsed.extended_key_usage() {
        Ok(Some(usage)) if !usage.value.client_auth => Err(TlsError::Unusable {
            context: format!("client certificate {}", path.display()),
            reason: "it has no clientAuth extended key usage, so the server refuses it at the \
                     TLS handshake; have it issued with extendedKeyUsage=clientAuth"
                .to_owned(),
        }),
        _ => Ok(()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate revocation list in a PEM file (`X509 CRL` blocks); at least one is required.
fn parse_crls(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    parse_all(path, pem, "X509 CRL")
}

/// A server's TLS configuration that can be replaced while it serves: each new handshake takes the
/// current one, established connections keep the one they were made with. Replaced on SIGHUP with a
/// rotated certificate, a new client CA or fresh CRLs (`server::Reload`).
pub struct LiveConfig(std::sync::RwLock<Arc<rustls::ServerConfig>>);

impl LiveConfig {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Arc<Self> {
        Arc::new(Self(std::sync::RwLock::new(config)))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.0.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        match self.0.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// All certificates in a PEM file; at least one is required.
fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_all(path, pem, "CERTIFICATE")
}

/// Every `block` (`CERTIFICATE`, `X509 CRL`…) in a PEM file; at least one is required.
fn parse_all<T: PemObject>(path: &Path, pem: &[u8], block: &str) -> Result<Vec<T>, TlsError> {
    let items = T::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if items.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!("no {block} block found"),
        });
    }
    Ok(items)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn parse_private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

/// The CA file as a root store. Every certificate in it must be usable as a trust anchor:
/// rustls would silently skip the others, and a half-loaded trust list is worse than none.
fn parse_trust_anchors(path: &Path, pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(parse_certificates(path, pem)?);
    if ignored > 0 {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!("{ignored} certificate(s) cannot be used as trust anchors"),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::dev_pki::{LoadedCa, ia5};
    use super::test_support::*;
    use super::*;

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, SanType,
    };
    use tonic::Code;
    use tonic_health::pb::health_check_response::ServingStatus;

    #[test]
    fn config_functions_report_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PkiLayout::new(dir.path());
        write_dev_pki(dir.path(), &["kela", "hva-01"]).unwrap();
        let missing = dir.path().join("missing.pem");

        let error =
            server_tls_config(&missing, &layout.server_key(), &layout.ca_cert()).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }));
        assert!(
            error
                .to_string()
                .starts_with(&format!("reading {}: ", missing.display())),
            "{error}"
        );

        // A key file given as the certificate.
        let error = server_tls_config(
            &layout.server_key(),
            &layout.server_key(),
            &layout.ca_cert(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("server.key"), "{error}");
        assert!(matches!(error, TlsError::Pem { .. }), "{error}");

        // A key that does not belong to the certificate.
        let kela_key = layout.client_dir("kela").join("key.pem");
        let error =
            server_tls_config(&layout.server_cert(), &kela_key, &layout.ca_cert()).unwrap_err();
        assert!(matches!(error, TlsError::Unusable { .. }), "{error}");

        let hva = layout.client_dir("hva-01");
        let error = client_tls_config(
            &layout.ca_cert(),
            &hva.join("cert.pem"),
            &kela_key,
            "localhost",
        )
        .unwrap_err();
        assert!(matches!(error, TlsError::Unusable { .. }), "{error}");
        let error = client_tls_config(
            &layout.ca_cert(),
            &hva.join("cert.pem"),
            &hva.join("key.pem"),
            "not a name!",
        )
        .unwrap_err();
        assert!(matches!(error, TlsError::Unusable { .. }), "{error}");
        let error = client_tls_config(
            &hva.join("key.pem"),
            &hva.join("cert.pem"),
            &hva.join("key.pem"),
            "localhost",
        )
        .unwrap_err();
        assert!(matches!(error, TlsError::Pem { .. }), "{error}");

        // A certificate for servers only (serverAuth, no clientAuth) as the client's.
        let error = client_tls_config(
            &layout.ca_cert(),
            &layout.server_cert(),
            &layout.server_key(),
            "localhost",
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("server.pem") && text.contains("no clientAuth extended key usage"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn mutual_tls_health_check_and_peer_organization() -> TestResult {
        let dir = tempfile::tempdir()?;
        let layout = PkiLayout::new(dir.path());
        write_dev_pki(dir.path(), &["kela", "hva-15"])?;
        let server = start_server(dev_server_tls(&layout)).await;

        let status = health_check(server.addr, profile_tls(&layout, "kela")).await;
        assert_eq!(status, Ok(ServingStatus::Serving));
        let status = health_check(server.addr, profile_tls(&layout, "hva-15")).await;
        assert_eq!(status, Ok(ServingStatus::Serving));
        assert_eq!(*server.seen.lock().unwrap(), ["kela", "hva-15"]);

        // In-memory PEM works the same.
        let profile = layout.client_dir("kela");
        let tls = client_tls_config_pem(
            &fs::read(profile.join("ca.pem"))?,
            &fs::read(profile.join("cert.pem"))?,
            &fs::read(profile.join("key.pem"))?,
            "localhost",
        );
        assert_eq!(
            health_check(server.addr, tls).await,
            Ok(ServingStatus::Serving)
        );
        Ok(())
    }

    #[tokio::test]
    async fn clients_without_a_federation_certificate_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let layout = PkiLayout::new(dir.path());
        write_dev_pki(dir.path(), &["kela"])?;
        let server = start_server(dev_server_tls(&layout)).await;
        let ca_pem = fs::read(layout.ca_cert())?;

        // No client certificate at all. Under TLS 1.3 the client considers the handshake
        // done before the server has checked its (empty) certificate, so `connect()`
        // succeeds and the first call fails (typically "received fatal alert:
        // CertificateRequired"; a reset connection is also possible, so only the code and
        // the fact that no request got through are asserted).
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .domain_name("localhost");
        let refused = health_check(server.addr, tls).await.unwrap_err();
        eprintln!("no client certificate: {refused:?}");
        assert_refused_after_handshake(&refused);

        // A certificate from another CA (a second development PKI), for the same org id.
        // Both dev CAs have the same name, so the server finds a matching anchor and the
        // signature check fails: the alert is DecryptError rather than UnknownCA.
        let other_dir = tempfile::tempdir()?;
        let other = PkiLayout::new(other_dir.path());
        write_dev_pki(other_dir.path(), &["kela"])?;
        let other_kela = other.client_dir("kela");
        let tls = client_tls_config(
            &layout.ca_cert(),
            &other_kela.join("cert.pem"),
            &other_kela.join("key.pem"),
            "localhost",
        )?;
        let refused = health_check(server.addr, tls).await.unwrap_err();
        eprintln!("certificate from another CA with the same name: {refused:?}");
        assert_refused_after_handshake(&refused);

        // A certificate from a differently named CA: UnknownCA.
        let foreign_key = KeyPair::generate()?;
        let mut foreign_params = CertificateParams::default();
        foreign_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        foreign_params.distinguished_name = DistinguishedName::new();
        foreign_params
            .distinguished_name
            .push(DnType::CommonName, "some other CA");
        let foreign_issuer = Issuer::new(foreign_params, foreign_key);
        let leaf_key = KeyPair::generate()?;
        let mut leaf_params = CertificateParams::default();
        leaf_params.subject_alt_names = vec![SanType::URI(ia5(&format!(
            "{ORGANIZATION_URI_PREFIX}kela"
        ))?)];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &foreign_issuer)?;
        let tls = client_tls_config_pem(
            &ca_pem,
            leaf.pem().as_bytes(),
            leaf_key.serialize_pem().as_bytes(),
            "localhost",
        );
        let refused = health_check(server.addr, tls).await.unwrap_err();
        eprintln!("certificate from a differently named CA: {refused:?}");
        assert_refused_after_handshake(&refused);

        // The client does not trust a server certified by another CA either.
        let refused = health_check(server.addr, profile_tls(&other, "kela"))
            .await
            .unwrap_err();
        eprintln!("server from another CA: {refused:?}");
        assert_eq!(refused.0, None, "refused while connecting: {refused:?}");

        // The right CA but a wrong server name.
        let profile = layout.client_dir("kela");
        let tls = client_tls_config(
            &profile.join("ca.pem"),
            &profile.join("cert.pem"),
            &profile.join("key.pem"),
            "exchange.example",
        )?;
        let refused = health_check(server.addr, tls).await.unwrap_err();
        eprintln!("wrong server name: {refused:?}");
        assert_eq!(refused.0, None, "refused while connecting: {refused:?}");

        assert!(
            server.seen.lock().unwrap().is_empty(),
            "no request reached the interceptor"
        );

        // The server is still serving after all the failed handshakes.
        assert_eq!(
            health_check(server.addr, profile_tls(&layout, "kela")).await,
            Ok(ServingStatus::Serving)
        );
        Ok(())
    }

    /// A certificate from the federation CA without the organisation SAN passes the TLS
    /// handshake (rustls only checks the chain); the request layer must refuse it.
    #[tokio::test]
    async fn federation_certificate_without_organization_is_unauthenticated() -> TestResult {
        let dir = tempfile::tempdir()?;
        let layout = PkiLayout::new(dir.path());
        write_dev_pki(dir.path(), &[])?;
        let server = start_server(dev_server_tls(&layout)).await;

        let leaf = LoadedCa::load(&layout)?.issue_leaf(
            "kela",
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let tls = client_tls_config_pem(
            &fs::read(layout.ca_cert())?,
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            "localhost",
        );
        let refused = health_check(server.addr, tls).await.unwrap_err();
        eprintln!("no organisation SAN: {refused:?}");
        assert_eq!(refused.0, Some(Code::Unauthenticated), "{refused:?}");
        assert!(refused.1.contains(ORGANIZATION_URI_PREFIX), "{refused:?}");
        Ok(())
    }

    /// Certificates made elsewhere work: a CA, server and client made with the `openssl`
    /// CLI, with key types the development PKI does not use (RSA CA, SEC1 P-256 server
    /// key, P-384 client key). And `write_dev_pki` can add organisations under that CA.
    #[tokio::test]
    async fn openssl_made_certificates_work() -> TestResult {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        fs::write(
            d.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )?;
        fs::write(
            d.join("client.ext"),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:{ORGANIZATION_URI_PREFIX}kela\n"
            ),
        )?;
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/C=FI/O=Federation/CN=OpenSSL test CA",
            ],
        );
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "server.key",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:secp384r1",
                "-nodes",
                "-keyout",
                "kela.key",
                "-out",
                "kela.csr",
                "-subj",
                "/CN=Kela",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "kela.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                "client.ext",
                "-out",
                "kela.pem",
            ],
        );

        let layout = PkiLayout::new(d);
        assert!(fs::read_to_string(layout.server_key())?.contains("BEGIN EC PRIVATE KEY"));
        let server = start_server(dev_server_tls(&layout)).await;
        let tls = client_tls_config(
            &layout.ca_cert(),
            &d.join("kela.pem"),
            &d.join("kela.key"),
            "localhost",
        )?;
        assert_eq!(
            health_check(server.addr, tls).await,
            Ok(ServingStatus::Serving)
        );

        // The dev PKI reuses the OpenSSL CA and keeps the OpenSSL server certificate.
        let server_before = fs::read(layout.server_cert())?;
        let report = write_dev_pki(d, &["hva-15"])?;
        assert_eq!(
            report,
            DevPkiReport {
                created_ca: false,
                issued: vec!["hva-15".into()],
                issued_server: false
            }
        );
        assert_eq!(fs::read(layout.server_cert())?, server_before);
        let profile = layout.client_dir("hva-15");
        // OpenSSL itself accepts the chain (it also checks the key identifiers).
        openssl(
            d,
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-purpose",
                "sslclient",
                profile.join("cert.pem").to_str().unwrap_or_default(),
            ],
        );
        assert_eq!(
            health_check(server.addr, profile_tls(&layout, "hva-15")).await,
            Ok(ServingStatus::Serving)
        );
        assert_eq!(*server.seen.lock().unwrap(), ["kela", "hva-15"]);
        Ok(())
    }
}
