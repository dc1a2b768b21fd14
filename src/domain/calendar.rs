//! Finnish working days (arkipäivä), for statutory deadlines.
//!
//! Social welfare deadlines (e.g. SHL §36: an assessment must start by the 7th working day for a child
//! needing special support, a person on the highest care allowance, or a person over 75) count working
//! days: Monday–Friday that are not public holidays, the day of receipt not counted, dates taken in
//! Finnish time. Counting calendar days, ignoring holidays or using the UTC date would move a legal
//! deadline, so all three are handled here.
//!
//! Holidays are computed from their rules rather than read from a table, so the calendar never runs
//! out: the church holidays of the Church Act (kirkkolaki) and the civil ones of Act 150/1930 §5 and
//! Act 388/1937, with Easter by the Gregorian computus. A shipped table would silently turn every
//! holiday into a working day the first year after it ends.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};
use chrono_tz::Europe::Helsinki;

/// A day that is a public holiday or a holiday eve treated as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holiday {
    pub date: NaiveDate,
    /// The Finnish name, as used in the law and in Finnish calendars.
    pub name_fi: &'static str,
}

/// Easter Sunday of `year` by the Gregorian computus (the "anonymous" or Meeus/Jones/Butcher
/// algorithm), which the Evangelical Lutheran Church of Finland follows and on which Good Friday,
/// Easter Monday, Ascension Day and Whit Sunday depend.
///
/// # Panics
///
/// If `year` is outside the range `chrono::NaiveDate` can represent (about ±262,000), which no date
/// handled by this service comes near.
pub fn easter_sunday(year: i32) -> NaiveDate {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b.div_euclid(4);
    let e = b.rem_euclid(4);
    let f = (b + 8).div_euclid(25);
    let g = (b - f + 1).div_euclid(3);
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c.div_euclid(4);
    let k = c.rem_euclid(4);
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l).div_euclid(451);
    let month = (h + l - 7 * m + 114).div_euclid(31);
    let day = (h + l - 7 * m + 114).rem_euclid(31) + 1;
    // month is 3 or 4 and day 1–31, so the casts cannot wrap.
    ymd(year, month as u32, day as u32)
}

fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day)
        .unwrap_or_else(|| panic!("calendar: year {year} is outside the supported date range"))
}

/// `date` moved by `days` (negative = earlier). Only used within a year that `ymd` accepted, a few
/// weeks from Easter, so it cannot leave the representable range in practice.
fn shifted(date: NaiveDate, days: i64) -> NaiveDate {
    let moved = if days >= 0 {
        date.checked_add_days(Days::new(days.unsigned_abs()))
    } else {
        date.checked_sub_days(Days::new(days.unsigned_abs()))
    };
    moved.unwrap_or_else(|| panic!("calendar: {date} shifted by {days} days is out of range"))
}

/// The first `weekday` on or after `year`-`month`-`day`: Midsummer and All Saints' Day are defined as
/// the Friday/Saturday within a seven-day window.
fn first_weekday_from(year: i32, month: u32, day: u32, weekday: Weekday) -> NaiveDate {
    let start = ymd(year, month, day);
    let ahead = (7 + weekday.num_days_from_monday() - start.weekday().num_days_from_monday()) % 7;
    shifted(start, i64::from(ahead))
}

/// Every Finnish public holiday of `year` and the eves that are non-working days, sorted by date.
///
/// Holidays that always fall on a weekend (Easter Sunday, Whit Sunday, Midsummer Day, All Saints'
/// Day) are included so that the list is the full official one; they do not change working-day counts.
/// Two holidays can fall on the same date (Ascension Day was May Day in 2008), and both are listed.
///
/// # Panics
///
/// As [`easter_sunday`], for years outside `chrono`'s range.
pub fn non_working_holidays(year: i32) -> Vec<Holiday> {
    let easter = easter_sunday(year);
    let holiday = |date, name_fi| Holiday { date, name_fi };
    let mut days = vec![
        holiday(ymd(year, 1, 1), "Uudenvuodenpäivä"),
        holiday(ymd(year, 1, 6), "Loppiainen"),
        holiday(shifted(easter, -2), "Pitkäperjantai"),
        holiday(easter, "Pääsiäispäivä"),
        holiday(shifted(easter, 1), "2. pääsiäispäivä"),
        holiday(ymd(year, 5, 1), "Vappu"),
        holiday(shifted(easter, 39), "Helatorstai"),
        holiday(shifted(easter, 49), "Helluntaipäivä"),
        holiday(
            first_weekday_from(year, 6, 19, Weekday::Fri),
            "Juhannusaatto",
        ),
        holiday(
            first_weekday_from(year, 6, 20, Weekday::Sat),
            "Juhannuspäivä",
        ),
        holiday(
            first_weekday_from(year, 10, 31, Weekday::Sat),
            "Pyhäinpäivä",
        ),
        holiday(ymd(year, 12, 6), "Itsenäisyyspäivä"),
        holiday(ymd(year, 12, 24), "Jouluaatto"),
        holiday(ymd(year, 12, 25), "Joulupäivä"),
        holiday(ymd(year, 12, 26), "Tapaninpäivä"),
    ];
    days.sort_by_key(|h| h.date);
    days
}

/// Whether `d` counts towards a statutory deadline: Monday–Friday and not a holiday.
pub fn is_working_day(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
        && !non_working_holidays(d.year()).iter().any(|h| h.date == d)
}

/// The `n`-th working day after `from`, or `None` past the end of the representable calendar.
///
/// `from` itself is never counted, whether or not it is a working day: deadlines run from the day
/// after receipt. `n = 0` returns `from` unchanged (the "immediately" of urgent cases is the same day).
pub fn checked_add_working_days(from: NaiveDate, n: u32) -> Option<NaiveDate> {
    let mut day = from;
    let mut remaining = n;
    while remaining > 0 {
        day = day.succ_opt()?;
        if is_working_day(day) {
            remaining -= 1;
        }
    }
    Some(day)
}

/// The `n`-th working day after `from` (`from` not counted; `n = 0` gives `from`).
///
/// # Panics
///
/// If the answer lies beyond `chrono::NaiveDate::MAX` (the year 262,142); use
/// [`checked_add_working_days`] where `from` or `n` is not already bounded.
pub fn add_working_days(from: NaiveDate, n: u32) -> NaiveDate {
    checked_add_working_days(from, n)
        .unwrap_or_else(|| panic!("calendar: {n} working days after {from} is out of range"))
}

/// The working days after `from` up to and including `to`: how many working days something took
/// that began on `from` and ended on `to` (0 when it ended the same day, or `to` is before `from`).
/// The inverse of [`checked_add_working_days`] on working days: `working_days_between(d,
/// add_working_days(d, n)) == n`.
pub fn working_days_between(from: NaiveDate, to: NaiveDate) -> u32 {
    from.iter_days()
        .skip(1)
        .take_while(|d| *d <= to)
        .filter(|d| is_working_day(*d))
        .count()
        .try_into()
        .unwrap_or(u32::MAX)
}

/// The end of a period of `months` months from `from`: the same day number `months` later (the month's
/// last day when it has no such day), moved to the next working day when it is not one, as the Act on
/// the Calculation of Statutory Time Limits (150/1930) prescribes. `None` past the representable calendar.
pub fn months_later_on_working_day(from: NaiveDate, months: u32) -> Option<NaiveDate> {
    let mut day = from.checked_add_months(chrono::Months::new(months))?;
    while !is_working_day(day) {
        day = day.succ_opt()?;
    }
    Some(day)
}

/// The calendar date in Finland at instant `t`: deadlines are counted in Finnish dates, and a referral
/// received at 00:30 Helsinki time is received on that day even though it is still the previous day
/// in UTC.
pub fn helsinki_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&Helsinki).date_naive()
}

#[cfg(test)]
mod month_tests {
    use super::*;

    #[test]
    fn working_days_between_counts_what_adding_working_days_adds() {
        // Thursday before Easter 2025 (18 April is Good Friday, 21 April Easter Monday).
        let thursday = date(2025, 4, 17);
        assert_eq!(working_days_between(thursday, thursday), 0);
        assert_eq!(working_days_between(thursday, date(2025, 4, 21)), 0);
        assert_eq!(working_days_between(thursday, date(2025, 4, 22)), 1);
        assert_eq!(working_days_between(thursday, date(2025, 4, 10)), 0);
        for n in 0..30 {
            assert_eq!(
                working_days_between(thursday, add_working_days(thursday, n)),
                n
            );
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    #[test]
    fn three_months_land_on_a_working_day() {
        // 3 Mar 2025 + 3 months = Tue 3 Jun 2025, a working day.
        assert_eq!(
            months_later_on_working_day(date(2025, 3, 3), 3),
            Some(date(2025, 6, 3))
        );
        // 30 Nov 2026 + 3 months = 28 Feb 2027 (no 30 Feb), a Sunday: Monday 1 Mar.
        assert_eq!(
            months_later_on_working_day(date(2026, 11, 30), 3),
            Some(date(2027, 3, 1))
        );
        // 3 Mar 2026 + 3 months = Wed 3 Jun 2026; 6 Mar 2026 + 3 months = Sat 6 Jun: Mon 8 Jun.
        assert_eq!(
            months_later_on_working_day(date(2026, 3, 6), 3),
            Some(date(2026, 6, 8))
        );
        // 24 Sep 2026 + 3 months = Christmas Eve (Thu): Christmas Day, St Stephen's (Sat), Sunday,
        // then Monday 28 Dec.
        assert_eq!(
            months_later_on_working_day(date(2026, 9, 24), 3),
            Some(date(2026, 12, 28))
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::TimeZone;
    use serde::Deserialize;

    use super::*;

    const HOLIDAYS_CSV: &str = include_str!("data/finnish_holidays_2023_2026.csv");

    #[derive(Deserialize)]
    struct Row {
        date: NaiveDate,
        weekday: String,
        name_fi: String,
        falls_mon_fri: String,
    }

    fn rows() -> Vec<Row> {
        csv::Reader::from_reader(HOLIDAYS_CSV.as_bytes())
            .deserialize()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn falls_mon_fri(d: NaiveDate) -> bool {
        !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
    }

    #[test]
    fn rules_match_the_test_vectors_exactly() {
        let rows = rows();
        for year in 2023..=2026 {
            let expected: BTreeSet<(NaiveDate, bool, String)> = rows
                .iter()
                .filter(|r| r.date.year() == year)
                .map(|r| {
                    let mon_fri = match r.falls_mon_fri.as_str() {
                        "yes" => true,
                        "no" => false,
                        other => panic!("bad falls_mon_fri {other:?}"),
                    };
                    (r.date, mon_fri, r.name_fi.clone())
                })
                .collect();
            let computed: BTreeSet<(NaiveDate, bool, String)> = non_working_holidays(year)
                .into_iter()
                .map(|h| (h.date, falls_mon_fri(h.date), h.name_fi.to_owned()))
                .collect();
            assert_eq!(computed, expected, "{year}");
            assert_eq!(non_working_holidays(year).len(), 15);
        }
    }

    #[test]
    fn weekday_holidays_in_the_vectors_are_not_working_days() {
        let rows = rows();
        assert_eq!(rows.len(), 60);
        for r in rows {
            assert_eq!(
                r.weekday,
                r.date.format("%a").to_string(),
                "weekday column of {}",
                r.date
            );
            if r.falls_mon_fri == "yes" {
                assert!(falls_mon_fri(r.date), "{}", r.date);
            }
            assert!(!is_working_day(r.date), "{} {}", r.date, r.name_fi);
        }
    }

    #[test]
    fn ordinary_days() {
        assert!(is_working_day(date(2025, 4, 17))); // Maundy Thursday is a working day
        assert!(is_working_day(date(2025, 4, 22)));
        assert!(is_working_day(date(2026, 12, 23)));
        assert!(is_working_day(date(2026, 12, 31))); // New Year's Eve is a working day
        assert!(!is_working_day(date(2025, 4, 19))); // Saturday
        assert!(!is_working_day(date(2025, 4, 20))); // Sunday
    }

    #[test]
    fn easter_known_years() {
        assert_eq!(easter_sunday(2024), date(2024, 3, 31));
        assert_eq!(easter_sunday(2025), date(2025, 4, 20));
        assert_eq!(easter_sunday(2026), date(2026, 4, 5));
        assert_eq!(easter_sunday(2038), date(2038, 4, 25)); // latest possible
        assert_eq!(easter_sunday(2285), date(2285, 3, 22)); // earliest possible
        assert_eq!(easter_sunday(2000), date(2000, 4, 23));
        assert_eq!(easter_sunday(1818), date(1818, 3, 22));
    }

    #[test]
    fn easter_is_always_a_sunday_in_its_window() {
        for year in 1583..=4099 {
            let e = easter_sunday(year);
            assert_eq!(e.weekday(), Weekday::Sun, "{year}");
            assert!(e >= date(year, 3, 22) && e <= date(year, 4, 25), "{year}");
        }
    }

    #[test]
    fn moving_holidays_keep_their_weekdays() {
        for year in 2000..=2100 {
            let hs = non_working_holidays(year);
            let by_name = |name: &str| hs.iter().find(|h| h.name_fi == name).unwrap().date;
            let eve = by_name("Juhannusaatto");
            assert_eq!(eve.weekday(), Weekday::Fri);
            assert!((19..=25).contains(&eve.day()) && eve.month() == 6);
            assert_eq!(by_name("Juhannuspäivä"), eve.succ_opt().unwrap());
            let saints = by_name("Pyhäinpäivä");
            assert_eq!(saints.weekday(), Weekday::Sat);
            assert!(saints >= date(year, 10, 31) && saints <= date(year, 11, 6));
            assert_eq!(by_name("Helatorstai").weekday(), Weekday::Thu);
            assert_eq!(by_name("Helluntaipäivä").weekday(), Weekday::Sun);
            assert!(hs.windows(2).all(|w| w[0].date <= w[1].date));
        }
    }

    #[test]
    fn two_holidays_can_share_a_date() {
        // Easter 23.3.2008 put Ascension Day on May Day; both are listed, the day counts once.
        let on_may_day: Vec<&str> = non_working_holidays(2008)
            .into_iter()
            .filter(|h| h.date == date(2008, 5, 1))
            .map(|h| h.name_fi)
            .collect();
        assert_eq!(on_may_day, ["Vappu", "Helatorstai"]);
        assert_eq!(add_working_days(date(2008, 4, 30), 1), date(2008, 5, 2));
    }

    #[test]
    fn add_working_days_across_easter_2025() {
        // Good Friday 18.4 and Easter Monday 21.4.2025; Maundy Thursday 17.4 is a working day.
        assert_eq!(add_working_days(date(2025, 4, 17), 1), date(2025, 4, 22));
        assert_eq!(add_working_days(date(2025, 4, 16), 1), date(2025, 4, 17));
        // 17.4 (1), 22.4 (2), 23.4 (3), 24.4 (4), 25.4 (5), 28.4 (6), 29.4 (7).
        assert_eq!(add_working_days(date(2025, 4, 16), 7), date(2025, 4, 29));
        // Received on Good Friday: the day itself is not counted anyway.
        assert_eq!(add_working_days(date(2025, 4, 18), 1), date(2025, 4, 22));
    }

    #[test]
    fn add_working_days_across_christmas_2026() {
        // 24.12 Thu, 25.12 Fri, 26.12 Sat; 1.1.2027 Fri; 6.1.2027 Wed.
        assert_eq!(add_working_days(date(2026, 12, 23), 1), date(2026, 12, 28));
        // 28.12 (1), 29.12 (2), 30.12 (3), 31.12 (4), 4.1 (5), 5.1 (6), 7.1 (7).
        assert_eq!(add_working_days(date(2026, 12, 23), 7), date(2027, 1, 7));
        assert_eq!(add_working_days(date(2026, 12, 26), 1), date(2026, 12, 28));
    }

    #[test]
    fn add_zero_working_days_is_the_same_day() {
        assert_eq!(add_working_days(date(2025, 4, 18), 0), date(2025, 4, 18));
        assert_eq!(add_working_days(date(2025, 4, 22), 0), date(2025, 4, 22));
    }

    #[test]
    fn add_working_days_at_the_end_of_time() {
        assert_eq!(checked_add_working_days(NaiveDate::MAX, 1), None);
        assert_eq!(
            checked_add_working_days(NaiveDate::MAX, 0),
            Some(NaiveDate::MAX)
        );
    }

    #[test]
    fn helsinki_date_in_winter_is_utc_plus_2() {
        let t = |h, m| Utc.with_ymd_and_hms(2025, 1, 15, h, m, 0).unwrap();
        assert_eq!(helsinki_date(t(21, 59)), date(2025, 1, 15));
        assert_eq!(helsinki_date(t(22, 0)), date(2025, 1, 16));
        assert_eq!(helsinki_date(t(0, 0)), date(2025, 1, 15));
        // New Year's Day starts in Helsinki two hours before UTC.
        let nye = Utc.with_ymd_and_hms(2025, 12, 31, 22, 30, 0).unwrap();
        assert_eq!(helsinki_date(nye), date(2026, 1, 1));
    }

    #[test]
    fn helsinki_date_in_summer_is_utc_plus_3() {
        let t = |h, m| Utc.with_ymd_and_hms(2025, 7, 15, h, m, 0).unwrap();
        assert_eq!(helsinki_date(t(20, 59)), date(2025, 7, 15));
        assert_eq!(helsinki_date(t(21, 0)), date(2025, 7, 16));
        assert_eq!(helsinki_date(t(23, 59)), date(2025, 7, 16));
    }
}
