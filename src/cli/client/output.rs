//! What the client prints besides a response's JSON: the subject access report as a table,
//! and a refused call as one line of JSON on stderr (or a transport failure as text).

use chrono::DateTime;
use serde::Serialize;
use tonic::Status;
use tonic_types::StatusExt as _;

use super::{EXIT_NOT_APPLIED, EXIT_REFUSED, EXIT_TRANSPORT, TlsFiles};
use crate::proto::v1::{
    AckResult, GetSubjectAccessReportResponse, ack_result, consent, consent_event,
};

// ---- statistics as a table ----

/// What a suppressed figure shows in a table.
pub(super) const SUPPRESSED: &str = "·";

/// `referral-statistics --format table`: one line per cell, figures right-aligned, suppressed
/// figures as [`SUPPRESSED`], and a line saying what that means.
pub(super) fn statistics_table(
    dimensions: &[String],
    response: &crate::proto::v1::GetReferralStatisticsResponse,
) -> String {
    use std::fmt::Write as _;
    let mut header: Vec<String> = dimensions.to_vec();
    header.extend(
        [
            "REFERRALS",
            "PEOPLE",
            "RECEIVED",
            "MEDIAN DAYS",
            "RECEIVED ON TIME",
            "STARTED ON TIME",
            "OVERDUE",
        ]
        .map(str::to_owned),
    );
    let rows: Vec<Vec<String>> = response
        .cells
        .iter()
        .map(|cell| {
            let mut row = crate::grpc::reporting::table_row(dimensions, cell);
            // The `suppressed` column becomes the mark in every figure.
            let suppressed = row.remove(dimensions.len()) == "true";
            for figure in row.iter_mut().skip(dimensions.len()) {
                if suppressed {
                    *figure = SUPPRESSED.to_owned();
                } else if figure.is_empty() {
                    *figure = "-".to_owned();
                }
            }
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < dimensions.len() {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let _ = writeln!(
        out,
        "\n{SUPPRESSED} suppressed: fewer than {} people, or would let such a cell be worked out \
         from its row or column. (all): the total over that dimension. Days are working days.",
        response.min_cell_size
    );
    out
}

// ---- the subject access report as a table ----

/// A time as people in Finland read it: Helsinki time with its offset.
fn local_time(t: Option<&pbjson_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| {
            t.with_timezone(&chrono_tz::Europe::Helsinki)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        })
        .unwrap_or_default()
}

/// The last segment of a method path: `GetReferral`.
fn short_method(method: &str) -> &str {
    method.rsplit('/').next().unwrap_or(method)
}

/// The width tables are fitted to: `COLUMNS` when set (the shells' convention, for a script that
/// wants another width), else the terminal's when the output is one, else 100 columns (a file or a
/// pipe, read later in an editor or printed).
pub(super) fn table_width() -> usize {
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok());
    match columns {
        Some(columns) if columns >= 20 => columns,
        _ if std::io::IsTerminal::is_terminal(&std::io::stdout()) => textwrap::termwidth(),
        _ => 100,
    }
}

/// A column is never made narrower than this to fit the width: below it, words break too often.
const MIN_COLUMN: usize = 8;

/// Rows under a heading, in columns at most as wide as their widest cell, and together at most
/// `width` wide: the widest columns give way first, and their cells wrap onto further lines.
fn table(out: &mut String, heading: &str, header: &[&str], rows: Vec<Vec<String>>, width: usize) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\n{heading} ({})", rows.len());
    if rows.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Two spaces before the first column and between columns. The widest columns give way first,
    // down to their longest word (a resource name stays whole), and only then below it.
    let budget = width.saturating_sub(2 * widths.len());
    // Each column's longest word (a resource name, a time's date): kept whole where it fits.
    let mut longest = vec![0; widths.len()];
    for cells in std::iter::once(header.to_vec())
        .chain(rows.iter().map(|r| r.iter().map(String::as_str).collect()))
    {
        for (longest, cell) in longest.iter_mut().zip(cells) {
            let word = cell
                .split(' ')
                .map(|w| w.chars().count())
                .max()
                .unwrap_or(0);
            *longest = (*longest).max(word);
        }
    }
    let mut words: Vec<usize> = longest.iter().map(|w| (*w).max(MIN_COLUMN)).collect();
    let mut least = vec![MIN_COLUMN; widths.len()];
    // The first column, the time, is never wrapped: a time on two lines reads as two events.
    if let (Some(word), Some(min), Some(time)) =
        (words.first_mut(), least.first_mut(), widths.first())
    {
        (*word, *min) = (*time, *time);
    }
    for floors in [words, least] {
        while widths.iter().sum::<usize>() > budget {
            let Some((widest, floor)) = widths
                .iter_mut()
                .zip(&floors)
                .filter(|(w, floor)| **w > **floor)
                .max_by_key(|(w, _)| **w)
            else {
                break;
            };
            *widest = (*widest - 1).max(*floor);
        }
    }
    let mut line = |cells: Vec<&str>| {
        let wrapped: Vec<Vec<std::borrow::Cow<'_, str>>> = cells
            .iter()
            .zip(&widths)
            .zip(&longest)
            .map(|((cell, w), longest)| {
                // A column as wide as its longest word breaks lines between words only; a
                // narrower one also after hyphens, and inside a word only as a last resort.
                let splitter = if w >= longest {
                    textwrap::WordSplitter::NoHyphenation
                } else {
                    textwrap::WordSplitter::HyphenSplitter
                };
                textwrap::wrap(cell, textwrap::Options::new(*w).word_splitter(splitter))
            })
            .collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for k in 0..height {
            let padded: Vec<String> = wrapped
                .iter()
                .zip(&widths)
                .map(|(lines, w)| format!("{:<w$}", lines.get(k).map_or("", |l| l.as_ref())))
                .collect();
            let _ = writeln!(out, "  {}", padded.join("  ").trim_end());
        }
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

/// `get-subject-access-report --format table`: three sections, times in Helsinki time. The
/// identity code is not printed: whoever asked knows it, and the output may travel.
pub(super) fn report_table(report: &GetSubjectAccessReportResponse, width: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "SUBJECT ACCESS REPORT (Act 703/2023 §11)");
    let _ = writeln!(
        out,
        "Period: {} to {}",
        local_time(report.start_time.as_ref()),
        local_time(report.end_time.as_ref())
    );
    let _ = writeln!(
        out,
        "Pseudonym in the audit log: {}",
        report.subject_pseudonym
    );
    let processing = report
        .processing
        .iter()
        .map(|p| {
            vec![
                local_time(p.time.as_ref()),
                or_dash(&p.organization),
                or_dash(&p.user_id),
                short_method(&p.method).to_owned(),
                p.status.clone(),
                p.resources.join(" "),
                p.leaf_index
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &mut out,
        "WHO PROCESSED THE DATA",
        &[
            "TIME",
            "ORGANIZATION",
            "USER",
            "ACTION",
            "RESULT",
            "RESOURCES",
            "LEAF",
        ],
        processing,
        width,
    );
    let disclosures = report
        .disclosures
        .iter()
        .map(|d| {
            let basis = match (d.consent_state.as_str(), d.consent_version) {
                ("", _) => d.basis.clone(),
                (state, version) => format!("{} ({state}, v{version})", d.basis),
            };
            vec![
                local_time(d.time.as_ref()),
                d.recipient.clone(),
                d.resource.clone(),
                basis,
                format!(
                    "{} {} {}",
                    or_dash(&d.organization),
                    or_dash(&d.user_id),
                    short_method(&d.method)
                ),
            ]
        })
        .collect();
    table(
        &mut out,
        "WHAT WAS DISCLOSED TO WHOM",
        &[
            "TIME",
            "RECIPIENT",
            "WHAT",
            "BASIS",
            "BY (ORGANIZATION USER ACTION)",
        ],
        disclosures,
        width,
    );
    let consent_events = report
        .consent_events
        .iter()
        .map(|e| {
            let kind = consent_event::Type::try_from(e.r#type)
                .map(|t| t.as_str_name().to_owned())
                .unwrap_or_else(|_| e.r#type.to_string());
            let state = consent::State::try_from(e.consent_state)
                .map(|t| t.as_str_name().to_owned())
                .unwrap_or_else(|_| e.consent_state.to_string());
            vec![
                local_time(e.time.as_ref()),
                e.consent.clone(),
                kind,
                state,
                or_dash(&e.organization),
                or_dash(&e.user_id),
                or_dash(&e.referral),
            ]
        })
        .collect();
    table(
        &mut out,
        "CONSENT EVENTS",
        &[
            "TIME",
            "CONSENT",
            "EVENT",
            "STATE AFTER",
            "ORGANIZATION",
            "USER",
            "REFERRAL",
        ],
        consent_events,
        width,
    );
    out
}

// ---- waiting ----

/// What a person at a terminal is told while the command waits for up to `seconds` (None: for as
/// long as it runs), or nothing: no notice for a wait of a second or less, and none where stderr is
/// not a terminal (a script reads only the result).
fn wait_notice(stderr_is_terminal: bool, what: &str, seconds: Option<u32>) -> Option<String> {
    match seconds {
        _ if !stderr_is_terminal => None,
        Some(s) if s <= 1 => None,
        Some(s) => Some(format!("waiting up to {s} s {what}…")),
        None => Some(format!("waiting {what}… (Ctrl-C ends)")),
    }
}

/// A notice on stderr while the command waits, erased when the wait ends (dropped).
pub(super) struct Waiting {
    shown: bool,
}

impl Waiting {
    pub(super) fn show(what: &str, seconds: Option<u32>) -> Self {
        let notice = wait_notice(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            what,
            seconds,
        );
        if let Some(notice) = &notice {
            eprint!("{notice}");
        }
        Self {
            shown: notice.is_some(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.shown {
            // Back to the start of the line, and clear it.
            eprint!("\r\x1b[K");
        }
    }
}

// ---- errors ----

/// The JSON written to stderr for a refused call: what a script needs to decide what to do next.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct ErrorReport {
    /// The gRPC code as its canonical upper-snake name (`INVALID_ARGUMENT`).
    code: &'static str,
    message: String,
    /// `ErrorInfo.reason`: the machine-readable cause (AIP-193), if the server sent one.
    reason: Option<String>,
    field_violations: Vec<FieldViolationReport>,
    precondition_violations: Vec<PreconditionViolationReport>,
    /// What to do about it on this command line, when the server's words name only the API
    /// (`x-user-id` rather than `--user`). Left out when there is nothing to add.
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct FieldViolationReport {
    /// The API's field path, as the server named it (`lease_duration`).
    field: String,
    reason: String,
    description: String,
    /// The flag of this client that sets the field (`--lease-seconds`), when there is one: the
    /// server speaks proto, the person typed flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    flag: Option<&'static str>,
}

/// The client flag that sets the request field `field` (indices such as `[2]` ignored). One
/// table for every command: a field name means the same in every request that has it.
fn flag_for_field(field: &str) -> Option<&'static str> {
    let path: String = {
        // `consent.recipients[1]` → `consent.recipients`.
        let mut path = String::with_capacity(field.len());
        let mut depth = 0_u32;
        for c in field.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                _ if depth == 0 => path.push(c),
                _ => {}
            }
        }
        path
    };
    // The last segment decides, except where a message prefix changes the flag.
    let flag = match path.as_str() {
        "consent.subject.personal_identity_code"
        | "referral.subject.personal_identity_code"
        | "personal_identity_code" => "--identity-code",
        "consent.recipients" | "recipient" => "--recipient",
        "consent.expire_time" => "--expire-time (or --valid-days)",
        "consent.valid_from" => "--valid-from",
        "consent.form" => "--form",
        "consent.given_by" => "--given-by",
        "consent.purpose" => "--purpose",
        "consent.evidence_reference" => "--evidence-reference",
        "referral.kind" | "kind" => "--kind",
        "referral.home_municipality_code" | "home_municipality_code" => "--home-municipality",
        "referral.current_municipality_code" => "--current-municipality",
        "referral.reasons" => "--reason",
        "referral.reason_text" | "reason_text" => "--reason-text",
        "referral.deadline_group" => "--deadline-group",
        "referral.consent" => "--consent",
        "referral.statutory_ground" => "--statutory-ground",
        "referral.application_reference" => "--application-reference",
        "referral.subject.name" => "--name",
        "referral.subject.contact_phone" => "--phone",
        "referral.subject.preferred_language" => "--language",
        "lease_duration" => "--lease-seconds",
        "wait_duration" => "--wait-seconds",
        "max_messages" => "--max-messages",
        "max_outstanding_messages" => "--max-outstanding",
        "page_size" => "--page-size",
        "page_token" => "--page-token",
        "request_id" => "--request-id",
        "etag" => "--etag",
        "outcome" => "--outcome",
        "reason" => "--reason",
        "start_time" => "--start-time",
        "end_time" => "--end-time",
        "create_time_start" => "--created-after",
        "create_time_end" => "--created-before",
        "organization" => "--organization",
        "user_id" => "--user-id",
        "method" => "--method",
        "resource" => "--resource",
        "state" => "--state",
        "role" => "--role",
        "date" => "--date",
        "leaf_index" => "--leaf-index",
        "tree_size" => "--tree-size",
        "first_tree_size" => "--first",
        "second_tree_size" => "--second",
        "start_index" => "--start-index",
        "end_index" => "--end-index",
        "since_sequence" => "--since-sequence",
        _ => return None,
    };
    Some(flag)
}

/// What to do, for refusals whose server message names API metadata rather than flags.
fn hint_for(reason: Option<&str>, violations: &[FieldViolationReport]) -> Option<String> {
    match reason {
        Some("USER_ID_MISSING") => {
            return Some(
                "name the person acting with --user ID (or the environment variable \
                 REFERRAL_EXCHANGE_USER); it is sent as x-user-id"
                    .into(),
            );
        }
        Some("USER_ID_INVALID") => {
            return Some(
                "--user (REFERRAL_EXCHANGE_USER) is sent as x-user-id; give the handler's or \
                 worker's id as the server's message says"
                    .into(),
            );
        }
        _ => {}
    }
    let fixes: Vec<String> = violations
        .iter()
        .filter_map(|v| v.flag.map(|flag| format!("{flag}: {}", v.description)))
        .collect();
    (!fixes.is_empty()).then(|| fixes.join("; "))
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct PreconditionViolationReport {
    #[serde(rename = "type")]
    kind: String,
    subject: String,
    description: String,
}

/// Decodes the `google.rpc.Status` details of `status` (malformed details count as none).
fn error_report(status: &Status) -> ErrorReport {
    let details = status.get_error_details();
    let reason = details.error_info().map(|info| info.reason.clone());
    let field_violations: Vec<FieldViolationReport> = details
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| FieldViolationReport {
                    field: v.field.clone(),
                    reason: v.reason.clone(),
                    description: v.description.clone(),
                    flag: flag_for_field(&v.field),
                })
                .collect()
        })
        .unwrap_or_default();
    ErrorReport {
        code: code_name(status.code()),
        message: status.message().to_owned(),
        hint: hint_for(reason.as_deref(), &field_violations),
        reason,
        field_violations,
        precondition_violations: details
            .precondition_failure()
            .map(|failure| {
                failure
                    .violations
                    .iter()
                    .map(|v| PreconditionViolationReport {
                        kind: v.r#type.clone(),
                        subject: v.subject.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Whether `status` was made on this side from a broken connection rather than sent by the
/// server. tonic attaches the underlying error as `source` only to statuses it makes itself from
/// transport failures (e.g. the TLS alert of a server that refused our certificate, which under
/// TLS 1.3 arrives with the first call); a status decoded from the server's trailers has none.
fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// What to do about a failed TLS connection, naming the file concerned: the error itself says
/// only what rustls saw (`UnknownIssuer`), not which of the three files given is the wrong one.
pub(super) fn tls_hint(chain: &str, files: &TlsFiles) -> Option<String> {
    let has = |needle: &str| chain.contains(needle);
    if has("invalid peer certificate") {
        // We refused the server's certificate.
        if has("not valid for name") || has("NotValidForName") {
            return Some(format!(
                "the server's certificate does not carry the name this client checks; give the \
                 name it does carry with --server-name (REFERRAL_EXCHANGE_SERVER_NAME) [CA file \
                 used: {}]",
                files.ca.display()
            ));
        }
        return Some(format!(
            "the server's certificate was not issued by the CA in {} (--ca, \
             REFERRAL_EXCHANGE_CA, or the profile's ca.pem); give the CA file of the exchange \
             this server belongs to",
            files.ca.display()
        ));
    }
    if has("UnknownCA") || has("DecryptError") || has("BadCertificate") {
        // The server refused ours (the TLS 1.3 alert arrives with the first call).
        return Some(format!(
            "the server refused the client certificate {}: it was not issued by a CA the server \
             trusts (this client trusts {} for the server; the two need not be the same file, \
             but both must be the exchange's)",
            files.cert.display(),
            files.ca.display()
        ));
    }
    if has("CertificateRequired") {
        return Some(format!(
            "the server asked for a client certificate and got none; check {}",
            files.cert.display()
        ));
    }
    // Under TLS 1.3 the client may not even get the server's alert: its first call finds the
    // connection gone.
    if [
        "UnsupportedCertificate",
        "CertificateUnknown",
        "connection closed",
        "broken pipe",
        "stream closed",
        "connection reset",
        "operation was canceled",
    ]
    .iter()
    .any(|needle| has(needle))
    {
        return Some(format!(
            "if every call fails like this, the server probably refused the client certificate \
             {} during the handshake; the server's log names the reason",
            files.cert.display()
        ));
    }
    None
}

/// `message` with what to do appended, when there is something to say.
pub(super) fn with_hint(message: String, hint: Option<String>) -> String {
    match hint {
        Some(hint) => format!("{message}\nhint: {hint}"),
        None => message,
    }
}

/// Writes `status` to stderr and returns the exit code for it; `files` are the TLS files the
/// connection was made with, named in the hint of a transport failure.
pub(super) fn report_status(status: &Status, files: Option<&TlsFiles>) -> u8 {
    if is_transport_failure(status) {
        let chain = std::error::Error::source(status)
            .map(error_chain)
            .unwrap_or_default();
        let message = join_messages(status.message(), &chain);
        let hint = files.and_then(|files| tls_hint(&message, files));
        eprintln!("error: {}", with_hint(message, hint));
        return EXIT_TRANSPORT;
    }
    match serde_json::to_string(&error_report(status)) {
        Ok(line) => eprintln!("{line}"),
        // Serialising plain strings cannot fail; fall back to text rather than lose the error.
        Err(_) => eprintln!("error: {:?}: {}", status.code(), status.message()),
    }
    EXIT_REFUSED
}

// ---- acknowledgements and lease changes that did not apply ----

/// The JSON line written to stderr when a call succeeded but some of its ack ids did not take
/// effect. Shaped like [`ErrorReport`] (`code` first, then a `message`) so that a script reads
/// both the same way; `NOT_APPLIED` is this client's word, not a gRPC code.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct NotAppliedReport {
    code: &'static str,
    message: String,
    not_applied: Vec<NotAppliedAck>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct NotAppliedAck {
    ack_id: String,
    /// `AckResult.Reason` as named in the .proto (`LEASE_EXPIRED`).
    reason: String,
    /// What it means and what to do about it.
    description: String,
}

/// The reason's proto name and what a person should do about it.
fn explain_ack(reason: i32) -> (String, &'static str) {
    use ack_result::Reason;
    match Reason::try_from(reason) {
        Ok(Reason::LeaseExpired) => (
            "LEASE_EXPIRED".into(),
            "the lease ran out (or was released) before this arrived; the message will be \
             delivered again: pull it and use its new ack id",
        ),
        Ok(Reason::UnknownAckId) => (
            "UNKNOWN_ACK_ID".into(),
            "not an ack id of this organisation's mailbox; give the ackId (not the messageId) \
             of a message from pull-messages",
        ),
        Ok(Reason::LeaseSuperseded) => (
            "LEASE_SUPERSEDED".into(),
            "the message was delivered again since; only the newest ack id counts: use the one \
             from the latest pull",
        ),
        Ok(Reason::AlreadyAcknowledged) => (
            "ALREADY_ACKNOWLEDGED".into(),
            "the message was already acknowledged; nothing more to do for it",
        ),
        Ok(Reason::Unspecified) | Err(_) => (
            reason.to_string(),
            "not applied, for a reason this client does not know (the server may be newer)",
        ),
    }
}

fn not_applied_report(results: &[AckResult]) -> NotAppliedReport {
    let not_applied: Vec<NotAppliedAck> = results
        .iter()
        .map(|r| {
            let (reason, description) = explain_ack(r.reason);
            NotAppliedAck {
                ack_id: r.ack_id.clone(),
                reason,
                description: description.to_owned(),
            }
        })
        .collect();
    let summary: Vec<String> = not_applied
        .iter()
        .map(|a| format!("{} ({})", a.ack_id, a.reason))
        .collect();
    NotAppliedReport {
        code: "NOT_APPLIED",
        message: format!(
            "{} ack id(s) did not apply: {}",
            not_applied.len(),
            summary.join(", ")
        ),
        not_applied,
    }
}

/// Writes the ack ids that did not apply to stderr and returns the exit code for it.
pub(super) fn report_not_applied(results: &[AckResult]) -> u8 {
    match serde_json::to_string(&not_applied_report(results)) {
        Ok(line) => eprintln!("{line}"),
        Err(_) => eprintln!("error: {} ack id(s) did not apply", results.len()),
    }
    EXIT_NOT_APPLIED
}

/// `error` and its sources joined with ": ", skipping a source whose text repeats what is already
/// there (hyper and tonic often wrap an error in one with the same message).
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = join_messages(&text, &cause.to_string());
        source = cause.source();
    }
    text
}

fn join_messages(outer: &str, inner: &str) -> String {
    if inner.is_empty() || outer.ends_with(inner) {
        outer.to_owned()
    } else if outer.is_empty() || inner.starts_with(outer) {
        inner.to_owned()
    } else {
        format!("{outer}: {inner}")
    }
}

/// The canonical name of a gRPC code, as `google.rpc.Code` spells it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::fmt;

    use tonic::Code;
    use tonic_types::{ErrorDetails, FieldViolation};

    #[test]
    fn a_statistics_table_marks_suppressed_figures_and_says_what_the_mark_means() {
        use crate::proto::v1::{GetReferralStatisticsResponse, StatisticsCell};
        let cell = |recipient: Option<&str>, suppressed: bool, referrals: i64| StatisticsCell {
            keys: recipient
                .map(|r| ("RECIPIENT".to_owned(), r.to_owned()))
                .into_iter()
                .collect(),
            suppressed,
            referral_count: referrals,
            person_count: referrals,
            received_count: referrals,
            median_working_days_to_receipt: (referrals > 0).then_some(1.5),
            ..Default::default()
        };
        let response = GetReferralStatisticsResponse {
            cells: vec![
                cell(Some("organizations/helsinki"), true, 0),
                cell(Some("organizations/hva-15"), true, 0),
                cell(Some("organizations/hva-12"), false, 40),
                cell(None, false, 47),
            ],
            min_cell_size: 5,
        };
        let table = statistics_table(&["RECIPIENT".to_owned()], &response);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[..5],
            [
                "RECIPIENT               REFERRALS  PEOPLE  RECEIVED  MEDIAN DAYS  RECEIVED ON TIME  STARTED ON TIME  OVERDUE",
                "organizations/helsinki          ·       ·         ·            ·                 ·                ·        ·",
                "organizations/hva-15            ·       ·         ·            ·                 ·                ·        ·",
                "organizations/hva-12           40      40        40          1.5                 0                0        0",
                "(all)                          47      47        47          1.5                 0                0        0",
            ]
        );
        assert!(
            lines[6].starts_with("· suppressed: fewer than 5 people"),
            "{table}"
        );
    }

    #[test]
    fn a_person_at_a_terminal_is_told_of_waits_longer_than_a_second() {
        assert_eq!(
            wait_notice(true, "for messages", Some(20)).as_deref(),
            Some("waiting up to 20 s for messages…")
        );
        assert_eq!(wait_notice(true, "for messages", Some(1)), None);
        assert_eq!(wait_notice(false, "for messages", Some(20)), None);
        assert!(wait_notice(true, "for messages", None).is_some_and(|n| n.contains("Ctrl-C")));
        assert_eq!(wait_notice(false, "for messages", None), None);
    }

    #[test]
    fn a_table_wraps_its_widest_cells_to_fit_the_width() {
        use crate::proto::v1::ProcessingEntry;
        let resources: Vec<String> = (0..12)
            .map(|i| format!("referrals/01a22d44-38a7-75f6-956c-3299{i:08}"))
            .collect();
        let report = GetSubjectAccessReportResponse {
            processing: vec![ProcessingEntry {
                organization: "organizations/kela".into(),
                user_id: "handler-1".into(),
                method: "/referral_exchange.v1.ReferralService/ListReferrals".into(),
                resources: resources.clone(),
                status: "OK".into(),
                leaf_index: Some(7),
                ..Default::default()
            }],
            ..Default::default()
        };
        for width in [100, 80, 200] {
            let text = report_table(&report, width);
            let widest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
            assert!(
                widest <= width,
                "a line of {widest} columns at width {width}:\n{text}"
            );
            for resource in &resources {
                if width >= 200 {
                    assert!(
                        text.contains(resource.as_str()),
                        "{resource} whole at {width}"
                    );
                } else if width >= 100 {
                    // Broken only after a hyphen: each part stays whole.
                    for part in resource.split_inclusive('-') {
                        assert!(
                            text.contains(part),
                            "{part} of {resource} at {width}:\n{text}"
                        );
                    }
                }
            }
        }
        // Narrow enough that it must wrap: the one row takes several lines.
        assert!(report_table(&report, 100).lines().count() > 8);
    }

    #[test]
    fn the_report_table_has_every_section_and_no_identity_code() {
        use crate::proto::v1::{ConsentEvent, DisclosureEntry, ProcessingEntry};
        let t = Some(pbjson_types::Timestamp {
            seconds: 1_741_000_000,
            nanos: 0,
        });
        let report = GetSubjectAccessReportResponse {
            processing: vec![ProcessingEntry {
                time: t,
                organization: "organizations/kela".into(),
                user_id: "handler-1".into(),
                method: "/referral_exchange.v1.ReferralService/CreateReferral".into(),
                resources: vec!["referrals/1".into()],
                status: "OK".into(),
                leaf_index: Some(4),
                ..Default::default()
            }],
            disclosures: vec![DisclosureEntry {
                time: t,
                recipient: "organizations/hva-15".into(),
                resource: "referrals/1".into(),
                basis: "consents/2".into(),
                consent_state: "USED".into(),
                consent_version: 2,
                organization: "organizations/hva-15".into(),
                user_id: "worker-1".into(),
                method: "/referral_exchange.v1.MailboxService/PullMessages".into(),
                ..Default::default()
            }],
            consent_events: vec![ConsentEvent {
                consent: "consents/2".into(),
                r#type: consent_event::Type::Expired as i32,
                time: t,
                user_id: "system:consent-expiry".into(),
                consent_state: consent::State::Expired as i32,
                ..Default::default()
            }],
            start_time: t,
            end_time: t,
            subject_pseudonym: "ab12".into(),
        };
        let text = report_table(&report, 200);
        for expected in [
            "WHO PROCESSED THE DATA (1)",
            "2025-03-03 13:06:40 +02:00",
            "CreateReferral",
            "WHAT WAS DISCLOSED TO WHOM (1)",
            "consents/2 (USED, v2)",
            "PullMessages",
            "CONSENT EVENTS (1)",
            "EXPIRED",
            "system:consent-expiry",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }

    #[test]
    fn refused_call_becomes_json_with_details() {
        let mut details =
            ErrorDetails::with_error_info("INVALID_ARGUMENT", "referral-exchange", HashMap::new());
        let mut violation = FieldViolation::new(
            "referral.subject.personal_identity_code",
            "the check character does not match",
        );
        violation.reason = "CHECK_CHARACTER".into();
        details.set_bad_request(vec![violation]);
        details.add_precondition_failure_violation(
            "CONSENT",
            "consents/5d6c0e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6",
            "the consent does not cover the recipient",
        );
        let status =
            Status::with_error_details(Code::InvalidArgument, "the request is invalid", details);
        assert!(!is_transport_failure(&status));

        let json = serde_json::to_value(error_report(&status)).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({
                "code": "INVALID_ARGUMENT",
                "message": "the request is invalid",
                "reason": "INVALID_ARGUMENT",
                "fieldViolations": [{
                    "field": "referral.subject.personal_identity_code",
                    "reason": "CHECK_CHARACTER",
                    "description": "the check character does not match",
                    "flag": "--identity-code",
                }],
                "preconditionViolations": [{
                    "type": "CONSENT",
                    "subject": "consents/5d6c0e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6",
                    "description": "the consent does not cover the recipient",
                }],
                "hint": "--identity-code: the check character does not match",
            })
        );
        // Field order on stderr: code first, for people reading it.
        let line = serde_json::to_string(&error_report(&status)).unwrap_or_default();
        assert!(
            line.starts_with(r#"{"code":"INVALID_ARGUMENT","message":"#),
            "{line}"
        );
    }

    #[test]
    fn status_without_details_still_reports() {
        let status = Status::aborted("etag mismatch");
        let report = error_report(&status);
        assert_eq!(
            report,
            ErrorReport {
                code: "ABORTED",
                message: "etag mismatch".into(),
                reason: None,
                field_violations: vec![],
                precondition_violations: vec![],
                hint: None,
            }
        );
        assert_eq!(
            serde_json::to_value(&report).unwrap_or_default()["reason"],
            serde_json::Value::Null
        );
        assert_eq!(report_status(&status, None), EXIT_REFUSED);
    }

    #[test]
    fn errors_name_the_flags_not_the_proto_fields() {
        let mut details =
            ErrorDetails::with_error_info("INVALID_ARGUMENT", "referral-exchange", HashMap::new());
        details.set_bad_request(vec![
            FieldViolation::new("lease_duration", "must be between 10 s and 600 s"),
            FieldViolation::new("consent.recipients[1]", "no such organisation"),
            FieldViolation::new("some_future_field", "whatever"),
        ]);
        let status = Status::with_error_details(Code::InvalidArgument, "invalid", details);
        let report = error_report(&status);
        let flags: Vec<Option<&str>> = report.field_violations.iter().map(|v| v.flag).collect();
        assert_eq!(flags, [Some("--lease-seconds"), Some("--recipient"), None]);
        // The API's field names stay as the server sent them.
        assert_eq!(report.field_violations[0].field, "lease_duration");
        assert_eq!(
            report.hint.as_deref(),
            Some(
                "--lease-seconds: must be between 10 s and 600 s; \
                 --recipient: no such organisation"
            )
        );

        let details =
            ErrorDetails::with_error_info("USER_ID_MISSING", "referral-exchange", HashMap::new());
        let status = Status::with_error_details(
            Code::Unauthenticated,
            "metadata x-user-id must name the person acting",
            details,
        );
        let hint = error_report(&status).hint.unwrap_or_default();
        assert!(
            hint.contains("--user") && hint.contains("REFERRAL_EXCHANGE_USER"),
            "{hint}"
        );
    }

    #[test]
    fn locally_made_status_is_a_transport_failure() {
        #[derive(Debug)]
        struct Alert;
        impl fmt::Display for Alert {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("received fatal alert: CertificateRequired")
            }
        }
        impl std::error::Error for Alert {}
        #[derive(Debug)]
        struct Transport(Alert);
        impl fmt::Display for Transport {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Transport {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let status = Status::from_error(Box::new(Transport(Alert)));
        assert!(is_transport_failure(&status));
        let chain = std::error::Error::source(&status)
            .map(error_chain)
            .unwrap_or_default();
        assert_eq!(
            join_messages(status.message(), &chain),
            "transport error: received fatal alert: CertificateRequired"
        );
        assert_eq!(report_status(&status, None), EXIT_TRANSPORT);
    }

    #[test]
    fn ack_ids_that_did_not_apply_are_named_with_the_reason() {
        let results = [
            AckResult {
                ack_id: "m1-2".into(),
                applied: false,
                reason: ack_result::Reason::LeaseExpired as i32,
            },
            AckResult {
                ack_id: "null".into(),
                applied: false,
                reason: ack_result::Reason::UnknownAckId as i32,
            },
        ];
        let json = serde_json::to_value(not_applied_report(&results)).unwrap_or_default();
        assert_eq!(json["code"], "NOT_APPLIED");
        assert_eq!(
            json["message"],
            "2 ack id(s) did not apply: m1-2 (LEASE_EXPIRED), null (UNKNOWN_ACK_ID)"
        );
        assert_eq!(json["notApplied"][1]["ackId"], "null");
        assert_eq!(json["notApplied"][1]["reason"], "UNKNOWN_ACK_ID");
        assert!(
            json["notApplied"][0]["description"]
                .as_str()
                .is_some_and(|d| d.contains("pull it and use its new ack id")),
            "{json}"
        );
        assert_eq!(report_not_applied(&results), EXIT_NOT_APPLIED);
        assert_ne!(EXIT_NOT_APPLIED, EXIT_REFUSED);
        assert_ne!(EXIT_NOT_APPLIED, EXIT_TRANSPORT);
    }

    #[test]
    fn tls_failures_name_the_file_to_look_at() {
        let files = TlsFiles {
            cert: "p/cert.pem".into(),
            key: "p/key.pem".into(),
            ca: "p/ca.pem".into(),
        };
        let hint = |chain: &str| tls_hint(chain, &files).unwrap_or_default();
        let wrong_ca = hint("transport error: invalid peer certificate: UnknownIssuer");
        assert!(
            wrong_ca.contains("not issued by the CA in p/ca.pem"),
            "{wrong_ca}"
        );
        let name = hint("invalid peer certificate: certificate not valid for name \"x\"");
        assert!(name.contains("--server-name"), "{name}");
        let refused = hint("transport error: received fatal alert: UnknownCA");
        assert!(
            refused.contains("client certificate p/cert.pem"),
            "{refused}"
        );
        assert_eq!(
            tls_hint("tcp connect error: Connection refused", &files),
            None
        );
    }

    #[test]
    fn every_code_has_its_canonical_name() {
        for (number, name) in [
            (0, "OK"),
            (3, "INVALID_ARGUMENT"),
            (5, "NOT_FOUND"),
            (6, "ALREADY_EXISTS"),
            (7, "PERMISSION_DENIED"),
            (9, "FAILED_PRECONDITION"),
            (10, "ABORTED"),
            (14, "UNAVAILABLE"),
            (16, "UNAUTHENTICATED"),
        ] {
            assert_eq!(code_name(Code::from_i32(number)), name);
        }
    }
}
