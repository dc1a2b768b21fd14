//! The development PKI behind `referral-exchange dev-pki`: a CA, a server certificate for
//! localhost and one client profile per organisation, written incrementally into a directory
//! (an existing CA, even one made elsewhere, is reused to issue more).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::{ORGANIZATION_URI_PREFIX, TlsError, parse_certificates, read};

/// Common name of the development CA written by [`write_dev_pki`].
const DEV_CA_COMMON_NAME: &str = "referral-exchange development CA";

/// Common name of the development server certificate (clients verify the SANs, not this).
const DEV_SERVER_COMMON_NAME: &str = "referral-exchange development server";

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
/// Issues a personal certificate from the development CA in `dir` (made by [`write_dev_pki`] first):
/// the organisation's URI SAN and `urn:referral-exchange:users/<user>` beside it, written as a
/// profile (`cert.pem`, `key.pem`, `ca.pem`) in `clients/<org>/users/<user>/`, which is returned.
/// The user id follows the organisation id's syntax, and is reissued on every call.
pub fn write_dev_personal_certificate(
    dir: &Path,
    org: &str,
    user: &str,
) -> Result<PathBuf, TlsError> {
    validate_dev_org(org)?;
    validate_dev_org(user)?;
    let layout = PkiLayout::new(dir);
    let ca = LoadedCa::load(&layout)?;
    let organization = format!("{ORGANIZATION_URI_PREFIX}{org}");
    let person = format!("{}{user}", super::identity::USER_URI_PREFIX);
    let leaf = ca.issue_leaf(
        &format!("{user} ({org})"),
        vec![
            SanType::URI(ia5(&organization)?),
            SanType::URI(ia5(&person)?),
        ],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let profile = layout.client_dir(org).join("users").join(user);
    create_dir(&profile)?;
    write_private(&profile.join("key.pem"), leaf.key_pem.as_bytes())?;
    write_public(&profile.join("cert.pem"), leaf.cert_pem.as_bytes())?;
    write_public(&profile.join("ca.pem"), ca.pem.as_bytes())?;
    Ok(profile)
}

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
pub(super) struct LoadedCa {
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
pub(super) struct IssuedLeaf {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

impl LoadedCa {
    /// Loads and checks the CA: readable, a CA, not expired, and `ca.key` is its key. rcgen
    /// takes the issuer's subject name and subject key identifier from the certificate, so
    /// that issued certificates name it byte for byte and carry a matching authority key
    /// identifier (OpenSSL refuses a chain where the identifiers differ).
    pub(super) fn load(layout: &PkiLayout) -> Result<Self, TlsError> {
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

        let subject_raw = cert.subject().as_raw().to_vec();
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| {
            reuse_error(format!(
                "ca.pem cannot serve as an issuer ({e}); each RDN of its subject must hold \
                 one attribute of a standard string type"
            ))
        })?;
        Ok(Self {
            subject_raw,
            not_after,
            issuer,
            pem,
        })
    }

    /// Issues an end-entity certificate (ECDSA P-256) with the given SANs and EKU.
    pub(super) fn issue_leaf(
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

/// Writes `crl.pem` in the PKI directory: a certificate revocation list signed by the development
/// CA, revoking the client certificates of `revoked` (organisation ids), valid for a week. For
/// trying revocation (`serve --client-crl DIR/crl.pem`, then SIGHUP after writing a new one).
pub fn write_dev_crl(dir: &Path, revoked: &[&str]) -> Result<PathBuf, TlsError> {
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
        SerialNumber,
    };
    let layout = PkiLayout::new(dir);
    let ca = LoadedCa::load(&layout)?;
    // rcgen's time type, as in `set_validity`.
    let at = |t: SystemTime| rcgen::date_time_ymd(1970, 1, 1) + since_epoch(t);
    let now = SystemTime::now();
    let mut revoked_certs = Vec::new();
    for org in revoked {
        let path = layout.client_dir(org).join("cert.pem");
        let certs = parse_certificates(&path, &read(&path)?)?;
        for cert in certs.iter().take(1) {
            let (_, parsed) =
                x509_parser::parse_x509_certificate(cert).map_err(|e| TlsError::Pem {
                    path: path.clone(),
                    reason: format!("not an X.509 certificate: {e}"),
                })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(parsed.raw_serial()),
                revocation_time: at(now),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
    }
    let params = CertificateRevocationListParams {
        this_update: at(now),
        next_update: at(now + Duration::from_secs(7 * 24 * 60 * 60)),
        // Increasing with each list written: a later list supersedes an earlier one.
        crl_number: SerialNumber::from(since_epoch(now).as_secs()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(&ca.issuer)
        .map_err(|e| TlsError::Unusable {
            context: format!("a CRL signed by {}", layout.ca_key().display()),
            reason: e.to_string(),
        })?;
    let pem = crl.pem().map_err(|e| TlsError::Unusable {
        context: "the CRL as PEM".to_owned(),
        reason: e.to_string(),
    })?;
    let path = dir.join("crl.pem");
    fs::write(&path, pem).map_err(|source| TlsError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Sets the validity period. rcgen takes `time::OffsetDateTime`, and the project neither
/// depends on `time` directly nor enables its `std` feature (which converts from
/// `SystemTime`); `date_time_ymd(1970, 1, 1)` is the Unix epoch in that type, so adding the
/// seconds since the epoch gives the instant without either.
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_before);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_after);
}

/// Whole seconds since the Unix epoch (none before it).
fn since_epoch(t: SystemTime) -> Duration {
    Duration::from_secs(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
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

pub(super) fn ia5(text: &str) -> Result<rcgen::string::Ia5String, TlsError> {
    rcgen::string::Ia5String::try_from(text).map_err(|source| TlsError::Generate {
        what: format!("the name {text:?}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use rcgen::{DnValue, KeyIdMethod};
    use rustls::pki_types::UnixTime;
    use rustls::server::WebPkiClientVerifier;
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    use crate::tls::test_support::*;
    use crate::tls::{organization_from_certificate, parse_trust_anchors};

    /// Whether the client certificate at `cert` chains to the CA(s) in `ca`, judged by the
    /// verifier the server runs in the handshake (chain, signature, validity, clientAuth).
    fn server_accepts(ca: &Path, cert: &Path) -> Result<(), rustls::Error> {
        let roots = parse_trust_anchors(ca, &fs::read(ca).unwrap()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = parse_certificates(cert, &fs::read(cert).unwrap()).unwrap();
        verifier
            .verify_client_cert(&leaf[0], &leaf[1..], UnixTime::now())
            .map(|_| ())
    }

    /// The key identifier a certificate carries as `which` (subject or authority).
    fn key_identifier(der: &[u8], authority: bool) -> Option<Vec<u8>> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        cert.iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) if !authority => Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(aki) if authority => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            })
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

    /// A CA made elsewhere and loaded from PEM issues certificates the server accepts: the
    /// issuer name is reproduced byte for byte (string types included) and the authority
    /// key identifier is the CA's own subject key identifier, not one rcgen derives anew.
    #[test]
    fn a_ca_loaded_from_pem_issues_certificates_that_chain_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PkiLayout::new(dir.path());
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CountryName,
            DnValue::PrintableString("FI".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Federation of Åland");
        params
            .distinguished_name
            .push(DnType::CommonName, "an operator's CA");
        params.key_identifier_method = KeyIdMethod::PreSpecified(vec![0x5a; 20]);
        let ca = params.self_signed(&ca_key).unwrap();
        fs::write(layout.ca_cert(), ca.pem()).unwrap();
        fs::write(layout.ca_key(), ca_key.serialize_pem()).unwrap();

        let report = write_dev_pki(dir.path(), &["kela"]).unwrap();
        assert!(!report.created_ca);
        let kela = layout.client_dir("kela").join("cert.pem");
        server_accepts(&layout.ca_cert(), &kela).unwrap();
        let kela_der = first_cert_der(&kela);
        assert_eq!(key_identifier(&kela_der, true), Some(vec![0x5a; 20]));
        assert_eq!(key_identifier(ca.der(), false), Some(vec![0x5a; 20]));
        let (_, parsed) = x509_parser::parse_x509_certificate(&kela_der).unwrap();
        let (_, parsed_ca) = x509_parser::parse_x509_certificate(ca.der()).unwrap();
        assert_eq!(parsed.issuer().as_raw(), parsed_ca.subject().as_raw());

        // The check is not vacuous: another CA's certificate for the same org is refused.
        let other = tempfile::tempdir().unwrap();
        write_dev_pki(other.path(), &["kela"]).unwrap();
        let foreign = PkiLayout::new(other.path())
            .client_dir("kela")
            .join("cert.pem");
        assert!(server_accepts(&layout.ca_cert(), &foreign).is_err());
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
