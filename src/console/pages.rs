//! One handler per console page: the API calls it makes (on the gRPC edge's service
//! implementations, with the signed-in person's claims) and the view it renders. The views hold
//! only text already in the page's language; templates lay it out.

use std::collections::BTreeMap;

use askama::Template;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Europe::Helsinki;
use tokio_stream::StreamExt as _;

use super::{
    Answer, Console, Frame, Session,
    chart::{Chart, Row},
    i18n::Lang,
};
use crate::proto::v1::{
    self as pb, audit_service_server::AuditService as _,
    consent_service_server::ConsentService as _, mailbox_service_server::MailboxService as _,
    referral_service_server::ReferralService as _, reporting_service_server::ReportingService as _,
};

/// The fields of a form body or a query string, in order.
#[derive(Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(bytes: &[u8]) -> Form {
        Form(serde_urlencoded::from_bytes(bytes).unwrap_or_default())
    }

    pub fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed value of `name`, empty if absent.
    pub fn value(&self, name: &str) -> String {
        self.first(name).unwrap_or_default().trim().to_owned()
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// A page that only says something: not found, refused, not signed in.
#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage<'a> {
    frame: &'a Frame,
    heading: &'a str,
    body: &'a str,
    details: &'a [String],
}

pub(crate) fn message_page(frame: &Frame, heading: &str, body: &str, details: &[String]) -> String {
    render(&MessagePage {
        frame,
        heading,
        body,
        details,
    })
}

fn render(template: &impl Template) -> String {
    template.render().unwrap_or_else(|error| {
        tracing::error!(%error, "a console template failed to render");
        "<!doctype html><title>500</title><p>500".into()
    })
}

fn html(template: &impl Template) -> Answer {
    Answer::Html(StatusCode::OK, render(template))
}

/// The page of a refused call: its status and the message the API gave (messages never hold
/// personal data), and `note` if any.
pub(crate) fn refusal(session: &Session, status: &tonic::Status, note: &str) -> Answer {
    let t = session.t;
    let frame = session.frame(t.refused_title);
    let mut details = vec![format!("{:?}: {}", status.code(), status.message())];
    if !note.is_empty() {
        details.insert(0, note.to_owned());
    }
    Answer::Html(
        StatusCode::from_u16(crate::error::http_status(status.code()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message_page(&frame, t.refused_title, t.refused_body, &details),
    )
}

/// A form value that is not what the field takes (a date that is not one).
fn bad_form(session: &Session, field: &str) -> Answer {
    let status = tonic::Status::invalid_argument(format!("{field}: expected a date YYYY-MM-DD"));
    refusal(session, &status, "")
}

/// Midnight in Helsinki at the start of `date` (`YYYY-MM-DD`), as the API's timestamp; `Ok(None)`
/// when empty.
fn day_start(text: &str) -> Result<Option<pbjson_types::Timestamp>, ()> {
    if text.is_empty() {
        return Ok(None);
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| ())?;
    let start = date.and_hms_opt(0, 0, 0).ok_or(())?;
    let moment = Helsinki
        .from_local_datetime(&start)
        .earliest()
        .ok_or(())?
        .with_timezone(&Utc);
    Ok(Some(timestamp(moment)))
}

fn timestamp(t: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// `referrals/0192…` → `0192…`: the id part, short enough for a table.
fn id_of(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_owned()
}

/// `organizations/hva-15` → `hva-15`.
fn org_of(name: &str) -> String {
    name.strip_prefix("organizations/")
        .unwrap_or(name)
        .to_owned()
}

/// `/referral_exchange.v1.ReferralService/GetReferral` → `ReferralService.GetReferral`.
fn method_of(method: &str) -> String {
    method
        .trim_start_matches('/')
        .trim_start_matches("referral_exchange.v1.")
        .replace('/', ".")
}

// ---------------------------------------------------------------------------------------------
// Home

#[derive(Template)]
#[template(path = "console/home.html")]
struct HomePage {
    frame: Frame,
    intro: &'static str,
    stats: Option<Stats>,
    checkpoint: Option<String>,
}

pub(crate) struct Stats {
    pending: String,
    leased: String,
    dead: String,
    oldest: String,
}

impl Console {
    pub(super) async fn home(&self, session: &Session) -> Answer {
        let t = session.t;
        let mut page = HomePage {
            frame: session.frame(t.home),
            intro: t.home_intro,
            stats: None,
            checkpoint: None,
        };
        match session.role {
            crate::domain::Role::Auditor => {
                let answer = self
                    .audit
                    .get_checkpoint(session.request(pb::GetCheckpointRequest {}))
                    .await;
                page.checkpoint = Some(match answer {
                    Ok(cp) => {
                        let cp = cp.into_inner();
                        format!(
                            "{}: {} · {}",
                            t.tree_size,
                            session.lang.int(cp.tree_size),
                            session.lang.timestamp(cp.time.as_ref())
                        )
                    }
                    Err(_) => t.no_checkpoint.to_owned(),
                });
            }
            _ => match self.stats(session).await {
                Ok(stats) => page.stats = Some(stats),
                Err(status) => return refusal(session, &status, ""),
            },
        }
        html(&page)
    }

    async fn stats(&self, session: &Session) -> Result<Stats, tonic::Status> {
        let stats = self
            .mailbox
            .get_mailbox_stats(session.request(pb::GetMailboxStatsRequest {}))
            .await?
            .into_inner();
        let lang = session.lang;
        Ok(Stats {
            pending: lang.int(stats.pending_count),
            leased: lang.int(stats.leased_count),
            dead: lang.int(stats.dead_letter_count),
            oldest: lang.duration(stats.oldest_pending_age.map_or(0, |d| d.seconds)),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Referrals

#[derive(Template)]
#[template(path = "console/referrals.html")]
struct ReferralsPage {
    frame: Frame,
    states: Vec<Choice>,
    overdue: Vec<ReferralRow>,
    sections: Vec<Section>,
    more: bool,
}

pub(crate) struct Choice {
    value: String,
    label: String,
    selected: bool,
}

struct Section {
    id: String,
    heading: String,
    rows: Vec<ReferralRow>,
}

struct ReferralRow {
    id: String,
    kind: String,
    state: String,
    recipient: String,
    created: String,
    receive_due: String,
    assessment_due: String,
    overdue: Vec<String>,
    history: Vec<HistoryRow>,
}

struct HistoryRow {
    state: String,
    time: String,
    organization: String,
    reason: String,
    recipient: String,
}

const STATES: [pb::referral::State; 7] = [
    pb::referral::State::Requested,
    pb::referral::State::Received,
    pb::referral::State::Accepted,
    pb::referral::State::InProgress,
    pb::referral::State::Completed,
    pb::referral::State::Rejected,
    pb::referral::State::Cancelled,
];

fn referral_row(lang: Lang, r: &pb::Referral) -> ReferralRow {
    ReferralRow {
        id: id_of(&r.name),
        kind: lang.kind(r.kind),
        state: lang.state(r.state),
        recipient: org_of(&r.recipient),
        created: lang.timestamp(r.create_time.as_ref()),
        receive_due: lang.iso_date(&r.receive_due_date),
        assessment_due: lang.iso_date(&r.assessment_due_date),
        overdue: r
            .overdue
            .iter()
            .map(|d| format!("{} {}", lang.deadline(d.kind), lang.iso_date(&d.due_date)))
            .collect(),
        history: r
            .history
            .iter()
            .map(|h| HistoryRow {
                state: lang.state(h.state),
                time: lang.timestamp(h.time.as_ref()),
                organization: org_of(&h.organization),
                reason: h.reason.clone(),
                recipient: org_of(&h.recipient),
            })
            .collect(),
    }
}

/// How many referrals a page lists at most (one API page each).
const LIST_SIZE: i32 = 500;

impl Console {
    pub(super) async fn referrals(&self, session: &Session, query: &Form) -> Answer {
        let t = session.t;
        let lang = session.lang;
        let chosen = pb::referral::State::from_str_name(&query.value("state"))
            .filter(|s| *s != pb::referral::State::Unspecified);
        let state = chosen.map_or(0, |s| s as i32);
        let list = |overdue: bool| {
            self.referral
                .list_referrals(session.request(pb::ListReferralsRequest {
                    page_size: LIST_SIZE,
                    state,
                    overdue,
                    ..Default::default()
                }))
        };
        let overdue = match list(true).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => return refusal(session, &status, ""),
        };
        let all = match list(false).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => return refusal(session, &status, ""),
        };
        let overdue_names: std::collections::HashSet<&str> =
            overdue.referrals.iter().map(|r| r.name.as_str()).collect();
        let sections = STATES
            .iter()
            .filter(|s| chosen.is_none_or(|c| c == **s))
            .map(|s| Section {
                id: s.as_str_name().to_ascii_lowercase(),
                heading: lang.state(*s as i32),
                rows: all
                    .referrals
                    .iter()
                    .filter(|r| r.state == *s as i32 && !overdue_names.contains(r.name.as_str()))
                    .map(|r| referral_row(lang, r))
                    .collect(),
            })
            .collect();
        let mut states = vec![Choice {
            value: String::new(),
            label: t.all_states.to_owned(),
            selected: chosen.is_none(),
        }];
        states.extend(STATES.iter().map(|s| Choice {
            value: s.as_str_name().to_owned(),
            label: lang.state(*s as i32),
            selected: chosen == Some(*s),
        }));
        html(&ReferralsPage {
            frame: session.frame(t.referrals),
            states,
            overdue: overdue
                .referrals
                .iter()
                .map(|r| referral_row(lang, r))
                .collect(),
            sections,
            more: !overdue.next_page_token.is_empty() || !all.next_page_token.is_empty(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Mailbox

#[derive(Template)]
#[template(path = "console/mailbox.html")]
struct MailboxPage {
    frame: Frame,
    stats: Stats,
    redriven: Option<String>,
    dead_letters: Vec<DeadLetter>,
    dead_letters_more: bool,
    csrf: String,
    request_id: String,
    health: Option<Vec<Health>>,
    health_more: bool,
}

struct DeadLetter {
    id: String,
    /// The `request_id` of its redrive button, so that a resent form is a retry.
    request_id: String,
    kind: String,
    referral: String,
    published: String,
    reason: String,
}

struct Health {
    recipient: String,
    unreceived: String,
    oldest: String,
    overdue: String,
}

impl Console {
    pub(super) async fn mailbox_page(&self, session: &Session, query: &Form) -> Answer {
        let t = session.t;
        let lang = session.lang;
        let stats = match self.stats(session).await {
            Ok(stats) => stats,
            Err(status) => return refusal(session, &status, ""),
        };
        let dead = match self
            .mailbox
            .list_dead_letters(session.request(pb::ListDeadLettersRequest {
                page_size: 100,
                page_token: String::new(),
            }))
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(status) => return refusal(session, &status, ""),
        };
        let dead_letters = dead
            .messages
            .iter()
            .map(|m| DeadLetter {
                id: m.message_id.clone(),
                request_id: uuid::Uuid::new_v4().to_string(),
                kind: pb::message::Type::try_from(m.r#type)
                    .map(|k| k.as_str_name().to_owned())
                    .unwrap_or_default(),
                referral: m
                    .referral
                    .as_ref()
                    .map(|r| id_of(&r.name))
                    .unwrap_or_default(),
                published: lang.timestamp(m.publish_time.as_ref()),
                reason: m.dead_letter_reason.clone(),
            })
            .collect();
        // Kela sees a receiver's mailbox through its referrals: what is routed there and not yet
        // taken delivery of, and since when.
        let (health, health_more) = if session.role == crate::domain::Role::Referrer {
            let unreceived = match self
                .referral
                .list_referrals(session.request(pb::ListReferralsRequest {
                    page_size: 1000,
                    state: pb::referral::State::Requested as i32,
                    ..Default::default()
                }))
                .await
            {
                Ok(answer) => answer.into_inner(),
                Err(status) => return refusal(session, &status, ""),
            };
            let mut by_recipient: BTreeMap<String, (i64, Option<pbjson_types::Timestamp>, i64)> =
                BTreeMap::new();
            for r in &unreceived.referrals {
                let entry = by_recipient
                    .entry(org_of(&r.recipient))
                    .or_insert((0, None, 0));
                entry.0 += 1;
                if let Some(created) = &r.create_time
                    && entry.1.as_ref().is_none_or(|oldest| {
                        (created.seconds, created.nanos) < (oldest.seconds, oldest.nanos)
                    })
                {
                    entry.1 = Some(*created);
                }
                if r.overdue
                    .iter()
                    .any(|d| d.kind == pb::deadline::Kind::Receipt as i32)
                {
                    entry.2 += 1;
                }
            }
            let rows = by_recipient
                .into_iter()
                .map(|(recipient, (count, oldest, overdue))| Health {
                    recipient,
                    unreceived: lang.int(count),
                    oldest: lang.timestamp(oldest.as_ref()),
                    overdue: lang.int(overdue),
                })
                .collect();
            (Some(rows), !unreceived.next_page_token.is_empty())
        } else {
            (None, false)
        };
        let redriven = query
            .first("redriven")
            .and_then(|n| n.parse::<i64>().ok())
            .map(|n| format!("{}: {}", t.redriven, lang.int(n)));
        html(&MailboxPage {
            frame: session.frame(t.mailbox),
            stats,
            redriven,
            dead_letters,
            dead_letters_more: !dead.next_page_token.is_empty(),
            csrf: session.csrf.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            health,
            health_more,
        })
    }

    /// Redrives the dead letters named in the form (all when none), then back to the mailbox.
    pub(super) async fn redrive(&self, session: &Session, form: Form) -> Answer {
        let request_id = form.value("request_id");
        let answer = self
            .mailbox
            .redrive_dead_letters(session.request(pb::RedriveDeadLettersRequest {
                message_ids: form.all("message_id"),
                request_id,
            }))
            .await;
        match answer {
            Ok(answer) => Answer::SeeOther(format!(
                "/console/mailbox?redriven={}",
                answer.into_inner().redriven_count
            )),
            Err(status) => refusal(session, &status, ""),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subject access report

#[derive(Template)]
#[template(path = "console/access_report.html")]
struct AccessReportPage {
    frame: Frame,
    csrf: String,
    start: String,
    end: String,
    report: Option<Report>,
}

struct Report {
    pseudonym: String,
    period: String,
    processing: Vec<ProcessingRow>,
    disclosures: Vec<DisclosureRow>,
    consent_events: Vec<ConsentRow>,
}

struct ProcessingRow {
    time: String,
    organization: String,
    user: String,
    method: String,
    resources: String,
    status: String,
}

struct DisclosureRow {
    time: String,
    recipient: String,
    resource: String,
    basis: String,
    consent_state: String,
    by: String,
}

pub(crate) struct ConsentRow {
    time: String,
    consent: String,
    kind: String,
    organization: String,
    user: String,
    referral: String,
}

fn consent_row(lang: Lang, e: &pb::ConsentEvent) -> ConsentRow {
    ConsentRow {
        time: lang.timestamp(e.time.as_ref()),
        consent: id_of(&e.consent),
        kind: lang.consent_event(e.r#type),
        organization: org_of(&e.organization),
        user: e.user_id.clone(),
        referral: id_of(&e.referral),
    }
}

impl Console {
    pub(super) async fn access_report(&self, session: &Session, form: Option<Form>) -> Answer {
        let t = session.t;
        let lang = session.lang;
        let mut page = AccessReportPage {
            frame: session.frame(t.access_report),
            csrf: session.csrf.clone(),
            start: String::new(),
            end: String::new(),
            report: None,
        };
        let Some(form) = form else {
            return html(&page);
        };
        page.start = form.value("start");
        page.end = form.value("end");
        let Ok(start_time) = day_start(&page.start) else {
            return bad_form(session, "start");
        };
        let Ok(end_time) = day_start(&page.end) else {
            return bad_form(session, "end");
        };
        let answer = self
            .audit
            .get_subject_access_report(session.request(pb::GetSubjectAccessReportRequest {
                personal_identity_code: form.value("identity_code"),
                start_time,
                end_time,
            }))
            .await;
        let report = match answer {
            Ok(answer) => answer.into_inner(),
            Err(status) => return refusal(session, &status, ""),
        };
        page.report = Some(Report {
            pseudonym: report.subject_pseudonym.clone(),
            period: format!(
                "{} – {}",
                lang.timestamp(report.start_time.as_ref()),
                lang.timestamp(report.end_time.as_ref())
            ),
            processing: report
                .processing
                .iter()
                .map(|p| ProcessingRow {
                    time: lang.timestamp(p.time.as_ref()),
                    organization: org_of(&p.organization),
                    user: p.user_id.clone(),
                    method: method_of(&p.method),
                    resources: p.resources.join(", "),
                    status: p.status.clone(),
                })
                .collect(),
            disclosures: report
                .disclosures
                .iter()
                .map(|d| DisclosureRow {
                    time: lang.timestamp(d.time.as_ref()),
                    recipient: org_of(&d.recipient),
                    resource: d.resource.clone(),
                    basis: d.basis.clone(),
                    consent_state: d.consent_state.clone(),
                    by: format!(
                        "{} {} ({})",
                        org_of(&d.organization),
                        d.user_id,
                        method_of(&d.method)
                    ),
                })
                .collect(),
            consent_events: report
                .consent_events
                .iter()
                .map(|e| consent_row(lang, e))
                .collect(),
        });
        html(&page)
    }
}

// ---------------------------------------------------------------------------------------------
// Audit events and the consent log: filters by GET (nothing personal), an identity code by POST.

#[derive(Template)]
#[template(path = "console/audit_events.html")]
struct AuditEventsPage {
    frame: Frame,
    csrf: String,
    filters: Vec<Filter>,
    events: Vec<EventRow>,
    next: Option<String>,
    more: bool,
}

/// A filter field of a search form, with the value it was searched with.
struct Filter {
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    value: String,
}

/// The value the search was made with for the filter `name` (empty if none).
fn filter_value(filters: &[Filter], name: &str) -> String {
    filters
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.value.clone())
        .unwrap_or_default()
}

/// What was typed as a resource name: as it is when empty or already a name, else
/// `<collection>/<value>` (an id typed on its own).
fn resource_name(collection: &str, value: String) -> String {
    if value.is_empty() || value.contains('/') {
        value
    } else {
        format!("{collection}/{value}")
    }
}

struct EventRow {
    sequence: String,
    time: String,
    organization: String,
    user: String,
    method: String,
    resources: String,
    status: String,
    pseudonym: String,
    correlation: String,
}

#[derive(Template)]
#[template(path = "console/consent_log.html")]
struct ConsentLogPage {
    frame: Frame,
    csrf: String,
    filters: Vec<Filter>,
    events: Vec<ConsentRow>,
    next: Option<String>,
    more: bool,
}

/// The link to the next page of a GET search: its filters and the token.
fn next_link(path: &str, filters: &[Filter], token: &str) -> Option<String> {
    if token.is_empty() {
        return None;
    }
    let mut pairs: Vec<(&str, &str)> = filters
        .iter()
        .filter(|f| !f.value.is_empty())
        .map(|f| (f.name, f.value.as_str()))
        .collect();
    pairs.push(("page_token", token));
    serde_urlencoded::to_string(pairs)
        .ok()
        .map(|q| format!("{path}?{q}"))
}

impl Console {
    pub(super) async fn audit_events(
        &self,
        session: &Session,
        query: &Form,
        form: Option<Form>,
    ) -> Answer {
        let t = session.t;
        let lang = session.lang;
        let by_post = form.is_some();
        let input = form.as_ref().unwrap_or(query);
        let filters = vec![
            Filter {
                name: "organization",
                label: t.organization,
                kind: "text",
                value: input.value("organization"),
            },
            Filter {
                name: "user_id",
                label: t.user,
                kind: "text",
                value: input.value("user_id"),
            },
            Filter {
                name: "method",
                label: t.method,
                kind: "text",
                value: input.value("method"),
            },
            Filter {
                name: "resource",
                label: t.resource,
                kind: "text",
                value: input.value("resource"),
            },
            Filter {
                name: "start",
                label: t.start_date,
                kind: "date",
                value: input.value("start"),
            },
            Filter {
                name: "end",
                label: t.end_date,
                kind: "date",
                value: input.value("end"),
            },
        ];
        // Opened without filters, the page lists the trail from its start, a page at a time.
        let mut page = AuditEventsPage {
            frame: session.frame(t.audit_events),
            csrf: session.csrf.clone(),
            filters,
            events: Vec::new(),
            next: None,
            more: false,
        };
        let value = |name: &str| filter_value(&page.filters, name);
        let Ok(start_time) = day_start(&value("start")) else {
            return bad_form(session, "start");
        };
        let Ok(end_time) = day_start(&value("end")) else {
            return bad_form(session, "end");
        };
        let request = pb::ListAuditEventsRequest {
            personal_identity_code: if by_post {
                input.value("identity_code")
            } else {
                String::new()
            },
            organization: resource_name("organizations", value("organization")),
            user_id: value("user_id"),
            method: value("method"),
            resource: value("resource"),
            start_time,
            end_time,
            page_size: 100,
            page_token: if by_post {
                String::new()
            } else {
                query.value("page_token")
            },
        };
        let answer = match self.audit.list_audit_events(session.request(request)).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => return refusal(session, &status, ""),
        };
        page.events = answer
            .audit_events
            .iter()
            .map(|e| EventRow {
                sequence: lang.int(e.sequence),
                time: lang.timestamp(e.time.as_ref()),
                organization: org_of(&e.organization),
                user: e.user_id.clone(),
                method: method_of(&e.method),
                resources: e.resources.join(", "),
                status: e.status.clone(),
                pseudonym: e.subject_pseudonym.chars().take(12).collect(),
                correlation: e.correlation_id.clone(),
            })
            .collect();
        // A search by identity code is not paged: its next page would need the code again.
        if by_post {
            page.more = !answer.next_page_token.is_empty();
        } else {
            page.next = next_link(
                "/console/audit-events",
                &page.filters,
                &answer.next_page_token,
            );
        }
        html(&page)
    }

    pub(super) async fn consent_log(
        &self,
        session: &Session,
        query: &Form,
        form: Option<Form>,
    ) -> Answer {
        let t = session.t;
        let lang = session.lang;
        let by_post = form.is_some();
        let input = form.as_ref().unwrap_or(query);
        let filters = vec![
            Filter {
                name: "organization",
                label: t.organization,
                kind: "text",
                value: input.value("organization"),
            },
            Filter {
                name: "consent",
                label: t.consent,
                kind: "text",
                value: input.value("consent"),
            },
            Filter {
                name: "start",
                label: t.start_date,
                kind: "date",
                value: input.value("start"),
            },
            Filter {
                name: "end",
                label: t.end_date,
                kind: "date",
                value: input.value("end"),
            },
        ];
        let value = |name: &str| filter_value(&filters, name);
        let Ok(start_time) = day_start(&value("start")) else {
            return bad_form(session, "start");
        };
        let Ok(end_time) = day_start(&value("end")) else {
            return bad_form(session, "end");
        };
        let request = pb::ListConsentEventsRequest {
            personal_identity_code: if by_post {
                input.value("identity_code")
            } else {
                String::new()
            },
            organization: resource_name("organizations", value("organization")),
            consent: resource_name("consents", value("consent")),
            start_time,
            end_time,
            page_size: 100,
            page_token: if by_post {
                String::new()
            } else {
                query.value("page_token")
            },
        };
        let answer = match self
            .consent
            .list_consent_events(session.request(request))
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(status) => return refusal(session, &status, ""),
        };
        let mut page = ConsentLogPage {
            frame: session.frame(t.consent_log),
            csrf: session.csrf.clone(),
            events: answer
                .consent_events
                .iter()
                .map(|e| consent_row(lang, e))
                .collect(),
            next: None,
            more: false,
            filters,
        };
        if by_post {
            page.more = !answer.next_page_token.is_empty();
        } else {
            page.next = next_link(
                "/console/consent-log",
                &page.filters,
                &answer.next_page_token,
            );
        }
        html(&page)
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint and verification

#[derive(Template)]
#[template(path = "console/checkpoint.html")]
struct CheckpointPage {
    frame: Frame,
    csrf: String,
    checkpoint: Option<CheckpointView>,
    missing: String,
    verification: Option<Verification>,
}

struct CheckpointView {
    origin: String,
    tree_size: String,
    root_hash: String,
    time: String,
    verifier_key: String,
    note: String,
}

struct Verification {
    ok: bool,
    heading: String,
    /// What was checked, one line each.
    checked: Vec<String>,
    failure: String,
}

impl Console {
    /// The latest checkpoint; with `verify`, also the whole log exported and checked against it.
    pub(super) async fn checkpoint(&self, session: &Session, verify: bool) -> Answer {
        let t = session.t;
        let lang = session.lang;
        let mut page = CheckpointPage {
            frame: session.frame(t.checkpoint),
            csrf: session.csrf.clone(),
            checkpoint: None,
            missing: String::new(),
            verification: None,
        };
        let cp = match self
            .audit
            .get_checkpoint(session.request(pb::GetCheckpointRequest {}))
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                page.missing = t.no_checkpoint.to_owned();
                return html(&page);
            }
            Err(status) => return refusal(session, &status, ""),
        };
        page.checkpoint = Some(CheckpointView {
            origin: cp.origin.clone(),
            tree_size: lang.int(cp.tree_size),
            root_hash: hex::encode(&cp.root_hash),
            time: lang.timestamp(cp.time.as_ref()),
            verifier_key: cp.verifier_key.clone(),
            note: cp.checkpoint.clone(),
        });
        if verify {
            page.verification = Some(match self.verify_log(session, &cp).await {
                Ok(outcome) => outcome,
                Err(status) => return refusal(session, &status, ""),
            });
        }
        html(&page)
    }

    /// Exports the leaves of `cp`'s tree and re-derives its root with the same check as
    /// `referral-exchange audit verify`, as the leaves arrive.
    async fn verify_log(
        &self,
        session: &Session,
        cp: &pb::GetCheckpointResponse,
    ) -> Result<Verification, tonic::Status> {
        let t = session.t;
        let lang = session.lang;
        let mut export = self
            .audit
            .export_audit_events(session.request(pb::ExportAuditEventsRequest {
                start_index: 0,
                end_index: cp.tree_size,
            }))
            .await?
            .into_inner();
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<pb::AuditEvent>(256);
        let (key, note) = (cp.verifier_key.clone(), cp.checkpoint.clone());
        let checking = tokio::task::spawn_blocking(move || {
            crate::grpc::log_verify::verify(
                &key,
                &note,
                None,
                std::iter::from_fn(|| receiver.blocking_recv()),
            )
        });
        let mut broken = None;
        while let Some(event) = export.next().await {
            match event {
                Ok(event) => {
                    if sender.send(event).await.is_err() {
                        break;
                    }
                }
                Err(status) => {
                    broken = Some(status);
                    break;
                }
            }
        }
        drop(sender);
        let outcome = checking
            .await
            .map_err(|e| tonic::Status::internal(format!("the verification stopped: {e}")))?;
        if let Some(status) = broken {
            return Err(status);
        }
        Ok(match outcome {
            Ok(verified) => Verification {
                ok: true,
                heading: t.verified_title.to_owned(),
                checked: vec![
                    t.checked_signature.to_owned(),
                    format!(
                        "{}: {}.",
                        t.checked_leaves,
                        lang.int(verified.leaves_verified as i64)
                    ),
                    t.checked_fields.to_owned(),
                    format!("{}: {}.", t.checked_root, verified.root_hash),
                ],
                failure: String::new(),
            },
            Err(failure) => Verification {
                ok: false,
                heading: t.verify_failed_title.to_owned(),
                checked: Vec::new(),
                failure: failure.to_string(),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Template)]
#[template(path = "console/statistics.html")]
struct StatisticsPage {
    frame: Frame,
    start: String,
    end: String,
    window: String,
    suppressed_note: String,
    reasons: Table,
    areas: Table,
    months: Vec<MonthRow>,
    reasons_chart: Chart,
    areas_chart: Chart,
    months_chart: Chart,
}

struct Table {
    rows: Vec<CountRow>,
}

struct CountRow {
    label: String,
    referrals: String,
    people: String,
    total: bool,
}

struct MonthRow {
    month: String,
    referrals: String,
    received: String,
    within: String,
    share: String,
    median: String,
}

impl Console {
    pub(super) async fn statistics(&self, session: &Session, query: &Form) -> Answer {
        let t = session.t;
        let lang = session.lang;
        let today = crate::domain::calendar::helsinki_date(self.exchange.clock.now());
        let default_start = today - chrono::Duration::days(365);
        let default_end = today + chrono::Duration::days(1);
        let start = match query.value("start") {
            s if s.is_empty() => default_start.to_string(),
            s => s,
        };
        let end = match query.value("end") {
            s if s.is_empty() => default_end.to_string(),
            s => s,
        };
        let (Ok(Some(start_time)), Ok(Some(end_time))) = (day_start(&start), day_start(&end))
        else {
            return bad_form(session, "start, end");
        };
        let mut tables = Vec::new();
        for dimension in [
            pb::Dimension::Reason,
            pb::Dimension::Recipient,
            pb::Dimension::Month,
        ] {
            match self
                .reporting
                .get_referral_statistics(session.request(pb::GetReferralStatisticsRequest {
                    start_time: Some(start_time),
                    end_time: Some(end_time),
                    group_by: vec![dimension as i32],
                }))
                .await
            {
                Ok(answer) => tables.push((dimension, answer.into_inner())),
                Err(status) => return refusal(session, &status, ""),
            }
        }
        let min_cell = tables.first().map_or(0, |(_, s)| s.min_cell_size);
        let mark = t.suppressed;
        let figure = |cell: &pb::StatisticsCell, n: i64| {
            if cell.suppressed {
                mark.to_owned()
            } else {
                lang.int(n)
            }
        };
        let mut reasons = Table { rows: Vec::new() };
        let mut areas = Table { rows: Vec::new() };
        let mut months = Vec::new();
        let (mut reason_bars, mut area_bars, mut month_bars) = (Vec::new(), Vec::new(), Vec::new());
        for (dimension, table) in &tables {
            for cell in &table.cells {
                let key = cell.keys.get(dimension.as_str_name());
                let label = match (dimension, key) {
                    (_, None) => t.total.to_owned(),
                    (pb::Dimension::Reason, Some(k)) => lang.reason(k),
                    (pb::Dimension::Recipient, Some(k)) => org_of(k),
                    (_, Some(k)) => k.clone(),
                };
                let value = (!cell.suppressed).then_some(cell.referral_count as f64);
                match dimension {
                    pb::Dimension::Reason | pb::Dimension::Recipient => {
                        let row = CountRow {
                            label: label.clone(),
                            referrals: figure(cell, cell.referral_count),
                            people: figure(cell, cell.person_count),
                            total: key.is_none(),
                        };
                        if key.is_some() {
                            let bar = Row {
                                label,
                                value,
                                text: row.referrals.clone(),
                            };
                            if *dimension == pb::Dimension::Reason {
                                reason_bars.push(bar);
                            } else {
                                area_bars.push(bar);
                            }
                        }
                        if *dimension == pb::Dimension::Reason {
                            reasons.rows.push(row);
                        } else {
                            areas.rows.push(row);
                        }
                    }
                    _ => {
                        let share = if cell.suppressed {
                            mark.to_owned()
                        } else {
                            lang.percent(cell.received_within_deadline_count, cell.received_count)
                        };
                        if key.is_some() {
                            month_bars.push(Row {
                                label: label.clone(),
                                value: (!cell.suppressed && cell.received_count > 0).then(|| {
                                    cell.received_within_deadline_count as f64 * 100.0
                                        / cell.received_count as f64
                                }),
                                text: share.clone(),
                            });
                        }
                        months.push(MonthRow {
                            month: label,
                            referrals: figure(cell, cell.referral_count),
                            received: figure(cell, cell.received_count),
                            within: figure(cell, cell.received_within_deadline_count),
                            share,
                            median: match (cell.suppressed, cell.median_working_days_to_receipt) {
                                (true, _) => mark.to_owned(),
                                (false, Some(m)) => lang.decimal(m),
                                (false, None) => "–".into(),
                            },
                        });
                    }
                }
            }
        }
        html(&StatisticsPage {
            frame: session.frame(t.statistics),
            window: format!("{} – {}", lang.iso_date(&start), lang.iso_date(&end)),
            start,
            end,
            suppressed_note: t.suppressed_note.replace("{}", &min_cell.to_string()),
            reasons,
            areas,
            months,
            reasons_chart: Chart::new("chart-reasons", t.reasons_chart, reason_bars, None),
            areas_chart: Chart::new("chart-areas", t.areas_chart, area_bars, None),
            months_chart: Chart::new("chart-months", t.compliance_chart, month_bars, Some(100.0)),
        })
    }
}
