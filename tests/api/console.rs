//! The browser console over plain HTTP requests: who may see which page, the headers every page
//! carries, CSRF on every POST, the languages, and that no page shows an identity code. The same
//! pages in a real browser are in `console_browser.rs`.

use referral_exchange::proto::v1 as pb;

use crate::{
    helpers::*,
    rest::{Answer, Rest, tls_config},
};

/// An HTTP/1.1 connection with the personal certificate of `user` at `org`.
pub async fn person(app: &TestApp, org: &str, user: &str) -> Rest {
    let profile = referral_exchange::tls::write_dev_personal_certificate(app.pki.path(), org, user)
        .expect("personal certificate");
    Rest::connect(
        app.http_port(),
        tls_config(
            &profile.join("ca.pem"),
            Some((&profile.join("cert.pem"), &profile.join("key.pem"))),
        ),
    )
    .await
}

/// The CSRF token of the first form on a page.
pub fn csrf(page: &Answer) -> String {
    let at = page
        .text
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form with a CSRF token")
        + "name=\"csrf\" value=\"".len();
    page.text[at..].split('"').next().expect("token").to_owned()
}

async fn post_form(rest: &mut Rest, path: &str, fields: &[(&str, &str)]) -> Answer {
    let body = serde_urlencoded::to_string(fields).expect("form");
    rest.send(
        "POST",
        path,
        Some(body.into_bytes()),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await
}

/// The headers every console page carries.
fn assert_page_headers(answer: &Answer, what: &str) {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header("content-security-policy"),
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
        "{what}"
    );
    assert_eq!(header("cache-control"), "no-store", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert!(
        header("content-type").starts_with("text/html"),
        "{what}: {}",
        header("content-type")
    );
    assert!(answer.text.starts_with("<!DOCTYPE html>"), "{what}");
}

/// Two referrals, one for hva-15 (Jyväskylä) and one for Helsinki, seeded through the API.
async fn seed(app: &TestApp) -> (pb::Referral, pb::Referral) {
    let mut kela = app.kela().await;
    let ours = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    let theirs = consent_and_refer(&mut kela, "010594Y9032", "091", &["helsinki"]).await;
    (ours, theirs)
}

fn id(referral: &pb::Referral) -> &str {
    referral.name.rsplit('/').next().expect("id")
}

const PAGES: &[&str] = &[
    "/console/",
    "/console/referrals",
    "/console/mailbox",
    "/console/access-report",
    "/console/audit-events",
    "/console/consent-log",
    "/console/checkpoint",
    "/console/statistics",
];

/// The pages each role may open (the rest answer 403).
fn allowed(org: &str, page: &str) -> bool {
    match org {
        "kela" => !matches!(
            page,
            "/console/access-report" | "/console/audit-events" | "/console/checkpoint"
        ),
        "hva-15" => matches!(
            page,
            "/console/" | "/console/referrals" | "/console/mailbox" | "/console/statistics"
        ),
        _ => !matches!(page, "/console/referrals" | "/console/mailbox"),
    }
}

both_engines!(each_role_sees_its_own_pages_and_nothing_else);
async fn each_role_sees_its_own_pages_and_nothing_else(db: Db) {
    let app = TestApp::spawn(db).await;
    let (ours, theirs) = seed(&app).await;
    app.exchange()
        .integrate_audit_events(1000)
        .await
        .expect("sequencer");
    for (org, user) in [
        ("kela", "k-handler"),
        ("hva-15", "w-anna"),
        ("auditor-dpo", "a-dpo"),
    ] {
        let mut rest = person(&app, org, user).await;
        for page in PAGES {
            let answer = rest.get(page).await;
            let what = format!("{org} {page}");
            assert_page_headers(&answer, &what);
            let expected = if allowed(org, page) { 200 } else { 403 };
            assert_eq!(answer.status.as_u16(), expected, "{what}: {}", answer.text);
            assert!(
                !answer.text.contains(PIC) && !answer.text.contains("010594Y9032"),
                "{what} shows an identity code"
            );
            if org == "auditor-dpo" {
                assert!(
                    !answer.text.contains("redrive"),
                    "{what}: an auditor is offered a control that changes data"
                );
                for action in answer.text.match_indices("action=\"") {
                    let target = &answer.text[action.0 + 8..];
                    let target = target.split('"').next().unwrap_or_default();
                    assert!(
                        [
                            "/console/access-report",
                            "/console/audit-events",
                            "/console/consent-log",
                            "/console/checkpoint/verify",
                            "/console/statistics",
                        ]
                        .contains(&target),
                        "{what}: an auditor's form goes to {target}"
                    );
                }
            }
        }
    }

    // Kela sees every referral; a receiver only those routed to it.
    let mut kela = person(&app, "kela", "k-handler").await;
    let listed = kela.get("/console/referrals").await.expect(200);
    assert!(listed.text.contains(id(&ours)) && listed.text.contains(id(&theirs)));
    let mut anna = person(&app, "hva-15", "w-anna").await;
    let listed = anna.get("/console/referrals").await.expect(200);
    assert!(listed.text.contains(id(&ours)), "{}", listed.text);
    assert!(
        !listed.text.contains(id(&theirs)),
        "another receiver's referral"
    );

    // Kela's view of the receivers' mailboxes: both referrals wait, unreceived.
    let health = kela.get("/console/mailbox").await.expect(200);
    let table = &health.text[health
        .text
        .find("<h2>Vastaanottajien")
        .expect("the receivers' table")..];
    assert!(
        table.contains(">hva-15<") && table.contains(">helsinki<"),
        "{table}"
    );

    // Every page view that processed someone's data was a call, audited under the person the
    // certificate names. The mailbox page's counts and an empty dead-letter list touch no one: they
    // are counted in metrics, not audited (AUDIT_LOG.md, "What is logged, and what is counted").
    let mut auditor = app.auditor().await;
    let events = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            user_id: "w-anna".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events;
    let methods: Vec<&str> = events.iter().map(|e| e.method.as_str()).collect();
    for method in [
        "/referral_exchange.v1.ReferralService/ListReferrals",
        "/referral_exchange.v1.ReportingService/GetReferralStatistics",
    ] {
        assert!(methods.contains(&method), "{method} in {methods:?}");
    }
    assert!(
        !events
            .iter()
            .any(|e| e.method.ends_with("/GetMailboxStats") && e.status == "OK"),
        "mailbox counts are not in the trail: {methods:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.method.ends_with("/GetSubjectAccessReport")
                && e.status == "PERMISSION_DENIED"),
        "the refused page is audited: {methods:?}"
    );
    app.stop().await;
}

both_engines!(without_a_personal_certificate_the_console_answers_401_and_audits_it);
async fn without_a_personal_certificate_the_console_answers_401_and_audits_it(db: Db) {
    let app = TestApp::spawn(db).await;
    // An organisation's certificate, even with x-user-id: not a person.
    let mut system = app.rest("kela", Some("k-handler")).await;
    let answer = system.get("/console/referrals").await;
    assert_eq!(answer.status.as_u16(), 401, "{}", answer.text);
    assert_page_headers(&answer, "organisation certificate");
    assert!(answer.text.contains("Henkilökohtainen varmenne tarvitaan"));
    let mut auditor_system = app.rest("auditor-dpo", None).await;
    assert_eq!(
        auditor_system.get("/console/").await.status.as_u16(),
        401,
        "an auditor organisation's certificate"
    );
    // No certificate at all.
    let dir = app.profile("kela");
    let mut anonymous = Rest::connect(app.http_port(), tls_config(&dir.join("ca.pem"), None)).await;
    let answer = anonymous
        .send("GET", "/console/", None, &[("accept-language", "en")])
        .await;
    assert_eq!(answer.status.as_u16(), 401);
    assert!(answer.text.contains("A personal certificate is required"));
    assert!(answer.text.contains("<html lang=\"en\">"));

    let mut auditor = app.auditor().await;
    let refused = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: "ListReferrals".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events;
    assert!(
        refused
            .iter()
            .any(|e| e.organization == "organizations/kela" && e.status == "UNAUTHENTICATED"),
        "{refused:?}"
    );
    let all = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events;
    assert!(
        all.iter().filter(|e| e.status == "UNAUTHENTICATED").count() >= 3,
        "each refusal audited: {all:?}"
    );
    app.stop().await;
}

both_engines!(every_post_needs_the_persons_csrf_token);
async fn every_post_needs_the_persons_csrf_token(db: Db) {
    // One delivery attempt: a message whose lease runs out is dead-lettered at the next sweep.
    let app = TestApp::spawn_with(db, default_start(), |s| {
        s.delivery.max_delivery_attempts = 1
    })
    .await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    kela.referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create");
    assert_eq!(pull(&mut hva15, 10).await.len(), 1);
    app.clock.advance(chrono::Duration::seconds(61));
    let swept = app.exchange().sweep_mailboxes().await.expect("sweep");
    assert_eq!(swept.dead_lettered, 1);

    let mut anna = person(&app, "hva-15", "w-anna").await;
    let mut other = person(&app, "hva-15", "w-other").await;
    let mailbox = anna.get("/console/mailbox").await.expect(200);
    assert!(mailbox.text.contains("action=\"/console/mailbox/redrive\""));
    let token = csrf(&mailbox);
    let request_id = uuid_like(&mailbox);

    // No token, a forged one, another person's: refused, nothing redriven.
    for (by_other, fields, what) in [
        (false, vec![("request_id", request_id.as_str())], "no token"),
        (
            false,
            vec![
                ("csrf", "1741000000.00ff"),
                ("request_id", request_id.as_str()),
            ],
            "a forged token",
        ),
        (
            true,
            vec![
                ("csrf", token.as_str()),
                ("request_id", request_id.as_str()),
            ],
            "another person's token",
        ),
    ] {
        let rest = if by_other { &mut other } else { &mut anna };
        let answer = post_form(rest, "/console/mailbox/redrive", &fields).await;
        assert_eq!(answer.status.as_u16(), 403, "{what}: {}", answer.text);
        assert_page_headers(&answer, what);
        assert!(
            answer.text.contains("CSRF_TOKEN_INVALID") || answer.text.contains("CSRF"),
            "{what}"
        );
    }
    let stats = hva15
        .mailbox
        .get_mailbox_stats(pb::GetMailboxStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.dead_letter_count, 1, "nothing was redriven");

    // The person's own token: redriven, then back to the mailbox page.
    let answer = post_form(
        &mut anna,
        "/console/mailbox/redrive",
        &[
            ("csrf", token.as_str()),
            ("request_id", request_id.as_str()),
        ],
    )
    .await;
    assert_eq!(answer.status.as_u16(), 303, "{}", answer.text);
    assert_eq!(
        answer.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("/console/mailbox?redriven=1")
    );
    let after = anna.get("/console/mailbox?redriven=1").await.expect(200);
    assert!(after.text.contains("palautettiin: 1"), "{}", after.text);
    let stats = hva15
        .mailbox
        .get_mailbox_stats(pb::GetMailboxStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.dead_letter_count, 0);
    assert_eq!(stats.pending_count, 1);

    // A receiver with a valid token still may not use the auditors' forms.
    for path in ["/console/checkpoint/verify", "/console/access-report"] {
        let answer = post_form(
            &mut anna,
            path,
            &[("csrf", token.as_str()), ("identity_code", PIC)],
        )
        .await;
        assert_eq!(answer.status.as_u16(), 403, "{path}");
        assert!(!answer.text.contains(PIC));
    }

    // An auditor with a valid token of its own still may not redrive.
    let mut dpo = person(&app, "auditor-dpo", "a-dpo").await;
    let form = dpo.get("/console/access-report").await.expect(200);
    let answer = post_form(
        &mut dpo,
        "/console/mailbox/redrive",
        &[("csrf", csrf(&form).as_str())],
    )
    .await;
    assert_eq!(answer.status.as_u16(), 403);
    // And the auditor's own POSTs need the token too.
    for path in ["/console/checkpoint/verify", "/console/access-report"] {
        let answer = post_form(&mut dpo, path, &[("identity_code", PIC)]).await;
        assert_eq!(answer.status.as_u16(), 403, "{path}");
        assert!(!answer.text.contains(PIC));
    }

    let mut auditor = app.auditor().await;
    let events = auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: "RedriveDeadLetters".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events;
    let statuses: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.user_id.as_str(), e.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("w-anna", "PERMISSION_DENIED"),
            ("w-anna", "PERMISSION_DENIED"),
            ("w-other", "PERMISSION_DENIED"),
            ("w-anna", "OK"),
            ("a-dpo", "PERMISSION_DENIED"),
        ],
        "each refusal audited under the person"
    );
    app.stop().await;
}

/// The `request_id` of the first redrive form.
fn uuid_like(page: &Answer) -> String {
    let at = page
        .text
        .find("name=\"request_id\" value=\"")
        .expect("a request id")
        + "name=\"request_id\" value=\"".len();
    page.text[at..].split('"').next().expect("id").to_owned()
}

both_engines!(an_auditor_reports_searches_verifies_the_log_and_reads_statistics);
async fn an_auditor_reports_searches_verifies_the_log_and_reads_statistics(db: Db) {
    let app = TestApp::spawn(db).await;
    let (ours, _) = seed(&app).await;
    let mut hva15 = app.receiver("hva-15").await;
    receive(&mut hva15, &ours.name).await;
    app.exchange()
        .integrate_audit_events(1000)
        .await
        .expect("sequencer");

    let mut dpo = person(&app, "auditor-dpo", "a-dpo").await;
    let form = dpo.get("/console/access-report").await.expect(200);
    assert!(
        form.text
            .contains("method=\"post\" action=\"/console/access-report\"")
    );
    assert!(form.text.contains("<label for=\"identity_code\">"));
    let report = post_form(
        &mut dpo,
        "/console/access-report",
        &[("csrf", csrf(&form).as_str()), ("identity_code", PIC)],
    )
    .await
    .expect(200);
    assert_page_headers(&report, "report");
    assert!(
        !report.text.contains(PIC),
        "the report shows no identity code"
    );
    for expected in [
        "ReferralService.CreateReferral",
        "ConsentService.RecordConsent",
        "MailboxService.PullMessages",
        "id=\"disclosures\"",
        "id=\"consent-events\"",
        &ours.name,
    ] {
        assert!(report.text.contains(expected), "{expected} in the report");
    }
    assert!(
        !report.text.contains("010594Y9032") && !report.text.contains("helsinki</td>"),
        "another person's processing is not in the report"
    );

    // The client's copy is the browser's print of this page: the stylesheet's print rules leave
    // out the menus and forms.
    let css = dpo.get("/console/console.css").await.expect(200);
    assert_eq!(
        css.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/css; charset=utf-8")
    );
    let print = &css.text[css.text.find("@media print").expect("a print stylesheet")..];
    assert!(print.contains("header.top, form"), "{print}");

    // The consent log and the audit search by identity code, by POST.
    let log = dpo.get("/console/consent-log").await.expect(200);
    let searched = post_form(
        &mut dpo,
        "/console/consent-log",
        &[("csrf", csrf(&log).as_str()), ("identity_code", PIC)],
    )
    .await
    .expect(200);
    assert!(searched.text.contains("Annettu") && searched.text.contains("Käytetty"));
    let events = dpo
        .get("/console/audit-events?organization=kela&method=CreateReferral")
        .await
        .expect(200);
    assert_eq!(
        events
            .text
            .matches("ReferralService.CreateReferral")
            .count(),
        2
    );

    // The checkpoint, and the log verified from its exported leaves.
    let checkpoint = dpo.get("/console/checkpoint").await.expect(200);
    assert!(checkpoint.text.contains("Tarkista loki nyt"));
    let verified = post_form(
        &mut dpo,
        "/console/checkpoint/verify",
        &[("csrf", csrf(&checkpoint).as_str())],
    )
    .await
    .expect(200);
    assert!(
        verified.text.contains("Loki tarkistettu"),
        "{}",
        verified.text
    );
    assert!(verified.text.contains("hajautus laskettu uudelleen"));
    assert!(
        verified
            .text
            .contains("href=\"/console/checkpoint?lang=en\""),
        "the language switch of a POST's answer leads to its page"
    );

    // Statistics: tables with suppression marks (two people are below the threshold) and charts.
    let statistics = dpo.get("/console/statistics").await.expect(200);
    assert!(statistics.text.contains("<svg role=\"img\""));
    assert!(
        statistics.text.contains(">•<"),
        "suppressed cells are marked"
    );
    assert!(statistics.text.contains("alle 5 henkilöä"));
    app.stop().await;
}

both_engines!(the_language_is_the_switch_then_the_cookie_then_accept_language);
async fn the_language_is_the_switch_then_the_cookie_then_accept_language(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut anna = person(&app, "hva-15", "w-anna").await;
    let default = anna.get("/console/").await.expect(200);
    assert!(default.text.contains("<html lang=\"fi\">"));
    let swedish = anna
        .send(
            "GET",
            "/console/",
            None,
            &[("accept-language", "sv-FI, en;q=0.5")],
        )
        .await
        .expect(200);
    assert!(swedish.text.contains("<html lang=\"sv\">"));
    assert!(swedish.text.contains("Startsida"));
    let english = anna
        .send(
            "GET",
            "/console/referrals?lang=en",
            None,
            &[("accept-language", "sv")],
        )
        .await
        .expect(200);
    assert!(english.text.contains("<html lang=\"en\">"));
    assert!(english.text.contains("<h1>Referrals</h1>"));
    let cookie = english
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("the switch is remembered")
        .to_owned();
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"));
    let remembered = anna
        .send(
            "GET",
            "/console/mailbox",
            None,
            &[
                ("accept-language", "sv"),
                ("cookie", cookie.split(';').next().expect("pair")),
            ],
        )
        .await
        .expect(200);
    assert!(remembered.text.contains("<html lang=\"en\">"));
    assert!(remembered.text.contains("Oldest pending"));
    app.stop().await;
}
