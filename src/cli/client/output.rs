//! What the client prints besides a response's JSON: the subject access report as a table,
//! and a refused call as one line of JSON on stderr (or a transport failure as text).

use chrono::DateTime;
use serde::Serialize;
use tonic::Status;
use tonic_types::StatusExt as _;

use super::{EXIT_REFUSED, EXIT_TRANSPORT};
use crate::proto::v1::{GetSubjectAccessReportResponse, consent, consent_event};

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

/// Rows under a heading, columns padded to their widest cell.
fn table(out: &mut String, heading: &str, header: &[&str], rows: Vec<Vec<String>>) {
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
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("  {}\n", padded.join("  ").trim_end())
    };
    out.push_str(&line(header.to_vec()));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
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
pub(super) fn report_table(report: &GetSubjectAccessReportResponse) -> String {
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
    );
    out
}

// ---- errors ----

/// The JSON written to stderr for a refused call: what a script needs to decide what to do next.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct ErrorReport {
    /// The gRPC code as its canonical upper-snake name (`INVALID_ARGUMENT`).
    code: &'static str,
    message: String,
    /// `ErrorInfo.reason`: the machine-readable cause (AIP-193), if the server sent one.
    reason: Option<String>,
    field_violations: Vec<FieldViolationReport>,
    precondition_violations: Vec<PreconditionViolationReport>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct FieldViolationReport {
    field: String,
    reason: String,
    description: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct PreconditionViolationReport {
    #[serde(rename = "type")]
    kind: String,
    subject: String,
    description: String,
}

/// Decodes the `google.rpc.Status` details of `status` (malformed details count as none).
fn error_report(status: &Status) -> ErrorReport {
    let details = status.get_error_details();
    ErrorReport {
        code: code_name(status.code()),
        message: status.message().to_owned(),
        reason: details.error_info().map(|info| info.reason.clone()),
        field_violations: details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| FieldViolationReport {
                        field: v.field.clone(),
                        reason: v.reason.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
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

/// Writes `status` to stderr and returns the exit code for it.
pub(super) fn report_status(status: &Status) -> u8 {
    if is_transport_failure(status) {
        let chain = std::error::Error::source(status)
            .map(error_chain)
            .unwrap_or_default();
        eprintln!("error: {}", join_messages(status.message(), &chain));
        return EXIT_TRANSPORT;
    }
    match serde_json::to_string(&error_report(status)) {
        Ok(line) => eprintln!("{line}"),
        // Serialising plain strings cannot fail; fall back to text rather than lose the error.
        Err(_) => eprintln!("error: {:?}: {}", status.code(), status.message()),
    }
    EXIT_REFUSED
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
        let text = report_table(&report);
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
                "field_violations": [{
                    "field": "referral.subject.personal_identity_code",
                    "reason": "CHECK_CHARACTER",
                    "description": "the check character does not match",
                }],
                "precondition_violations": [{
                    "type": "CONSENT",
                    "subject": "consents/5d6c0e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6",
                    "description": "the consent does not cover the recipient",
                }],
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
            }
        );
        assert_eq!(
            serde_json::to_value(&report).unwrap_or_default()["reason"],
            serde_json::Value::Null
        );
        assert_eq!(report_status(&status), EXIT_REFUSED);
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
        assert_eq!(report_status(&status), EXIT_TRANSPORT);
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
