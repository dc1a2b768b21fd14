//! Finnish personal identity code (henkilötunnus), `DDMMYYCZZZQ`.
//!
//! The code is how Kela names the client in a referral, so it is the most sensitive value the service
//! handles. Three consequences shape this module:
//!
//! - **Canonical form only.** The API takes eleven characters, upper case, no spaces. Anything else is
//!   refused, never repaired: a silently "fixed" code can name a different person. Only a CLI, where a
//!   person types the code, may tidy the input first ([`PersonalIdentityCode::normalize_typed`]).
//! - **The century sign is part of the identity.** Since 2023 the 1900s have the signs `-` `Y` `X` `W`
//!   `V` `U` and the 2000s `A`–`F`, so `010190-999W` and `010190Y999W` are two different people. The
//!   sign is kept exactly as given and never mapped to a "standard" one.
//! - **The code never leaks.** `Debug` is redacted and there is no `Display`, so the code cannot slip
//!   into application logs through `{:?}` or `{}`; logs must use a pseudonym instead. Violation
//!   descriptions are fixed sentences that never quote the input.
//!
//! A person's code can change (e.g. a temporary code replaced by a permanent one), so it is an
//! attribute of a subject, never a primary key. Gender is deliberately not derived from the individual
//! number: since the 2020s reform odd/even no longer reliably tells it.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Check characters indexed by `DDMMYYZZZ mod 31`. The letters G, I, O, Q and Z are left out so that
/// they cannot be confused with digits or with each other when a code is read aloud or typed.
const CHECK_CHARACTERS: &[u8; 31] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";

/// Individual numbers from this value up are temporary codes given outside the population register
/// (e.g. by a healthcare provider), which is why a receiver may not find such a person in the register.
const FIRST_TEMPORARY_INDIVIDUAL_NUMBER: u16 = 900;

/// 000 and 001 have never been issued, so a code carrying them is a typing error or a fabrication.
const FIRST_VALID_INDIVIDUAL_NUMBER: u16 = 2;

const LENGTH: usize = 11;
const CENTURY_SIGN_INDEX: usize = 6;

/// A validated personal identity code in canonical form.
///
/// Only [`PersonalIdentityCode::parse`] (and `Deserialize`, which calls it) can make one, so holding a
/// value proves the code passed every rule.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PersonalIdentityCode(String);

/// One broken rule of the identity code format.
///
/// Parsing reports every rule it can evaluate, so that a handler fixing a typed code sees all problems
/// at once (and the API can return them all as `BadRequest` field violations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityCodeViolation {
    /// Not exactly eleven characters.
    Length,
    /// Contains something other than digits, upper-case letters `A`–`Z`, `+` and `-` (lower case,
    /// spaces and other characters are refused rather than repaired).
    Characters,
    /// The seventh character is not one of the thirteen century signs.
    CenturySign,
    /// `DDMMYY` is not six digits forming a date that exists in the century the sign names.
    Date,
    /// `ZZZ` is not three digits in 002–999.
    IndividualNumber,
    /// The last character is not the check character computed from `DDMMYYZZZ`.
    CheckCharacter,
}

impl IdentityCodeViolation {
    /// Every rule, in the order parsing reports them.
    pub const ALL: [Self; 6] = [
        Self::Length,
        Self::Characters,
        Self::CenturySign,
        Self::Date,
        Self::IndividualNumber,
        Self::CheckCharacter,
    ];

    /// Stable machine-readable code, for API error details; clients may match on it, so never rename.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Characters => "characters",
            Self::CenturySign => "century_sign",
            Self::Date => "date",
            Self::IndividualNumber => "individual_number",
            Self::CheckCharacter => "check_character",
        }
    }

    /// A sentence for people. It never contains the input, so it is safe to log and to return.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Length => "A personal identity code must be exactly 11 characters long.",
            Self::Characters => {
                "A personal identity code may contain only digits, upper-case letters and the signs \
                 '+' and '-', with no spaces."
            }
            Self::CenturySign => {
                "The 7th character must be a century sign: '+' (1800s), '-', 'Y', 'X', 'W', 'V' or 'U' \
                 (1900s), or 'A', 'B', 'C', 'D', 'E' or 'F' (2000s)."
            }
            Self::Date => {
                "The first six characters must be digits forming a date (DDMMYY) that exists in the \
                 century given by the century sign."
            }
            Self::IndividualNumber => {
                "Characters 8 to 10 must be digits forming an individual number from 002 to 999."
            }
            Self::CheckCharacter => {
                "The last character must be the check character computed from the date and the \
                 individual number."
            }
        }
    }
}

impl fmt::Display for IdentityCodeViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for IdentityCodeViolation {}

/// The first year of the century a sign names, or `None` for a character that is no century sign.
fn century_base(sign: char) -> Option<i32> {
    match sign {
        '+' => Some(1800),
        '-' | 'Y' | 'X' | 'W' | 'V' | 'U' => Some(1900),
        'A' | 'B' | 'C' | 'D' | 'E' | 'F' => Some(2000),
        _ => None,
    }
}

/// The value of a run of ASCII digits, or `None` if any character is not one.
fn digits_value(chars: &[char]) -> Option<u32> {
    chars
        .iter()
        .try_fold(0u32, |acc, c| c.to_digit(10).map(|d| acc * 10 + d))
}

/// The date `DDMMYY` names in the century starting at `base`, if it exists.
fn date_in_century(ddmmyy: u32, base: i32) -> Option<NaiveDate> {
    let day = ddmmyy / 10_000;
    let month = (ddmmyy / 100) % 100;
    // `ddmmyy % 100` is below 100, so the cast cannot truncate.
    let year = base + (ddmmyy % 100) as i32;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// Whole years from `born` to `on` under the Finnish rule described at
/// [`PersonalIdentityCode::age_on`]; `0` when `on` is before `born`.
fn age_on(born: NaiveDate, on: NaiveDate) -> u32 {
    use chrono::Datelike;

    // The anniversary in `on`'s year: the same day and month, or 28 February for a 29 February
    // birthday in a year that has no such day.
    let anniversary = NaiveDate::from_ymd_opt(on.year(), born.month(), born.day())
        .or_else(|| NaiveDate::from_ymd_opt(on.year(), 2, 28));
    let years = on.year() - born.year();
    let reached = anniversary.is_some_and(|a| on >= a);
    let age = if reached { years } else { years - 1 };
    u32::try_from(age).unwrap_or(0)
}

/// The check character for the nine digits `DDMMYYZZZ` read as one number.
fn check_character(ddmmyyzzz: u32) -> char {
    char::from(CHECK_CHARACTERS[(ddmmyyzzz % 31) as usize])
}

/// Characters that may appear somewhere in a canonical code. Anything else (lower case, white space,
/// other punctuation, non-ASCII) means the input is not canonical.
fn is_canonical_character(c: char) -> bool {
    c.is_ascii_digit() || c.is_ascii_uppercase() || c == '+' || c == '-'
}

/// Every broken rule of `s`, in [`IdentityCodeViolation::ALL`] order; empty when `s` is valid.
fn violations(s: &str) -> Vec<IdentityCodeViolation> {
    use IdentityCodeViolation as V;

    let chars: Vec<char> = s.chars().collect();
    let mut found = Vec::new();
    if chars.len() != LENGTH {
        found.push(V::Length);
    }
    if !chars.iter().all(|&c| is_canonical_character(c)) {
        found.push(V::Characters);
    }
    if chars.len() != LENGTH {
        // Without eleven characters no position means anything, so no further rule can be evaluated.
        return found;
    }

    let base = century_base(chars[CENTURY_SIGN_INDEX]);
    if base.is_none() {
        found.push(V::CenturySign);
    }

    let ddmmyy = digits_value(&chars[0..6]);
    let date_exists = match (ddmmyy, base) {
        (None, _) => false,
        (Some(d), Some(base)) => date_in_century(d, base).is_some(),
        // With an unusable sign the century is unknown; blame the date only if it exists in no
        // century at all, so that the one real mistake is not reported twice.
        (Some(d), None) => [1800, 1900, 2000]
            .into_iter()
            .any(|base| date_in_century(d, base).is_some()),
    };
    if !date_exists {
        found.push(V::Date);
    }

    let zzz = digits_value(&chars[7..10]);
    if zzz.is_none_or(|n| n < u32::from(FIRST_VALID_INDIVIDUAL_NUMBER)) {
        found.push(V::IndividualNumber);
    }

    let given = chars[10];
    let check_ok = match (ddmmyy, zzz) {
        (Some(d), Some(z)) => given == check_character(d * 1000 + z),
        // The expected character cannot be computed; all that can be checked is that the given one
        // could be a check character at all.
        _ => given.is_ascii() && CHECK_CHARACTERS.contains(&(given as u8)),
    };
    if !check_ok {
        found.push(V::CheckCharacter);
    }
    found
}

impl PersonalIdentityCode {
    /// Validates a code in canonical form.
    ///
    /// Returns every broken rule that can be evaluated (a wrong length stops the positional rules,
    /// since positions then mean nothing). The input is refused, never repaired.
    pub fn parse(s: &str) -> Result<Self, Vec<IdentityCodeViolation>> {
        let found = violations(s);
        if found.is_empty() {
            Ok(Self(s.to_owned()))
        } else {
            Err(found)
        }
    }

    /// The code of a person born on `birth_date` with `individual_number` (002–999): the century's
    /// first sign (`+` for the 1800s, `-` for the 1900s, `A` for the 2000s) and the check character
    /// computed from the rest. For made-up people (test data, the benchmark): a real person's code is
    /// given by the population register, never built, because the sign it chose is part of who it is.
    ///
    /// Refused with [`IdentityCodeViolation::Date`] outside 1800–2099 and with
    /// [`IdentityCodeViolation::IndividualNumber`] outside 002–999.
    pub fn from_birth_date(
        birth_date: NaiveDate,
        individual_number: u16,
    ) -> Result<Self, IdentityCodeViolation> {
        use chrono::Datelike;

        let sign = match birth_date.year() {
            1800..=1899 => '+',
            1900..=1999 => '-',
            2000..=2099 => 'A',
            _ => return Err(IdentityCodeViolation::Date),
        };
        if !(FIRST_VALID_INDIVIDUAL_NUMBER..=999).contains(&individual_number) {
            return Err(IdentityCodeViolation::IndividualNumber);
        }
        // The year is in 1800–2099 here, so `rem_euclid(100)` is the two digits `YY`.
        let yy = birth_date.year().rem_euclid(100).unsigned_abs();
        let ddmmyy = birth_date.day() * 10_000 + birth_date.month() * 100 + yy;
        let check = check_character(ddmmyy * 1000 + u32::from(individual_number));
        let code = format!("{ddmmyy:06}{sign}{individual_number:03}{check}");
        debug_assert!(violations(&code).is_empty(), "built an invalid code");
        Ok(Self(code))
    }

    /// Tidies what a person typed at a CLI: trims, drops spaces inside, upper-cases ASCII letters.
    ///
    /// The century sign is never replaced by another sign (that would name another person); only its
    /// letter case changes, since a lower-case sign is no sign at all. The result still has to pass
    /// [`PersonalIdentityCode::parse`]. Never use this on API input, which must be canonical already.
    pub fn normalize_typed(input: &str) -> String {
        input
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect()
    }

    /// The canonical code. Handle with care: it is personal data and must not reach application logs.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The date of birth the code encodes (for a temporary code, the date given when it was issued).
    pub fn birth_date(&self) -> NaiveDate {
        let chars: Vec<char> = self.0.chars().collect();
        digits_value(&chars[0..6])
            .zip(century_base(chars[CENTURY_SIGN_INDEX]))
            .and_then(|(ddmmyy, base)| date_in_century(ddmmyy, base))
            .expect("PersonalIdentityCode invariant: parse() accepted only codes with a real date")
    }

    /// The person's age in whole years on `on`, from the birth date the code encodes (a temporary
    /// code's too: it carries the date given when it was issued). `0` for a date before the birth.
    ///
    /// Counted as Finnish law counts it (Laki iän laskemisesta, 649/1965, 1 §): a person reaches an
    /// age on the anniversary of their birth day, and one born on 29 February reaches it, in a year
    /// without that day, on 28 February. So a person born on 29 February 1952 is 75 from
    /// 28 February 2027, not from 1 March (the rule of e.g. English law).
    pub fn age_on(&self, on: NaiveDate) -> u32 {
        age_on(self.birth_date(), on)
    }

    /// Whether this is a temporary code (individual number 900–999), i.e. one not in the population
    /// register, so register look-ups for it are expected to fail.
    pub fn is_temporary(&self) -> bool {
        let chars: Vec<char> = self.0.chars().collect();
        digits_value(&chars[7..10])
            .is_some_and(|n| n >= u32::from(FIRST_TEMPORARY_INDIVIDUAL_NUMBER))
    }
}

impl fmt::Debug for PersonalIdentityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalIdentityCode(<redacted>)")
    }
}

impl FromStr for PersonalIdentityCode {
    type Err = Vec<IdentityCodeViolation>;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PersonalIdentityCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PersonalIdentityCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(|found| {
            // Name the broken rules only: the input itself must not end up in an error message.
            let rules: Vec<&str> = found.iter().map(IdentityCodeViolation::rule).collect();
            serde::de::Error::custom(format_args!(
                "invalid personal identity code (broken rules: {})",
                rules.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::IdentityCodeViolation as V;
    use super::*;

    /// Completes `DDMMYYCZZZ` with its correct check character.
    fn with_check(body: &str) -> String {
        let digits: String = body
            .chars()
            .enumerate()
            .filter(|&(i, _)| i != CENTURY_SIGN_INDEX)
            .map(|(_, c)| c)
            .collect();
        let n: u32 = digits.parse().unwrap();
        format!("{body}{}", check_character(n))
    }

    fn assert_valid(code: &str) -> PersonalIdentityCode {
        match PersonalIdentityCode::parse(code) {
            Ok(pic) => {
                assert_eq!(pic.as_str(), code);
                pic
            }
            Err(v) => panic!("{code} should be valid, got {v:?}"),
        }
    }

    fn violations_of(code: &str) -> Vec<V> {
        match PersonalIdentityCode::parse(code) {
            Ok(_) => panic!("{code} should be invalid"),
            Err(v) => v,
        }
    }

    #[test]
    fn known_published_examples_are_valid() {
        // 040594V902V from the same list is left out: its check character is Y, not V.
        for code in [
            "131052-308T",
            "010594Y9032",
            "010594Y9021",
            "020594X903P",
            "020594X902N",
            "030594W903B",
            "030694W9024",
            "040594V9030",
            "050594U903M",
            "050594U902L",
            "010516B903X",
            "010516B902W",
            "020516C903K",
            "020516C902J",
            "030516D9037",
            "030516D9026",
            "010501E9032",
            "020502E902X",
            "020503F9037",
            "020504A902E",
            "020504B904H",
        ] {
            assert_valid(code);
        }
    }

    #[test]
    fn example_with_wrong_check_character_is_refused() {
        assert_eq!(violations_of("040594V902V"), vec![V::CheckCharacter]);
        assert_valid("040594V902Y");
    }

    #[test]
    fn every_century_sign_is_accepted_with_its_century() {
        for (sign, year) in [
            ('+', 1890),
            ('-', 1990),
            ('Y', 1990),
            ('X', 1990),
            ('W', 1990),
            ('V', 1990),
            ('U', 1990),
            ('A', 2090),
            ('B', 2090),
            ('C', 2090),
            ('D', 2090),
            ('E', 2090),
            ('F', 2090),
        ] {
            let code = with_check(&format!("150690{sign}123"));
            let pic = assert_valid(&code);
            assert_eq!(
                pic.birth_date(),
                NaiveDate::from_ymd_opt(year, 6, 15).unwrap()
            );
            assert!(!pic.is_temporary());
        }
    }

    #[test]
    fn century_sign_is_kept_not_normalised() {
        let dash = assert_valid(&with_check("010190-999"));
        let y = assert_valid(&with_check("010190Y999"));
        assert_eq!(dash.as_str(), "010190-999W");
        assert_eq!(y.as_str(), "010190Y999W");
        assert_ne!(dash, y);
        assert_eq!(dash.birth_date(), y.birth_date());
    }

    #[test]
    fn length_alone() {
        assert_eq!(violations_of("131052-308"), vec![V::Length]);
        assert_eq!(violations_of("131052-308TT"), vec![V::Length]);
        assert_eq!(violations_of(""), vec![V::Length]);
    }

    #[test]
    fn characters_alone() {
        // 'Å' is one character, so the length is right; it is not canonical, and in the last position
        // it cannot be a check character either.
        assert_eq!(
            violations_of("131052-308\u{00C5}"),
            vec![V::Characters, V::CheckCharacter]
        );
        assert_eq!(violations_of("13105 -308T"), vec![V::Characters, V::Date]);
    }

    #[test]
    fn century_sign_alone() {
        assert_eq!(violations_of("131052G308T"), vec![V::CenturySign]);
        assert_eq!(
            violations_of("131052*308T"),
            vec![V::Characters, V::CenturySign]
        );
    }

    #[test]
    fn date_alone() {
        for body in [
            "320190-123",
            "310490-123",
            "001290-123",
            "011390-123",
            "010090-123",
        ] {
            assert_eq!(violations_of(&with_check(body)), vec![V::Date], "{body}");
        }
        assert!(violations_of("1A1052-308T").contains(&V::Date));
    }

    #[test]
    fn individual_number_alone() {
        assert_eq!(
            violations_of(&with_check("131052-000")),
            vec![V::IndividualNumber]
        );
        assert_eq!(
            violations_of(&with_check("131052-001")),
            vec![V::IndividualNumber]
        );
        assert_valid(&with_check("131052-002"));
    }

    #[test]
    fn individual_number_not_digits() {
        let found = violations_of("131052-3A8T");
        assert!(found.contains(&V::IndividualNumber));
        assert!(!found.contains(&V::Date));
    }

    #[test]
    fn check_character_alone() {
        assert_eq!(violations_of("131052-308U"), vec![V::CheckCharacter]);
        // A character that is never a check character, even with unreadable digits.
        assert_eq!(
            violations_of("131052-3A8G"),
            vec![V::IndividualNumber, V::CheckCharacter]
        );
    }

    #[test]
    fn several_rules_at_once() {
        assert_eq!(
            violations_of("320194G000Z"),
            vec![
                V::CenturySign,
                V::Date,
                V::IndividualNumber,
                V::CheckCharacter
            ]
        );
        assert_eq!(violations_of("13105-308t"), vec![V::Length, V::Characters]);
    }

    #[test]
    fn lower_case_is_refused_not_repaired() {
        assert!(violations_of("131052-308t").contains(&V::Characters));
        assert!(violations_of("010516b903X").contains(&V::Characters));
    }

    #[test]
    fn spaces_are_refused_not_repaired() {
        assert_eq!(
            violations_of(" 131052-308T"),
            vec![V::Length, V::Characters]
        );
        assert_eq!(
            violations_of("131052-308T "),
            vec![V::Length, V::Characters]
        );
        assert_eq!(
            violations_of("131052 308T"),
            vec![V::Characters, V::CenturySign]
        );
    }

    #[test]
    fn leap_day_depends_on_century() {
        assert_eq!(violations_of(&with_check("290200-123")), vec![V::Date]);
        assert_eq!(violations_of(&with_check("290200+123")), vec![V::Date]);
        let pic = assert_valid(&with_check("290200A123"));
        assert_eq!(
            pic.birth_date(),
            NaiveDate::from_ymd_opt(2000, 2, 29).unwrap()
        );
        // With an unusable century sign the date is not blamed if it exists in some century.
        assert_eq!(
            violations_of(&with_check("290200G123")),
            vec![V::CenturySign]
        );
    }

    #[test]
    fn from_birth_date_builds_the_valid_code() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let built = |born, n| {
            PersonalIdentityCode::from_birth_date(born, n)
                .unwrap()
                .as_str()
                .to_owned()
        };
        // Published examples, each with its century's first sign.
        assert_eq!(built(date(1952, 10, 13), 308), "131052-308T");
        assert_eq!(built(date(2016, 5, 1), 903), "010516A903X");
        assert_eq!(built(date(1890, 6, 15), 123), with_check("150690+123"));
        assert_eq!(built(date(2000, 2, 29), 2), with_check("290200A002"));
        for (born, n) in [(date(1930, 1, 1), 2), (date(1999, 12, 31), 999)] {
            let code = PersonalIdentityCode::from_birth_date(born, n).unwrap();
            assert_valid(code.as_str());
            assert_eq!(code.birth_date(), born);
        }
    }

    #[test]
    fn from_birth_date_refuses_what_no_code_can_say() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        for (born, n, violation) in [
            (date(1799, 12, 31), 100, V::Date),
            (date(2100, 1, 1), 100, V::Date),
            (date(1990, 1, 1), 0, V::IndividualNumber),
            (date(1990, 1, 1), 1, V::IndividualNumber),
            (date(1990, 1, 1), 1000, V::IndividualNumber),
        ] {
            assert_eq!(
                PersonalIdentityCode::from_birth_date(born, n),
                Err(violation),
                "{born} {n}"
            );
        }
    }

    #[test]
    fn age_is_reached_on_the_birthday_not_the_day_before() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        // Born 13 October 1952: 75 on 13 October 2027.
        let pic = assert_valid("131052-308T");
        assert_eq!(pic.age_on(date(2027, 10, 12)), 74);
        assert_eq!(pic.age_on(date(2027, 10, 13)), 75);
        assert_eq!(pic.age_on(date(2027, 10, 14)), 75);
        assert_eq!(pic.age_on(date(2028, 10, 12)), 75);
        // The same birth date under a 2023 century sign and as a temporary code: the same age.
        for code in [with_check("131052Y308"), with_check("131052-950")] {
            let pic = assert_valid(&code);
            assert_eq!(pic.age_on(date(2027, 10, 12)), 74, "{code}");
            assert_eq!(pic.age_on(date(2027, 10, 13)), 75, "{code}");
        }
        // Before the birth there is no age to speak of.
        assert_eq!(pic.age_on(date(1952, 10, 12)), 0);
        assert_eq!(pic.age_on(date(1952, 10, 13)), 0);
        assert_eq!(pic.age_on(date(1953, 10, 13)), 1);
    }

    #[test]
    fn a_leap_day_birthday_falls_on_28_february_in_other_years() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        // Born 29 February 1952 (a temporary code, so the date is what counts, not the register).
        let pic = assert_valid(&with_check("290252-901"));
        // 2027 has no 29 February: the age is reached on 28 February (Act 649/1965), not 1 March.
        assert_eq!(pic.age_on(date(2027, 2, 27)), 74);
        assert_eq!(pic.age_on(date(2027, 2, 28)), 75);
        assert_eq!(pic.age_on(date(2027, 3, 1)), 75);
        // 2028 has one: 76 on the day itself, not a day early.
        assert_eq!(pic.age_on(date(2028, 2, 28)), 75);
        assert_eq!(pic.age_on(date(2028, 2, 29)), 76);
        // Born on 29 February 2000 (a 2000s sign): 1 on 28 February 2001.
        let pic = assert_valid(&with_check("290200A123"));
        assert_eq!(pic.age_on(date(2001, 2, 27)), 0);
        assert_eq!(pic.age_on(date(2001, 2, 28)), 1);
    }

    #[test]
    fn temporary_codes() {
        assert!(assert_valid(&with_check("131052-900")).is_temporary());
        assert!(assert_valid(&with_check("131052-999")).is_temporary());
        assert!(!assert_valid(&with_check("131052-899")).is_temporary());
        assert!(assert_valid("010594Y9032").is_temporary());
    }

    #[test]
    fn debug_redacts() {
        let pic = assert_valid("131052-308T");
        let shown = format!("{pic:?}");
        assert_eq!(shown, "PersonalIdentityCode(<redacted>)");
        assert!(!format!("{:?}", Some(&pic)).contains("131052"));
    }

    #[test]
    fn rules_have_stable_codes_and_safe_descriptions() {
        let rules: Vec<&str> = V::ALL.iter().map(V::rule).collect();
        assert_eq!(
            rules,
            [
                "length",
                "characters",
                "century_sign",
                "date",
                "individual_number",
                "check_character"
            ]
        );
        for v in V::ALL {
            assert!(!v.description().is_empty());
            assert_eq!(v.to_string(), v.description());
        }
    }

    #[test]
    fn normalize_typed_tidies_but_keeps_the_sign() {
        assert_eq!(
            PersonalIdentityCode::normalize_typed("  131052 -308t\t"),
            "131052-308T"
        );
        assert_eq!(
            PersonalIdentityCode::normalize_typed("010594y9032"),
            "010594Y9032"
        );
        assert_eq!(
            PersonalIdentityCode::normalize_typed("010594Y9032"),
            "010594Y9032"
        );
        assert_eq!(
            PersonalIdentityCode::normalize_typed("010594-9032"),
            "010594-9032"
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let pic = assert_valid("131052-308T");
        let json = serde_json::to_string(&pic).unwrap();
        assert_eq!(json, "\"131052-308T\"");
        let back: PersonalIdentityCode = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pic);

        let err = serde_json::from_str::<PersonalIdentityCode>("\"131052-308U\"").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("check_character"), "{msg}");
        assert!(!msg.contains("131052"), "{msg}");
    }

    #[test]
    fn from_str_matches_parse() {
        assert_eq!(
            "131052-308T".parse::<PersonalIdentityCode>(),
            PersonalIdentityCode::parse("131052-308T")
        );
    }

    /// Properties over generated input: any string at all, and every code a person could be given.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn birth_dates() -> impl Strategy<Value = NaiveDate> {
            let first = NaiveDate::from_ymd_opt(1800, 1, 1).expect("date");
            (0i64..73_000).prop_map(move |days| first + chrono::Duration::days(days))
        }

        proptest! {
            /// No input panics, and an accepted one is exactly eleven canonical characters that
            /// keep their date and age.
            #[test]
            fn any_string_is_refused_or_is_a_canonical_code(s in any::<String>()) {
                if let Ok(code) = PersonalIdentityCode::parse(&s) {
                    prop_assert_eq!(code.as_str(), s.as_str());
                    prop_assert_eq!(s.chars().count(), LENGTH);
                    let born = code.birth_date();
                    prop_assert_eq!(code.age_on(born), 0);
                }
            }

            /// Near misses: eleven characters from the code's own alphabet.
            #[test]
            fn codes_of_the_right_shape_never_panic(s in "[0-9]{6}[-+A-FU-Y][0-9]{3}[0-9A-Y]") {
                let _ = PersonalIdentityCode::parse(&s);
            }

            /// Every birth date of 1800–2099 with every individual number makes a code that parses
            /// back to the same date.
            #[test]
            fn built_codes_parse_back(born in birth_dates(), n in 2u16..=999) {
                let code = PersonalIdentityCode::from_birth_date(born, n).expect("in range");
                let parsed = PersonalIdentityCode::parse(code.as_str()).expect("valid");
                prop_assert_eq!(parsed.birth_date(), born);
                prop_assert_eq!(parsed.is_temporary(), n >= 900);
            }

            /// The check character catches every single mistyped digit.
            #[test]
            fn one_wrong_digit_is_refused(
                born in birth_dates(),
                n in 2u16..=999,
                position in prop::sample::select(vec![0usize, 1, 2, 3, 4, 5, 7, 8, 9]),
                shift in 1u32..10,
            ) {
                let code = PersonalIdentityCode::from_birth_date(born, n).expect("in range");
                let mut chars: Vec<char> = code.as_str().chars().collect();
                let digit = chars[position].to_digit(10).expect("digit");
                chars[position] = char::from_digit((digit + shift) % 10, 10).expect("digit");
                let typo: String = chars.into_iter().collect();
                prop_assert!(PersonalIdentityCode::parse(&typo).is_err());
            }
        }
    }
}
