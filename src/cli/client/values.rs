//! How flag text becomes request values: proto enums (kebab or snake case, listed in
//! `--help`), resource names (full or bare ids), times, dates, the endpoint, metadata and
//! identity codes. Only what a person types is tidied; the server judges the rest.

use std::ffi::OsStr;
use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, Utc};
use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Uri;
use uuid::Uuid;

use crate::domain::PersonalIdentityCode;
use crate::proto::v1::{Dimension, consent, organization, referral};

/// Resource name prefixes (AIP-122). The API takes full names only; people paste bare ids too.
const REFERRALS_PREFIX: &str = "referrals/";
const CONSENTS_PREFIX: &str = "consents/";
const ORGANIZATIONS_PREFIX: &str = "organizations/";

/// A personal identity code as typed, tidied but not validated. `Debug` is redacted because the
/// parsed arguments are `Debug` and the code is personal data that must not reach logs.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityCode(pub(super) String);

impl IdentityCode {
    /// The tidied code, to be sent to the server.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdentityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityCode(<redacted>)")
    }
}

/// A prost enum of the API, with what the flag parser needs. Implemented by `proto_enums!` for
/// every enum a flag takes.
pub(super) trait ProtoEnum: Copy + Send + Sync + 'static + TryFrom<i32> + Into<i32> {
    /// The value named `name` exactly as in the .proto (`NEED_FOR_SOCIAL_WORK`).
    fn from_proto_name(name: &str) -> Option<Self>;
    /// The flag spellings (kebab-case) of every value except `…_UNSPECIFIED`, in number order.
    fn flag_names() -> &'static [String];
}

/// Every value of `E` except the zero value: numbers 1, 2, … until one is not defined. The API's
/// enums are numbered without gaps, so this finds them all without copying the list from the
/// .proto (which would go stale when a value is added).
fn defined_values<E: ProtoEnum>() -> impl Iterator<Item = E> {
    (1..).map_while(|n| E::try_from(n).ok())
}

/// `NEED_FOR_SOCIAL_WORK` → `need-for-social-work`.
fn kebab(proto_name: &str) -> String {
    proto_name.to_ascii_lowercase().replace('_', "-")
}

macro_rules! proto_enums {
    ($($ty:ty),* $(,)?) => {$(
        impl ProtoEnum for $ty {
            fn from_proto_name(name: &str) -> Option<Self> {
                <$ty>::from_str_name(name)
            }
            fn flag_names() -> &'static [String] {
                // clap's PossibleValue wants 'static strings (without its "string" feature);
                // computing them once per enum into a static gives that without leaking.
                static NAMES: OnceLock<Vec<String>> = OnceLock::new();
                NAMES.get_or_init(|| {
                    defined_values::<$ty>().map(|v| kebab(v.as_str_name())).collect()
                })
            }
        }
    )*};
}

proto_enums!(
    referral::Kind,
    referral::StatutoryGround,
    referral::Reason,
    referral::DeadlineGroup,
    referral::State,
    referral::Outcome,
    referral::RejectionReason,
    consent::Purpose,
    consent::Form,
    consent::GivenBy,
    consent::State,
    organization::Role,
    Dimension,
);

/// Reads a flag value as a value of `E`: kebab-case or upper snake case, in any letter case.
/// `…_UNSPECIFIED` is refused: a flag that is given must say something (omit a filter instead).
fn parse_proto_enum<E: ProtoEnum>(text: &str) -> Option<E> {
    let name = text.trim().to_ascii_uppercase().replace('-', "_");
    E::from_proto_name(&name).filter(|&value| value.into() != 0)
}

/// clap value parser for a proto enum flag: accepts what [`parse_proto_enum`] accepts, lists the
/// values in `--help`, and refuses anything else with clap's usual "invalid value … [possible
/// values: …]" usage error.
pub(super) struct ProtoEnumParser<E>(PhantomData<fn() -> E>);

impl<E> ProtoEnumParser<E> {
    pub(super) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Clone for ProtoEnumParser<E> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<E: ProtoEnum> TypedValueParser for ProtoEnumParser<E> {
    type Value = E;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<E, clap::Error> {
        let text = value.to_string_lossy();
        parse_proto_enum::<E>(&text).ok_or_else(|| {
            let mut error = clap::Error::new(ErrorKind::InvalidValue).with_cmd(cmd);
            let arg = arg.map_or_else(|| "...".to_owned(), ToString::to_string);
            error.insert(ContextKind::InvalidArg, ContextValue::String(arg));
            error.insert(ContextKind::InvalidValue, ContextValue::String(text.into()));
            error.insert(
                ContextKind::ValidValue,
                ContextValue::Strings(E::flag_names().to_vec()),
            );
            error
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::flag_names()
                .iter()
                .map(|name| PossibleValue::new(name.as_str())),
        ))
    }
}

/// `--endpoint`: `host:port` gets `https://`; any other scheme is refused, because the exchange
/// only speaks mutual TLS and a plaintext attempt would just fail later with a murkier error.
pub(super) fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let url = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected e.g. https://localhost:50051"))?;
    if uri.scheme_str() != Some("https") {
        return Err("the exchange speaks mutual TLS only: use an https:// endpoint".into());
    }
    if uri.host().is_none() {
        return Err("no host; expected e.g. https://localhost:50051".into());
    }
    Ok(url)
}

/// `--user` and `--correlation-id` become gRPC metadata, which must be printable ASCII (HTTP/2
/// would carry other bytes, but gRPC metadata and the server do not accept them); refusing other
/// input here gives a usage error instead of a failed call. The server's own rules (length, no
/// spaces, no identity codes) are left to the server.
pub(super) fn parse_metadata_value(text: &str) -> Result<AsciiMetadataValue, String> {
    const RULE: &str = "must be printable ASCII (it is sent as gRPC metadata)";
    if !text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(RULE.to_owned());
    }
    AsciiMetadataValue::try_from(text).map_err(|_| RULE.to_owned())
}

/// Tidies an identity code as typed; never fails and never echoes it (see [`IdentityCode`]).
pub(super) fn parse_identity_code(text: &str) -> Result<IdentityCode, std::convert::Infallible> {
    Ok(IdentityCode(PersonalIdentityCode::normalize_typed(text)))
}

/// `referrals/{uuid}` or a bare UUID → `referrals/{uuid}`.
pub(super) fn parse_referral_name(text: &str) -> Result<String, String> {
    resource_name(REFERRALS_PREFIX, text)
}

/// `consents/{uuid}` or a bare UUID → `consents/{uuid}`.
pub(super) fn parse_consent_name(text: &str) -> Result<String, String> {
    resource_name(CONSENTS_PREFIX, text)
}

/// A `{prefix}{uuid}` resource name from either the full name or the bare UUID. The UUID is
/// written in its canonical lower-case hyphenated form, the form the server issues, so that a
/// pasted upper-case or braced UUID still finds the resource.
fn resource_name(prefix: &str, text: &str) -> Result<String, String> {
    let text = text.trim();
    let id = text.strip_prefix(prefix).unwrap_or(text);
    Uuid::parse_str(id)
        .map(|uuid| format!("{prefix}{}", uuid.hyphenated()))
        .map_err(|_| format!("expected {prefix}{{uuid}} or a bare UUID"))
}

/// `hva-15` or `organizations/hva-15` → `organizations/hva-15`. The id itself is checked by the
/// server; only what cannot be an id at all is refused here.
pub(super) fn parse_organization_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    let id = text.strip_prefix(ORGANIZATIONS_PREFIX).unwrap_or(text);
    if id.is_empty() || id.contains('/') || id.contains(char::is_whitespace) {
        return Err("expected an organisation id such as hva-15 or organizations/hva-15".into());
    }
    Ok(format!("{ORGANIZATIONS_PREFIX}{id}"))
}

/// RFC 3339 with an explicit offset, so that a time never depends on the machine's time zone.
pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| format!("{e}; expected RFC 3339, e.g. 2025-03-01T09:00:00+02:00"))
}

/// `YYYY-MM-DD`.
pub(super) fn parse_date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|e| format!("{e}; expected YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::CommandFactory as _;

    use super::super::test_support::*;

    #[test]
    fn endpoints_must_be_https() {
        assert_eq!(
            parse_endpoint("localhost:50051").as_deref(),
            Ok("https://localhost:50051")
        );
        assert_eq!(
            parse_endpoint("https://10.0.0.1:50051").as_deref(),
            Ok("https://10.0.0.1:50051")
        );
        assert!(parse_endpoint("http://localhost:50051").is_err());
        assert!(parse_endpoint("https://").is_err());
        assert_eq!(
            parse_err(&["--endpoint", "http://localhost:1", "health"]).kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn metadata_values_must_be_ascii() {
        assert_eq!(
            parse_err(&["--user", "käsittelijä", "health"]).kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse_err(&["--user", "a\nb", "health"]).kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn enum_flags_accept_kebab_and_snake_in_any_case() {
        for text in [
            "need-for-social-work",
            "NEED_FOR_SOCIAL_WORK",
            "Need-For_Social-work",
        ] {
            assert_eq!(
                parse_proto_enum::<referral::Kind>(text),
                Some(referral::Kind::NeedForSocialWork),
                "{text}"
            );
        }
        assert_eq!(
            parse_proto_enum::<referral::Kind>("unemployed-25-plus-12-months"),
            Some(referral::Kind::Unemployed25Plus12Months)
        );
        assert_eq!(
            parse_proto_enum::<referral::DeadlineGroup>("over-75"),
            Some(referral::DeadlineGroup::Over75)
        );
        // The zero value and other enums' values are refused.
        assert_eq!(parse_proto_enum::<referral::Kind>("KIND_UNSPECIFIED"), None);
        assert_eq!(parse_proto_enum::<referral::Kind>("kind-unspecified"), None);
        assert_eq!(parse_proto_enum::<referral::Kind>("housing"), None);
        assert_eq!(parse_proto_enum::<referral::Kind>(""), None);
    }

    /// Every value of every flag enum round-trips through its flag spelling, and no list is empty
    /// or includes the zero value.
    #[test]
    fn every_enum_value_has_a_flag_spelling() {
        fn check<E: ProtoEnum + PartialEq + fmt::Debug>(expected_count: usize) {
            let names = E::flag_names();
            assert_eq!(names.len(), expected_count, "{names:?}");
            for (name, value) in names.iter().zip(defined_values::<E>()) {
                assert!(!name.contains("unspecified"), "{name}");
                assert_eq!(parse_proto_enum::<E>(name), Some(value), "{name}");
                assert_eq!(
                    parse_proto_enum::<E>(&name.to_uppercase().replace('-', "_")),
                    Some(value)
                );
            }
        }
        check::<referral::Kind>(9);
        check::<referral::StatutoryGround>(3);
        check::<referral::Reason>(9);
        check::<referral::DeadlineGroup>(4);
        check::<referral::State>(7);
        check::<referral::Outcome>(5);
        check::<referral::RejectionReason>(3);
        check::<consent::Purpose>(1);
        check::<consent::Form>(3);
        check::<consent::GivenBy>(2);
        check::<consent::State>(4);
        check::<organization::Role>(3);
        assert_eq!(
            consent::Form::flag_names(),
            ["oral", "written", "electronic"]
        );
    }

    #[test]
    fn unknown_enum_value_is_a_usage_error_listing_the_values() {
        let error = parse_err(&["list-organizations", "--role", "admin"]);
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
        let text = error.to_string();
        assert!(text.contains("invalid value 'admin'"), "{text}");
        assert!(text.contains("--role <ROLE>"), "{text}");
        assert!(
            text.contains("[possible values: referrer, receiver, auditor]"),
            "{text}"
        );
        // Clap's usage-error exit code (2), not a call failure.
        assert_eq!(error.exit_code(), 2);

        let error = parse_err(&["list-referrals", "--state", "state-unspecified"]);
        assert_eq!(error.kind(), ErrorKind::InvalidValue);

        // --help lists the values too.
        let help = TestCli::command()
            .find_subcommand_mut("client")
            .and_then(|c| c.find_subcommand_mut("record-consent"))
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(
            help.contains("oral") && help.contains("legal-representative"),
            "{help}"
        );
    }

    #[test]
    fn resource_names_are_normalised() {
        let full = format!("referrals/{REFERRAL_UUID}");
        assert_eq!(parse_referral_name(REFERRAL_UUID), Ok(full.clone()));
        assert_eq!(parse_referral_name(&full), Ok(full.clone()));
        assert_eq!(
            parse_referral_name(&format!(" {} ", REFERRAL_UUID.to_uppercase())),
            Ok(full.clone())
        );
        assert_eq!(
            parse_consent_name(&format!("consents/{CONSENT_UUID}")),
            Ok(format!("consents/{CONSENT_UUID}"))
        );
        // A consent name is not a referral name, and vice versa.
        assert!(parse_referral_name(&format!("consents/{CONSENT_UUID}")).is_err());
        assert!(parse_consent_name(&full).is_err());
        assert!(parse_referral_name("referrals/").is_err());
        assert!(parse_referral_name("not-a-uuid").is_err());
        assert_eq!(
            parse_err(&["get-consent", "123"]).kind(),
            ErrorKind::ValueValidation
        );

        assert_eq!(
            parse_organization_name("hva-15").as_deref(),
            Ok("organizations/hva-15")
        );
        assert_eq!(
            parse_organization_name("organizations/aland-478").as_deref(),
            Ok("organizations/aland-478")
        );
        assert!(parse_organization_name("organizations/").is_err());
        assert!(parse_organization_name("referrals/x").is_err());
    }

    #[test]
    fn identity_codes_are_tidied_not_validated() {
        let tidy = |s: &str| parse_identity_code(s).map(|c| c.0);
        assert_eq!(tidy(" 131052-308t"), Ok("131052-308T".to_owned()));
        // The century sign is kept as typed.
        assert_eq!(tidy("010190y999w"), Ok("010190Y999W".to_owned()));
        // Invalid codes go through: the server is the judge.
        assert_eq!(tidy("not a code"), Ok("NOTACODE".to_owned()));
    }
}
