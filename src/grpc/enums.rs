//! Domain enums and the proto enums that carry the same codes, paired once.
//!
//! A domain enum's code (`"REQUESTED"`) is the name of its proto enum value. Converting through the
//! names leaves the numbers to the proto files; [`Paired`] says which proto enum belongs to which
//! domain enum, and the test below fails when a name exists on one side only, so that neither a
//! response (a value sent as `_UNSPECIFIED`) nor a request (a valid value refused) can go wrong
//! silently.

use crate::{
    domain::{
        Code, Role, Violation,
        consent::{ConsentEventType, ConsentState, Form, GivenBy, Purpose},
        referral::{
            DeadlineGroup, DeadlineKind, Kind, Outcome, Reason, RejectionReason, State,
            StatutoryGround,
        },
        statistics::Dimension,
    },
    mailbox::MessageType,
    proto::v1 as pb,
};

/// A generated proto enum, by its value names.
pub(crate) trait ProtoEnum: Copy + Into<i32> + TryFrom<i32> {
    fn name(self) -> &'static str;
    fn from_name(name: &str) -> Option<Self>;
}

/// A domain enum and the proto enum that carries its codes.
pub(crate) trait Paired: Code {
    type Proto: ProtoEnum;
}

macro_rules! paired {
    ($($domain:ty => $proto:ty),+ $(,)?) => {
        $(
            impl ProtoEnum for $proto {
                fn name(self) -> &'static str {
                    self.as_str_name()
                }

                fn from_name(name: &str) -> Option<Self> {
                    <$proto>::from_str_name(name)
                }
            }

            impl Paired for $domain {
                type Proto = $proto;
            }
        )+

        /// What every pair disagrees on, in words.
        #[cfg(test)]
        fn disagreements() -> Vec<String> {
            let mut found = Vec::new();
            $(found.extend(tests::disagreements::<$domain>(stringify!($domain)));)+
            found
        }
    };
}

paired! {
    Kind => pb::referral::Kind,
    State => pb::referral::State,
    Reason => pb::referral::Reason,
    DeadlineGroup => pb::referral::DeadlineGroup,
    StatutoryGround => pb::referral::StatutoryGround,
    Outcome => pb::referral::Outcome,
    RejectionReason => pb::referral::RejectionReason,
    DeadlineKind => pb::deadline::Kind,
    MessageType => pb::message::Type,
    Purpose => pb::consent::Purpose,
    Form => pb::consent::Form,
    GivenBy => pb::consent::GivenBy,
    ConsentState => pb::consent::State,
    ConsentEventType => pb::consent_event::Type,
    Role => pb::organization::Role,
    Dimension => pb::Dimension,
}

/// The proto number of a domain value.
pub(crate) fn to_proto<D: Paired>(value: D) -> i32 {
    D::Proto::from_name(value.as_str()).map_or(0, Into::into)
}

/// A proto enum number as a domain value; `_UNSPECIFIED`, or a number the proto does not define,
/// is a violation of `field`.
pub(crate) fn required<D: Paired>(
    number: i32,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<D> {
    let name = D::Proto::try_from(number).ok().map(ProtoEnum::name);
    let value = name.and_then(D::from_code);
    if value.is_none() {
        violations.push(match name {
            Some(name) if name.ends_with("_UNSPECIFIED") => Violation::required(field),
            _ => Violation::new(field, "enum_value", "not a value of this enum"),
        });
    }
    value
}

/// Like [`required`], but `_UNSPECIFIED` (0) means "not given".
pub(crate) fn optional<D: Paired>(
    number: i32,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<D> {
    let unspecified = D::Proto::try_from(number)
        .ok()
        .is_some_and(|p| p.name().ends_with("_UNSPECIFIED"));
    if unspecified {
        None
    } else {
        required(number, field, violations)
    }
}

#[cfg(test)]
mod tests {
    use super::{Paired, ProtoEnum};

    /// Names on one side of a pair only, both directions: every domain code must name a proto value
    /// that converts back, and every proto value but `_UNSPECIFIED` must be a domain code.
    pub(super) fn disagreements<D: Paired + PartialEq + std::fmt::Debug>(
        pair: &str,
    ) -> Vec<String> {
        let mut found = Vec::new();
        for value in D::ALL {
            match D::Proto::from_name(value.as_str()) {
                None => found.push(format!("{pair}: {value:?} has no proto value")),
                Some(proto) => {
                    let number: i32 = proto.into();
                    if super::required::<D>(number, "f", &mut Vec::new()) != Some(*value) {
                        found.push(format!("{pair}: {value:?} does not come back"));
                    }
                }
            }
        }
        // Proto enums here are numbered densely from 0; 64 is far past the largest.
        for number in 0..64 {
            if let Ok(proto) = D::Proto::try_from(number) {
                let name = proto.name();
                if !name.ends_with("_UNSPECIFIED") && D::from_code(name).is_none() {
                    found.push(format!("{pair}: proto value {name} has no domain value"));
                }
            }
        }
        found
    }

    #[test]
    fn every_domain_enum_and_its_proto_enum_name_the_same_values() {
        assert_eq!(super::disagreements(), Vec::<String>::new());
    }

    #[test]
    fn unspecified_is_missing_when_required_and_absent_when_optional() {
        use crate::domain::referral::State;
        let mut violations = Vec::new();
        assert_eq!(super::required::<State>(0, "state", &mut violations), None);
        assert_eq!(violations.len(), 1);
        assert_eq!(super::optional::<State>(0, "state", &mut violations), None);
        assert_eq!(
            super::optional::<State>(999, "state", &mut violations),
            None
        );
        assert_eq!(violations.len(), 2, "999 is no value of the enum");
    }
}
