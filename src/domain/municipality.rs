//! Municipality codes per year, and who organises social welfare for each municipality.
//!
//! A referral is routed to the organiser responsible for the client's home municipality. Municipality
//! codes come from Statistics Finland's classification, which changes on 1 January (municipalities
//! merge: Pertunmaa 588 joined Mäntyharju in 2025), so a code is only meaningful together with a date:
//! a referral dated 2024 may carry 588, one dated 2025 may not. Each year's list is therefore kept
//! separately and looked up by date, never merged into one timeless list.
//!
//! Since the 2023 reform the organiser is the wellbeing services county (01–21) — except the City of
//! Helsinki (code 90), which organises its own services, and Åland (code 91), where each of the 16
//! municipalities organises its own. Treating Helsinki as a county or Åland as one receiver would route
//! referrals to a party with no duty (or right) to act on them.
//!
//! The lists are embedded at compile time from `data/` (see `data/README.md` for the source and
//! licence: "Source: Statistics Finland; geofi (rOpenGov)", CC BY 4.0 / BSD-2-Clause).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use super::organization::OrganizationId;

/// Code lists by the year on whose 1 January they took effect, oldest first.
const CODE_LISTS: [(i32, &str); 4] = [
    (
        2023,
        include_str!("data/municipality_wellbeing_county_2023.csv"),
    ),
    (
        2024,
        include_str!("data/municipality_wellbeing_county_2024.csv"),
    ),
    (
        2025,
        include_str!("data/municipality_wellbeing_county_2025.csv"),
    ),
    (
        2026,
        include_str!("data/municipality_wellbeing_county_2026.csv"),
    ),
];

/// Names of the 23 organiser areas (21 counties, Helsinki, Åland).
const COUNTIES: &str = include_str!("data/wellbeing_counties_2023_2026.csv");

/// Organiser-area code of the City of Helsinki in Statistics Finland's classification.
const HELSINKI_AREA: &str = "90";
/// Organiser-area code of Åland, whose municipalities each organise their own services.
const ALAND_AREA: &str = "91";

/// A municipality as listed for one year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Municipality {
    /// Three digits, zero-padded (e.g. `091`).
    pub code: String,
    pub name_fi: String,
    pub name_sv: String,
    pub name_en: String,
    /// Who organises social welfare for residents of this municipality, i.e. the referral recipient.
    pub organizer: OrganizationId,
}

/// An organisation that receives referrals, with the municipalities it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub id: OrganizationId,
    pub name_fi: String,
    pub name_sv: String,
    pub name_en: String,
    /// The municipality codes this receiver serves, ascending.
    pub municipality_codes: Vec<String>,
}

/// Why a municipality code could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MunicipalityError {
    /// Not three ASCII digits.
    #[error("a municipality code is three digits, zero-padded (e.g. '091')")]
    Malformed,
    /// The date is before the oldest code list (2023, when the wellbeing services counties began and
    /// the organiser model this service routes by came into force).
    #[error("no municipality code list covers the date (the oldest list is for 2023)")]
    NoCodeListForDate,
    /// Well-formed, but not on the list in force on the date.
    #[error("the municipality code is not on the {year} municipality code list")]
    Unknown { year: i32 },
}

/// The embedded code lists, indexed for look-up.
#[derive(Debug)]
pub struct MunicipalityRegistry {
    /// Year → that year's municipalities, sorted by code.
    lists: BTreeMap<i32, Vec<Municipality>>,
    /// Area code (`01`–`21`, `90`, `91`) → names.
    areas: BTreeMap<String, AreaNames>,
    /// Organisers of any municipality on any year's list.
    known_receivers: BTreeSet<OrganizationId>,
}

#[derive(Debug)]
struct AreaNames {
    name_fi: String,
    name_sv: String,
    name_en: String,
}

#[derive(Deserialize)]
struct MunicipalityRow {
    municipality_code: String,
    municipality_name_fi: String,
    municipality_name_sv: String,
    municipality_name_en: String,
    hyvinvointialue_code: String,
}

#[derive(Deserialize)]
struct AreaRow {
    hyvinvointialue_code: String,
    name_fi: String,
    name_sv: String,
    name_en: String,
}

fn is_municipality_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The organiser for a municipality in an organiser area. Panics on an unknown area, which can only
/// come from the embedded data and is caught by the tests.
fn organizer(area: &str, municipality_code: &str) -> OrganizationId {
    let id = match area {
        HELSINKI_AREA => Ok(OrganizationId::helsinki()),
        ALAND_AREA => OrganizationId::aland(municipality_code),
        county => OrganizationId::parse(&format!("hva-{county}")),
    };
    id.unwrap_or_else(|e| {
        panic!("embedded municipality data: municipality {municipality_code} has bad area {area:?}: {e}")
    })
}

fn parse_code_list(year: i32, text: &str) -> Vec<Municipality> {
    let mut list: Vec<Municipality> = csv::Reader::from_reader(text.as_bytes())
        .deserialize::<MunicipalityRow>()
        .map(|row| {
            let row = row.unwrap_or_else(|e| {
                panic!("embedded municipality code list {year} is not valid CSV: {e}")
            });
            assert!(
                is_municipality_code(&row.municipality_code),
                "embedded municipality code list {year}: bad code {:?}",
                row.municipality_code
            );
            Municipality {
                organizer: organizer(&row.hyvinvointialue_code, &row.municipality_code),
                code: row.municipality_code,
                name_fi: row.municipality_name_fi,
                name_sv: row.municipality_name_sv,
                name_en: row.municipality_name_en,
            }
        })
        .collect();
    list.sort_by(|a, b| a.code.cmp(&b.code));
    let before = list.len();
    list.dedup_by(|a, b| a.code == b.code);
    assert_eq!(
        before,
        list.len(),
        "embedded municipality code list {year} repeats a code"
    );
    list
}

fn parse_areas(text: &str) -> BTreeMap<String, AreaNames> {
    csv::Reader::from_reader(text.as_bytes())
        .deserialize::<AreaRow>()
        .map(|row| {
            let row = row.unwrap_or_else(|e| {
                panic!("embedded wellbeing services county list is not valid CSV: {e}")
            });
            (
                row.hyvinvointialue_code,
                AreaNames {
                    name_fi: row.name_fi,
                    name_sv: row.name_sv,
                    name_en: row.name_en,
                },
            )
        })
        .collect()
}

static EMBEDDED: LazyLock<MunicipalityRegistry> = LazyLock::new(|| {
    let lists: BTreeMap<i32, Vec<Municipality>> = CODE_LISTS
        .iter()
        .map(|&(year, text)| (year, parse_code_list(year, text)))
        .collect();
    let known_receivers = lists
        .values()
        .flatten()
        .map(|m| m.organizer.clone())
        .collect();
    MunicipalityRegistry {
        lists,
        areas: parse_areas(COUNTIES),
        known_receivers,
    }
});

/// The registry built from the code lists compiled into the binary.
pub fn embedded() -> &'static MunicipalityRegistry {
    &EMBEDDED
}

impl MunicipalityRegistry {
    /// The year of the code list in force on `on`.
    ///
    /// Lists take effect on 1 January, so a date uses its own year's list. For a year after the newest
    /// list the newest is used: the classification stays in force until a newer one is published, and
    /// refusing every referral on 1 January until a release ships the new list would block statutory
    /// notifications. Before the oldest list (2023) there is none: the organisers this service routes
    /// to did not exist yet.
    pub fn code_list_year(&self, on: NaiveDate) -> Option<i32> {
        self.lists
            .range(..=on.year())
            .next_back()
            .map(|(&year, _)| year)
    }

    /// The municipality with `code` on the list in force on `on`.
    ///
    /// The code's shape is checked before the date, so a malformed code is reported as such whatever
    /// the date.
    pub fn lookup(&self, code: &str, on: NaiveDate) -> Result<&Municipality, MunicipalityError> {
        if !is_municipality_code(code) {
            return Err(MunicipalityError::Malformed);
        }
        let year = self
            .code_list_year(on)
            .ok_or(MunicipalityError::NoCodeListForDate)?;
        let list = self.lists.get(&year).map(Vec::as_slice).unwrap_or_default();
        list.binary_search_by(|m| m.code.as_str().cmp(code))
            .map(|i| &list[i])
            .map_err(|_| MunicipalityError::Unknown { year })
    }

    /// The years that have a code list, ascending.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.lists.keys().copied()
    }

    /// The municipalities on `year`'s list (exactly that year, no fallback), sorted by code.
    pub fn code_list(&self, year: i32) -> Option<&[Municipality]> {
        self.lists.get(&year).map(Vec::as_slice)
    }

    fn newest(&self) -> &[Municipality] {
        self.lists
            .last_key_value()
            .map(|(_, list)| list.as_slice())
            .unwrap_or_default()
    }

    /// Every receiving organisation on the newest list: the 21 counties, Helsinki, and each Åland
    /// municipality, in that order (counties by number, Åland by municipality code).
    pub fn receivers(&self) -> Vec<Receiver> {
        let mut by_id: BTreeMap<OrganizationId, Receiver> = BTreeMap::new();
        for m in self.newest() {
            by_id
                .entry(m.organizer.clone())
                .or_insert_with(|| self.receiver_for(m))
                .municipality_codes
                .push(m.code.clone());
        }
        // Ids sort as "aland-…" < "helsinki" < "hva-…"; present counties first, then Helsinki, Åland.
        let mut receivers: Vec<Receiver> = by_id.into_values().collect();
        receivers.sort_by_key(|r| {
            let id = r.id.as_str();
            let group = if id.starts_with("hva-") {
                0
            } else if id == "helsinki" {
                1
            } else {
                2
            };
            (group, id.to_owned())
        });
        receivers
    }

    /// A receiver with no municipalities yet, named after its area (or, on Åland, its municipality).
    fn receiver_for(&self, m: &Municipality) -> Receiver {
        let names = m
            .organizer
            .as_str()
            .strip_prefix("hva-")
            .or_else(|| (m.organizer.as_str() == "helsinki").then_some(HELSINKI_AREA))
            .map(|area| {
                self.areas.get(area).unwrap_or_else(|| {
                    panic!("embedded wellbeing services county list lacks area {area}")
                })
            });
        let (name_fi, name_sv, name_en) = match names {
            Some(a) => (a.name_fi.clone(), a.name_sv.clone(), a.name_en.clone()),
            None => (m.name_fi.clone(), m.name_sv.clone(), m.name_en.clone()),
        };
        Receiver {
            id: m.organizer.clone(),
            name_fi,
            name_sv,
            name_en,
            municipality_codes: Vec::new(),
        }
    }

    /// Whether `id` receives referrals for some municipality on any year's list. Older years count, so
    /// that a referral routed under an older list can still be read and closed by its receiver.
    pub fn is_known_receiver(&self, id: &OrganizationId) -> bool {
        self.known_receivers.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::organization::Role;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn organizer_of(code: &str, on: NaiveDate) -> String {
        embedded().lookup(code, on).unwrap().organizer.to_string()
    }

    #[test]
    fn row_counts_per_year() {
        let r = embedded();
        assert_eq!(r.years().collect::<Vec<_>>(), [2023, 2024, 2025, 2026]);
        let counts: Vec<usize> = r.years().map(|y| r.code_list(y).unwrap().len()).collect();
        assert_eq!(counts, [309, 309, 308, 308]);
        assert!(r.code_list(2022).is_none());
        assert!(r.code_list(2027).is_none());
    }

    #[test]
    fn every_area_has_names() {
        let r = embedded();
        assert_eq!(r.areas.len(), 23);
        for list in r.lists.values() {
            for m in list {
                if let Some(n) = m.organizer.as_str().strip_prefix("hva-") {
                    assert!(r.areas.contains_key(n), "{}", m.code);
                }
            }
        }
    }

    #[test]
    fn pertunmaa_ceased_in_2025() {
        let r = embedded();
        let m = r.lookup("588", date(2024, 6, 1)).unwrap();
        assert_eq!(m.name_fi, "Pertunmaa");
        // South Savo wellbeing services county, area 12 in the CSV.
        assert_eq!(m.organizer.as_str(), "hva-12");
        assert_eq!(
            r.lookup("588", date(2025, 1, 2)),
            Err(MunicipalityError::Unknown { year: 2025 })
        );
        assert_eq!(
            r.lookup("588", date(2031, 1, 2)),
            Err(MunicipalityError::Unknown { year: 2026 })
        );
        // Mäntyharju, which Pertunmaa joined, is served by the same county.
        assert_eq!(organizer_of("507", date(2025, 1, 2)), "hva-12");
    }

    #[test]
    fn helsinki_is_not_a_county() {
        let m = embedded().lookup("091", date(2025, 3, 1)).unwrap();
        assert_eq!(m.name_fi, "Helsinki");
        assert_eq!(m.name_sv, "Helsingfors");
        assert_eq!(m.organizer, OrganizationId::helsinki());
        // Vantaa, next door, belongs to a county.
        assert_eq!(organizer_of("092", date(2025, 3, 1)), "hva-04");
    }

    #[test]
    fn aland_municipalities_organise_their_own() {
        let m = embedded().lookup("478", date(2025, 3, 1)).unwrap();
        assert_eq!(m.name_sv, "Mariehamn");
        assert_eq!(m.organizer.as_str(), "aland-478");
        assert_eq!(m.organizer.role(), Role::Receiver);
        assert_eq!(organizer_of("035", date(2023, 1, 1)), "aland-035");
    }

    #[test]
    fn dates_pick_their_year_list() {
        let r = embedded();
        assert_eq!(r.code_list_year(date(2023, 1, 1)), Some(2023));
        assert_eq!(r.code_list_year(date(2024, 12, 31)), Some(2024));
        assert_eq!(r.code_list_year(date(2027, 5, 5)), Some(2026));
        assert_eq!(r.code_list_year(date(2022, 12, 31)), None);
        assert!(r.lookup("091", date(2027, 5, 5)).is_ok());
        assert_eq!(
            r.lookup("091", date(2022, 12, 31)),
            Err(MunicipalityError::NoCodeListForDate)
        );
    }

    #[test]
    fn malformed_codes() {
        let r = embedded();
        for code in ["91", "0091", "", "09a", " 91", "٠٩١"] {
            assert_eq!(
                r.lookup(code, date(2025, 1, 1)),
                Err(MunicipalityError::Malformed),
                "{code:?}"
            );
        }
        assert_eq!(
            r.lookup("x", date(2020, 1, 1)),
            Err(MunicipalityError::Malformed)
        );
        assert_eq!(
            r.lookup("000", date(2025, 1, 1)),
            Err(MunicipalityError::Unknown { year: 2025 })
        );
    }

    #[test]
    fn receivers_from_newest_list() {
        let receivers = embedded().receivers();
        assert_eq!(receivers.len(), 21 + 1 + 16);
        let ids: Vec<&str> = receivers.iter().map(|r| r.id.as_str()).collect();
        for (i, id) in ids[..21].iter().enumerate() {
            assert_eq!(*id, format!("hva-{:02}", i + 1));
        }
        assert_eq!(ids[21], "helsinki");
        assert!(ids[22..].iter().all(|id| id.starts_with("aland-")));
        assert!(ids[22..].windows(2).all(|w| w[0] < w[1]));

        let total: usize = receivers.iter().map(|r| r.municipality_codes.len()).sum();
        assert_eq!(total, 308);

        let south_savo = &receivers[11];
        assert_eq!(south_savo.name_fi, "Etelä-Savon hyvinvointialue");
        assert_eq!(south_savo.name_en, "South Savo wellbeing services county");
        assert!(!south_savo.municipality_codes.contains(&"588".to_owned()));

        let helsinki = &receivers[21];
        assert_eq!(helsinki.name_fi, "Helsingin kaupunki");
        assert_eq!(helsinki.name_sv, "Helsingfors stad");
        assert_eq!(helsinki.name_en, "City of Helsinki");
        assert_eq!(helsinki.municipality_codes, ["091"]);

        let mariehamn = receivers
            .iter()
            .find(|r| r.id.as_str() == "aland-478")
            .unwrap();
        assert_eq!(mariehamn.name_fi, "Maarianhamina");
        assert_eq!(mariehamn.name_sv, "Mariehamn");
        assert_eq!(mariehamn.municipality_codes, ["478"]);
    }

    #[test]
    fn county_municipality_counts_match_the_county_list() {
        // The county CSV states each area's municipality count for 2025; the newest list must agree.
        #[derive(Deserialize)]
        struct Row {
            hyvinvointialue_code: String,
            municipality_count_2025: usize,
        }
        let receivers = embedded().receivers();
        let mut aland = 0;
        for row in csv::Reader::from_reader(COUNTIES.as_bytes()).deserialize::<Row>() {
            let row = row.unwrap();
            let count = match row.hyvinvointialue_code.as_str() {
                ALAND_AREA => {
                    aland = row.municipality_count_2025;
                    continue;
                }
                HELSINKI_AREA => receivers[21].municipality_codes.len(),
                n => receivers[n.parse::<usize>().unwrap() - 1]
                    .municipality_codes
                    .len(),
            };
            assert_eq!(
                count, row.municipality_count_2025,
                "{}",
                row.hyvinvointialue_code
            );
        }
        assert_eq!(aland, 16);
    }

    #[test]
    fn known_receivers() {
        let r = embedded();
        for receiver in r.receivers() {
            assert!(r.is_known_receiver(&receiver.id), "{}", receiver.id);
        }
        let id = |s: &str| OrganizationId::parse(s).unwrap();
        assert!(r.is_known_receiver(&id("hva-01")));
        assert!(r.is_known_receiver(&id("hva-21")));
        assert!(r.is_known_receiver(&id("helsinki")));
        assert!(r.is_known_receiver(&id("aland-941")));
        // Syntactically fine, but 091 is Helsinki and 588 was never on Åland.
        assert!(!r.is_known_receiver(&id("aland-091")));
        assert!(!r.is_known_receiver(&id("aland-588")));
        assert!(!r.is_known_receiver(&id("aland-000")));
        assert!(!r.is_known_receiver(&OrganizationId::kela()));
        assert!(!r.is_known_receiver(&id("auditor-dpo")));
    }
}
