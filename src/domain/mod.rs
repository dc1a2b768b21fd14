//! The rules of the exchange as pure code: no I/O, no clock, no database. Everything here can be
//! unit-tested by calling a function, and everything that decides whether a request is lawful lives
//! here rather than in the gRPC or storage layers.
//!
//! - [`identity_code`]: the Finnish personal identity code, validated exactly, never logged.
//! - [`organization`]: organisation ids and the role each implies.
//! - [`municipality`]: the yearly municipality code lists and routing to the responsible organiser.
//! - [`calendar`]: Finnish working days, holidays computed by rule.
//! - [`referral`]: the referral, its state machine and deadlines.
//! - [`consent`]: consents and the rules that decide whether one covers a disclosure.
//! - [`statistics`]: the coded skeleton statistics read, disclosure control (suppression), medians.

pub mod calendar;
pub mod consent;
pub mod identity_code;
pub mod municipality;
pub mod organization;
pub mod referral;
pub mod statistics;

pub use identity_code::PersonalIdentityCode;
pub use organization::{OrganizationId, Role};

/// A new id for something created at `now`: a UUIDv7, whose leading bits are the time. New rows
/// then land at the right edge of every index on their id instead of on a random page, so a commit
/// writes a few pages rather than one per index per row. The time it shows is the creation time,
/// which the API shows anyway; the rest is random, so ids are still not guessable.
pub fn new_id(now: chrono::DateTime<chrono::Utc>) -> uuid::Uuid {
    let seconds = u64::try_from(now.timestamp()).unwrap_or(0);
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        seconds,
        now.timestamp_subsec_nanos(),
    ))
}

/// One broken input rule, named so that a client can act on it (AIP-193 `BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request, e.g. `referral.subject.personal_identity_code`.
    pub field: String,
    /// Stable machine-readable rule, e.g. `check_character` or `required`.
    pub rule: &'static str,
    /// A sentence for people. Never contains the offending value: it may be an identity code.
    pub description: String,
}

impl Violation {
    pub fn new(
        field: impl Into<String>,
        rule: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            rule,
            description: description.into(),
        }
    }

    pub fn required(field: impl Into<String>) -> Self {
        Self::new(field, "required", "must be set")
    }
}

/// Declares an enum whose variants have stable codes: the proto enum value names. The same codes are
/// stored in the database and used in JSON, so a value reads the same everywhere.
/// An enum stored and sent as a fixed code (`"REQUESTED"`): the same codes in the database, the audit
/// trail and the proto enums' names (`grpc/enums.rs` pairs them, and a test holds them together).
pub trait Code: Copy + Sized + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn from_code(code: &str) -> Option<Self>;
}

macro_rules! code_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $code)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }

            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
        }

        impl $crate::domain::Code for $name {
            const ALL: &'static [$name] = $name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn from_code(code: &str) -> Option<Self> {
                $name::from_code(code)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use code_enum;

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[test]
    fn new_ids_sort_by_creation_time_and_differ_within_one_instant() {
        let earlier = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let later = earlier + chrono::Duration::milliseconds(1);
        let (a, b) = (super::new_id(earlier), super::new_id(earlier));
        assert_ne!(a, b);
        assert!(a < super::new_id(later) && b < super::new_id(later));
        assert_eq!(a.get_version_num(), 7);
    }
}
