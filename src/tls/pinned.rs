//! Client certificates accepted because they are pinned, not because the client CA issued them: the
//! TLS certificates of the X-Road security servers that forward calls to the HTTP face.
//!
//! An X-Road provider security server connects with its own TLS certificate, usually self-signed and
//! registered with the service provider by its operator, so it cannot chain to the exchange's client
//! CA. The HTTP listener therefore accepts a client certificate either as the gRPC listener does
//! (issued by the client CA) or if it is byte for byte one of the pinned certificates. The handshake
//! signature is checked against the pinned certificate's key in both cases, so presenting a copy of a
//! pinned certificate without its private key fails the handshake. Which way a connection was
//! accepted decides how its calls are identified (see `crate::http::identity`).

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

/// Accepts what `ca` accepts, and exactly the `pinned` certificates.
#[derive(Debug)]
pub(super) struct CaOrPinned {
    pub ca: Arc<dyn ClientCertVerifier>,
    pub pinned: Vec<CertificateDer<'static>>,
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for CaOrPinned {
    fn offer_client_auth(&self) -> bool {
        self.ca.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.ca.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pin| pin.as_ref() == end_entity.as_ref())
        {
            return Ok(ClientCertVerified::assertion());
        }
        self.ca.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
