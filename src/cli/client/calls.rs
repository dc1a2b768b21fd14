//! Calling the API: a connected session, one function per service that builds the request a
//! subcommand stands for and sends it, and the output a call produces.

use std::io::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use uuid::Uuid;

use super::args::{
    AuditCommand, Command, ConsentCommand, CreateReferralArgs, DirectoryCommand, MailboxCommand,
    RecordConsentArgs, ReferralCommand, ReportFormat, ReportingCommand, RequestIdArgs,
    StatisticsFormat,
};
use super::output::{Waiting, report_table, statistics_table, table_width};
use super::values::{IdentityCode, ProtoEnum};
use crate::access::{CORRELATION_ID_HEADER, USER_ID_HEADER};
use crate::proto::v1::{
    AcceptReferralRequest, AckResult, AcknowledgeMessagesRequest, CancelReferralRequest,
    CompleteReferralRequest, Consent, CreateReferralRequest, ExportAuditEventsRequest,
    ForwardReferralRequest, GetCheckpointRequest, GetConsentRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest, GetMailboxStatsRequest, GetReferralRequest,
    GetSubjectAccessReportRequest, ListAuditEventsRequest, ListConsentEventsRequest,
    ListConsentsRequest, ListDeadLettersRequest, ListMailboxHistoryRequest,
    ListOrganizationsRequest, ListReferralsRequest, ModifyLeasesRequest, PullMessagesRequest,
    PullMessagesResponse, RecordConsentRequest, RedriveDeadLettersRequest, Referral,
    RejectReferralRequest, ResolveRecipientRequest, StartAssessmentRequest, StreamMessagesRequest,
    Subject, WithdrawConsentRequest, audit_service_client::AuditServiceClient,
    consent_service_client::ConsentServiceClient, directory_service_client::DirectoryServiceClient,
    mailbox_service_client::MailboxServiceClient, referral,
    referral_service_client::ReferralServiceClient,
};

/// A connected channel plus the metadata every request carries.
pub(super) struct Session {
    pub(super) channel: Channel,
    pub(super) user: Option<AsciiMetadataValue>,
    pub(super) correlation_id: Option<AsciiMetadataValue>,
}

impl Session {
    /// Wraps a message with the caller's metadata.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        if let Some(user) = &self.user {
            metadata.insert(USER_ID_HEADER, user.clone());
        }
        if let Some(correlation_id) = &self.correlation_id {
            metadata.insert(CORRELATION_ID_HEADER, correlation_id.clone());
        }
        request
    }

    fn referrals(&self) -> ReferralServiceClient<Channel> {
        ReferralServiceClient::new(self.channel.clone())
    }

    fn consents(&self) -> ConsentServiceClient<Channel> {
        ConsentServiceClient::new(self.channel.clone())
    }

    fn mailbox(&self) -> MailboxServiceClient<Channel> {
        MailboxServiceClient::new(self.channel.clone())
    }

    fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }

    fn directory(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channel.clone())
    }

    fn reporting(
        &self,
    ) -> crate::proto::v1::reporting_service_client::ReportingServiceClient<Channel> {
        crate::proto::v1::reporting_service_client::ReportingServiceClient::new(
            self.channel.clone(),
        )
    }
}

/// What a successful call prints, and whether it counts as success for the exit code.
pub(super) struct Output {
    pub(super) json: serde_json::Value,
    pub(super) healthy: bool,
    /// Printed instead of the JSON when set (already printed when empty).
    pub(super) text: Option<String>,
    /// Ack ids the server answered for but did not apply (`acknowledge-messages`,
    /// `modify-leases`, `--ack`): the call succeeded, yet what the caller asked for did not
    /// happen, so the exit code must say so (see the module docs).
    pub(super) not_applied: Vec<AckResult>,
}

impl Output {
    /// Text printed as is (empty: already printed), with no JSON.
    fn text(text: String) -> Self {
        Output {
            json: serde_json::Value::Null,
            healthy: true,
            text: Some(text),
            not_applied: Vec::new(),
        }
    }
}

/// Why a call produced no output.
#[derive(Debug)]
pub(super) enum CallError {
    /// The server (or the connection) answered with a status.
    Rpc(Status),
    /// The response cannot be turned into JSON: pbjson refuses enum numbers it does not know,
    /// which happens when the server is newer than this client.
    Output(serde_json::Error),
}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        CallError::Rpc(status)
    }
}

/// A response as canonical proto3 JSON.
fn json<T: Serialize>(response: tonic::Response<T>) -> Result<Output, CallError> {
    serde_json::to_value(response.into_inner())
        .map(|json| Output {
            json,
            healthy: true,
            text: None,
            not_applied: Vec::new(),
        })
        .map_err(CallError::Output)
}

/// Sends the request `command` stands for.
pub(super) async fn execute(command: Command, session: &Session) -> Result<Output, CallError> {
    match command {
        Command::Consent(command) => consent_service(command, session).await,
        Command::Referral(command) => referral_service(command, session).await,
        Command::Mailbox(command) => mailbox_service(command, session).await,
        Command::Audit(command) => audit_service(command, session).await,
        Command::Directory(command) => directory_service(command, session).await,
        Command::Reporting(command) => reporting_service(command, session).await,
        Command::Health => health(session).await,
    }
}

/// Calls `ConsentService`.
async fn consent_service(command: ConsentCommand, s: &Session) -> Result<Output, CallError> {
    match command {
        ConsentCommand::RecordConsent(args) => {
            let request_id = request_id(&args.request);
            let request = record_consent_request(&args, request_id, Utc::now());
            if args.expiry_depends_on_the_clock() {
                // The id was generated (a given one is refused with a relative expiry, see
                // `Command::usage_error`): say what a retry must send to be the same request.
                if let Some(expire) = request
                    .consent
                    .as_ref()
                    .and_then(|c| c.expire_time.as_ref())
                    .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
                {
                    let expire = expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    eprintln!(
                        "expire_time: {expire} (to retry with this request_id, give \
                         --expire-time {expire} instead of --valid-days)"
                    );
                }
            }
            json(s.consents().record_consent(s.request(request)).await?)
        }
        ConsentCommand::GetConsent { name } => json(
            s.consents()
                .get_consent(s.request(GetConsentRequest { name }))
                .await?,
        ),
        ConsentCommand::ListConsents {
            identity_code,
            state,
            page,
        } => {
            let request = ListConsentsRequest {
                page_size: page.page_size.unwrap_or_default(),
                page_token: page.page_token.unwrap_or_default(),
                personal_identity_code: code_or_empty(identity_code),
                state: enum_or_zero(state),
            };
            json(s.consents().list_consents(s.request(request)).await?)
        }
        ConsentCommand::WithdrawConsent {
            name,
            reason_text,
            etag,
            request,
        } => {
            let request = WithdrawConsentRequest {
                name,
                reason_text: reason_text.unwrap_or_default(),
                request_id: request_id(&request),
                etag: etag.unwrap_or_default(),
            };
            json(s.consents().withdraw_consent(s.request(request)).await?)
        }
        ConsentCommand::ListConsentEvents {
            identity_code,
            organization,
            consent,
            time,
            page,
        } => {
            let request = ListConsentEventsRequest {
                personal_identity_code: code_or_empty(identity_code),
                organization: organization.unwrap_or_default(),
                start_time: time.start_time.map(timestamp),
                end_time: time.end_time.map(timestamp),
                page_size: page.page_size.unwrap_or_default(),
                page_token: page.page_token.unwrap_or_default(),
                consent: consent.unwrap_or_default(),
            };
            json(s.consents().list_consent_events(s.request(request)).await?)
        }
    }
}

/// Calls `ReferralService`.
async fn referral_service(command: ReferralCommand, s: &Session) -> Result<Output, CallError> {
    match command {
        ReferralCommand::CreateReferral(args) => {
            let request = CreateReferralRequest {
                referral: Some(referral_from_args(&args)),
                request_id: request_id(&args.request),
            };
            json(s.referrals().create_referral(s.request(request)).await?)
        }
        ReferralCommand::GetReferral { name } => json(
            s.referrals()
                .get_referral(s.request(GetReferralRequest { name }))
                .await?,
        ),
        ReferralCommand::ListReferrals {
            state,
            kind,
            recipient,
            identity_code,
            created_after,
            created_before,
            overdue,
            page,
        } => {
            let request = ListReferralsRequest {
                overdue,
                page_size: page.page_size.unwrap_or_default(),
                page_token: page.page_token.unwrap_or_default(),
                state: enum_or_zero(state),
                kind: enum_or_zero(kind),
                recipient: recipient.unwrap_or_default(),
                create_time_start: created_after.map(timestamp),
                create_time_end: created_before.map(timestamp),
                personal_identity_code: code_or_empty(identity_code),
            };
            json(s.referrals().list_referrals(s.request(request)).await?)
        }
        ReferralCommand::CancelReferral {
            change,
            reason_text,
        } => {
            let request = CancelReferralRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
                reason_text: reason_text.unwrap_or_default(),
            };
            json(s.referrals().cancel_referral(s.request(request)).await?)
        }
        ReferralCommand::AcceptReferral { change } => {
            let request = AcceptReferralRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
            };
            json(s.referrals().accept_referral(s.request(request)).await?)
        }
        ReferralCommand::StartAssessment { change } => {
            let request = StartAssessmentRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
            };
            json(s.referrals().start_assessment(s.request(request)).await?)
        }
        ReferralCommand::CompleteReferral { change, outcome } => {
            let request = CompleteReferralRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
                outcome: outcome.into(),
            };
            json(s.referrals().complete_referral(s.request(request)).await?)
        }
        ReferralCommand::RejectReferral {
            change,
            reason,
            reason_text,
        } => {
            let request = RejectReferralRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
                reason: reason.into(),
                reason_text: reason_text.unwrap_or_default(),
            };
            json(s.referrals().reject_referral(s.request(request)).await?)
        }
        ReferralCommand::ForwardReferral {
            change,
            home_municipality_code,
        } => {
            let request = ForwardReferralRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
                home_municipality_code,
            };
            json(s.referrals().forward_referral(s.request(request)).await?)
        }
    }
}

/// Calls `MailboxService`.
async fn mailbox_service(command: MailboxCommand, s: &Session) -> Result<Output, CallError> {
    match command {
        MailboxCommand::PullMessages {
            max_messages,
            lease_seconds,
            wait_seconds,
            ack,
        } => {
            let request = PullMessagesRequest {
                max_messages,
                lease_duration: Some(seconds(lease_seconds)),
                wait_duration: Some(seconds(wait_seconds)),
            };
            let waiting = Waiting::show("for messages", Some(wait_seconds));
            let response = s.mailbox().pull_messages(s.request(request)).await?;
            drop(waiting);
            if ack {
                pull_and_acknowledge(s, response.into_inner()).await
            } else {
                json(response)
            }
        }
        MailboxCommand::AcknowledgeMessages { ack_ids } => {
            let request = AcknowledgeMessagesRequest { ack_ids };
            let response = s.mailbox().acknowledge_messages(s.request(request)).await?;
            let failed = failed_acks(response.get_ref().results.iter().cloned());
            json(response).map(|output| output.with_not_applied(failed))
        }
        MailboxCommand::ModifyLeases {
            ack_ids,
            lease_seconds,
        } => {
            let request = ModifyLeasesRequest {
                ack_ids,
                lease_duration: Some(seconds(lease_seconds)),
            };
            let response = s.mailbox().modify_leases(s.request(request)).await?;
            let failed = failed_acks(response.get_ref().results.iter().cloned());
            json(response).map(|output| output.with_not_applied(failed))
        }
        MailboxCommand::StreamMessages {
            lease_seconds,
            max_outstanding,
            count,
            ack,
        } => {
            let request = StreamMessagesRequest {
                lease_duration: Some(seconds(lease_seconds)),
                max_outstanding_messages: max_outstanding,
            };
            stream_messages(s, request, count, ack).await
        }
        MailboxCommand::ListDeadLetters { page } => {
            let request = ListDeadLettersRequest {
                page_size: page.page_size.unwrap_or_default(),
                page_token: page.page_token.unwrap_or_default(),
            };
            json(s.mailbox().list_dead_letters(s.request(request)).await?)
        }
        MailboxCommand::RedriveDeadLetters {
            message_ids,
            request,
        } => {
            let request = RedriveDeadLettersRequest {
                message_ids,
                request_id: request_id(&request),
            };
            json(s.mailbox().redrive_dead_letters(s.request(request)).await?)
        }
        MailboxCommand::ListMailboxHistory {
            since_sequence,
            page_size,
        } => {
            let request = ListMailboxHistoryRequest {
                since_sequence,
                page_size: page_size.unwrap_or_default(),
            };
            json(s.mailbox().list_mailbox_history(s.request(request)).await?)
        }
        MailboxCommand::GetMailboxStats => json(
            s.mailbox()
                .get_mailbox_stats(s.request(GetMailboxStatsRequest {}))
                .await?,
        ),
    }
}

/// Calls `AuditService`.
async fn audit_service(command: AuditCommand, s: &Session) -> Result<Output, CallError> {
    match command {
        AuditCommand::ListAuditEvents {
            identity_code,
            organization,
            user_id,
            method,
            resource,
            time,
            page,
        } => {
            let request = ListAuditEventsRequest {
                personal_identity_code: code_or_empty(identity_code),
                organization: organization.unwrap_or_default(),
                user_id: user_id.unwrap_or_default(),
                method: method.unwrap_or_default(),
                resource: resource.unwrap_or_default(),
                start_time: time.start_time.map(timestamp),
                end_time: time.end_time.map(timestamp),
                page_size: page.page_size.unwrap_or_default(),
                page_token: page.page_token.unwrap_or_default(),
            };
            json(s.audit().list_audit_events(s.request(request)).await?)
        }
        AuditCommand::GetCheckpoint { note } => {
            let response = s
                .audit()
                .get_checkpoint(s.request(GetCheckpointRequest {}))
                .await?;
            if note {
                Ok(Output::text(response.into_inner().checkpoint))
            } else {
                json(response)
            }
        }
        AuditCommand::GetInclusionProof {
            leaf_index,
            tree_size,
        } => {
            let request = GetInclusionProofRequest {
                leaf_index,
                tree_size: tree_size.unwrap_or_default(),
            };
            json(s.audit().get_inclusion_proof(s.request(request)).await?)
        }
        AuditCommand::GetConsistencyProof {
            first_tree_size,
            second_tree_size,
        } => {
            let request = GetConsistencyProofRequest {
                first_tree_size,
                second_tree_size: second_tree_size.unwrap_or_default(),
            };
            json(s.audit().get_consistency_proof(s.request(request)).await?)
        }
        AuditCommand::ExportAuditEvents {
            start_index,
            end_index,
        } => {
            let request = ExportAuditEventsRequest {
                start_index,
                end_index: end_index.unwrap_or_default(),
            };
            export_audit_events(s, request).await
        }
        AuditCommand::GetSubjectAccessReport {
            identity_code,
            time,
            format,
        } => {
            let request = GetSubjectAccessReportRequest {
                personal_identity_code: identity_code.0,
                start_time: time.start_time.map(timestamp),
                end_time: time.end_time.map(timestamp),
            };
            let response = s
                .audit()
                .get_subject_access_report(s.request(request))
                .await?;
            match format {
                ReportFormat::Json => json(response),
                ReportFormat::Table => Ok(Output::text(report_table(
                    &response.into_inner(),
                    table_width(),
                ))),
            }
        }
    }
}

/// `stream-messages`: prints each message as one line of JSON as it arrives, acknowledging it
/// after printing when `ack` is set, until `count` messages or the end of the stream. A closed
/// stdout ends the stream quietly.
async fn stream_messages(
    s: &Session,
    request: StreamMessagesRequest,
    count: Option<u64>,
    ack: bool,
) -> Result<Output, CallError> {
    let mut stream = s
        .mailbox()
        .stream_messages(s.request(request))
        .await?
        .into_inner();
    let mut received: u64 = 0;
    let mut not_applied = Vec::new();
    while count.is_none_or(|n| received < n) {
        let waiting = Waiting::show("for the next message", None);
        let Some(message) = stream.message().await? else {
            break;
        };
        drop(waiting);
        let line = serde_json::to_string(&message).map_err(CallError::Output)?;
        if writeln!(std::io::stdout().lock(), "{line}").is_err() {
            break;
        }
        if ack {
            let request = AcknowledgeMessagesRequest {
                ack_ids: vec![message.ack_id],
            };
            let response = s.mailbox().acknowledge_messages(s.request(request)).await?;
            // Reported at the end with the others; the stream goes on, since the next
            // message's lease is independent of this one's.
            not_applied.extend(failed_acks(response.into_inner().results));
        }
        received += 1;
    }
    Ok(Output {
        json: serde_json::json!({ "received": received }),
        healthy: true,
        text: None,
        not_applied,
    })
}

/// `pull-messages --ack`: prints the pulled messages first (so that nothing is acknowledged that
/// was not handed on), then acknowledges every one of them. An empty pull prints `{}` and
/// acknowledges nothing.
async fn pull_and_acknowledge(
    s: &Session,
    pulled: PullMessagesResponse,
) -> Result<Output, CallError> {
    let text = serde_json::to_string_pretty(&pulled).map_err(CallError::Output)? + "\n";
    if write!(std::io::stdout().lock(), "{text}").is_err() {
        // Nobody read them: leave them leased, to be delivered again when the lease ends.
        return Ok(Output::text(String::new()));
    }
    let ack_ids: Vec<String> = pulled
        .messages
        .into_iter()
        .map(|m| m.ack_id)
        .filter(|id| !id.is_empty())
        .collect();
    let mut output = Output::text(String::new());
    if !ack_ids.is_empty() {
        let request = AcknowledgeMessagesRequest { ack_ids };
        let response = s.mailbox().acknowledge_messages(s.request(request)).await?;
        output.not_applied = failed_acks(response.into_inner().results);
    }
    Ok(output)
}

/// The results whose ack id did not take effect.
fn failed_acks(results: impl IntoIterator<Item = AckResult>) -> Vec<AckResult> {
    results.into_iter().filter(|r| !r.applied).collect()
}

impl Output {
    fn with_not_applied(mut self, not_applied: Vec<AckResult>) -> Self {
        self.not_applied = not_applied;
        self
    }
}

/// `export-audit-events`: prints each leaf as one line of JSON as it arrives (the input of
/// `referral-exchange audit verify`), so an export of any size needs no memory.
async fn export_audit_events(
    s: &Session,
    request: ExportAuditEventsRequest,
) -> Result<Output, CallError> {
    let mut stream = s
        .audit()
        .export_audit_events(s.request(request))
        .await?
        .into_inner();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(event) = stream.message().await? {
        let line = serde_json::to_string(&event).map_err(CallError::Output)?;
        // A closed stdout (e.g. `| head`) ends the export quietly.
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    let _ = std::io::Write::flush(&mut out);
    Ok(Output::text(String::new()))
}

/// The start of `day` in Helsinki.
fn helsinki_midnight(day: chrono::NaiveDate) -> DateTime<Utc> {
    use chrono::TimeZone as _;
    // Finland changes its clocks at 03:00 and 04:00, so midnight always exists exactly once.
    chrono_tz::Europe::Helsinki
        .from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
        .earliest()
        .map_or_else(
            || day.and_time(chrono::NaiveTime::MIN).and_utc(),
            |t| t.to_utc(),
        )
}

/// Calls `ReportingService`.
async fn reporting_service(command: ReportingCommand, s: &Session) -> Result<Output, CallError> {
    match command {
        ReportingCommand::ReferralStatistics {
            group_by,
            from,
            to,
            format,
        } => {
            // `--to` is included: the window ends where the next day begins.
            let end = to.succ_opt().unwrap_or(to);
            let request = crate::proto::v1::GetReferralStatisticsRequest {
                start_time: Some(timestamp(helsinki_midnight(from))),
                end_time: Some(timestamp(helsinki_midnight(end))),
                group_by: group_by.iter().map(|d| i32::from(*d)).collect(),
            };
            let dimensions = crate::grpc::reporting::dimension_names(&request.group_by);
            let response = s
                .reporting()
                .get_referral_statistics(s.request(request))
                .await?;
            match format {
                StatisticsFormat::Json => json(response),
                StatisticsFormat::Csv => {
                    crate::grpc::reporting::csv(&dimensions, &response.into_inner())
                        .map(Output::text)
                        .map_err(|e| CallError::Rpc(Status::from(e)))
                }
                StatisticsFormat::Table => Ok(Output::text(statistics_table(
                    &dimensions,
                    &response.into_inner(),
                ))),
            }
        }
    }
}

/// Calls `DirectoryService`.
async fn directory_service(command: DirectoryCommand, s: &Session) -> Result<Output, CallError> {
    match command {
        DirectoryCommand::ListOrganizations { role } => {
            let request = ListOrganizationsRequest {
                role: enum_or_zero(role),
            };
            json(s.directory().list_organizations(s.request(request)).await?)
        }
        DirectoryCommand::ResolveRecipient {
            home_municipality_code,
            date,
        } => {
            let request = ResolveRecipientRequest {
                home_municipality_code,
                date: date
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
            };
            json(s.directory().resolve_recipient(s.request(request)).await?)
        }
    }
}

/// `grpc.health.v1.Health/Check` for the whole server (empty service name). tonic-health's types
/// have no serde impls, so the JSON is built by hand in the same shape grpcurl prints.
async fn health(session: &Session) -> Result<Output, CallError> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let response = HealthClient::new(session.channel.clone())
        .check(session.request(HealthCheckRequest {
            service: String::new(),
        }))
        .await?
        .into_inner();
    let status = ServingStatus::try_from(response.status).ok();
    let json = match status {
        Some(status) => serde_json::json!({ "status": status.as_str_name() }),
        None => serde_json::json!({ "status": response.status }),
    };
    Ok(Output {
        json,
        healthy: status == Some(ServingStatus::Serving),
        text: None,
        not_applied: Vec::new(),
    })
}

/// The `RecordConsentRequest` for `args`; `now` anchors `--valid-days` when `--valid-from` is not
/// given (the server also defaults `valid_from` to the time of recording).
fn record_consent_request(
    args: &RecordConsentArgs,
    request_id: String,
    now: DateTime<Utc>,
) -> RecordConsentRequest {
    let expire_time = match (args.expire_time, args.valid_days) {
        (Some(time), _) => Some(time),
        (None, Some(days)) => {
            // Whole seconds, so that the `expire_time` printed for a retry (RFC 3339 in
            // seconds) is exactly what was sent.
            let start = args
                .valid_from
                .unwrap_or_else(|| chrono::SubsecRound::trunc_subsecs(now, 0));
            // In range by construction: clap caps --valid-days at 100 years.
            start.checked_add_signed(chrono::Duration::days(i64::from(days)))
        }
        (None, None) => None,
    };
    RecordConsentRequest {
        consent: Some(Consent {
            subject: Some(Subject {
                personal_identity_code: args.identity_code.as_str().to_owned(),
                ..Subject::default()
            }),
            purpose: args.purpose.into(),
            recipients: args.recipients.clone(),
            form: args.form.into(),
            given_by: args.given_by.into(),
            valid_from: args.valid_from.map(timestamp),
            expire_time: expire_time.map(timestamp),
            evidence_reference: args.evidence_reference.clone().unwrap_or_default(),
            ..Consent::default()
        }),
        request_id,
    }
}

/// The `Referral` body of a create call.
fn referral_from_args(args: &CreateReferralArgs) -> Referral {
    // clap's "basis" group guarantees exactly one of the two.
    let basis = match (&args.consent, args.statutory_ground) {
        (Some(consent), _) => Some(referral::Basis::Consent(consent.clone())),
        (None, Some(ground)) => Some(referral::Basis::StatutoryGround(ground.into())),
        (None, None) => None,
    };
    Referral {
        kind: args.kind.into(),
        subject: Some(Subject {
            personal_identity_code: args.identity_code.as_str().to_owned(),
            name: args.name.clone().unwrap_or_default(),
            contact_phone: args.phone.clone().unwrap_or_default(),
            preferred_language: args.language.clone().unwrap_or_default(),
        }),
        home_municipality_code: args.home_municipality_code.trim().to_owned(),
        current_municipality_code: args
            .current_municipality_code
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned(),
        reasons: args.reasons.iter().map(|&r| r.into()).collect(),
        reason_text: args.reason_text.clone().unwrap_or_default(),
        urgent: args.urgent,
        deadline_group: args.deadline_group.into(),
        basis,
        personal_discussion_requested: args.personal_discussion,
        application_reference: args.application_reference.clone().unwrap_or_default(),
        ..Referral::default()
    }
}

/// The given request id, or a new UUID v4 announced on stderr so that a script can retry with it.
fn request_id(args: &RequestIdArgs) -> String {
    match args.request_id {
        Some(id) => id.to_string(),
        None => {
            let id = Uuid::new_v4().to_string();
            eprintln!("request_id: {id}");
            id
        }
    }
}

fn code_or_empty(code: Option<IdentityCode>) -> String {
    code.map(|c| c.0).unwrap_or_default()
}

/// An optional enum filter as its wire number; 0 (`…_UNSPECIFIED`) means "no filter".
fn enum_or_zero<E: ProtoEnum>(value: Option<E>) -> i32 {
    value.map_or(0, Into::into)
}

fn timestamp(time: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: time.timestamp(),
        // Below 2·10⁹ even in a leap second, so it fits.
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

fn seconds(seconds: u32) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::from(seconds),
        nanos: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::proto::v1::consent;

    use super::super::test_support::*;

    #[test]
    fn create_referral_with_consent() {
        let args = parse_ok(&[
            "create-referral",
            "--kind",
            "need-for-social-work",
            "--identity-code",
            " 131052-308t ",
            "--home-municipality",
            "091",
            "--reason",
            "HOUSING",
            "--reason",
            "debt",
            "--consent",
            CONSENT_UUID,
            "--urgent",
            "--phone",
            "+358401234567",
        ]);
        let Command::Referral(ReferralCommand::CreateReferral(create)) = args.command else {
            panic!("wrong command: {:?}", args.command);
        };
        let referral = referral_from_args(&create);
        assert_eq!(referral.kind, i32::from(referral::Kind::NeedForSocialWork));
        let subject = referral.subject.unwrap_or_default();
        assert_eq!(subject.personal_identity_code, "131052-308T");
        assert_eq!(subject.contact_phone, "+358401234567");
        assert_eq!(referral.home_municipality_code, "091");
        assert_eq!(
            referral.reasons,
            [
                i32::from(referral::Reason::Housing),
                i32::from(referral::Reason::Debt)
            ]
        );
        assert!(referral.urgent);
        assert_eq!(
            referral.deadline_group,
            i32::from(referral::DeadlineGroup::NoStatutoryGroup),
            "default deadline group"
        );
        assert_eq!(
            referral.basis,
            Some(referral::Basis::Consent(format!("consents/{CONSENT_UUID}")))
        );
        assert_eq!(create.request.request_id, None);
    }

    #[test]
    fn create_referral_on_statutory_ground() {
        let args = parse_ok(&[
            "create-referral",
            "--kind",
            "CHILD_WELFARE_NOTIFICATION",
            "--identity-code",
            "010190Y999W",
            "--home-municipality",
            "091",
            "--reason",
            "family-and-children",
            "--statutory-ground",
            "child-welfare-act-duty",
            "--reason-text",
            "child left without care",
            "--request-id",
            REFERRAL_UUID,
        ]);
        let Command::Referral(ReferralCommand::CreateReferral(create)) = args.command else {
            panic!("wrong command: {:?}", args.command);
        };
        let referral = referral_from_args(&create);
        assert_eq!(
            referral.basis,
            Some(referral::Basis::StatutoryGround(i32::from(
                referral::StatutoryGround::ChildWelfareActDuty
            )))
        );
        assert_eq!(referral.reason_text, "child left without care");
        assert_eq!(
            create.request.request_id.map(|id| id.to_string()),
            Some(REFERRAL_UUID.to_owned())
        );
    }

    #[test]
    fn record_consent_with_valid_days() {
        let args = parse_ok(&[
            "record-consent",
            "--identity-code",
            "131052-308T",
            "--recipient",
            "hva-15",
            "--recipient",
            "organizations/helsinki",
            "--form",
            "written",
            "--given-by",
            "legal-representative",
            "--valid-from",
            "2025-03-01T09:00:00+02:00",
            "--valid-days",
            "30",
            "--evidence-reference",
            "Y100/2025/123",
        ]);
        let Command::Consent(ConsentCommand::RecordConsent(record)) = args.command else {
            panic!("wrong command: {:?}", args.command);
        };
        let request = record_consent_request(&record, "rid".into(), Utc::now());
        assert_eq!(request.request_id, "rid");
        let consent = request.consent.unwrap_or_default();
        assert_eq!(
            consent.recipients,
            ["organizations/hva-15", "organizations/helsinki"]
        );
        assert_eq!(consent.form, i32::from(consent::Form::Written));
        assert_eq!(
            consent.given_by,
            i32::from(consent::GivenBy::LegalRepresentative)
        );
        assert_eq!(
            consent.purpose,
            i32::from(consent::Purpose::SocialWelfareReferral)
        );
        let from = consent.valid_from.unwrap_or_default();
        let until = consent.expire_time.unwrap_or_default();
        assert_eq!(from.seconds, 1_740_812_400); // 2025-03-01T07:00:00Z
        assert_eq!(until.seconds - from.seconds, 30 * 24 * 60 * 60);
        assert_eq!(consent.evidence_reference, "Y100/2025/123");
    }

    #[test]
    fn record_consent_valid_days_counts_from_now_without_valid_from() {
        let args = parse_ok(&[
            "record-consent",
            "--identity-code",
            "131052-308T",
            "--recipient",
            "hva-15",
            "--form",
            "electronic",
            "--given-by",
            "subject",
            "--valid-days",
            "1",
        ]);
        let Command::Consent(ConsentCommand::RecordConsent(record)) = args.command else {
            panic!("wrong command: {:?}", args.command);
        };
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let consent = record_consent_request(&record, String::new(), now)
            .consent
            .unwrap_or_default();
        assert_eq!(consent.valid_from, None, "left to the server");
        assert_eq!(
            consent.expire_time.map(|t| t.seconds),
            Some(1_700_000_000 + 86_400)
        );
    }
}
