//! Statistical disclosure control for referral statistics.
//!
//! `GetReferralStatistics` returns a frequency table: the database groups the
//! referrals of a time window by the `k` requested dimensions (KIND, REASON,
//! RECIPIENT, MONTH, OUTCOME, STATE), every subset of them (`GROUPING SETS`
//! on PostgreSQL, one `GROUP BY` per subset on SQLite; `crate::store::statistics`). A row of that result is a [`Count`]:
//! for each dimension its key is either `Some(value)` or `None`, meaning "all
//! values of this dimension", i.e. a total. The cell whose keys are all `None`
//! is the grand total. Combinations with no referrals produce no row, so they
//! are not cells at all.
//!
//! Such tables are about people in vulnerable situations, so they must never
//! let a reader single out a small group. This module decides which cells to
//! hide, in two steps.
//!
//! # Primary suppression
//!
//! A cell that counts fewer than `min_cell_size` distinct persons (default
//! [`DEFAULT_MIN_CELL_SIZE`], never below [`MIN_MIN_CELL_SIZE`]) is hidden:
//! "3 persons referred for reason X by recipient Y in March" is close enough to
//! an individual to be recognisable.
//!
//! A cell with `persons == 0` is *not* primarily suppressed. The database does
//! not produce such cells (an empty combination is simply absent, and a reader
//! already learns "nobody" from that absence), so hiding a zero given by some
//! other caller would protect nobody. For the same reason a zero cell is the
//! last choice for secondary suppression: hiding it adds no uncertainty about
//! anyone.
//!
//! # Secondary suppression
//!
//! Hiding the small cell alone is not enough, because totals are cells too.
//! Take a *line*: pick one dimension `d` and fix the key of every other
//! dimension (each to a value or to `None`). The line consists of the cells
//! with those fixed keys and any `Some(value)` in `d` (its *members*), plus
//! the cell with `None` in `d` (its *total*). In a 2-dimensional table the
//! lines are the rows and columns, together with the row of column totals and
//! the column of row totals; a 1-dimensional table has one line, all its
//! values plus the grand total; the grand total alone (`k = 0`) has no line.
//! Every cell lies on exactly `k` lines, one per dimension.
//!
//! Within a line, total = sum of members. So if exactly one cell of a line is
//! hidden, a reader recovers it by subtracting the visible members from the
//! total (or, for a hidden total, by adding up the members). Hence the first
//! rule: **every line has 0 or at least 2 hidden cells**.
//!
//! Two hidden cells are still not enough if together they are small. If the
//! members 2 and 2 are the only hidden cells of a line whose total is shown,
//! the reader derives that they hold 4 persons together, i.e. a group below the
//! threshold is disclosed after all (and one of them is at most 2). Hence the
//! second rule, the classic one: **the hidden cells of a line together carry at
//! least `min_cell_size` persons**. We apply it to every line with hidden cells,
//! even where the total itself is hidden (then the reader learns only a
//! difference), because that is simpler to state and to check and costs little.
//!
//! When a line breaks a rule, one more of its visible cells is hidden: the one
//! with the fewest persons, preferring members over the total (hiding a total
//! hides a figure that users want most) and breaking ties by key order, so that
//! the result is deterministic. Every visible non-zero cell has at least
//! `min_cell_size` persons (smaller ones are hidden already), so one extra cell
//! always repairs the sum rule. Hiding a cell can break the other lines through
//! it, so the lines are re-checked until nothing changes (a fixed point). A
//! line whose cells are all hidden is fine as it is: it shows nothing to
//! subtract from.
//!
//! This terminates because each step hides one more cell. Lines are indexed in
//! a `HashMap`, each line keeps a running count and sum of its hidden cells,
//! and only lines through a newly hidden cell are queued again, so a table of a
//! few thousand cells (21 recipients × 9 reasons × 12 months with all margins)
//! takes milliseconds.
//!
//! # Caveats
//!
//! The counts are not strictly additive: `persons` counts distinct people, so a
//! person with two referrals in a row is counted once in its total but in both
//! members, and a referral with several reasons counts once under each reason.
//! A reader therefore cannot recover a hidden cell exactly. The rules above are
//! still applied as if the table were additive, which is the conservative
//! choice: whatever a reader could derive from an additive table is an upper
//! bound of what they can derive from this one.
//!
//! The rules look at one line at a time. Combining the equations of several
//! lines (a linear-programming attack) can in rare patterns narrow a hidden
//! value further; this module does not audit for that, as is common for
//! published frequency tables with a threshold of this size.
//!
//! # Medians
//!
//! Figures besides counts, such as the median working days to receipt, are
//! computed only for cells that are shown: a median over a hidden cell would
//! describe the very few people the suppression protects, and would also tell
//! that the cell is not empty. [`median`] computes the figure; the caller
//! decides, from [`suppress`], whether a cell gets one.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use super::{
    Violation, calendar, code_enum,
    referral::{Reason, Referral, State},
};

code_enum! {
    /// What a statistics table may be grouped by.
    pub enum Dimension {
        /// The kind of referral (`Kind`).
        Kind = "KIND",
        /// One of the referral's coded reasons: a referral with several counts once in each.
        Reason = "REASON",
        /// The organiser that holds the referral now (`organizations/{id}`).
        Recipient = "RECIPIENT",
        /// The month of creation in Europe/Helsinki, `YYYY-MM`.
        Month = "MONTH",
        /// The outcome of a completed referral; [`NO_OUTCOME`] for any other.
        Outcome = "OUTCOME",
        /// The referral's current state.
        State = "STATE",
    }
}

/// The OUTCOME key of a referral that has none (not completed, or rejected or cancelled).
pub const NO_OUTCOME: &str = "NONE";

/// The most dimensions one table may be grouped by (one GROUP BY per subset: 2^6 of them).
pub const MAX_DIMENSIONS: usize = 6;

impl Dimension {
    /// A stored key as the API shows it: a recipient as its resource name.
    pub fn shown_key(self, stored: String) -> String {
        match self {
            Dimension::Recipient => format!("organizations/{stored}"),
            _ => stored,
        }
    }
}

/// The longest time window one table may cover.
pub const MAX_WINDOW_DAYS: i64 = 5 * 366;

/// The request's own rules: a window that ends after it starts and spans at most
/// [`MAX_WINDOW_DAYS`], and at most [`MAX_DIMENSIONS`] dimensions, none twice.
pub fn check_request(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    dimensions: &[Dimension],
) -> Result<(), Vec<Violation>> {
    let mut violations = Vec::new();
    if end <= start {
        violations.push(Violation::new(
            "end_time",
            "after_start",
            "must be later than start_time",
        ));
    } else if end - start > chrono::Duration::days(MAX_WINDOW_DAYS) {
        violations.push(Violation::new(
            "end_time",
            "max_window",
            format!("the window may span at most {MAX_WINDOW_DAYS} days"),
        ));
    }
    if dimensions.len() > MAX_DIMENSIONS {
        violations.push(Violation::new(
            "group_by",
            "max_dimensions",
            format!("at most {MAX_DIMENSIONS} dimensions"),
        ));
    }
    for (i, d) in dimensions.iter().enumerate() {
        if dimensions[..i].contains(d) {
            violations.push(Violation::new(
                format!("group_by[{i}]"),
                "unique",
                format!("{d} is already among the dimensions"),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// The coded skeleton of a referral that statistics read: codes, dates and counts only, kept when
/// the personal content is erased. Computed whenever the referral is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// `YYYY-MM` of the creation time in Europe/Helsinki.
    pub create_month: String,
    /// Finnish working days from the day of creation to the day of receipt by the current
    /// recipient (the day of creation not counted; received on it: 0). `None` until received.
    pub receipt_working_days: Option<i32>,
    /// Received on or before the receipt due date. `None` until received.
    pub received_within_deadline: Option<bool>,
    /// When the assessment started (the referral first became IN_PROGRESS).
    pub assessment_start_time: Option<DateTime<Utc>>,
    /// The assessment started on or before its due date. `None` when it has not started or there
    /// is no statutory due date.
    pub assessment_started_within_deadline: Option<bool>,
    /// The reasons as bits ([`reason_bit`]): what REASON groups by, without reading the JSON list.
    pub reason_bits: i32,
}

/// A reason's bit in [`Skeleton::reason_bits`]: bit `n` for the `n`-th code of [`Reason::ALL`].
/// Stored with every referral, so that order is append-only (migration 0010 wrote the nine codes'
/// bits for the rows before it).
pub fn reason_bit(reason: Reason) -> i32 {
    let n = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
    1 << n
}

impl Skeleton {
    pub fn of(r: &Referral) -> Skeleton {
        let created_on = calendar::helsinki_date(r.create_time);
        let received_on = r.receive_time.map(calendar::helsinki_date);
        let assessment_start_time = r
            .history
            .iter()
            .find(|c| c.state == State::InProgress)
            .map(|c| c.time);
        Skeleton {
            create_month: created_on.format("%Y-%m").to_string(),
            receipt_working_days: received_on.map(|on| {
                i32::try_from(calendar::working_days_between(created_on, on)).unwrap_or(i32::MAX)
            }),
            received_within_deadline: received_on
                .zip(r.receive_due_date)
                .map(|(on, due)| on <= due),
            assessment_start_time,
            assessment_started_within_deadline: assessment_start_time
                .zip(r.assessment_due_date)
                .map(|(t, due)| calendar::helsinki_date(t) <= due),
            reason_bits: r
                .reasons
                .iter()
                .fold(0, |bits, reason| bits | reason_bit(*reason)),
        }
    }
}

/// One grouped row as the database computes it: `keys` one per requested dimension (`None`: all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupRow {
    pub keys: Vec<Option<String>>,
    pub referrals: i64,
    pub persons: i64,
    pub received: i64,
    pub received_within_deadline: i64,
    pub assessment_started_within_deadline: i64,
    pub overdue: i64,
}

/// How many referrals of the cell with `keys` were received after `working_days` working days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramRow {
    pub keys: Vec<Option<String>>,
    pub working_days: i64,
    pub count: i64,
}

/// The figures of a shown cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub referral_count: i64,
    pub person_count: i64,
    pub received_count: i64,
    pub median_working_days_to_receipt: Option<f64>,
    pub received_within_deadline_count: i64,
    pub assessment_started_within_deadline_count: i64,
    pub overdue_count: i64,
}

/// One cell of the published table: `figures` is `None` when the cell is suppressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub keys: Vec<Option<String>>,
    pub figures: Option<Figures>,
}

impl Cell {
    pub fn suppressed(&self) -> bool {
        self.figures.is_none()
    }
}

/// The published table from the database's rows: primary and secondary suppression by distinct
/// persons ([`suppress`]), medians only for the cells shown, nothing but the keys for the others.
/// Cells come in key order, each dimension's values before its total ("all").
pub fn assemble(rows: Vec<GroupRow>, histograms: &[HistogramRow], min_cell_size: u64) -> Vec<Cell> {
    let mut rows = rows;
    rows.sort_by(|a, b| key_order(&a.keys).cmp(&key_order(&b.keys)));
    let counts: Vec<Count> = rows
        .iter()
        .map(|r| Count {
            keys: r.keys.clone(),
            persons: u64::try_from(r.persons).unwrap_or(0),
        })
        .collect();
    let hidden = suppress(&counts, min_cell_size);
    let mut by_cell: HashMap<&[Option<String>], Vec<(i64, i64)>> = HashMap::new();
    for h in histograms {
        by_cell
            .entry(h.keys.as_slice())
            .or_default()
            .push((h.working_days, h.count));
    }
    rows.iter()
        .zip(hidden)
        .map(|(row, hidden)| Cell {
            keys: row.keys.clone(),
            figures: (!hidden).then(|| Figures {
                referral_count: row.referrals,
                person_count: row.persons,
                received_count: row.received,
                median_working_days_to_receipt: by_cell
                    .get_mut(row.keys.as_slice())
                    .and_then(|h| histogram_median(h)),
                received_within_deadline_count: row.received_within_deadline,
                assessment_started_within_deadline_count: row.assessment_started_within_deadline,
                overdue_count: row.overdue,
            }),
        })
        .collect()
}

/// Values before totals in each dimension, then by value.
fn key_order(keys: &[Option<String>]) -> Vec<(bool, Option<&str>)> {
    keys.iter().map(|k| (k.is_none(), k.as_deref())).collect()
}

/// The median of a histogram of `(value, how many)`; `None` when it holds nothing. The same as
/// [`median`] of the values written out, without writing them out.
pub fn histogram_median(histogram: &mut [(i64, i64)]) -> Option<f64> {
    histogram.sort_unstable();
    let total: i64 = histogram.iter().map(|(_, n)| (*n).max(0)).sum();
    if total == 0 {
        return None;
    }
    // The values at 0-based positions (total - 1) / 2 and total / 2 (the same one for odd totals).
    let value_at = |position: i64| {
        let mut seen = 0;
        for (value, n) in histogram.iter() {
            seen += (*n).max(0);
            if seen > position {
                return *value;
            }
        }
        histogram.last().map_or(0, |(v, _)| *v)
    };
    let (low, high) = (value_at((total - 1) / 2), value_at(total / 2));
    Some((low as f64 + high as f64) / 2.0)
}

/// The smallest threshold accepted (values below are refused at start).
pub const MIN_MIN_CELL_SIZE: u64 = 3;

/// The threshold used when none is configured.
pub const DEFAULT_MIN_CELL_SIZE: u64 = 5;

/// One cell of a table over n dimensions. `keys[i] == None`: all values of
/// dimension `i` (a total).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// One key per dimension, in the order of `group_by`.
    pub keys: Vec<Option<String>>,
    /// Distinct persons in the cell.
    pub persons: u64,
}

/// Checks a configured threshold: it must be at least [`MIN_MIN_CELL_SIZE`].
pub fn min_cell_size(value: u64) -> Result<u64, String> {
    if value < MIN_MIN_CELL_SIZE {
        Err(format!(
            "min_cell_size must be at least {MIN_MIN_CELL_SIZE} (cells with fewer distinct \
             persons could identify individuals and are always suppressed), got {value}"
        ))
    } else {
        Ok(value)
    }
}

/// Which cells to hide: same length and order as `cells`.
///
/// Primary suppression hides every cell with `0 < persons < min_cell_size`;
/// secondary suppression then hides further cells until, in every line, the
/// hidden cells are none, or all, or at least two carrying at least
/// `min_cell_size` persons together (see the module documentation).
///
/// A threshold below [`MIN_MIN_CELL_SIZE`] is raised to it: it should have
/// been refused by [`min_cell_size`] at start, and this function never
/// protects less. Cells are expected to have one key per dimension; cells
/// with a different number of keys never share a line with the others.
pub fn suppress(cells: &[Count], min_cell_size: u64) -> Vec<bool> {
    let min = min_cell_size.max(MIN_MIN_CELL_SIZE);
    let lines = Lines::new(cells);

    let mut hidden: Vec<bool> = cells
        .iter()
        .map(|c| c.persons > 0 && c.persons < min)
        .collect();
    let mut hidden_count = vec![0usize; lines.cells.len()];
    let mut hidden_sum = vec![0u64; lines.cells.len()];
    for (cell, _) in hidden.iter().enumerate().filter(|(_, h)| **h) {
        for &line in &lines.of_cell[cell] {
            hidden_count[line] += 1;
            hidden_sum[line] = hidden_sum[line].saturating_add(cells[cell].persons);
        }
    }

    let mut queue: VecDeque<usize> = (0..lines.cells.len()).collect();
    let mut queued = vec![true; lines.cells.len()];
    while let Some(line) = queue.pop_front() {
        queued[line] = false;
        let members = &lines.cells[line];
        let count = hidden_count[line];
        let unsafe_line =
            count > 0 && count < members.len() && (count < 2 || hidden_sum[line] < min);
        if !unsafe_line {
            continue;
        }
        // The cheapest visible cell: non-zero first, members before the
        // total, fewest persons, then key order and position for determinism.
        let Some(&(pick, _)) = members
            .iter()
            .filter(|(cell, _)| !hidden[*cell])
            .min_by_key(|(cell, is_total)| {
                let c = &cells[*cell];
                (c.persons == 0, *is_total, c.persons, &c.keys, *cell)
            })
        else {
            continue;
        };
        hidden[pick] = true;
        for &other in &lines.of_cell[pick] {
            hidden_count[other] += 1;
            hidden_sum[other] = hidden_sum[other].saturating_add(cells[pick].persons);
            if !queued[other] {
                queued[other] = true;
                queue.push_back(other);
            }
        }
    }
    hidden
}

/// The lines of a table, indexed both ways.
struct Lines {
    /// For each line, its cells and whether each is the line's total.
    cells: Vec<Vec<(usize, bool)>>,
    /// For each cell, the lines through it (one per dimension).
    of_cell: Vec<Vec<usize>>,
}

impl Lines {
    fn new(cells: &[Count]) -> Self {
        // A line is identified by its varying dimension and the keys of all
        // dimensions with that one blanked out.
        let mut ids: HashMap<(usize, Vec<Option<&str>>), usize> = HashMap::new();
        let mut lines: Vec<Vec<(usize, bool)>> = Vec::new();
        let mut of_cell = Vec::with_capacity(cells.len());
        for (index, cell) in cells.iter().enumerate() {
            let keys: Vec<Option<&str>> = cell.keys.iter().map(Option::as_deref).collect();
            let mut through = Vec::with_capacity(keys.len());
            for d in 0..keys.len() {
                let mut line_keys = keys.clone();
                line_keys[d] = None;
                let next = lines.len();
                let id = *ids.entry((d, line_keys)).or_insert(next);
                if id == next {
                    lines.push(Vec::new());
                }
                lines[id].push((index, keys[d].is_none()));
                through.push(id);
            }
            of_cell.push(through);
        }
        Lines {
            cells: lines,
            of_cell,
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty or when any value is NaN. Sorts `values` in place.
///
/// Used for figures such as "median working days to receipt", and only for
/// cells that [`suppress`] leaves visible.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        Some(values[mid])
    } else {
        Some((values[mid - 1] + values[mid]) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_bits_are_the_stored_ones() {
        // Migration 0010 wrote these for the referrals before it, and the statistics statement
        // tests them: a reason's bit never changes.
        let stored = [
            ("LIFE_MANAGEMENT", 1),
            ("LIVELIHOOD", 2),
            ("HOUSING", 4),
            ("HEALTH", 8),
            ("SUBSTANCE_USE", 16),
            ("FAMILY_AND_CHILDREN", 32),
            ("EMPLOYMENT", 64),
            ("DEBT", 128),
            ("OTHER", 256),
        ];
        for (code, bit) in stored {
            let reason = Reason::from_code(code).expect("a reason");
            assert_eq!(reason_bit(reason), bit, "{code}");
        }
        assert_eq!(
            Reason::ALL.len(),
            stored.len(),
            "a new reason gets the next bit"
        );
    }

    fn row(keys: &[Option<&str>], referrals: i64, persons: i64) -> GroupRow {
        GroupRow {
            keys: keys.iter().map(|k| k.map(str::to_string)).collect(),
            referrals,
            persons,
            received: referrals,
            ..GroupRow::default()
        }
    }

    fn histogram(keys: &[Option<&str>], working_days: i64, count: i64) -> HistogramRow {
        HistogramRow {
            keys: keys.iter().map(|k| k.map(str::to_string)).collect(),
            working_days,
            count,
        }
    }

    #[test]
    fn assembled_table_hides_small_cells_and_their_partners_and_their_medians() {
        // By recipient: a: 6 people, b: 2 people (small), c: 7 people; total 15.
        let rows = vec![
            row(&[None], 16, 15),
            row(&[Some("c")], 7, 7),
            row(&[Some("a")], 7, 6),
            row(&[Some("b")], 2, 2),
        ];
        let histograms = vec![
            histogram(&[Some("a")], 1, 3),
            histogram(&[Some("a")], 4, 4),
            histogram(&[Some("b")], 9, 2),
            histogram(&[Some("c")], 2, 7),
            histogram(&[None], 1, 3),
            histogram(&[None], 4, 4),
            histogram(&[None], 9, 2),
            histogram(&[None], 2, 7),
        ];
        let cells = assemble(rows, &histograms, 5);
        let keys: Vec<Option<&str>> = cells.iter().map(|c| c.keys[0].as_deref()).collect();
        assert_eq!(keys, vec![Some("a"), Some("b"), Some("c"), None]);
        let shown: Vec<bool> = cells.iter().map(|c| !c.suppressed()).collect();
        // b is small; a (6 people) is the cheapest partner, so that b + a = 8 >= 5.
        assert_eq!(shown, vec![false, false, true, true]);
        let c = cells[2].figures.as_ref().expect("c shown");
        assert_eq!((c.referral_count, c.person_count), (7, 7));
        assert_eq!(c.median_working_days_to_receipt, Some(2.0));
        let total = cells[3].figures.as_ref().expect("total shown");
        // 16 values: 1×3, 2×7, 4×4, 9×2: the 8th and 9th are both 2.
        assert_eq!(total.median_working_days_to_receipt, Some(2.0));
    }

    #[test]
    fn a_small_grand_total_hides_everything() {
        let cells = assemble(vec![row(&[], 4, 4)], &[histogram(&[], 0, 4)], 5);
        assert_eq!(
            cells,
            vec![Cell {
                keys: vec![],
                figures: None
            }]
        );
    }

    #[test]
    fn histogram_medians_agree_with_written_out_medians() {
        let cases: &[&[(i64, i64)]] = &[
            &[],
            &[(3, 1)],
            &[(1, 1), (5, 1)],
            &[(5, 2), (1, 1)],
            &[(0, 4), (10, 4)],
            &[(2, 3), (7, 0), (9, 5), (1, 2)],
        ];
        for case in cases {
            let mut written: Vec<f64> = case
                .iter()
                .flat_map(|(v, n)| std::iter::repeat_n(*v as f64, *n as usize))
                .collect();
            let mut histogram = case.to_vec();
            assert_eq!(
                histogram_median(&mut histogram),
                median(&mut written),
                "{case:?}"
            );
        }
    }

    #[test]
    fn requests_are_checked() {
        use chrono::TimeZone;
        let t = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
        let rules = |r: Result<(), Vec<Violation>>| -> Vec<(String, &str)> {
            r.err()
                .unwrap_or_default()
                .into_iter()
                .map(|v| (v.field, v.rule))
                .collect()
        };
        assert_eq!(
            rules(check_request(t(2027), t(2028), Dimension::ALL)),
            vec![]
        );
        assert_eq!(
            rules(check_request(t(2028), t(2027), &[])),
            vec![("end_time".to_string(), "after_start")]
        );
        assert_eq!(
            rules(check_request(t(2020), t(2027), &[])),
            vec![("end_time".to_string(), "max_window")]
        );
        assert_eq!(
            rules(check_request(
                t(2027),
                t(2028),
                &[Dimension::Reason, Dimension::Kind, Dimension::Reason]
            )),
            vec![("group_by[2]".to_string(), "unique")]
        );
        let seven = [Dimension::ALL, &[Dimension::Kind]].concat();
        assert_eq!(
            rules(check_request(t(2027), t(2028), &seven)),
            vec![
                ("group_by".to_string(), "max_dimensions"),
                ("group_by[6]".to_string(), "unique")
            ]
        );
    }

    #[test]
    fn dimension_codes_and_shown_keys() {
        assert_eq!(
            Dimension::from_code("RECIPIENT"),
            Some(Dimension::Recipient)
        );
        assert_eq!(Dimension::ALL.len(), MAX_DIMENSIONS);
        assert_eq!(
            Dimension::Recipient.shown_key("hva-15".into()),
            "organizations/hva-15"
        );
        assert_eq!(Dimension::Month.shown_key("2027-03".into()), "2027-03");
    }

    fn cell(keys: &[Option<&str>], persons: u64) -> Count {
        Count {
            keys: keys.iter().map(|k| k.map(str::to_string)).collect(),
            persons,
        }
    }

    /// A full additive table with all margins, as GROUPING SETS would give:
    /// `values` maps full keys to persons (zeros are left out), and every
    /// subset of dimensions gets its totals.
    fn with_margins(values: &[(Vec<String>, u64)], dims: usize) -> Vec<Count> {
        let mut sums: HashMap<Vec<Option<String>>, u64> = HashMap::new();
        let mut order: Vec<Vec<Option<String>>> = Vec::new();
        for mask in 0..(1u32 << dims) {
            for (keys, persons) in values {
                if *persons == 0 {
                    continue;
                }
                let k: Vec<Option<String>> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (mask & (1 << i) == 0).then(|| v.clone()))
                    .collect();
                let entry = sums.entry(k.clone()).or_insert_with(|| {
                    order.push(k);
                    0
                });
                *entry += persons;
            }
        }
        order
            .into_iter()
            .map(|keys| {
                let persons = sums[&keys];
                Count { keys, persons }
            })
            .collect()
    }

    fn matrix(rows: &[&[u64]]) -> Vec<Count> {
        let mut values = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                values.push((vec![format!("r{r}"), format!("c{c}")], v));
            }
        }
        with_margins(&values, 2)
    }

    fn find(cells: &[Count], keys: &[Option<&str>]) -> usize {
        let want: Vec<Option<String>> = keys.iter().map(|k| k.map(str::to_string)).collect();
        cells
            .iter()
            .position(|c| c.keys == want)
            .expect("cell in test table")
    }

    /// The lines, computed naively (independently of `Lines`).
    fn naive_lines(cells: &[Count]) -> Vec<Vec<usize>> {
        let mut lines: Vec<Vec<usize>> = Vec::new();
        for (i, c) in cells.iter().enumerate() {
            for d in 0..c.keys.len() {
                if c.keys[d].is_some() {
                    continue;
                }
                // c is the total of the line along d through it.
                let mut line = vec![i];
                for (j, o) in cells.iter().enumerate() {
                    if o.keys.len() == c.keys.len()
                        && o.keys[d].is_some()
                        && (0..c.keys.len()).all(|e| e == d || o.keys[e] == c.keys[e])
                    {
                        line.push(j);
                    }
                }
                lines.push(line);
            }
        }
        lines
    }

    /// The properties every result must have.
    fn assert_safe(cells: &[Count], hidden: &[bool], min: u64) {
        assert_eq!(hidden.len(), cells.len());
        for (c, &h) in cells.iter().zip(hidden) {
            if c.persons > 0 && c.persons < min {
                assert!(h, "primary cell {c:?} shown");
            }
        }
        for line in naive_lines(cells) {
            let count = line.iter().filter(|&&i| hidden[i]).count();
            let sum: u64 = line
                .iter()
                .filter(|&&i| hidden[i])
                .map(|&i| cells[i].persons)
                .sum();
            assert!(
                count == 0 || count == line.len() || (count >= 2 && sum >= min),
                "line {:?}: {count} hidden, sum {sum}",
                line.iter()
                    .map(|&i| (&cells[i].keys, cells[i].persons, hidden[i]))
                    .collect::<Vec<_>>()
            );
        }
    }

    fn hidden_in(line: &[usize], hidden: &[bool]) -> usize {
        line.iter().filter(|&&i| hidden[i]).count()
    }

    #[test]
    fn nothing_small_hides_nothing() {
        let cells = matrix(&[&[10, 20, 30], &[5, 6, 7]]);
        let hidden = suppress(&cells, DEFAULT_MIN_CELL_SIZE);
        assert!(hidden.iter().all(|h| !h));
    }

    #[test]
    fn one_small_cell_gets_a_partner_in_its_row_and_column() {
        let cells = matrix(&[&[2, 10, 12], &[8, 9, 20], &[15, 7, 11]]);
        let hidden = suppress(&cells, 5);
        assert_safe(&cells, &hidden, 5);
        let small = find(&cells, &[Some("r0"), Some("c0")]);
        assert!(hidden[small]);
        let lines = naive_lines(&cells);
        let through: Vec<&Vec<usize>> = lines.iter().filter(|l| l.contains(&small)).collect();
        assert_eq!(through.len(), 2);
        for line in through {
            assert!(hidden_in(line, &hidden) >= 2);
        }
        // The partners are the cheapest members, not the totals.
        for (c, &h) in cells.iter().zip(&hidden) {
            if c.keys.iter().any(Option::is_none) {
                assert!(!h, "total {c:?} hidden");
            }
        }
        assert!(hidden[find(&cells, &[Some("r0"), Some("c1")])]);
        assert!(hidden[find(&cells, &[Some("r1"), Some("c0")])]);
    }

    #[test]
    fn two_small_cells_with_a_small_sum_get_a_third() {
        let cells = vec![
            cell(&[Some("a")], 2),
            cell(&[Some("b")], 2),
            cell(&[Some("c")], 30),
            cell(&[Some("d")], 40),
            cell(&[None], 74),
        ];
        let hidden = suppress(&cells, 5);
        assert_eq!(hidden, vec![true, true, true, false, false]);
        assert_safe(&cells, &hidden, 5);
    }

    #[test]
    fn two_small_cells_with_a_large_enough_sum_are_enough() {
        let cells = vec![
            cell(&[Some("a")], 3),
            cell(&[Some("b")], 4),
            cell(&[Some("c")], 30),
            cell(&[None], 37),
        ];
        assert_eq!(suppress(&cells, 5), vec![true, true, false, false]);
    }

    #[test]
    fn small_margin_total_is_hidden_and_its_line_gets_a_partner() {
        // Row r0 totals 3: the row total is itself small.
        let cells = matrix(&[&[1, 2], &[10, 20], &[12, 15]]);
        let hidden = suppress(&cells, 5);
        assert_safe(&cells, &hidden, 5);
        let row_total = find(&cells, &[Some("r0"), None]);
        assert!(hidden[row_total]);
        // The column of row totals (r0, r1, r2 and the grand total).
        let lines = naive_lines(&cells);
        let row_totals = lines
            .iter()
            .find(|l| l.contains(&row_total) && cells[l[0]].keys == vec![None, None])
            .expect("column of row totals");
        assert!(hidden_in(row_totals, &hidden) >= 2);
        assert!(!hidden[find(&cells, &[None, None])]);
    }

    #[test]
    fn small_grand_total_is_hidden() {
        let only_total = vec![cell(&[], 4)];
        assert_eq!(suppress(&only_total, 5), vec![true]);
        assert_eq!(suppress(&[cell(&[], 5)], 5), vec![false]);

        let one_dim = vec![
            cell(&[Some("a")], 2),
            cell(&[Some("b")], 1),
            cell(&[None], 3),
        ];
        assert_eq!(suppress(&one_dim, 5), vec![true; 3]);

        let cells = matrix(&[&[1, 1], &[1, 1]]);
        let hidden = suppress(&cells, 5);
        assert!(hidden.iter().all(|&h| h));
    }

    #[test]
    fn non_additive_total_is_handled_conservatively() {
        // Distinct persons: the total (12) is less than the sum of members.
        let cells = vec![
            cell(&[Some("a")], 4),
            cell(&[Some("b")], 8),
            cell(&[Some("c")], 9),
            cell(&[None], 12),
        ];
        let hidden = suppress(&cells, 5);
        assert_eq!(hidden, vec![true, true, false, false]);
        assert_safe(&cells, &hidden, 5);
    }

    #[test]
    fn zero_cells_are_not_primary_and_are_the_last_choice() {
        let cells = vec![
            cell(&[Some("a")], 2),
            cell(&[Some("b")], 0),
            cell(&[Some("c")], 30),
            cell(&[Some("d")], 40),
            cell(&[None], 72),
        ];
        let hidden = suppress(&cells, 5);
        assert_eq!(hidden, vec![true, false, true, false, false]);
    }

    #[test]
    fn threshold_below_the_floor_is_raised() {
        let cells = vec![
            cell(&[Some("a")], 2),
            cell(&[Some("b")], 30),
            cell(&[None], 32),
        ];
        assert_eq!(suppress(&cells, 0), vec![true, true, false]);
    }

    #[test]
    fn mismatched_key_lengths_do_not_panic() {
        let cells = vec![
            cell(&[Some("a")], 2),
            cell(&[Some("a"), Some("x")], 2),
            cell(&[None], 30),
            cell(&[], 1),
        ];
        let hidden = suppress(&cells, 5);
        assert_eq!(hidden.len(), 4);
        assert!(hidden[0] && hidden[1] && hidden[3]);
        assert!(suppress(&[], 5).is_empty());
    }

    #[test]
    fn threshold_validation() {
        assert_eq!(min_cell_size(DEFAULT_MIN_CELL_SIZE), Ok(5));
        assert_eq!(min_cell_size(3), Ok(3));
        assert_eq!(min_cell_size(100), Ok(100));
        for bad in [0, 1, 2] {
            let err = min_cell_size(bad).expect_err("below the floor");
            assert!(err.contains("at least 3"), "{err}");
            assert!(err.contains("min_cell_size"), "{err}");
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [4.0]), Some(4.0));
        assert_eq!(median(&mut [9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&mut [7.0, 1.0, 3.0, 10.0]), Some(5.0));
        assert_eq!(median(&mut [2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut [1.0, f64::NAN]), None);
    }

    /// A simple deterministic generator (Knuth's MMIX LCG).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % below
        }
    }

    fn random_table(rng: &mut Lcg) -> (Vec<Count>, usize) {
        let dims = rng.next(4) as usize;
        let sizes: Vec<u64> = (0..dims).map(|_| 1 + rng.next(5)).collect();
        let mut values = Vec::new();
        let mut index = vec![0u64; dims];
        loop {
            // Mostly small values, some empty, some large.
            let v = match rng.next(4) {
                0 => 0,
                1 => rng.next(5),
                2 => rng.next(12),
                _ => rng.next(60),
            };
            let keys = index
                .iter()
                .enumerate()
                .map(|(d, i)| format!("d{d}v{i}"))
                .collect();
            values.push((keys, v));
            let mut d = 0;
            while d < dims {
                index[d] += 1;
                if index[d] < sizes[d] {
                    break;
                }
                index[d] = 0;
                d += 1;
            }
            if d == dims {
                break;
            }
        }
        (with_margins(&values, dims), dims)
    }

    #[test]
    fn random_tables_are_safe() {
        let mut rng = Lcg(0x5eed);
        for round in 0..500 {
            let (mut cells, _) = random_table(&mut rng);
            // Every fourth table non-additive: shrink some totals, as
            // distinct-person counting does.
            if round % 4 == 3 {
                for c in cells.iter_mut() {
                    if c.keys.iter().any(Option::is_none) && c.persons > 1 {
                        c.persons -= rng.next(c.persons / 2 + 1);
                    }
                }
            }
            let min = 3 + rng.next(6);
            let hidden = suppress(&cells, min);
            assert_safe(&cells, &hidden, min);
            assert_eq!(hidden, suppress(&cells, min), "deterministic");
        }
    }

    #[test]
    fn realistic_size_is_safe() {
        let mut rng = Lcg(42);
        let mut values = Vec::new();
        for r in 0..21 {
            for s in 0..9 {
                for m in 1..=12 {
                    let v = if rng.next(3) == 0 {
                        rng.next(6)
                    } else {
                        rng.next(80)
                    };
                    values.push((
                        vec![format!("R{r}"), format!("S{s}"), format!("2024-{m:02}")],
                        v,
                    ));
                }
            }
        }
        let cells = with_margins(&values, 3);
        assert!(cells.len() > 2000);
        let hidden = suppress(&cells, DEFAULT_MIN_CELL_SIZE);
        assert_safe(&cells, &hidden, DEFAULT_MIN_CELL_SIZE);
        assert!(hidden.iter().any(|&h| h));
        assert!(!hidden[find(&cells, &[None, None, None])]);
    }
}
