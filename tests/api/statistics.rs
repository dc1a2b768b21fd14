//! Referral statistics: a known population gives exactly the expected cells, small groups and the
//! cells that would give them away are suppressed, over gRPC and as CSV over HTTP; refusals and the
//! audit event; a threshold below the floor is refused at start.

use std::process::Command;

use chrono::{DateTime, Duration, TimeZone, Utc};
use referral_exchange::{clock::Clock, domain::PersonalIdentityCode, proto::v1 as pb};
use tonic::Code;

use crate::helpers::*;

/// Enonkoski: organised by the South Savo wellbeing services county, hva-12.
const ENONKOSKI: &str = "046";

/// A distinct valid identity code for person `i`.
fn person(i: u16) -> String {
    let born = chrono::NaiveDate::from_ymd_opt(1980, 5, 17).expect("date");
    PersonalIdentityCode::from_birth_date(born, 2 + i)
        .expect("valid code")
        .as_str()
        .to_owned()
}

fn notification_for(
    code: &str,
    municipality: &str,
    reasons: &[pb::referral::Reason],
) -> pb::CreateReferralRequest {
    let mut request = notification(code, municipality);
    if let Some(r) = request.referral.as_mut() {
        r.reasons = reasons.iter().map(|r| *r as i32).collect();
        r.urgent = false;
    }
    request
}

fn at(t: DateTime<Utc>) -> Option<pbjson_types::Timestamp> {
    Some(pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn march() -> (DateTime<Utc>, DateTime<Utc>) {
    // Helsinki midnight (UTC+2) at both ends.
    (
        Utc.with_ymd_and_hms(2025, 2, 28, 22, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2025, 3, 31, 21, 0, 0).unwrap(),
    )
}

fn request(group_by: &[pb::Dimension]) -> pb::GetReferralStatisticsRequest {
    let (start, end) = march();
    pb::GetReferralStatisticsRequest {
        start_time: at(start),
        end_time: at(end),
        group_by: group_by.iter().map(|d| *d as i32).collect(),
    }
}

/// A cell as `(keys, shown figures)`: `None` for a suppressed one.
type Seen = (
    Vec<(String, String)>,
    Option<(i64, i64, i64, Option<f64>, i64, i64, i64)>,
);

fn seen(response: &pb::GetReferralStatisticsResponse) -> Vec<Seen> {
    response
        .cells
        .iter()
        .map(|c| {
            let mut keys: Vec<(String, String)> =
                c.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            keys.sort();
            let figures = (!c.suppressed).then_some((
                c.referral_count,
                c.person_count,
                c.received_count,
                c.median_working_days_to_receipt,
                c.received_within_deadline_count,
                c.assessment_started_within_deadline_count,
                c.overdue_count,
            ));
            if c.suppressed {
                assert_eq!(
                    (
                        c.referral_count,
                        c.person_count,
                        c.median_working_days_to_receipt
                    ),
                    (0, 0, None),
                    "a suppressed cell carries no figures"
                );
            }
            (keys, figures)
        })
        .collect()
}

fn keys(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The population, created on Monday 3 March 2025 (the test clock's start):
///
/// - hva-15: persons 0–5. Persons 0–4 each one referral for HOUSING and DEBT, person 5 one for
///   HOUSING, person 0 a second one for HOUSING: 7 referrals, 6 people; received the same day;
///   person 1's completed with SERVICES_STARTED.
/// - hva-12: persons 8–14, one HOUSING referral each, received on Wednesday (2 working days).
/// - helsinki: persons 6 and 7, HOUSING; person 6's received the next Monday, 10 March (5 working
///   days, after its due date, Thursday), person 7's never: overdue on 10 March.
async fn populate(app: &TestApp) {
    use pb::referral::Reason::{Debt, Housing};
    let mut kela = app.kela().await;
    let mut refer = async |i: u16, municipality: &str, reasons: &[pb::referral::Reason]| {
        kela.referrals
            .create_referral(notification_for(&person(i), municipality, reasons))
            .await
            .expect("referral")
            .into_inner()
    };
    let mut names = Vec::new();
    for i in 0..5 {
        names.push(refer(i, JYVASKYLA, &[Housing, Debt]).await.name);
    }
    refer(5, JYVASKYLA, &[Housing]).await;
    refer(0, JYVASKYLA, &[Housing]).await;
    for i in 8..15 {
        refer(i, ENONKOSKI, &[Housing]).await;
    }
    refer(6, HELSINKI, &[Housing]).await;
    refer(7, HELSINKI, &[Housing]).await;

    let mut hva15 = app.receiver("hva-15").await;
    assert_eq!(drain(&mut hva15).await.len(), 7);
    let r = hva15
        .referrals
        .get_referral(pb::GetReferralRequest {
            name: names[1].clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let r = hva15
        .referrals
        .accept_referral(pb::AcceptReferralRequest {
            name: r.name.clone(),
            etag: r.etag.clone(),
            request_id: new_request_id(),
        })
        .await
        .expect("accept")
        .into_inner();
    let r = hva15
        .referrals
        .start_assessment(pb::StartAssessmentRequest {
            name: r.name.clone(),
            etag: r.etag.clone(),
            request_id: new_request_id(),
        })
        .await
        .expect("start")
        .into_inner();
    hva15
        .referrals
        .complete_referral(pb::CompleteReferralRequest {
            name: r.name.clone(),
            etag: r.etag.clone(),
            request_id: new_request_id(),
            outcome: pb::referral::Outcome::ServicesStarted as i32,
        })
        .await
        .expect("complete");

    app.clock.advance(Duration::days(2));
    let mut hva12 = app.receiver("hva-12").await;
    assert_eq!(drain(&mut hva12).await.len(), 7);

    app.clock.advance(Duration::days(5));
    let mut helsinki = app.receiver("helsinki").await;
    let first = pull(&mut helsinki, 1).await;
    assert_eq!(first.len(), 1);
    assert!(ack(&mut helsinki, vec![first[0].ack_id.clone()]).await[0].applied);
}

both_engines!(a_known_population_gives_exactly_the_expected_cells);
async fn a_known_population_gives_exactly_the_expected_cells(db: Db) {
    use pb::Dimension::{Month, Outcome, Reason, Recipient, State};
    let app = TestApp::spawn(db).await;
    populate(&app).await;
    assert_eq!(
        chrono::Datelike::day(&referral_exchange::domain::calendar::helsinki_date(
            app.clock.now()
        )),
        10
    );
    let mut kela = app.kela().await;

    // By reason alone nothing is small: HOUSING counts every referral, DEBT the five with it too,
    // and the total counts each referral once however many reasons it has.
    let by_reason = kela
        .reporting
        .get_referral_statistics(request(&[Reason]))
        .await
        .expect("statistics")
        .into_inner();
    assert_eq!(by_reason.min_cell_size, 5);
    assert_eq!(
        seen(&by_reason),
        vec![
            (
                keys(&[("REASON", "DEBT")]),
                Some((5, 5, 5, Some(0.0), 5, 0, 0))
            ),
            (
                keys(&[("REASON", "HOUSING")]),
                Some((16, 15, 15, Some(2.0), 14, 0, 1))
            ),
            (keys(&[]), Some((16, 15, 15, Some(2.0), 14, 0, 1))),
        ]
    );

    // By month: all in March 2025, its key the stored text although grouped as a number.
    let by_month = kela
        .reporting
        .get_referral_statistics(request(&[Month]))
        .await
        .expect("statistics")
        .into_inner();
    assert_eq!(
        seen(&by_month),
        vec![
            (
                keys(&[("MONTH", "2025-03")]),
                Some((16, 15, 15, Some(2.0), 14, 0, 1))
            ),
            (keys(&[]), Some((16, 15, 15, Some(2.0), 14, 0, 1))),
        ]
    );

    // By recipient and reason: helsinki (2 people) is small, in its column (HOUSING) and in the
    // column of row totals. Each of those lines takes its cheapest visible member along (hva-15's:
    // 6 people), and hva-15's row then holds two hidden cells (HOUSING and its total, 12 people
    // together): every line has none, all, or at least two hidden cells carrying at least 5.
    let by_recipient_reason = kela
        .reporting
        .get_referral_statistics(request(&[Recipient, Reason]))
        .await
        .expect("statistics")
        .into_inner();
    let hva12 = ("RECIPIENT", "organizations/hva-12");
    let hva15 = ("RECIPIENT", "organizations/hva-15");
    let helsinki = ("RECIPIENT", "organizations/helsinki");
    let housing = ("REASON", "HOUSING");
    let debt = ("REASON", "DEBT");
    let hva12_figures = Some((7, 7, 7, Some(2.0), 7, 0, 0));
    assert_eq!(
        seen(&by_recipient_reason),
        vec![
            (keys(&[housing, helsinki]), None),
            (keys(&[helsinki]), None),
            (keys(&[housing, hva12]), hva12_figures),
            (keys(&[hva12]), hva12_figures),
            (keys(&[debt, hva15]), Some((5, 5, 5, Some(0.0), 5, 0, 0))),
            (keys(&[housing, hva15]), None),
            (keys(&[hva15]), None),
            (keys(&[debt]), Some((5, 5, 5, Some(0.0), 5, 0, 0))),
            (keys(&[housing]), Some((16, 15, 15, Some(2.0), 14, 0, 1))),
            (keys(&[]), Some((16, 15, 15, Some(2.0), 14, 0, 1))),
        ]
    );

    // One small cell in a line (SERVICES_STARTED, one person) takes its cheapest neighbour along.
    let by_outcome = kela
        .reporting
        .get_referral_statistics(request(&[Outcome]))
        .await
        .expect("statistics")
        .into_inner();
    assert_eq!(
        seen(&by_outcome),
        vec![
            (keys(&[("OUTCOME", "NONE")]), None),
            (keys(&[("OUTCOME", "SERVICES_STARTED")]), None),
            (keys(&[]), Some((16, 15, 15, Some(2.0), 14, 0, 1))),
        ]
    );

    // Two small cells whose sum is still small (COMPLETED 1, REQUESTED 1) take a third.
    let mut auditor = app.auditor().await;
    let by_state = auditor
        .reporting
        .get_referral_statistics(request(&[State]))
        .await
        .expect("auditors may read statistics")
        .into_inner();
    assert_eq!(
        seen(&by_state),
        vec![
            (keys(&[("STATE", "COMPLETED")]), None),
            (keys(&[("STATE", "RECEIVED")]), None),
            (keys(&[("STATE", "REQUESTED")]), None),
            (keys(&[]), Some((16, 15, 15, Some(2.0), 14, 0, 1))),
        ]
    );

    // A receiver sees the same table; outside the window there is nothing (a zero grand total).
    let mut receiver = app.receiver("hva-15").await;
    let mut later = request(&[Reason]);
    later.start_time = at(march().1);
    later.end_time = at(march().1 + Duration::days(30));
    let empty = receiver
        .reporting
        .get_referral_statistics(later)
        .await
        .expect("receivers may read statistics")
        .into_inner();
    assert_eq!(
        seen(&empty),
        vec![(keys(&[]), Some((0, 0, 0, None, 0, 0, 0)))]
    );

    // Each call is audited as a read of statistics, about no one.
    let audit = app.audit_table_text().await;
    let calls: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("GetReferralStatistics"))
        .collect();
    assert_eq!(calls.len(), 6, "{audit}");
    for call in calls {
        let columns: Vec<&str> = call.split('|').collect();
        assert!(columns[3].contains("statistics/referrals"), "{call}");
        assert!(
            !columns[4].contains(|c: char| c.is_ascii_alphanumeric()),
            "no subject: {call}"
        );
    }
    app.stop().await;
}

both_engines!(statistics_come_as_csv_over_http);
async fn statistics_come_as_csv_over_http(db: Db) {
    let app = TestApp::spawn(db).await;
    populate(&app).await;
    let (start, end) = march();
    let mut kela = app.rest("kela", Some("handler-1")).await;
    let query = format!(
        "start_time={}&endTime={}&group_by=REASON",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let answer = kela
        .get(&format!("/v1/statistics/referrals:csv?{query}"))
        .await
        .expect(200);
    assert_eq!(
        answer
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        answer.text,
        "REASON,suppressed,referral_count,person_count,received_count,median_working_days_to_receipt,received_within_deadline_count,assessment_started_within_deadline_count,overdue_count\n\
         DEBT,false,5,5,5,0,5,0,0\n\
         HOUSING,false,16,15,15,2,14,0,1\n\
         (all),false,16,15,15,2,14,0,1\n"
    );
    // The same table as JSON from the generated binding.
    let json = kela
        .get(&format!("/v1/statistics/referrals?{query}"))
        .await
        .expect(200);
    assert_eq!(json.json["minCellSize"], 5);
    assert_eq!(json.json["cells"].as_array().map(Vec::len), Some(3));

    // Refusals are the JSON binding's.
    let refused = kela
        .get("/v1/statistics/referrals:csv?start_time=2025-03-01T00:00:00Z&group_by=KIND&group_by=KIND")
        .await
        .expect(400);
    assert_eq!(
        refused.violations(),
        [("end_time".to_owned(), "REQUIRED".to_owned())]
    );
    let refused = kela
        .get("/v1/statistics/referrals:csv?start_time=2025-03-01T00:00:00Z&end_time=2025-04-01T00:00:00Z&group_by=KIND&group_by=KIND")
        .await
        .expect(400);
    assert_eq!(
        refused.violations(),
        [("group_by[1]".to_owned(), "UNIQUE".to_owned())]
    );
    let refused = kela
        .get("/v1/statistics/referrals:csv?start_time=2025-03-01T00:00:00Z&end_time=2025-04-01T00:00:00Z&colour=red")
        .await
        .expect(400);
    assert_eq!(
        refused.violations(),
        [("colour".to_owned(), "UNKNOWN_PARAMETER".to_owned())]
    );
    app.stop().await;
}

both_engines!(the_client_prints_statistics_as_a_table_and_as_csv);
async fn the_client_prints_statistics_as_a_table_and_as_csv(db: Db) {
    let app = TestApp::spawn(db).await;
    populate(&app).await;
    let client = |format: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
            .env_remove("REFERRAL_EXCHANGE_USER")
            .args(["client", "--endpoint", &format!("https://{}", app.addr())])
            .arg("--profile")
            .arg(app.profile("hva-15"))
            .args([
                "--user",
                "worker-1",
                "referral-statistics",
                "--group-by",
                "reason",
            ])
            // Whole Helsinki days, the last one included.
            .args([
                "--from",
                "2025-03-01",
                "--to",
                "2025-03-31",
                "--format",
                format,
            ])
            .output()
            .expect("run the client");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    assert_eq!(
        client("csv"),
        "REASON,suppressed,referral_count,person_count,received_count,median_working_days_to_receipt,received_within_deadline_count,assessment_started_within_deadline_count,overdue_count\n\
         DEBT,false,5,5,5,0,5,0,0\n\
         HOUSING,false,16,15,15,2,14,0,1\n\
         (all),false,16,15,15,2,14,0,1\n"
    );
    let table = client("table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "REASON   REFERRALS  PEOPLE  RECEIVED  MEDIAN DAYS  RECEIVED ON TIME  STARTED ON TIME  OVERDUE",
            "DEBT             5       5         5            0                 5                0        0",
            "HOUSING         16      15        15            2                14                0        1",
            "(all)           16      15        15            2                14                0        1",
        ],
        "{table}"
    );
    app.stop().await;
}

both_engines!(bad_requests_are_refused_with_violations);
async fn bad_requests_are_refused_with_violations(db: Db) {
    use pb::Dimension::{Kind, Reason};
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let (start, end) = march();

    let mut inverted = request(&[Kind]);
    inverted.start_time = at(end);
    inverted.end_time = at(start);
    let status = assert_code(
        kela.reporting.get_referral_statistics(inverted).await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        [("end_time".into(), "AFTER_START".into())]
    );

    let mut long = request(&[]);
    long.start_time = at(start - Duration::days(6 * 365));
    let status = assert_code(
        kela.reporting.get_referral_statistics(long).await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        [("end_time".into(), "MAX_WINDOW".into())]
    );

    let status = assert_code(
        kela.reporting
            .get_referral_statistics(request(&[Reason, Kind, Reason]))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        [("group_by[2]".into(), "UNIQUE".into())]
    );

    let mut unspecified = request(&[Kind]);
    unspecified.group_by.push(0);
    unspecified.start_time = None;
    let status = assert_code(
        kela.reporting.get_referral_statistics(unspecified).await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        [
            ("start_time".into(), "REQUIRED".into()),
            ("group_by[1]".into(), "REQUIRED".into())
        ]
    );
    // Refusals are audited too.
    let audit = app.audit_table_text().await;
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("GetReferralStatistics"))
            .count(),
        4,
        "{audit}"
    );
    app.stop().await;
}

#[test]
fn a_minimum_cell_size_below_three_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let refused = Command::new(env!("CARGO_BIN_EXE_referral-exchange"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--min-cell-size",
            "2",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--min-cell-size") && stderr.contains("at least 3"),
        "{stderr}"
    );
}

both_engines!(every_referral_carries_its_person_and_reason_bits_through_its_changes);
async fn every_referral_carries_its_person_and_reason_bits_through_its_changes(db: Db) {
    let app = TestApp::spawn(db).await;
    populate(&app).await;
    // Person 0 has two referrals; the others one each: one number per pseudonym, both ways.
    let counts = app
        .sql(
            "SELECT CAST(COUNT(*) AS TEXT) || ' ' || CAST(COUNT(DISTINCT person_id) AS TEXT) || ' ' \
               || CAST(COUNT(DISTINCT subject_pseudonym) AS TEXT) || ' ' \
               || CAST(COUNT(DISTINCT subject_pseudonym || ':' || CAST(person_id AS TEXT)) AS TEXT) \
             FROM referrals",
        )
        .await
        .expect("counts");
    assert_eq!(counts, ["16 15 15 15"]);
    // The bits of every referral, among them the received, accepted, started and completed ones
    // (each change rewrote its row): HOUSING 4, DEBT 128.
    let mut bits = app
        .sql("SELECT reasons || ' ' || CAST(reason_bits AS TEXT) FROM referrals")
        .await
        .expect("bits");
    bits.sort();
    bits.dedup();
    assert_eq!(bits, [r#"["HOUSING","DEBT"] 132"#, r#"["HOUSING"] 4"#]);
    let persons = app
        .sql("SELECT CAST(COUNT(*) AS TEXT) FROM persons")
        .await
        .expect("persons");
    assert_eq!(persons, ["15"]);
    app.stop().await;
}

/// Runs `sql` on a fresh connection to `url`; the first column of each row as text.
async fn query(db: Db, url: &str, sql: &str) -> Vec<String> {
    sql_text(db, url, sql).await.expect("query")
}

both_engines!(migration_0010_numbers_the_persons_and_reasons_of_existing_referrals);
async fn migration_0010_numbers_the_persons_and_reasons_of_existing_referrals(db: Db) {
    let database = TestDb::create(db).await;
    let url = database.url().to_owned();
    migrate(db, &url, Some(9)).await;
    let (id, time, no) = match db {
        Db::Sqlite => ("randomblob(16)", "0", "0"),
        Db::Postgres => ("gen_random_uuid()", "now()", "false"),
    };
    // A referral as written before migration 0010, or after it with its reason bits.
    let row = |pseudonym: &str, reasons: &str, bits: Option<i32>| {
        let bits = bits.map(|b| format!(", {b}")).unwrap_or_default();
        format!(
            "({id}, 'NEED_NOTIFICATION_WITHOUT_CONSENT', '', '{pseudonym}', '179', 'hva-01', \
              '{reasons}', '', {no}, 'NO_STATUTORY_GROUP', 'UNABLE_TO_CARE_FOR_SELF', {no}, \
              'REQUESTED', 'ROUTED', '[]', {time}, {time}, 1{bits})"
        )
    };
    let insert = |rows: Vec<String>, bits: bool| {
        format!(
            "INSERT INTO referrals (id, kind, subject_code, subject_pseudonym, \
               home_municipality_code, recipient, reasons, reason_text, urgent, deadline_group, \
               statutory_ground, personal_discussion_requested, state, state_reason, history, \
               create_time, update_time, version{}) VALUES {}",
            if bits { ", reason_bits" } else { "" },
            rows.join(", ")
        )
    };
    query(
        db,
        &url,
        &insert(
            vec![
                row("a", r#"["HOUSING","DEBT"]"#, None),
                row("b", r#"["OTHER"]"#, None),
                row("a", r#"["LIFE_MANAGEMENT"]"#, None),
            ],
            false,
        ),
    )
    .await;
    migrate(db, &url, None).await;
    let numbered = "SELECT subject_pseudonym || ' ' || CAST(reason_bits AS TEXT) || ' ' \
                      || CAST(person_id AS TEXT) FROM referrals ORDER BY reason_bits";
    let before = query(db, &url, numbered).await;
    let split = |line: &String| -> (String, String, String) {
        let mut parts = line.split(' ').map(str::to_owned);
        (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        )
    };
    let rows: Vec<_> = before.iter().map(split).collect();
    assert_eq!(
        rows.iter()
            .map(|(p, bits, _)| format!("{p} {bits}"))
            .collect::<Vec<_>>(),
        ["a 1", "a 132", "b 256"],
        "{before:?}"
    );
    assert_eq!(rows[0].2, rows[1].2, "one person, one number: {before:?}");
    assert_ne!(rows[0].2, rows[2].2, "{before:?}");

    // New referrals get their person's number from the database: the old one, or a new one.
    query(
        db,
        &url,
        &insert(
            vec![
                row("b", r#"["HEALTH"]"#, Some(8)),
                row("c", r#"["DEBT"]"#, Some(128)),
            ],
            true,
        ),
    )
    .await;
    let after: Vec<_> = query(db, &url, numbered).await.iter().map(split).collect();
    let number = |pseudonym: &str| -> Vec<String> {
        let mut numbers: Vec<String> = after
            .iter()
            .filter(|(p, _, _)| p == pseudonym)
            .map(|(_, _, n)| n.clone())
            .collect();
        numbers.dedup();
        numbers
    };
    assert_eq!(number("b"), [rows[2].2.clone()], "{after:?}");
    let c = number("c");
    assert_eq!(c.len(), 1, "{after:?}");
    assert!(
        !c[0].is_empty() && c[0] != rows[0].2 && c[0] != rows[2].2,
        "{after:?}"
    );
    assert_eq!(
        query(db, &url, "SELECT CAST(COUNT(*) AS TEXT) FROM persons").await,
        ["3"]
    );
}

both_engines!(migration_0011_numbers_the_months_and_recipients_of_existing_referrals);
async fn migration_0011_numbers_the_months_and_recipients_of_existing_referrals(db: Db) {
    let database = TestDb::create(db).await;
    let url = database.url().to_owned();
    migrate(db, &url, Some(10)).await;
    let (id, time, no) = match db {
        Db::Sqlite => ("randomblob(16)", "0", "0"),
        Db::Postgres => ("gen_random_uuid()", "now()", "false"),
    };
    let insert = |rows: &[(&str, &str, Option<&str>)]| {
        let rows: Vec<String> = rows
            .iter()
            .map(|(pseudonym, recipient, month)| {
                let month = month.map_or("NULL".to_owned(), |m| format!("'{m}'"));
                format!(
                    "({id}, 'NEED_NOTIFICATION_WITHOUT_CONSENT', '', '{pseudonym}', '179', \
                      '{recipient}', '[\"OTHER\"]', '', {no}, 'NO_STATUTORY_GROUP', \
                      'UNABLE_TO_CARE_FOR_SELF', {no}, 'REQUESTED', 'ROUTED', '[]', {time}, \
                      {time}, 1, 256, {month})"
                )
            })
            .collect();
        format!(
            "INSERT INTO referrals (id, kind, subject_code, subject_pseudonym, \
               home_municipality_code, recipient, reasons, reason_text, urgent, deadline_group, \
               statutory_ground, personal_discussion_requested, state, state_reason, history, \
               create_time, update_time, version, reason_bits, create_month) VALUES {}",
            rows.join(", ")
        )
    };
    // Before migration 0011.
    query(
        db,
        &url,
        &insert(&[
            ("a", "hva-01", Some("2027-03")),
            ("b", "hva-02", Some("2026-12")),
            ("c", "hva-01", None),
        ]),
    )
    .await;
    migrate(db, &url, None).await;
    // After it: an organisation already numbered and a new one.
    query(
        db,
        &url,
        &insert(&[
            ("d", "hva-02", Some("2027-01")),
            ("e", "kela", Some("2027-10")),
        ]),
    )
    .await;
    let numbered = "SELECT subject_pseudonym || ' ' || recipient || ' ' \
                      || CAST(recipient_id AS TEXT) || ' ' \
                      || COALESCE(CAST(create_month_number AS TEXT), '-') \
                    FROM referrals ORDER BY subject_pseudonym";
    let rows = query(db, &url, numbered).await;
    let number = |line: &String| line.split(' ').nth(2).unwrap_or_default().to_owned();
    assert_eq!(rows.len(), 5, "{rows:?}");
    let months: Vec<String> = rows
        .iter()
        .map(|l| l.split(' ').nth(3).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        months,
        ["202703", "202612", "-", "202701", "202710"],
        "{rows:?}"
    );
    // One number per organisation, both ways.
    assert_eq!(number(&rows[0]), number(&rows[2]), "{rows:?}");
    assert_eq!(number(&rows[1]), number(&rows[3]), "{rows:?}");
    assert_ne!(number(&rows[0]), number(&rows[1]), "{rows:?}");
    assert!(
        !number(&rows[4]).is_empty()
            && number(&rows[4]) != number(&rows[0])
            && number(&rows[4]) != number(&rows[1]),
        "{rows:?}"
    );
    // A referral passed on to another organisation takes that one's number; other changes keep it.
    query(
        db,
        &url,
        "UPDATE referrals SET recipient = 'kela' WHERE subject_pseudonym = 'a'",
    )
    .await;
    query(
        db,
        &url,
        "UPDATE referrals SET version = 2 WHERE subject_pseudonym = 'b'",
    )
    .await;
    let after = query(db, &url, numbered).await;
    assert_eq!(number(&after[0]), number(&rows[4]), "{after:?}");
    assert_eq!(number(&after[1]), number(&rows[1]), "{after:?}");
    let organizations = query(
        db,
        &url,
        "SELECT organization || ' ' || CAST(id AS TEXT) FROM recipients ORDER BY organization",
    )
    .await;
    assert_eq!(organizations.len(), 3, "{organizations:?}");
}

both_engines!(writes_go_on_while_a_statistics_read_is_open);
/// Statistics read in a transaction of their own that only reads: on SQLite on a read-only
/// connection, so a create is not held up behind a read of 10⁶ referrals (which takes seconds).
async fn writes_go_on_while_a_statistics_read_is_open(db: Db) {
    use referral_exchange::{domain::statistics::Dimension, store::StatisticsQuery};
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    kela.referrals
        .create_referral(notification(&person(0), JYVASKYLA))
        .await
        .expect("the first referral");
    let now = app.clock.now();
    let query = StatisticsQuery {
        start: now - Duration::days(1),
        end: now + Duration::days(1),
        today: now.date_naive(),
        dimensions: vec![Dimension::Recipient],
    };
    let mut read = app.exchange().store().begin_read().await.expect("a read");
    let (cells, _) = read
        .referral_statistics(&query)
        .await
        .expect("the statistics");
    assert!(
        cells.iter().any(|c| c.referrals == 1),
        "the read sees the first referral: {cells:?}"
    );
    let created = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        kela.referrals
            .create_referral(notification(&person(1), JYVASKYLA)),
    )
    .await
    .expect("a create does not wait for the open read")
    .expect("the second referral");
    assert!(!created.into_inner().name.is_empty());
    read.commit().await.expect("the read ends");
    app.stop().await;
}
