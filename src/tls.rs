//! Mutual TLS: loading PEM material into tonic, a development PKI, and mapping a client
//! certificate to the organisation it speaks for.
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
//!   are wrapped in TLS. A failed handshake is logged at `debug` level and the connection
//!   dropped; the server keeps serving others.
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

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// URI SAN prefix naming an organisation in a client certificate.
pub const ORGANIZATION_URI_PREFIX: &str = "urn:referral-exchange:organizations/";

/// Common name of the development CA written by [`write_dev_pki`].
const DEV_CA_COMMON_NAME: &str = "referral-exchange development CA";

/// Common name of the development server certificate (clients verify the SANs, not this).
const DEV_SERVER_COMMON_NAME: &str = "referral-exchange development server";

/// How long a peer may take to complete the TLS handshake. tonic has no default, so a peer
/// that opens TCP connections and never finishes the handshake would hold them forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Development CA lifetime: long enough that a developer's checkout keeps working.
const DEV_CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 60 * 60);

/// Development leaf lifetime: short enough that a leaked dev certificate dies on its own.
const DEV_LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Certificates start an hour in the past so that small clock skew between machines does
/// not make a freshly issued certificate "not yet valid".
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60 * 60);

/// Paths of a PKI directory laid out as: `ca.pem`, `ca.key`, `server.pem`, `server.key`,
/// `clients/<org>/cert.pem`, `clients/<org>/key.pem`, `clients/<org>/ca.pem` (a client
/// "profile directory": everything one organisation needs to connect, to be handed over
/// as a unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiLayout {
    /// The PKI directory.
    pub dir: PathBuf,
}

impl PkiLayout {
    /// A layout rooted at `dir` (nothing is read or created).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The CA certificate: the trust anchor for both client and server certificates.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA private key (only needed to issue certificates, not to run the server).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// The server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The profile directory of organisation `org`: `clients/<org>`.
    pub fn client_dir(&self, org: &str) -> PathBuf {
        self.dir.join("clients").join(org)
    }

    /// Whether the files the server needs (CA certificate, server certificate and key) are
    /// present. The CA key is deliberately not required: a production server never has it.
    pub fn exists(&self) -> bool {
        self.ca_cert().is_file() && self.server_cert().is_file() && self.server_key().is_file()
    }
}

/// What [`write_dev_pki`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevPkiReport {
    /// A new CA was generated (otherwise the existing `ca.pem`/`ca.key` were reused).
    pub created_ca: bool,
    /// Organisations whose client profile was written by this call, in argument order.
    pub issued: Vec<String>,
    /// A server certificate was written by this call.
    pub issued_server: bool,
}

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

/// Why a client certificate does not identify an organisation. Each of these means the
/// request must be refused with `UNAUTHENTICATED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateIdentityError {
    /// The connection carries no client certificate (not TLS, or not over TCP).
    #[error("no client certificate on this connection")]
    NoClientCertificate,
    /// The bytes are not a DER X.509 certificate.
    #[error("client certificate is not a parseable X.509 certificate: {0}")]
    Unparseable(String),
    /// No URI SAN starts with [`ORGANIZATION_URI_PREFIX`].
    #[error("client certificate has no URI SAN starting with {ORGANIZATION_URI_PREFIX}")]
    MissingOrganization,
    /// Several URI SANs start with [`ORGANIZATION_URI_PREFIX`]; a certificate must speak for
    /// exactly one organisation, so this is refused rather than picking one.
    #[error("client certificate names more than one organisation: {0:?}")]
    MultipleOrganizations(Vec<String>),
    /// The organisation URI SAN is exactly the prefix, with nothing after it.
    #[error("client certificate's organisation URI SAN has an empty id")]
    EmptyOrganization,
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
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let ca_pem = read(client_ca)?;

    let chain = parse_certificates(cert, &cert_pem)?;
    let private_key = parse_private_key(key, &key_pem)?;
    let roots = parse_trust_anchors(client_ca, &ca_pem)?;

    let provider = ring_provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Unusable {
        context: format!("client CA {}", client_ca.display()),
        reason: e.to_string(),
    })?;
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
        })?;

    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .client_ca_root(Certificate::from_pem(ca_pem))
        .timeout(HANDSHAKE_TIMEOUT))
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
    let ca_pem = read(ca)?;
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;

    let roots = parse_trust_anchors(ca, &ca_pem)?;
    let chain = parse_certificates(cert, &cert_pem)?;
    let private_key = parse_private_key(key, &key_pem)?;
    ServerName::try_from(domain).map_err(|e| TlsError::Unusable {
        context: format!("server name {domain:?}"),
        reason: e.to_string(),
    })?;
    rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_root_certificates(roots)
                .with_client_auth_cert(chain, private_key)
        })
        .map_err(|e| TlsError::Unusable {
            context: format!(
                "client certificate {} with key {}",
                cert.display(),
                key.display()
            ),
            reason: e.to_string(),
        })?;

    Ok(client_tls_config_pem(&ca_pem, &cert_pem, &key_pem, domain))
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

/// The organisation id named by a client certificate (DER): the single URI SAN starting
/// with [`ORGANIZATION_URI_PREFIX`]. Other URI SANs (e.g. SPIFFE ids) are ignored, so an
/// organisation can reuse a certificate that also carries other names.
///
/// The match is exact and case-sensitive: ids are compared byte for byte elsewhere, and a
/// second spelling of the same organisation must not exist. The CN is never consulted (see
/// the module docs). It returns the raw id; the caller validates its syntax and role.
pub fn organization_from_certificate(der: &[u8]) -> Result<String, CertificateIdentityError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertificateIdentityError::Unparseable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateIdentityError::Unparseable(
            "trailing bytes after the certificate".to_owned(),
        ));
    }
    // An error here includes a duplicated SAN extension, which x509-parser refuses.
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateIdentityError::Unparseable(e.to_string()))?;
    let ids: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(ORGANIZATION_URI_PREFIX),
            _ => None,
        })
        .collect();
    match ids.as_slice() {
        [] => Err(CertificateIdentityError::MissingOrganization),
        [""] => Err(CertificateIdentityError::EmptyOrganization),
        [id] => Ok((*id).to_owned()),
        _ => Err(CertificateIdentityError::MultipleOrganizations(
            ids.iter().map(|id| (*id).to_owned()).collect(),
        )),
    }
}

/// The organisation of the client that sent `request`: [`organization_from_certificate`]
/// on the leaf (first) certificate the client presented. This is the check every handler
/// (or an interceptor in front of them) runs; an error must become `UNAUTHENTICATED`.
pub fn organization_from_request<T>(
    request: &tonic::Request<T>,
) -> Result<String, CertificateIdentityError> {
    let certs = request
        .peer_certs()
        .ok_or(CertificateIdentityError::NoClientCertificate)?;
    let leaf = certs
        .first()
        .ok_or(CertificateIdentityError::NoClientCertificate)?;
    organization_from_certificate(leaf.as_ref())
}

/// Writes a development PKI into `dir`: a CA (ECDSA P-256, CN "referral-exchange
/// development CA"), a server certificate for DNS `localhost` and IPs 127.0.0.1 and ::1
/// (EKU serverAuth), and for each org id a client profile `clients/<org>/` with a
/// certificate carrying URI SAN [`ORGANIZATION_URI_PREFIX`]`<org>`, CN `<org>` and EKU
/// clientAuth, its key, and a copy of the CA certificate.
///
/// **Development only.** The CA key sits next to everything else, the CA is valid for 5
/// years and leaves for 1 year (capped at the CA's expiry), and there is no revocation.
///
/// Reruns are incremental so that organisations can be added later without reissuing
/// everything: an existing `ca.pem`/`ca.key` is reused (it may also be a CA made
/// elsewhere, if its key is PKCS#8 and ring can sign with it); the server certificate is
/// written only if missing or if a new CA was created; a client profile is left alone if it
/// exists and its `ca.pem` is the current CA (a profile left over from a deleted CA is
/// useless and is reissued). Private keys are written with mode 0600.
///
/// Org ids must be lowercase ASCII letters, digits and hyphens (the syntax of the API's
/// ids) because each becomes a directory name and part of a URI.
pub fn write_dev_pki(dir: &Path, orgs: &[&str]) -> Result<DevPkiReport, TlsError> {
    for org in orgs {
        validate_dev_org(org)?;
    }
    let layout = PkiLayout::new(dir);
    create_dir(dir)?;

    let created_ca = match (layout.ca_cert().exists(), layout.ca_key().exists()) {
        (true, true) => false,
        (false, false) => {
            create_dev_ca(&layout)?;
            true
        }
        _ => {
            return Err(TlsError::CaReuse {
                path: dir.to_path_buf(),
                reason: "only one of ca.pem and ca.key exists; restore the other or delete both"
                    .to_owned(),
            });
        }
    };
    // Always load the CA from disk, fresh or not, so there is one code path for issuing.
    let ca = LoadedCa::load(&layout)?;

    let mut report = DevPkiReport {
        created_ca,
        ..DevPkiReport::default()
    };

    if created_ca || !layout.server_cert().exists() || !layout.server_key().exists() {
        let sans = vec![
            SanType::DnsName(ia5("localhost")?),
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
        ];
        let leaf = ca.issue_leaf(
            DEV_SERVER_COMMON_NAME,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write_private(&layout.server_key(), leaf.key_pem.as_bytes())?;
        write_public(&layout.server_cert(), leaf.cert_pem.as_bytes())?;
        report.issued_server = true;
    }

    for org in orgs {
        let profile = layout.client_dir(org);
        let cert_path = profile.join("cert.pem");
        let key_path = profile.join("key.pem");
        let ca_path = profile.join("ca.pem");
        let current = cert_path.exists()
            && key_path.exists()
            && fs::read(&ca_path).is_ok_and(|bytes| bytes == ca.pem.as_bytes());
        if current || report.issued.iter().any(|done| done == org) {
            continue;
        }
        let uri = format!("{ORGANIZATION_URI_PREFIX}{org}");
        let leaf = ca.issue_leaf(
            org,
            vec![SanType::URI(ia5(&uri)?)],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        create_dir(&profile)?;
        write_private(&key_path, leaf.key_pem.as_bytes())?;
        write_public(&cert_path, leaf.cert_pem.as_bytes())?;
        write_public(&ca_path, ca.pem.as_bytes())?;
        report.issued.push((*org).to_owned());
    }
    Ok(report)
}

/// Refuses org ids that would escape `clients/` or not fit the API's id syntax.
fn validate_dev_org(org: &str) -> Result<(), TlsError> {
    let invalid = |reason| TlsError::InvalidOrganization {
        org: org.to_owned(),
        reason,
    };
    if org.is_empty() {
        return Err(invalid("empty"));
    }
    if org.len() > 63 {
        return Err(invalid("longer than 63 characters"));
    }
    if !org
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "only lowercase ASCII letters, digits and '-' are allowed",
        ));
    }
    if org.starts_with('-') || org.ends_with('-') {
        return Err(invalid("must not start or end with '-'"));
    }
    Ok(())
}

/// Generates the development CA and writes `ca.key` (0600) and `ca.pem`.
fn create_dev_ca(layout: &PkiLayout) -> Result<(), TlsError> {
    let key = generate_key("the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, DEV_CA_COMMON_NAME);
    // Path length 0: this CA issues leaves only, never intermediate CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    set_validity(
        &mut params,
        now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now),
        now + DEV_CA_VALIDITY,
    );
    let cert = params
        .self_signed(&key)
        .map_err(|source| TlsError::Generate {
            what: "the CA certificate".to_owned(),
            source,
        })?;
    write_private(&layout.ca_key(), key.serialize_pem().as_bytes())?;
    write_public(&layout.ca_cert(), cert.pem().as_bytes())?;
    Ok(())
}

/// A CA loaded from `ca.pem` + `ca.key`, ready to sign.
struct LoadedCa {
    /// `ca.pem` as read, copied into each client profile.
    pem: String,
    /// The DER of the CA's subject name: every issued certificate's issuer must equal it
    /// byte for byte, or path building (which compares names as bytes) fails.
    subject_raw: Vec<u8>,
    /// The CA's expiry; leaves must not outlive it.
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

/// A freshly issued leaf.
struct IssuedLeaf {
    cert_pem: String,
    key_pem: String,
}

impl LoadedCa {
    /// Loads and checks the CA. rcgen's own CA parser needs its `x509-parser` feature,
    /// which the project does not enable, so the issuer (subject name, key identifier) is
    /// rebuilt here from the certificate with x509-parser.
    fn load(layout: &PkiLayout) -> Result<Self, TlsError> {
        let reuse_error = |reason: String| TlsError::CaReuse {
            path: layout.dir.clone(),
            reason,
        };
        let cert_path = layout.ca_cert();
        let pem_bytes = read(&cert_path)?;
        let pem = String::from_utf8(pem_bytes).map_err(|_| TlsError::Pem {
            path: cert_path.clone(),
            reason: "not UTF-8 text".to_owned(),
        })?;
        let der = parse_certificates(&cert_path, pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| reuse_error("ca.pem holds no certificate".to_owned()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| reuse_error(format!("ca.pem: {e}")))?;
        if !cert.is_ca() {
            return Err(reuse_error("ca.pem is not a CA certificate".to_owned()));
        }
        let not_after = from_unix_timestamp(cert.validity().not_after.timestamp());
        if not_after <= SystemTime::now() {
            return Err(reuse_error(
                "the CA certificate has expired; delete the directory to create a new PKI"
                    .to_owned(),
            ));
        }

        let key_path = layout.ca_key();
        let key_pem = String::from_utf8(read(&key_path)?).map_err(|_| TlsError::Pem {
            path: key_path.clone(),
            reason: "not UTF-8 text".to_owned(),
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
            path: key_path.clone(),
            reason: format!("not a PKCS#8 private key that ring can sign with: {e}"),
        })?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(reuse_error("ca.key does not belong to ca.pem".to_owned()));
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&cert).map_err(reuse_error)?;
        // The authority key identifier of issued certificates must equal the CA's subject
        // key identifier: OpenSSL refuses a chain where they differ.
        params.key_identifier_method = subject_key_identifier(&cert)
            .map(KeyIdMethod::PreSpecified)
            .unwrap_or(KeyIdMethod::Sha256);
        Ok(Self {
            subject_raw: cert.subject().as_raw().to_vec(),
            not_after,
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// Issues an end-entity certificate (ECDSA P-256) with the given SANs and EKU.
    fn issue_leaf(
        &self,
        common_name: &str,
        subject_alt_names: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<IssuedLeaf, TlsError> {
        let what = format!("a certificate for {common_name:?}");
        let key = generate_key(&what)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = subject_alt_names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        set_validity(
            &mut params,
            now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now),
            (now + DEV_LEAF_VALIDITY).min(self.not_after),
        );
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| TlsError::Generate {
                what: what.clone(),
                source,
            })?;

        let (_, parsed) =
            x509_parser::parse_x509_certificate(cert.der().as_ref()).map_err(|e| {
                TlsError::Unusable {
                    context: what.clone(),
                    reason: format!("rcgen produced an unparseable certificate: {e}"),
                }
            })?;
        if parsed.issuer().as_raw() != self.subject_raw.as_slice() {
            return Err(TlsError::Unusable {
                context: what,
                reason: "the CA's subject name could not be reproduced exactly, so issued \
                         certificates would not chain to it"
                    .to_owned(),
            });
        }
        Ok(IssuedLeaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Rebuilds a certificate's subject as an rcgen name, keeping each attribute's string type
/// (a PrintableString and a UTF8String with the same text are different names).
fn distinguished_name(cert: &X509Certificate<'_>) -> Result<DistinguishedName, String> {
    use x509_parser::der_parser::asn1_rs::Tag;

    let mut dn = DistinguishedName::new();
    for rdn in cert.subject().iter() {
        let mut attributes = rdn.iter();
        let (Some(attribute), None) = (attributes.next(), attributes.next()) else {
            return Err("the CA subject has a multi-valued or empty RDN".to_owned());
        };
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or("the CA subject has an attribute type that is not a valid OID")?
            .collect();
        let value = attribute.attr_value();
        let text = std::str::from_utf8(value.data)
            .map_err(|_| "the CA subject has a non-UTF-8 attribute".to_owned())?;
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(
                text.try_into()
                    .map_err(|e| format!("the CA subject has a bad PrintableString: {e}"))?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                text.try_into()
                    .map_err(|e| format!("the CA subject has a bad IA5String: {e}"))?,
            ),
            other => {
                return Err(format!(
                    "the CA subject uses unsupported string type {other}"
                ));
            }
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// The certificate's subject key identifier, if it has one.
fn subject_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

/// Sets the validity period. rcgen takes `time::OffsetDateTime`, and the project neither
/// depends on `time` directly nor enables its `std` feature (which converts from
/// `SystemTime`); `date_time_ymd(1970, 1, 1)` is the Unix epoch in that type, so adding the
/// seconds since the epoch gives the instant without either.
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let since_epoch = |t: SystemTime| {
        Duration::from_secs(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    };
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_before);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_after);
}

fn from_unix_timestamp(ts: i64) -> SystemTime {
    match u64::try_from(ts) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

fn generate_key(what: &str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| TlsError::Generate {
        what: what.to_owned(),
        source,
    })
}

fn ia5(text: &str) -> Result<rcgen::string::Ia5String, TlsError> {
    rcgen::string::Ia5String::try_from(text).map_err(|source| TlsError::Generate {
        what: format!("the name {text:?}"),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(path).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    fs::write(path, contents).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a private key readable by its owner only. The mode is set at creation (so the
/// key is never briefly world-readable) and again afterwards (in case the file existed).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let write_error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(write_error)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(write_error)?;
        file.write_all(contents).map_err(write_error)?;
        file.sync_all().map_err(write_error)
    }
    #[cfg(not(unix))]
    {
        fs::write(path, contents).map_err(write_error)
    }
}

/// All certificates in a PEM file; at least one is required.
fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block found".to_owned(),
        });
    }
    Ok(certs)
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
    use super::*;

    use std::net::SocketAddr;
    use std::process::Command;
    use std::sync::Mutex;

    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::transport::{Channel, Endpoint, Server};
    use tonic::{Code, Status};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::health_server::HealthServer;
    use tonic_health::server::{HealthReporter, HealthService};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// The whole source chain of an error, for assertions and for the test log.
    fn chain(error: &(dyn std::error::Error + 'static)) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }

    fn first_cert_der(path: &Path) -> Vec<u8> {
        let pem = fs::read(path).unwrap();
        parse_certificates(path, &pem).unwrap()[0].as_ref().to_vec()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A test server: the standard health service behind an interceptor that does what the
    /// real server must do before any handler, i.e. map the peer certificate to an
    /// organisation or refuse with UNAUTHENTICATED. Organisations seen are recorded.
    struct TestServer {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn start_server(tls: ServerTlsConfig) -> TestServer {
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

    fn dev_server_tls(layout: &PkiLayout) -> ServerTlsConfig {
        server_tls_config(
            &layout.server_cert(),
            &layout.server_key(),
            &layout.ca_cert(),
        )
        .unwrap()
    }

    fn profile_tls(layout: &PkiLayout, org: &str) -> ClientTlsConfig {
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
    fn assert_refused_after_handshake(refused: &(Option<Code>, String)) {
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
    async fn health_check(
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

    #[test]
    fn layout_paths() {
        let layout = PkiLayout::new("/pki");
        assert_eq!(layout.ca_cert(), Path::new("/pki/ca.pem"));
        assert_eq!(layout.ca_key(), Path::new("/pki/ca.key"));
        assert_eq!(layout.server_cert(), Path::new("/pki/server.pem"));
        assert_eq!(layout.server_key(), Path::new("/pki/server.key"));
        assert_eq!(layout.client_dir("kela"), Path::new("/pki/clients/kela"));
        assert!(!layout.exists());
    }

    #[test]
    fn write_dev_pki_creates_files_and_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PkiLayout::new(dir.path());

        let report = write_dev_pki(dir.path(), &["kela", "hva-15"]).unwrap();
        assert!(report.created_ca);
        assert!(report.issued_server);
        assert_eq!(report.issued, ["kela", "hva-15"]);
        assert!(layout.exists());
        assert!(layout.ca_key().is_file());
        for org in ["kela", "hva-15"] {
            let profile = layout.client_dir(org);
            for file in ["cert.pem", "key.pem", "ca.pem"] {
                assert!(profile.join(file).is_file(), "{org}/{file}");
            }
            assert_eq!(
                fs::read(profile.join("ca.pem")).unwrap(),
                fs::read(layout.ca_cert()).unwrap()
            );
        }
        #[cfg(unix)]
        {
            assert_eq!(mode(&layout.ca_key()), 0o600);
            assert_eq!(mode(&layout.server_key()), 0o600);
            assert_eq!(mode(&layout.client_dir("kela").join("key.pem")), 0o600);
            assert_eq!(mode(&layout.client_dir("hva-15").join("key.pem")), 0o600);
        }

        let ca_before = fs::read(layout.ca_cert()).unwrap();
        let server_before = fs::read(layout.server_cert()).unwrap();
        let kela_before = fs::read(layout.client_dir("kela").join("cert.pem")).unwrap();

        let report = write_dev_pki(dir.path(), &["kela", "helsinki", "aland-478"]).unwrap();
        assert!(!report.created_ca);
        assert!(!report.issued_server);
        assert_eq!(report.issued, ["helsinki", "aland-478"]);
        assert_eq!(fs::read(layout.ca_cert()).unwrap(), ca_before);
        assert_eq!(fs::read(layout.server_cert()).unwrap(), server_before);
        assert_eq!(
            fs::read(layout.client_dir("kela").join("cert.pem")).unwrap(),
            kela_before
        );

        // The certificates issued by the reused CA carry the org and chain to the same CA.
        let helsinki = first_cert_der(&layout.client_dir("helsinki").join("cert.pem"));
        assert_eq!(
            organization_from_certificate(&helsinki).unwrap(),
            "helsinki"
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(&helsinki).unwrap();
        let ca_der = first_cert_der(&layout.ca_cert());
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(parsed.issuer().as_raw(), ca.subject().as_raw());
        assert_eq!(
            ca.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            DEV_CA_COMMON_NAME
        );
    }

    #[test]
    fn write_dev_pki_refuses_bad_org_ids_and_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../etc", "a/b", "Kela", "-x", "x y"] {
            let error = write_dev_pki(dir.path(), &[bad]).unwrap_err();
            assert!(
                matches!(error, TlsError::InvalidOrganization { .. }),
                "{bad:?}: {error}"
            );
        }
        assert!(
            !dir.path().join("ca.pem").exists(),
            "nothing written for invalid input"
        );

        write_dev_pki(dir.path(), &[]).unwrap();
        fs::remove_file(dir.path().join("ca.key")).unwrap();
        let error = write_dev_pki(dir.path(), &["kela"]).unwrap_err();
        assert!(matches!(error, TlsError::CaReuse { .. }), "{error}");
    }

    #[test]
    fn dev_certificates_have_the_documented_names_and_usages() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PkiLayout::new(dir.path());
        write_dev_pki(dir.path(), &["kela"]).unwrap();

        let server_der = first_cert_der(&layout.server_cert());
        let (_, server) = x509_parser::parse_x509_certificate(&server_der).unwrap();
        let san = server.subject_alternative_name().unwrap().unwrap();
        let names = &san.value.general_names;
        assert!(
            names.contains(&GeneralName::DNSName("localhost")),
            "{names:?}"
        );
        assert!(
            names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])),
            "{names:?}"
        );
        let ipv6_loopback = std::net::Ipv6Addr::LOCALHOST.octets();
        assert!(
            names.contains(&GeneralName::IPAddress(&ipv6_loopback)),
            "{names:?}"
        );
        assert!(
            server
                .extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        assert!(!server.is_ca());

        let kela_der = first_cert_der(&layout.client_dir("kela").join("cert.pem"));
        let (_, kela) = x509_parser::parse_x509_certificate(&kela_der).unwrap();
        assert_eq!(
            kela.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "kela"
        );
        let eku = kela.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let lifetime =
            kela.validity().not_after.timestamp() - kela.validity().not_before.timestamp();
        assert!(lifetime <= 366 * 24 * 3600 + 3600, "{lifetime}");

        let ca_der = first_cert_der(&layout.ca_cert());
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(ca.is_ca());
        let ca_lifetime =
            ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp();
        assert!(ca_lifetime >= 5 * 365 * 24 * 3600, "{ca_lifetime}");
    }

    #[test]
    fn organization_from_certificate_reads_the_uri_san_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PkiLayout::new(dir.path());
        write_dev_pki(dir.path(), &["hva-15"]).unwrap();
        let der = first_cert_der(&layout.client_dir("hva-15").join("cert.pem"));
        assert_eq!(organization_from_certificate(&der).unwrap(), "hva-15");

        let ca = LoadedCa::load(&layout).unwrap();
        let der_of = |leaf: IssuedLeaf| {
            CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec()
        };
        let uri = |text: &str| SanType::URI(ia5(text).unwrap());

        // CN names an organisation, but without the SAN the certificate names none.
        let no_san = ca
            .issue_leaf("kela", vec![], ExtendedKeyUsagePurpose::ClientAuth)
            .unwrap();
        assert_eq!(
            organization_from_certificate(&der_of(no_san)),
            Err(CertificateIdentityError::MissingOrganization)
        );
        // Other URI SANs and DNS names are ignored.
        let other = ca
            .issue_leaf(
                "x",
                vec![
                    uri("spiffe://example/kela"),
                    SanType::DnsName(ia5("kela").unwrap()),
                    uri(&format!("{ORGANIZATION_URI_PREFIX}kela")),
                ],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
            .unwrap();
        assert_eq!(
            organization_from_certificate(&der_of(other)).unwrap(),
            "kela"
        );
        let two = ca
            .issue_leaf(
                "x",
                vec![
                    uri(&format!("{ORGANIZATION_URI_PREFIX}kela")),
                    uri(&format!("{ORGANIZATION_URI_PREFIX}hva-01")),
                ],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
            .unwrap();
        assert_eq!(
            organization_from_certificate(&der_of(two)),
            Err(CertificateIdentityError::MultipleOrganizations(vec![
                "kela".into(),
                "hva-01".into()
            ]))
        );
        let empty = ca
            .issue_leaf(
                "x",
                vec![uri(ORGANIZATION_URI_PREFIX)],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
            .unwrap();
        assert_eq!(
            organization_from_certificate(&der_of(empty)),
            Err(CertificateIdentityError::EmptyOrganization)
        );
        // A self-signed rcgen certificate without any SAN.
        let key = KeyPair::generate().unwrap();
        let bare = CertificateParams::default().self_signed(&key).unwrap();
        assert_eq!(
            organization_from_certificate(bare.der()),
            Err(CertificateIdentityError::MissingOrganization)
        );

        assert!(matches!(
            organization_from_certificate(b"not a certificate"),
            Err(CertificateIdentityError::Unparseable(_))
        ));
        assert!(matches!(
            organization_from_certificate(&[]),
            Err(CertificateIdentityError::Unparseable(_))
        ));
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(
            organization_from_certificate(&trailing),
            Err(CertificateIdentityError::Unparseable(_))
        ));
    }

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

    /// Runs `openssl` with `args` in `dir`; panics with its stderr if it fails.
    fn openssl(dir: &Path, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs the `openssl` command-line tool (apt-get install openssl): {e}"
                )
            });
        assert!(
            output.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
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

    /// The development PKI's own chain also passes OpenSSL's verification, so clients
    /// built on other TLS stacks can use the profiles.
    #[test]
    fn dev_pki_passes_openssl_verify() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), &["kela"]).unwrap();
        openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-purpose",
                "sslserver",
                "server.pem",
            ],
        );
        openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-purpose",
                "sslclient",
                "clients/kela/cert.pem",
            ],
        );
    }
}
