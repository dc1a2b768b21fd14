//! Who is calling over HTTP, two ways and never mixed (API.md, "The HTTP face"):
//!
//! 1. **Direct**: the client certificate names the organisation (and, if personal, the person),
//!    exactly as on gRPC; `x-user-id` and `x-correlation-id` are headers.
//! 2. **Through X-Road**: the client certificate is one of the pinned security-server certificates
//!    (`--xroad-security-server-cert`). The security server has authenticated the consumer and names
//!    it in `X-Road-Client` (`INSTANCE/MEMBERCLASS/MEMBERCODE/SUBSYSTEMCODE`); the client map
//!    (`--xroad-client-map`) says which organisation that subsystem is, and anything unmapped is
//!    refused. `X-Road-UserId` is the person, `X-Road-Id` the correlation id, and the client and any
//!    `X-Road-Represented-Party` are recorded in the call's audit event.
//!
//! `X-Road-*` headers on a direct connection are refused, never honoured: otherwise any organisation
//! could claim to be another by writing a header. Either way the result is the same
//! [`Claims`] the gRPC edge makes, so handlers and the audit trail cannot tell the edges apart.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use axum::http::HeaderMap;
use rustls::pki_types::CertificateDer;

use crate::{
    access::{CORRELATION_ID_HEADER, Claims, USER_ID_HEADER, Unidentified},
    domain::OrganizationId,
};

pub const XROAD_CLIENT: &str = "x-road-client";
pub const XROAD_USER_ID: &str = "x-road-userid";
pub const XROAD_ID: &str = "x-road-id";
pub const XROAD_REPRESENTED_PARTY: &str = "x-road-represented-party";

/// X-Road subsystems and the organisations they are, read from `--xroad-client-map`:
/// one line per subsystem, `FI/GOV/0245437-2/referrals = kela`, `#` starting a comment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientMap {
    clients: HashMap<String, OrganizationId>,
}

impl ClientMap {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut clients = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let n = n + 1;
            let (client, organization) = line.split_once('=').ok_or_else(|| {
                format!("line {n}: expected `INSTANCE/CLASS/CODE/SUBSYSTEM = organisation`")
            })?;
            let client = client.trim();
            if !is_client_id(client) {
                return Err(format!(
                    "line {n}: {client:?} is not an X-Road subsystem id INSTANCE/MEMBERCLASS/MEMBERCODE/SUBSYSTEMCODE"
                ));
            }
            let organization = OrganizationId::parse(organization.trim()).map_err(|_| {
                format!(
                    "line {n}: {:?} is not an organisation id",
                    organization.trim()
                )
            })?;
            if clients.insert(client.to_owned(), organization).is_some() {
                return Err(format!("line {n}: {client} is mapped twice"));
            }
        }
        Ok(Self { clients })
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("reading the X-Road client map {}: {e}", path.display())
        })?;
        Self::parse(&text)
            .map_err(|e| anyhow::anyhow!("the X-Road client map {}: {e}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    fn organization(&self, client: &str) -> Option<&OrganizationId> {
        self.clients.get(client)
    }
}

/// Four non-empty parts of letters, digits, `-`, `_`, `.`: what X-Road identifiers are in practice,
/// and nothing that could smuggle another value into the audit trail.
fn is_client_id(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    parts.len() == 4 && parts.iter().all(|p| is_id_part(p))
}

/// `[CLASS/]CODE` of a represented party (X-Road's third-party extension).
fn is_party_id(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    (1..=2).contains(&parts.len()) && parts.iter().all(|p| is_id_part(p))
}

fn is_id_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 64
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The X-Road side of the HTTP listener: pinned certificates and the (reloadable) client map.
#[derive(Debug, Default)]
pub struct XRoad {
    pinned: Vec<CertificateDer<'static>>,
    map: RwLock<Arc<ClientMap>>,
    map_file: Option<PathBuf>,
}

impl XRoad {
    pub fn new(
        pinned: Vec<CertificateDer<'static>>,
        map_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let map = match &map_file {
            Some(path) => ClientMap::load(path)?,
            None => ClientMap::default(),
        };
        Ok(Self {
            pinned,
            map: RwLock::new(Arc::new(map)),
            map_file,
        })
    }

    pub fn pinned(&self) -> &[CertificateDer<'static>] {
        &self.pinned
    }

    /// Whether a client map file was given (and so is re-read on SIGHUP).
    pub fn has_client_map(&self) -> bool {
        self.map_file.is_some()
    }

    /// Re-reads the client map file. On an error the map in use stays, so a typo cannot cut every
    /// receiver off. Returns the number of mapped subsystems.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let Some(path) = &self.map_file else {
            return Ok(0);
        };
        let map = ClientMap::load(path)?;
        let len = map.len();
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        Ok(len)
    }

    fn map(&self) -> Arc<ClientMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn is_security_server(&self, leaf: Option<&CertificateDer<'_>>) -> bool {
        leaf.is_some_and(|leaf| self.pinned.iter().any(|pin| pin.as_ref() == leaf.as_ref()))
    }
}

/// The claims of one HTTP request on a connection whose client presented `peer_certs`.
pub fn claims(
    peer_certs: Option<&[CertificateDer<'static>]>,
    headers: &HeaderMap,
    xroad: &XRoad,
) -> Claims {
    // A value that is not visible ASCII is passed on as such so that it is refused, not dropped.
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
    };
    let leaf = peer_certs.and_then(|certs| certs.first());
    let refused = |reason: String| {
        Claims::unidentified(Unidentified::XRoad {
            reason,
            sender: None,
        })
    };
    if !xroad.is_security_server(leaf) {
        if headers
            .keys()
            .any(|name| name.as_str().starts_with("x-road-"))
        {
            // Refused, and recorded under the organisation the certificate names.
            return Claims::unidentified(Unidentified::XRoad {
                reason: "X-Road-* headers are honoured only from a pinned X-Road security server \
                         certificate"
                    .into(),
                sender: crate::tls::claims_from_peer(peer_certs).organization.ok(),
            });
        }
        let mut claims = crate::tls::claims_from_peer(peer_certs);
        claims.user_id = header(USER_ID_HEADER);
        claims.correlation_id = header(CORRELATION_ID_HEADER);
        return claims;
    }
    let Some(client) = header(XROAD_CLIENT) else {
        return refused(
            "a call through the X-Road security server must name its X-Road-Client".into(),
        );
    };
    if !is_client_id(&client) {
        return refused(
            "X-Road-Client is not INSTANCE/MEMBERCLASS/MEMBERCODE/SUBSYSTEMCODE".into(),
        );
    }
    let mut via = vec![format!("xroad-clients/{client}")];
    if let Some(party) = header(XROAD_REPRESENTED_PARTY) {
        if !is_party_id(&party) {
            return refused("X-Road-Represented-Party is not [PARTYCLASS/]PARTYCODE".into());
        }
        via.push(format!("xroad-represented-parties/{party}"));
    }
    let Some(organization) = xroad.map().organization(&client).cloned() else {
        let mut claims = refused(format!(
            "X-Road-Client {client} is not in the exchange's client map; ask the operator to map the subsystem"
        ));
        claims.via = via;
        return claims;
    };
    Claims {
        organization: Ok(organization.to_string()),
        certified_user: None,
        user_id: header(XROAD_USER_ID),
        correlation_id: header(XROAD_ID),
        via,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_map_reads_lines_comments_and_refuses_mistakes() {
        let map = ClientMap::parse(
            "# Kela\nFI/GOV/0245437-2/referrals = kela  # the referral system\n\nFI/MUN/1234567-8/apotti=hva-15\n",
        )
        .unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(
            map.organization("FI/GOV/0245437-2/referrals")
                .map(ToString::to_string)
                .as_deref(),
            Some("kela")
        );
        assert!(map.organization("FI/GOV/0245437-2").is_none());
        for bad in [
            "FI/GOV/0245437-2 = kela",
            "FI/GOV/0245437-2/referrals kela",
            "FI/GOV/0245437-2/referrals = not an org",
            "FI/GOV/0245437-2/x y = kela",
            "FI/GOV/1/a = kela\nFI/GOV/1/a = hva-15",
        ] {
            assert!(ClientMap::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifier_shapes() {
        assert!(is_client_id("FI/GOV/0245437-2/referrals"));
        assert!(!is_client_id("FI/GOV/0245437-2"));
        assert!(!is_client_id("FI/GOV//referrals"));
        assert!(!is_client_id("FI/GOV/0245437-2/refer rals"));
        assert!(is_party_id("COM/1234567-8"));
        assert!(is_party_id("1234567-8"));
        assert!(!is_party_id("a/b/c"));
    }
}
