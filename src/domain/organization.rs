//! Organisation ids and the role each one implies.
//!
//! Every party connects with a client certificate naming `organizations/<id>`, and what the party may
//! do follows from the id alone: `kela` refers; the social welfare organisers receive; auditors only
//! read. Receivers are whoever organises social welfare for a home municipality since the 2023 reform:
//! the 21 wellbeing services counties (`hva-01` … `hva-21`), the City of Helsinki (`helsinki`, which
//! organises its own services and is not a county) and, on Åland, each municipality separately
//! (`aland-<municipality code>`).
//!
//! Parsing here is syntactic. Whether `aland-123` is really an Åland municipality depends on the
//! municipality code lists, which [`super::municipality::MunicipalityRegistry::is_known_receiver`]
//! checks. Organisation ids are not personal data, so they have a `Display` and may be logged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of the AIP-122 resource name of an organisation.
const RESOURCE_PREFIX: &str = "organizations/";
const KELA: &str = "kela";
const HELSINKI: &str = "helsinki";
const COUNTY_PREFIX: &str = "hva-";
const ALAND_PREFIX: &str = "aland-";
const AUDITOR_PREFIX: &str = "auditor-";
/// The 21 wellbeing services counties are numbered 01–21 by Statistics Finland.
const LAST_COUNTY: u8 = 21;
/// Auditor names are at most 63 characters so that an id stays usable as a DNS-style label.
const MAX_AUDITOR_NAME: usize = 63;

super::code_enum! {
    /// What an organisation may do; follows from its id.
    pub enum Role {
        /// Kela, which sends referrals and notifications (SHL §35, LSL §25).
        Referrer = "REFERRER",
        /// A social welfare organiser that receives referrals for its municipalities.
        Receiver = "RECEIVER",
        /// A data protection officer or supervisory auditor, who reads logs and nothing else.
        Auditor = "AUDITOR",
    }
}

/// Why a string is not an organisation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum OrganizationIdError {
    /// Matches none of the forms `kela`, `hva-NN`, `helsinki`, `aland-NNN`, `auditor-<name>`.
    #[error(
        "organisation id must be 'kela', 'hva-01'…'hva-21', 'helsinki', 'aland-<3-digit municipality code>' or 'auditor-<name>'"
    )]
    UnknownForm,
    /// `hva-` not followed by two digits 01–21.
    #[error("wellbeing services county ids are 'hva-01' to 'hva-21' (two digits)")]
    WellbeingCountyNumber,
    /// `aland-` not followed by a three-digit municipality code.
    #[error("Åland organiser ids are 'aland-' followed by a three-digit municipality code")]
    AlandMunicipalityCode,
    /// `auditor-` not followed by a name of the form `[a-z0-9][a-z0-9-]{0,62}`.
    #[error(
        "auditor ids are 'auditor-' followed by 1–63 characters a–z, 0–9 and '-', not starting with '-'"
    )]
    AuditorName,
    /// A resource name that does not start with `organizations/`.
    #[error("organisation resource names have the form 'organizations/<id>'")]
    ResourceName,
}

/// A syntactically valid organisation id in canonical (lower-case) form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrganizationId(String);

fn is_county_number(s: &str) -> bool {
    s.len() == 2
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u8>()
            .is_ok_and(|n| (1..=LAST_COUNTY).contains(&n))
}

fn is_municipality_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_auditor_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    first_ok
        && s.len() <= MAX_AUDITOR_NAME
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl OrganizationId {
    /// Checks the syntax of an id. Ids are case-sensitive and canonical: `Kela` is refused, because
    /// the id is compared with certificate SANs and stored names byte for byte.
    pub fn parse(s: &str) -> Result<Self, OrganizationIdError> {
        if s == KELA || s == HELSINKI {
            return Ok(Self(s.to_owned()));
        }
        let valid = if let Some(n) = s.strip_prefix(COUNTY_PREFIX) {
            is_county_number(n)
                .then_some(())
                .ok_or(OrganizationIdError::WellbeingCountyNumber)
        } else if let Some(code) = s.strip_prefix(ALAND_PREFIX) {
            is_municipality_code(code)
                .then_some(())
                .ok_or(OrganizationIdError::AlandMunicipalityCode)
        } else if let Some(name) = s.strip_prefix(AUDITOR_PREFIX) {
            is_auditor_name(name)
                .then_some(())
                .ok_or(OrganizationIdError::AuditorName)
        } else {
            Err(OrganizationIdError::UnknownForm)
        };
        valid.map(|()| Self(s.to_owned()))
    }

    /// Kela, the only referring organisation.
    pub fn kela() -> Self {
        Self(KELA.to_owned())
    }

    /// The City of Helsinki, which organises its own social welfare (code 90, not a county).
    pub fn helsinki() -> Self {
        Self(HELSINKI.to_owned())
    }

    /// The wellbeing services county with Statistics Finland number `number` (1–21).
    pub fn wellbeing_county(number: u8) -> Result<Self, OrganizationIdError> {
        Self::parse(&format!("{COUNTY_PREFIX}{number:02}"))
    }

    /// The organiser for an Åland municipality, which organises its own social welfare.
    pub fn aland(municipality_code: &str) -> Result<Self, OrganizationIdError> {
        if is_municipality_code(municipality_code) {
            Ok(Self(format!("{ALAND_PREFIX}{municipality_code}")))
        } else {
            Err(OrganizationIdError::AlandMunicipalityCode)
        }
    }

    /// The role the id implies; authorisation rests on this, never on user-supplied metadata.
    pub fn role(&self) -> Role {
        if self.0 == KELA {
            Role::Referrer
        } else if self.0.starts_with(AUDITOR_PREFIX) {
            Role::Auditor
        } else {
            Role::Receiver
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The AIP-122 resource name, `organizations/<id>`, as used in API fields such as consent
    /// recipients and in certificate SANs (after the `urn:referral-exchange:` prefix).
    pub fn resource_name(&self) -> String {
        format!("{RESOURCE_PREFIX}{}", self.0)
    }

    /// Parses `organizations/<id>`.
    pub fn from_resource_name(name: &str) -> Result<Self, OrganizationIdError> {
        name.strip_prefix(RESOURCE_PREFIX)
            .ok_or(OrganizationIdError::ResourceName)
            .and_then(Self::parse)
    }
}

/// The rule of a field violation naming no organisation that takes part.
pub const UNKNOWN_ORGANIZATION_RULE: &str = "unknown_organization";

/// What to do about a name that is no organisation: where the list of those taking part is.
const LIST_THEM: &str = "DirectoryService.ListOrganizations lists those taking part (client: \
     list-organizations); a municipality's organiser is found with ResolveRecipient (client: \
     resolve-recipient --home-municipality CODE)";

/// The field violation for `name` given where an organisation's resource name belongs, when it is
/// not one: a name without `organizations/` is malformed (`resource_name`); anything else names no
/// organisation (`unknown_organization`), whatever its spelling, because `hva-99`, `espoo` and
/// `HVA-15` are all the same mistake to the person who typed them. The description says what ids
/// look like and where to find them, never the value itself (a mistyped field may hold anything).
pub fn organization_name_violation(field: impl Into<String>, name: &str) -> super::Violation {
    let Some(id) = name.strip_prefix(RESOURCE_PREFIX) else {
        return super::Violation::new(
            field,
            "resource_name",
            "must be an organisation's resource name, organizations/{id}, e.g. organizations/hva-15",
        );
    };
    let why = match OrganizationId::parse(id) {
        // Syntactically an id, yet not one taking part (e.g. `aland-999`).
        Ok(_) => String::new(),
        Err(_) if OrganizationId::parse(&id.to_ascii_lowercase()).is_ok() => {
            " (organisation ids are lower case)".to_owned()
        }
        Err(error) => format!(" ({error})"),
    };
    super::Violation::new(
        field,
        UNKNOWN_ORGANIZATION_RULE,
        format!("no such organisation{why}; {LIST_THEM}"),
    )
}

/// The violation for an id that has the form of a receiver's but is none (an Åland code that is
/// no Åland municipality): the same answer as any other unknown organisation.
pub fn unknown_receiver_violation(field: impl Into<String>) -> super::Violation {
    super::Violation::new(
        field,
        UNKNOWN_ORGANIZATION_RULE,
        format!("no such organisation; {LIST_THEM}"),
    )
}

impl fmt::Display for OrganizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for OrganizationId {
    type Err = OrganizationIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for OrganizationId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OrganizationId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::OrganizationIdError as E;
    use super::*;

    #[test]
    fn names_of_no_organisation_say_so_and_where_to_look() {
        for (name, rule, contains) in [
            (
                "organizations/hva-99",
                "unknown_organization",
                "'hva-01' to 'hva-21'",
            ),
            (
                "organizations/espoo",
                "unknown_organization",
                "must be 'kela'",
            ),
            ("organizations/HVA-15", "unknown_organization", "lower case"),
            (
                "organizations/aland-999",
                "unknown_organization",
                "no such organisation;",
            ),
            ("hva-15", "resource_name", "organizations/{id}"),
        ] {
            let v = organization_name_violation("consent.recipients[0]", name);
            assert_eq!(v.field, "consent.recipients[0]");
            assert_eq!(v.rule, rule, "{name}");
            assert!(
                v.description.contains(contains),
                "{name}: {}",
                v.description
            );
            if rule == UNKNOWN_ORGANIZATION_RULE {
                assert!(v.description.starts_with("no such organisation"), "{name}");
                assert!(v.description.contains("list-organizations"), "{name}");
                // The value itself is never echoed.
                let id = name.trim_start_matches(RESOURCE_PREFIX);
                assert!(!v.description.contains(id), "{name}: {}", v.description);
            }
        }
    }

    fn role_of(s: &str) -> Role {
        OrganizationId::parse(s).unwrap().role()
    }

    #[test]
    fn kela_refers() {
        assert_eq!(role_of("kela"), Role::Referrer);
        assert_eq!(OrganizationId::kela().as_str(), "kela");
        assert_eq!(OrganizationId::kela().role(), Role::Referrer);
    }

    #[test]
    fn all_counties_receive() {
        for n in 1..=21u8 {
            let id = OrganizationId::parse(&format!("hva-{n:02}")).unwrap();
            assert_eq!(id.role(), Role::Receiver);
            assert_eq!(OrganizationId::wellbeing_county(n).unwrap(), id);
        }
    }

    #[test]
    fn county_numbers_outside_range_or_unpadded_are_refused() {
        for s in [
            "hva-00", "hva-22", "hva-1", "hva-001", "hva-", "hva-0a", "hva-+1", "hva-90",
        ] {
            assert_eq!(
                OrganizationId::parse(s),
                Err(E::WellbeingCountyNumber),
                "{s}"
            );
        }
        assert_eq!(
            OrganizationId::wellbeing_county(0),
            Err(E::WellbeingCountyNumber)
        );
        assert_eq!(
            OrganizationId::wellbeing_county(22),
            Err(E::WellbeingCountyNumber)
        );
    }

    #[test]
    fn helsinki_and_aland_receive() {
        assert_eq!(role_of("helsinki"), Role::Receiver);
        assert_eq!(OrganizationId::helsinki().as_str(), "helsinki");
        assert_eq!(role_of("aland-478"), Role::Receiver);
        assert_eq!(OrganizationId::aland("478").unwrap().as_str(), "aland-478");
        for s in ["aland-47", "aland-4788", "aland-", "aland-47a", "aland-+47"] {
            assert_eq!(
                OrganizationId::parse(s),
                Err(E::AlandMunicipalityCode),
                "{s}"
            );
        }
        assert_eq!(OrganizationId::aland("1"), Err(E::AlandMunicipalityCode));
    }

    #[test]
    fn auditors() {
        assert_eq!(role_of("auditor-dpo"), Role::Auditor);
        assert_eq!(role_of("auditor-0"), Role::Auditor);
        assert_eq!(role_of("auditor-kela-dpo-2"), Role::Auditor);
        let longest = format!("auditor-a{}", "-".repeat(62));
        assert_eq!(role_of(&longest), Role::Auditor);
        let too_long = format!("auditor-a{}", "b".repeat(63));
        assert_eq!(OrganizationId::parse(&too_long), Err(E::AuditorName));
        for s in [
            "auditor-",
            "auditor--x",
            "auditor-DPO",
            "auditor-d_po",
            "auditor-d po",
            "auditor-ä",
        ] {
            assert_eq!(OrganizationId::parse(s), Err(E::AuditorName), "{s}");
        }
    }

    #[test]
    fn other_forms_are_refused() {
        for s in [
            "",
            "Kela",
            "KELA",
            " kela",
            "kela ",
            "Helsinki",
            "hva01",
            "vantaa",
            "organizations/kela",
        ] {
            assert_eq!(OrganizationId::parse(s), Err(E::UnknownForm), "{s:?}");
        }
    }

    #[test]
    fn resource_names() {
        let id = OrganizationId::parse("hva-15").unwrap();
        assert_eq!(id.resource_name(), "organizations/hva-15");
        assert_eq!(
            OrganizationId::from_resource_name("organizations/hva-15"),
            Ok(id)
        );
        assert_eq!(
            OrganizationId::from_resource_name("hva-15"),
            Err(E::ResourceName)
        );
        assert_eq!(
            OrganizationId::from_resource_name("organization/hva-15"),
            Err(E::ResourceName)
        );
        assert_eq!(
            OrganizationId::from_resource_name("organizations/hva-22"),
            Err(E::WellbeingCountyNumber)
        );
        assert_eq!(
            OrganizationId::from_resource_name("organizations/"),
            Err(E::UnknownForm)
        );
    }

    #[test]
    fn display_and_serde_are_the_plain_id() {
        let id = OrganizationId::parse("aland-478").unwrap();
        assert_eq!(id.to_string(), "aland-478");
        assert_eq!("aland-478".parse::<OrganizationId>(), Ok(id.clone()));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"aland-478\"");
        assert_eq!(serde_json::from_str::<OrganizationId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<OrganizationId>("\"hva-22\"").is_err());
    }
}
