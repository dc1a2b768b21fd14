//! Who is calling: the organisation a client certificate speaks for, read from its URI SAN
//! (never its CN), and the error that makes a request `UNAUTHENTICATED`. See the trust model
//! in the [module docs](super).

use x509_parser::extensions::GeneralName;

/// URI SAN prefix naming an organisation in a client certificate.
pub const ORGANIZATION_URI_PREFIX: &str = "urn:referral-exchange:organizations/";
/// URI SAN prefix naming the person a personal certificate was issued to, beside the organisation.
pub const USER_URI_PREFIX: &str = "urn:referral-exchange:users/";

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
    /// A personal certificate names no person or several ([`USER_URI_PREFIX`]).
    #[error("client certificate names {0} users; a personal certificate names exactly one")]
    UserCount(usize),
}

/// Who a client certificate speaks for: its organisation and, for a personal certificate, the
/// person it was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedParty {
    pub organization: String,
    pub user: Option<String>,
}

/// The organisation and, if named, the person of a client certificate (DER). See
/// [`organization_from_certificate`] for the organisation; the person is the single URI SAN starting
/// with [`USER_URI_PREFIX`], absent from an organisation's system certificate.
pub fn party_from_certificate(der: &[u8]) -> Result<CertifiedParty, CertificateIdentityError> {
    let uris = uri_sans(der)?;
    let organization = organization_of(&uris)?;
    let users: Vec<&str> = uris
        .iter()
        .filter_map(|uri| uri.strip_prefix(USER_URI_PREFIX))
        .collect();
    let user = match users.as_slice() {
        [] => None,
        [user] if !user.is_empty() => Some((*user).to_owned()),
        [_] => return Err(CertificateIdentityError::UserCount(0)),
        _ => return Err(CertificateIdentityError::UserCount(users.len())),
    };
    Ok(CertifiedParty { organization, user })
}

/// What the leaf certificate of a connection claims, for [`crate::access::Call::identify`].
pub fn claims_from_peer(
    peer_certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> crate::access::Claims {
    let party = peer_certs
        .and_then(|certs| certs.first())
        .ok_or(CertificateIdentityError::NoClientCertificate)
        .and_then(|leaf| party_from_certificate(leaf.as_ref()));
    match party {
        Ok(party) => {
            let mut claims = crate::access::Claims::certificate(Ok(party.organization));
            claims.certified_user = party.user;
            claims
        }
        Err(e) => crate::access::Claims::certificate(Err(e.to_string())),
    }
}

/// The organisation id named by a client certificate (DER): the single URI SAN starting
/// with [`ORGANIZATION_URI_PREFIX`]. Other URI SANs (e.g. SPIFFE ids) are ignored, so an
/// organisation can reuse a certificate that also carries other names.
///
/// The match is exact and case-sensitive: ids are compared byte for byte elsewhere, and a
/// second spelling of the same organisation must not exist. The CN is never consulted (see
/// the module docs). It returns the raw id; the caller validates its syntax and role.
pub fn organization_from_certificate(der: &[u8]) -> Result<String, CertificateIdentityError> {
    organization_of(&uri_sans(der)?)
}

/// Every URI SAN of a certificate (DER).
fn uri_sans(der: &[u8]) -> Result<Vec<String>, CertificateIdentityError> {
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
    Ok(san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect())
}

fn organization_of(uris: &[String]) -> Result<String, CertificateIdentityError> {
    let ids: Vec<&str> = uris
        .iter()
        .filter_map(|uri| uri.strip_prefix(ORGANIZATION_URI_PREFIX))
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

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use crate::tls::dev_pki::{IssuedLeaf, LoadedCa, ia5};
    use crate::tls::test_support::first_cert_der;
    use crate::tls::{PkiLayout, write_dev_pki};

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
}
