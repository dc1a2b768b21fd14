//! `referral-exchange client …`: one subcommand per API method, for operators, scripts and tests.
//!
//! Each subcommand builds exactly one request, sends it over mutual TLS with the caller's
//! `x-user-id` (and optional `x-correlation-id`) metadata, and prints the response on stdout as
//! pretty canonical proto3 JSON (the pbjson serde impls), so the output can be piped into `jq` and
//! matches what `grpcurl` shows. Fields holding their default value are left out, as proto3 JSON
//! does: an empty list response prints `{}`.
//!
//! # Exit codes and stderr
//!
//! * `0`: the call succeeded; the response is on stdout.
//! * `1`: the server refused the call. stderr gets one line of JSON:
//!   `{"code":"INVALID_ARGUMENT","message":…,"reason":…,"field_violations":[…],"precondition_violations":[…]}`
//!   (the `google.rpc.Status` details of AIP-193), so a script can branch on `code` and `reason`
//!   without parsing messages. `health` also exits 1 when the server answers but is not `SERVING`.
//! * `2`: the server could not be reached or the connection broke (TCP, TLS, HTTP/2). stderr gets
//!   `error: …` with the whole source chain, because the outermost message of a transport error
//!   ("transport error") says nothing useful on its own.
//! * `Err` from [`run`]: a local problem found before anything was sent (missing certificate
//!   files, an unusable endpoint), or a response that cannot be printed; the caller reports it.
//!
//! Every mutating command carries a `request_id` (AIP-155). When `--request-id` is not given, a
//! UUID v4 is generated and printed to stderr as `request_id: …` *before* the call, so that a script
//! whose call failed in transit can retry with the same id and get the first result back instead of
//! a duplicate.
//!
//! # What the client does not do
//!
//! It does not validate personal identity codes, municipality codes or page sizes: the server is the
//! one authority on those rules, and a second copy here would drift. It only tidies what a person
//! types (spaces and lower case in identity codes, bare UUIDs and organisation ids for resource
//! names). Identity codes are personal data: they are never logged or echoed in errors, and their
//! `Debug` form is redacted so that printing the parsed arguments cannot leak them.

use std::ffi::OsStr;
use std::fmt;
use std::io::Write as _;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use serde::Serialize;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::access::{CORRELATION_ID_HEADER, USER_ID_HEADER};
use crate::domain::PersonalIdentityCode;
use crate::proto::v1::{
    AcceptReferralRequest, AcknowledgeMessagesRequest, CancelReferralRequest,
    CompleteReferralRequest, Consent, CreateReferralRequest, ExportAuditEventsRequest,
    ForwardReferralRequest, GetCheckpointRequest, GetConsentRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest, GetMailboxStatsRequest, GetReferralRequest,
    GetSubjectAccessReportRequest, GetSubjectAccessReportResponse, ListAuditEventsRequest,
    ListConsentEventsRequest, ListConsentsRequest, ListDeadLettersRequest,
    ListMailboxHistoryRequest, ListOrganizationsRequest, ListReferralsRequest, ModifyLeasesRequest,
    PullMessagesRequest, RecordConsentRequest, RedriveDeadLettersRequest, Referral,
    RejectReferralRequest, ResolveRecipientRequest, StartAssessmentRequest, StreamMessagesRequest,
    Subject, WithdrawConsentRequest, audit_service_client::AuditServiceClient, consent,
    consent_event, consent_service_client::ConsentServiceClient,
    directory_service_client::DirectoryServiceClient, mailbox_service_client::MailboxServiceClient,
    organization, referral, referral_service_client::ReferralServiceClient,
};
use crate::tls::{client_tls_config, install_crypto_provider};

/// How long to wait for the TCP connection and the TLS handshake together. Without a limit a
/// firewall that drops packets (rather than refusing) would hang a script for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code for a call the server refused (a `google.rpc.Status` came back).
const EXIT_REFUSED: u8 = 1;

/// Exit code for a server that could not be reached or a connection that broke.
const EXIT_TRANSPORT: u8 = 2;

/// Resource name prefixes (AIP-122). The API takes full names only; people paste bare ids too.
const REFERRALS_PREFIX: &str = "referrals/";
const CONSENTS_PREFIX: &str = "consents/";
const ORGANIZATIONS_PREFIX: &str = "organizations/";

/// `referral-exchange client …`: call the referral exchange API from the command line.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Where and as whom to connect.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The API method to call.
    #[command(subcommand)]
    pub command: Command,
}

/// Where to connect and which identity to present. All are global, so they may also be given after
/// the subcommand, and each has an environment variable so a shell session can be set up once.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// Server address. Only `https` is accepted: the exchange speaks mutual TLS only.
    #[arg(
        long,
        global = true,
        env = "REFERRAL_EXCHANGE_ENDPOINT",
        default_value = "https://localhost:50051",
        value_parser = parse_endpoint
    )]
    pub endpoint: String,

    /// Profile directory holding `cert.pem`, `key.pem` and `ca.pem` (as handed out per
    /// organisation; the development PKI writes them to `var/pki/clients/<org>/`).
    #[arg(
        long,
        global = true,
        env = "REFERRAL_EXCHANGE_PROFILE",
        value_name = "DIR"
    )]
    pub profile: Option<PathBuf>,

    /// Client certificate (PEM); overrides the profile's `cert.pem`.
    #[arg(
        long,
        global = true,
        env = "REFERRAL_EXCHANGE_CERT",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,

    /// Client private key (PEM); overrides the profile's `key.pem`.
    #[arg(
        long,
        global = true,
        env = "REFERRAL_EXCHANGE_KEY",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,

    /// CA certificate(s) to trust for the server (PEM); overrides the profile's `ca.pem`.
    #[arg(long, global = true, env = "REFERRAL_EXCHANGE_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Name the server certificate must carry. Separate from the endpoint so that a client can
    /// connect by IP address and still verify the name.
    #[arg(
        long,
        global = true,
        env = "REFERRAL_EXCHANGE_SERVER_NAME",
        default_value = "localhost"
    )]
    pub server_name: String,

    /// The person acting (handler or worker id), sent as `x-user-id`. Required by the server for
    /// Kela and receivers; it goes into the audit trail and is never used for authorisation.
    #[arg(
        long,
        global = true,
        env = "REFERRAL_EXCHANGE_USER",
        value_parser = parse_metadata_value
    )]
    pub user: Option<AsciiMetadataValue>,

    /// Sent as `x-correlation-id` and recorded in the audit trail, to tie the call to a case or
    /// ticket in the caller's own systems.
    #[arg(
        long,
        global = true,
        env = "REFERRAL_EXCHANGE_CORRELATION_ID",
        value_parser = parse_metadata_value
    )]
    pub correlation_id: Option<AsciiMetadataValue>,
}

/// One subcommand per API method.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    // ---- ConsentService ----
    /// Record a consent the client (or their legal representative) gave. Kela only.
    RecordConsent(RecordConsentArgs),

    /// Show one consent.
    GetConsent {
        /// `consents/{uuid}` or the bare UUID.
        #[arg(value_parser = parse_consent_name)]
        name: String,
    },

    /// List consents.
    ListConsents {
        /// Only consents of this person.
        #[arg(long, value_parser = parse_identity_code)]
        identity_code: Option<IdentityCode>,
        /// Only consents in this state.
        #[arg(long, value_parser = ProtoEnumParser::<consent::State>::new())]
        state: Option<consent::State>,
        #[command(flatten)]
        page: PageArgs,
    },

    /// Record that a consent was withdrawn. Kela only. Referrals still waiting under it are
    /// cancelled; receivers that already have one are told.
    WithdrawConsent {
        /// `consents/{uuid}` or the bare UUID.
        #[arg(value_parser = parse_consent_name)]
        name: String,
        /// Why, in Kela's words.
        #[arg(long)]
        reason_text: Option<String>,
        /// The consent's `etag` from a previous read; the call fails with ABORTED if the consent
        /// changed since.
        #[arg(long)]
        etag: Option<String>,
        #[command(flatten)]
        request: RequestIdArgs,
    },

    /// List the consent log: grants, uses, withdrawals and expiries.
    ListConsentEvents {
        /// Only events of this person's consents.
        #[arg(long, value_parser = parse_identity_code)]
        identity_code: Option<IdentityCode>,
        /// Only events caused by this organisation (`hva-15` or `organizations/hva-15`).
        #[arg(long, value_parser = parse_organization_name)]
        organization: Option<String>,
        /// Only events of this consent (`consents/{uuid}` or the bare UUID).
        #[arg(long, value_parser = parse_consent_name)]
        consent: Option<String>,
        #[command(flatten)]
        time: TimeRangeArgs,
        #[command(flatten)]
        page: PageArgs,
    },

    // ---- ReferralService ----
    /// Create a referral; it is routed to the organiser of the home municipality. Kela only.
    CreateReferral(CreateReferralArgs),

    /// Show one referral.
    GetReferral {
        /// `referrals/{uuid}` or the bare UUID.
        #[arg(value_parser = parse_referral_name)]
        name: String,
    },

    /// List referrals (Kela sees all; a receiver those routed to it).
    ListReferrals {
        /// Only referrals in this state.
        #[arg(long, value_parser = ProtoEnumParser::<referral::State>::new())]
        state: Option<referral::State>,
        /// Only referrals of this kind.
        #[arg(long, value_parser = ProtoEnumParser::<referral::Kind>::new())]
        kind: Option<referral::Kind>,
        /// Only referrals currently routed to this organisation (`hva-15` or
        /// `organizations/hva-15`).
        #[arg(long, value_parser = parse_organization_name)]
        recipient: Option<String>,
        /// Only referrals about this person.
        #[arg(long, value_parser = parse_identity_code)]
        identity_code: Option<IdentityCode>,
        /// Only referrals created at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
        created_after: Option<DateTime<Utc>>,
        /// Only referrals created before this time (RFC 3339).
        #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
        created_before: Option<DateTime<Utc>>,
        /// Only referrals with a deadline passed without the state it requires.
        #[arg(long)]
        overdue: bool,
        #[command(flatten)]
        page: PageArgs,
    },

    /// Withdraw a referral that has not reached a final state. Kela only.
    CancelReferral {
        #[command(flatten)]
        change: ReferralChangeArgs,
        /// Kela's explanation of the cancellation.
        #[arg(long)]
        reason_text: Option<String>,
    },

    /// Take the matter up (RECEIVED → ACCEPTED). Receivers only.
    AcceptReferral {
        #[command(flatten)]
        change: ReferralChangeArgs,
    },

    /// Start the service-needs assessment (ACCEPTED → IN_PROGRESS). Receivers only.
    StartAssessment {
        #[command(flatten)]
        change: ReferralChangeArgs,
    },

    /// Close the matter with a coded outcome (→ COMPLETED). Receivers only.
    CompleteReferral {
        #[command(flatten)]
        change: ReferralChangeArgs,
        /// The coded outcome; this, not free text, is what flows back to Kela.
        #[arg(long, value_parser = ProtoEnumParser::<referral::Outcome>::new())]
        outcome: referral::Outcome,
    },

    /// Decline the referral with a coded reason (→ REJECTED). Receivers only.
    RejectReferral {
        #[command(flatten)]
        change: ReferralChangeArgs,
        /// The coded reason; Kela sees only this.
        #[arg(long, value_parser = ProtoEnumParser::<referral::RejectionReason>::new())]
        reason: referral::RejectionReason,
        /// The receiver's own explanation; stays with receivers.
        #[arg(long)]
        reason_text: Option<String>,
    },

    /// Route the referral to the organiser of another municipality (it returns to REQUESTED
    /// there). Receivers only.
    ForwardReferral {
        #[command(flatten)]
        change: ReferralChangeArgs,
        /// Three-digit municipality code whose organiser should handle the referral.
        #[arg(long = "home-municipality", value_name = "CODE")]
        home_municipality_code: String,
    },

    // ---- MailboxService ----
    /// Pull messages from this organisation's mailbox, each leased until acknowledged.
    PullMessages {
        /// At most this many messages (1–100).
        #[arg(long, default_value_t = 10)]
        max_messages: i32,
        /// Lease each message for this long (10–600 s) before it is delivered again.
        #[arg(long, default_value_t = 60)]
        lease_seconds: u32,
        /// Wait up to this long (0–20 s) when the mailbox is empty.
        #[arg(long, default_value_t = 0)]
        wait_seconds: u32,
    },

    /// Acknowledge delivered messages. Acknowledging REFERRAL_ROUTED is how a receiver takes
    /// delivery (the referral becomes RECEIVED and its deadlines start).
    AcknowledgeMessages {
        /// `ack_id`s from pull-messages.
        #[arg(required = true, value_name = "ACK_ID")]
        ack_ids: Vec<String>,
    },

    /// Extend leases, or release them (`--lease-seconds 0`) for immediate redelivery.
    ModifyLeases {
        /// `ack_id`s from pull-messages.
        #[arg(required = true, value_name = "ACK_ID")]
        ack_ids: Vec<String>,
        /// New lease from now (10–600 s), or 0 to release.
        #[arg(long)]
        lease_seconds: u32,
    },

    /// Receive messages as a stream, one JSON object per line as they arrive, with at most
    /// `--max-outstanding` delivered and not yet acknowledged.
    StreamMessages {
        /// Lease each message for this long (10–600 s).
        #[arg(long, default_value_t = 60)]
        lease_seconds: u32,
        /// Messages delivered and not yet acknowledged, at most (1–1000).
        #[arg(long, default_value_t = 10)]
        max_outstanding: i32,
        /// Stop after this many messages (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// Acknowledge each message once printed.
        #[arg(long)]
        ack: bool,
    },

    /// Messages given up after `max_delivery_attempts` deliveries without acknowledgement.
    ListDeadLetters {
        #[command(flatten)]
        page: PageArgs,
    },

    /// Put dead letters back for delivery (all of them, or those named).
    RedriveDeadLetters {
        /// `message_id`s; none means every dead letter of the mailbox.
        #[arg(value_name = "MESSAGE_ID")]
        message_ids: Vec<String>,
        #[command(flatten)]
        request: RequestIdArgs,
    },

    /// Every message of the mailbox after a sequence number, acknowledged ones included.
    ListMailboxHistory {
        /// Messages with a larger sequence number; 0 for the beginning.
        #[arg(long, default_value_t = 0)]
        since_sequence: i64,
        #[arg(long)]
        page_size: Option<i32>,
    },

    /// Pending, leased and dead-lettered counts and the age of the oldest pending message.
    GetMailboxStats,

    // ---- AuditService ----
    /// List access and disclosure log events. Auditors only.
    ListAuditEvents {
        /// Only events about this person (matched by the server through its pseudonym).
        #[arg(long, value_parser = parse_identity_code)]
        identity_code: Option<IdentityCode>,
        /// Only calls by this organisation (`kela` or `organizations/kela`).
        #[arg(long, value_parser = parse_organization_name)]
        organization: Option<String>,
        /// Only calls by this person (`x-user-id` as the caller stated it).
        #[arg(long)]
        user_id: Option<String>,
        /// Only calls of this method, full (`/referral_exchange.v1.ReferralService/GetReferral`)
        /// or short (`GetReferral`).
        #[arg(long)]
        method: Option<String>,
        /// Only calls that touched this resource, e.g. `referrals/{uuid}`.
        #[arg(long)]
        resource: Option<String>,
        #[command(flatten)]
        time: TimeRangeArgs,
        #[command(flatten)]
        page: PageArgs,
    },

    /// The latest signed checkpoint of the tamper-evident audit log. Auditors only.
    GetCheckpoint {
        /// Print only the signed note, to keep in a file for `referral-exchange audit verify`.
        #[arg(long)]
        note: bool,
    },

    /// The proof that a leaf is in the audit log's tree of a given size. Auditors only.
    GetInclusionProof {
        /// The leaf (an audit event's `leafIndex`).
        #[arg(long)]
        leaf_index: i64,
        /// The tree size; default: the latest checkpoint's.
        #[arg(long)]
        tree_size: Option<i64>,
    },

    /// The proof that an earlier tree of the audit log is a prefix of a later one. Auditors only.
    GetConsistencyProof {
        /// The earlier tree size (at least 1).
        #[arg(long = "first")]
        first_tree_size: i64,
        /// The later tree size; default: the latest checkpoint's.
        #[arg(long = "second")]
        second_tree_size: Option<i64>,
    },

    /// Export audit log leaves with their events and exact leaf data, one JSON object per line
    /// (the input of `referral-exchange audit verify`). Auditors only.
    ExportAuditEvents {
        /// First leaf (inclusive).
        #[arg(long, default_value_t = 0)]
        start_index: i64,
        /// Last leaf (exclusive); default: the latest checkpoint's size.
        #[arg(long)]
        end_index: Option<i64>,
    },

    /// Everything about one person: who processed their data and when, what was disclosed to whom
    /// on which basis, and their consent events (default: the last two years). Auditors only.
    GetSubjectAccessReport {
        /// The person's personal identity code.
        #[arg(long, value_parser = parse_identity_code)]
        identity_code: IdentityCode,
        #[command(flatten)]
        time: TimeRangeArgs,
        /// `json` (the response as is) or `table` (for reading).
        #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
        format: ReportFormat,
    },

    // ---- DirectoryService ----
    /// List the organisations taking part.
    ListOrganizations {
        /// Only organisations with this role.
        #[arg(long, value_parser = ProtoEnumParser::<organization::Role>::new())]
        role: Option<organization::Role>,
    },

    /// Which organiser is responsible for a home municipality on a date.
    ResolveRecipient {
        /// Three-digit municipality code, e.g. `091`.
        #[arg(long = "home-municipality", value_name = "CODE")]
        home_municipality_code: String,
        /// The date whose code list applies (`YYYY-MM-DD`); the server defaults to today in
        /// Europe/Helsinki.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        date: Option<NaiveDate>,
    },

    // ---- grpc.health.v1 ----
    /// Check that the server is up (standard gRPC health check of the whole server). Exits 1 when
    /// it answers but is not SERVING.
    Health,
}

/// How `get-subject-access-report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Json,
    Table,
}

/// `record-consent` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct RecordConsentArgs {
    /// The person's personal identity code (spaces and lower case are tidied; the server
    /// validates it).
    #[arg(long, value_parser = parse_identity_code)]
    pub identity_code: IdentityCode,
    /// A receiver the consent covers (`hva-15` or `organizations/hva-15`). Repeat for several.
    #[arg(
        long = "recipient",
        required = true,
        value_name = "ORG",
        value_parser = parse_organization_name
    )]
    pub recipients: Vec<String>,
    /// How the consent was given. An oral consent covers one referral only.
    #[arg(long, value_parser = ProtoEnumParser::<consent::Form>::new())]
    pub form: consent::Form,
    /// Who gave it.
    #[arg(long, value_parser = ProtoEnumParser::<consent::GivenBy>::new())]
    pub given_by: consent::GivenBy,
    /// What the consent is for. There is one purpose today; the flag exists so that scripts keep
    /// working when more are added.
    #[arg(
        long,
        default_value = "social-welfare-referral",
        value_parser = ProtoEnumParser::<consent::Purpose>::new()
    )]
    pub purpose: consent::Purpose,
    /// Start of validity (RFC 3339); the server defaults it to the time of recording.
    #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
    pub valid_from: Option<DateTime<Utc>>,
    /// End of validity (RFC 3339). Required by the server for written and electronic consents.
    #[arg(long, value_parser = parse_time, value_name = "RFC3339", conflicts_with = "valid_days")]
    pub expire_time: Option<DateTime<Utc>>,
    /// End of validity as a number of days from `--valid-from` (or from now).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500), value_name = "N")]
    pub valid_days: Option<u32>,
    /// Where the evidence is kept, e.g. the archive reference of a signed form. No personal data.
    #[arg(long)]
    pub evidence_reference: Option<String>,
    #[command(flatten)]
    pub request: RequestIdArgs,
}

/// `create-referral` arguments.
#[derive(clap::Args, Debug, Clone)]
#[command(group(
    clap::ArgGroup::new("basis")
        .required(true)
        .args(["consent", "statutory_ground"])
))]
pub struct CreateReferralArgs {
    /// What kind of referral.
    #[arg(long, value_parser = ProtoEnumParser::<referral::Kind>::new())]
    pub kind: referral::Kind,
    /// The person's personal identity code (spaces and lower case are tidied; the server
    /// validates it).
    #[arg(long, value_parser = parse_identity_code)]
    pub identity_code: IdentityCode,
    /// Three-digit code of the home municipality; it decides the recipient.
    #[arg(long = "home-municipality", value_name = "CODE")]
    pub home_municipality_code: String,
    /// Three-digit code of the municipality where the person stays now, if different.
    #[arg(long = "current-municipality", value_name = "CODE")]
    pub current_municipality_code: Option<String>,
    /// A reason category. Repeat for several.
    #[arg(
        long = "reason",
        required = true,
        value_name = "REASON",
        value_parser = ProtoEnumParser::<referral::Reason>::new()
    )]
    pub reasons: Vec<referral::Reason>,
    /// Kela's description of the need. Required with `--statutory-ground`.
    #[arg(long)]
    pub reason_text: Option<String>,
    /// The need is urgent: the receiver must assess it immediately.
    #[arg(long)]
    pub urgent: bool,
    /// Statutory deadline group for starting the assessment.
    #[arg(
        long,
        default_value = "no-statutory-group",
        value_parser = ProtoEnumParser::<referral::DeadlineGroup>::new()
    )]
    pub deadline_group: referral::DeadlineGroup,
    /// The consent the referral relies on (`consents/{uuid}` or the bare UUID).
    #[arg(long, value_parser = parse_consent_name)]
    pub consent: Option<String>,
    /// The statutory ground of a notification made without consent (a duty, never blocked for
    /// lack of consent). Needs `--reason-text`.
    #[arg(
        long,
        value_parser = ProtoEnumParser::<referral::StatutoryGround>::new(),
        requires = "reason_text"
    )]
    pub statutory_ground: Option<referral::StatutoryGround>,
    /// The client asked for a personal discussion with social services.
    #[arg(long)]
    pub personal_discussion: bool,
    /// Kela's application reference (for supplementary-or-preventive-assistance).
    #[arg(long)]
    pub application_reference: Option<String>,
    /// The person's name.
    #[arg(long)]
    pub name: Option<String>,
    /// A phone number where the receiver can reach the person.
    #[arg(long)]
    pub phone: Option<String>,
    /// The person's preferred language as a BCP 47 tag (`fi`, `sv`, `en`…).
    #[arg(long)]
    pub language: Option<String>,
    #[command(flatten)]
    pub request: RequestIdArgs,
}

/// The arguments every state change of a referral takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ReferralChangeArgs {
    /// `referrals/{uuid}` or the bare UUID.
    #[arg(value_parser = parse_referral_name)]
    pub name: String,
    /// The referral's `etag` from a previous read; the call fails with ABORTED if the referral
    /// changed since (AIP-154).
    #[arg(long)]
    pub etag: Option<String>,
    #[command(flatten)]
    pub request: RequestIdArgs,
}

/// The idempotency key of a mutating call (AIP-155).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RequestIdArgs {
    /// Idempotency key. Retrying with the same id returns the first result; omitted, a new UUID
    /// is generated and printed to stderr.
    #[arg(long, value_name = "UUID")]
    pub request_id: Option<Uuid>,
}

/// AIP-158 pagination.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PageArgs {
    /// Results per page (the server's default when omitted).
    #[arg(long)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[arg(long)]
    pub page_token: Option<String>,
}

/// A time range filter.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TimeRangeArgs {
    /// Only events at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
    pub start_time: Option<DateTime<Utc>>,
    /// Only events before this time (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "RFC3339")]
    pub end_time: Option<DateTime<Utc>>,
}

/// A personal identity code as typed, tidied but not validated. `Debug` is redacted because the
/// parsed arguments are `Debug` and the code is personal data that must not reach logs.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityCode(String);

impl IdentityCode {
    /// The tidied code, to be sent to the server.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdentityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityCode(<redacted>)")
    }
}

/// Runs one `referral-exchange client` command: connects, calls, prints. See the module docs for
/// the exit codes.
pub async fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let ClientArgs {
        connection,
        command,
    } = args;
    let channel = match connection.connect().await? {
        Ok(channel) => channel,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(EXIT_TRANSPORT));
        }
    };
    let session = Session {
        channel,
        user: connection.user,
        correlation_id: connection.correlation_id,
    };
    match execute(command, &session).await {
        Ok(Output {
            json,
            healthy,
            text,
        }) => {
            let text = match text {
                Some(text) => text,
                None => serde_json::to_string_pretty(&json)? + "\n",
            };
            write!(std::io::stdout().lock(), "{text}").context("writing to stdout")?;
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REFUSED)
            })
        }
        Err(CallError::Rpc(status)) => {
            let code = report_status(&status);
            Ok(ExitCode::from(code))
        }
        Err(CallError::Output(error)) => Err(anyhow::Error::new(error).context(
            "the call succeeded but its response cannot be printed as JSON \
             (the server may be newer than this client)",
        )),
    }
}

impl ConnectionArgs {
    /// The certificate, key and CA files to use: explicit flags win over the profile's files.
    /// Fails (before any network traffic) when a file is named by neither.
    fn tls_files(&self) -> anyhow::Result<TlsFiles> {
        let pick = |explicit: &Option<PathBuf>, file: &str, flag: &str| {
            explicit
                .clone()
                .or_else(|| self.profile.as_deref().map(|dir| dir.join(file)))
                .with_context(|| {
                    format!(
                        "no {file}: give --profile DIR (or REFERRAL_EXCHANGE_PROFILE) or {flag} FILE"
                    )
                })
        };
        Ok(TlsFiles {
            cert: pick(&self.cert, "cert.pem", "--cert")?,
            key: pick(&self.key, "key.pem", "--key")?,
            ca: pick(&self.ca, "ca.pem", "--ca")?,
        })
    }

    /// Connects with mutual TLS. The outer `Err` is a local setup problem (files, endpoint); the
    /// inner one a failure to reach the server, as a message with its source chain.
    async fn connect(&self) -> anyhow::Result<Result<Channel, String>> {
        let files = self.tls_files()?;
        // tonic builds its rustls configs with the process-default provider; installing ring
        // explicitly keeps rustls from panicking if another provider is ever compiled in too.
        install_crypto_provider();
        let tls = client_tls_config(&files.ca, &files.cert, &files.key, &self.server_name)
            .context("loading the TLS client profile")?;
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .with_context(|| format!("endpoint {}", self.endpoint))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tls_config(tls)
            .with_context(|| format!("TLS settings for {}", self.endpoint))?;
        // `connect_timeout` covers TCP only; the outer timeout also bounds the TLS handshake,
        // which a half-open server could otherwise stall forever.
        Ok(
            match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
                Ok(Ok(channel)) => Ok(channel),
                Ok(Err(error)) => Err(format!(
                    "cannot connect to {}: {}",
                    self.endpoint,
                    error_chain(&error)
                )),
                Err(_) => Err(format!(
                    "cannot connect to {}: no connection within {} s",
                    self.endpoint,
                    CONNECT_TIMEOUT.as_secs()
                )),
            },
        )
    }
}

/// The three PEM files of a client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// A connected channel plus the metadata every request carries.
struct Session {
    channel: Channel,
    user: Option<AsciiMetadataValue>,
    correlation_id: Option<AsciiMetadataValue>,
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
}

/// What a successful call prints, and whether it counts as success for the exit code.
struct Output {
    json: serde_json::Value,
    healthy: bool,
    /// Printed instead of the JSON when set (already printed when empty).
    text: Option<String>,
}

/// Why a call produced no output.
#[derive(Debug)]
enum CallError {
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
        })
        .map_err(CallError::Output)
}

/// Sends the request `command` stands for.
async fn execute(command: Command, session: &Session) -> Result<Output, CallError> {
    let s = session;
    match command {
        Command::RecordConsent(args) => {
            let request_id = request_id(&args.request);
            let request = record_consent_request(&args, request_id, Utc::now());
            json(s.consents().record_consent(s.request(request)).await?)
        }
        Command::GetConsent { name } => json(
            s.consents()
                .get_consent(s.request(GetConsentRequest { name }))
                .await?,
        ),
        Command::ListConsents {
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
        Command::WithdrawConsent {
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
        Command::ListConsentEvents {
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
        Command::CreateReferral(args) => {
            let request = CreateReferralRequest {
                referral: Some(referral_from_args(&args)),
                request_id: request_id(&args.request),
            };
            json(s.referrals().create_referral(s.request(request)).await?)
        }
        Command::GetReferral { name } => json(
            s.referrals()
                .get_referral(s.request(GetReferralRequest { name }))
                .await?,
        ),
        Command::ListReferrals {
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
        Command::CancelReferral {
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
        Command::AcceptReferral { change } => {
            let request = AcceptReferralRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
            };
            json(s.referrals().accept_referral(s.request(request)).await?)
        }
        Command::StartAssessment { change } => {
            let request = StartAssessmentRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
            };
            json(s.referrals().start_assessment(s.request(request)).await?)
        }
        Command::CompleteReferral { change, outcome } => {
            let request = CompleteReferralRequest {
                request_id: request_id(&change.request),
                name: change.name,
                etag: change.etag.unwrap_or_default(),
                outcome: outcome.into(),
            };
            json(s.referrals().complete_referral(s.request(request)).await?)
        }
        Command::RejectReferral {
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
        Command::ForwardReferral {
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
        Command::PullMessages {
            max_messages,
            lease_seconds,
            wait_seconds,
        } => {
            let request = PullMessagesRequest {
                max_messages,
                lease_duration: Some(seconds(lease_seconds)),
                wait_duration: Some(seconds(wait_seconds)),
            };
            json(s.mailbox().pull_messages(s.request(request)).await?)
        }
        Command::AcknowledgeMessages { ack_ids } => {
            let request = AcknowledgeMessagesRequest { ack_ids };
            json(s.mailbox().acknowledge_messages(s.request(request)).await?)
        }
        Command::ModifyLeases {
            ack_ids,
            lease_seconds,
        } => {
            let request = ModifyLeasesRequest {
                ack_ids,
                lease_duration: Some(seconds(lease_seconds)),
            };
            json(s.mailbox().modify_leases(s.request(request)).await?)
        }
        Command::StreamMessages {
            lease_seconds,
            max_outstanding,
            count,
            ack,
        } => {
            let request = StreamMessagesRequest {
                lease_duration: Some(seconds(lease_seconds)),
                max_outstanding_messages: max_outstanding,
            };
            let mut stream = s
                .mailbox()
                .stream_messages(s.request(request))
                .await?
                .into_inner();
            let mut received: u64 = 0;
            while count.is_none_or(|n| received < n) {
                let Some(message) = stream.message().await? else {
                    break;
                };
                let line = serde_json::to_string(&message).map_err(CallError::Output)?;
                if writeln!(std::io::stdout().lock(), "{line}").is_err() {
                    break;
                }
                if ack {
                    let request = AcknowledgeMessagesRequest {
                        ack_ids: vec![message.ack_id],
                    };
                    s.mailbox().acknowledge_messages(s.request(request)).await?;
                }
                received += 1;
            }
            Ok(Output {
                json: serde_json::json!({ "received": received }),
                healthy: true,
                text: None,
            })
        }
        Command::ListDeadLetters { page } => {
            let request = ListDeadLettersRequest {
                page_size: page.page_size.unwrap_or_default(),
                page_token: page.page_token.unwrap_or_default(),
            };
            json(s.mailbox().list_dead_letters(s.request(request)).await?)
        }
        Command::RedriveDeadLetters {
            message_ids,
            request,
        } => {
            let request = RedriveDeadLettersRequest {
                message_ids,
                request_id: request_id(&request),
            };
            json(s.mailbox().redrive_dead_letters(s.request(request)).await?)
        }
        Command::ListMailboxHistory {
            since_sequence,
            page_size,
        } => {
            let request = ListMailboxHistoryRequest {
                since_sequence,
                page_size: page_size.unwrap_or_default(),
            };
            json(s.mailbox().list_mailbox_history(s.request(request)).await?)
        }
        Command::GetMailboxStats => json(
            s.mailbox()
                .get_mailbox_stats(s.request(GetMailboxStatsRequest {}))
                .await?,
        ),
        Command::ListAuditEvents {
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
        Command::GetCheckpoint { note } => {
            let response = s
                .audit()
                .get_checkpoint(s.request(GetCheckpointRequest {}))
                .await?;
            if note {
                let note = response.into_inner().checkpoint;
                Ok(Output {
                    json: serde_json::Value::Null,
                    healthy: true,
                    text: Some(note),
                })
            } else {
                json(response)
            }
        }
        Command::GetInclusionProof {
            leaf_index,
            tree_size,
        } => {
            let request = GetInclusionProofRequest {
                leaf_index,
                tree_size: tree_size.unwrap_or_default(),
            };
            json(s.audit().get_inclusion_proof(s.request(request)).await?)
        }
        Command::GetConsistencyProof {
            first_tree_size,
            second_tree_size,
        } => {
            let request = GetConsistencyProofRequest {
                first_tree_size,
                second_tree_size: second_tree_size.unwrap_or_default(),
            };
            json(s.audit().get_consistency_proof(s.request(request)).await?)
        }
        Command::ExportAuditEvents {
            start_index,
            end_index,
        } => {
            let request = ExportAuditEventsRequest {
                start_index,
                end_index: end_index.unwrap_or_default(),
            };
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
            Ok(Output {
                json: serde_json::Value::Null,
                healthy: true,
                text: Some(String::new()),
            })
        }
        Command::GetSubjectAccessReport {
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
                ReportFormat::Table => Ok(Output {
                    json: serde_json::Value::Null,
                    healthy: true,
                    text: Some(report_table(&response.into_inner())),
                }),
            }
        }
        Command::ListOrganizations { role } => {
            let request = ListOrganizationsRequest {
                role: enum_or_zero(role),
            };
            json(s.directory().list_organizations(s.request(request)).await?)
        }
        Command::ResolveRecipient {
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
        Command::Health => health(s).await,
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
            let start = args.valid_from.unwrap_or(now);
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
fn report_table(report: &GetSubjectAccessReportResponse) -> String {
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
fn report_status(status: &Status) -> u8 {
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
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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

// ---- argument parsing ----

/// A prost enum of the API, with what the flag parser needs. Implemented by `proto_enums!` for
/// every enum a flag takes.
trait ProtoEnum: Copy + Send + Sync + 'static + TryFrom<i32> + Into<i32> {
    /// The value named `name` exactly as in the .proto (`NEED_FOR_SOCIAL_WORK`).
    fn from_proto_name(name: &str) -> Option<Self>;
    /// The flag spellings (kebab-case) of every value except `…_UNSPECIFIED`, in number order.
    fn flag_names() -> &'static [String];
}

/// Every value of `E` except the zero value: numbers 1, 2, … until one is not defined. The API's
/// enums are numbered without gaps, so this finds them all without copying the list from the
/// .proto (which would go stale when a value is added).
fn defined_values<E: ProtoEnum>() -> impl Iterator<Item = E> {
    (1..).map_while(|n| E::try_from(n).ok())
}

/// `NEED_FOR_SOCIAL_WORK` → `need-for-social-work`.
fn kebab(proto_name: &str) -> String {
    proto_name.to_ascii_lowercase().replace('_', "-")
}

macro_rules! proto_enums {
    ($($ty:ty),* $(,)?) => {$(
        impl ProtoEnum for $ty {
            fn from_proto_name(name: &str) -> Option<Self> {
                <$ty>::from_str_name(name)
            }
            fn flag_names() -> &'static [String] {
                // clap's PossibleValue wants 'static strings (without its "string" feature);
                // computing them once per enum into a static gives that without leaking.
                static NAMES: OnceLock<Vec<String>> = OnceLock::new();
                NAMES.get_or_init(|| {
                    defined_values::<$ty>().map(|v| kebab(v.as_str_name())).collect()
                })
            }
        }
    )*};
}

proto_enums!(
    referral::Kind,
    referral::StatutoryGround,
    referral::Reason,
    referral::DeadlineGroup,
    referral::State,
    referral::Outcome,
    referral::RejectionReason,
    consent::Purpose,
    consent::Form,
    consent::GivenBy,
    consent::State,
    organization::Role,
);

/// Reads a flag value as a value of `E`: kebab-case or upper snake case, in any letter case.
/// `…_UNSPECIFIED` is refused: a flag that is given must say something (omit a filter instead).
fn parse_proto_enum<E: ProtoEnum>(text: &str) -> Option<E> {
    let name = text.trim().to_ascii_uppercase().replace('-', "_");
    E::from_proto_name(&name).filter(|&value| value.into() != 0)
}

/// clap value parser for a proto enum flag: accepts what [`parse_proto_enum`] accepts, lists the
/// values in `--help`, and refuses anything else with clap's usual "invalid value … [possible
/// values: …]" usage error.
struct ProtoEnumParser<E>(PhantomData<fn() -> E>);

impl<E> ProtoEnumParser<E> {
    fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Clone for ProtoEnumParser<E> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<E: ProtoEnum> TypedValueParser for ProtoEnumParser<E> {
    type Value = E;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<E, clap::Error> {
        let text = value.to_string_lossy();
        parse_proto_enum::<E>(&text).ok_or_else(|| {
            let mut error = clap::Error::new(ErrorKind::InvalidValue).with_cmd(cmd);
            let arg = arg.map_or_else(|| "...".to_owned(), ToString::to_string);
            error.insert(ContextKind::InvalidArg, ContextValue::String(arg));
            error.insert(ContextKind::InvalidValue, ContextValue::String(text.into()));
            error.insert(
                ContextKind::ValidValue,
                ContextValue::Strings(E::flag_names().to_vec()),
            );
            error
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::flag_names()
                .iter()
                .map(|name| PossibleValue::new(name.as_str())),
        ))
    }
}

/// `--endpoint`: `host:port` gets `https://`; any other scheme is refused, because the exchange
/// only speaks mutual TLS and a plaintext attempt would just fail later with a murkier error.
fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let url = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected e.g. https://localhost:50051"))?;
    if uri.scheme_str() != Some("https") {
        return Err("the exchange speaks mutual TLS only: use an https:// endpoint".into());
    }
    if uri.host().is_none() {
        return Err("no host; expected e.g. https://localhost:50051".into());
    }
    Ok(url)
}

/// `--user` and `--correlation-id` become gRPC metadata, which must be printable ASCII (HTTP/2
/// would carry other bytes, but gRPC metadata and the server do not accept them); refusing other
/// input here gives a usage error instead of a failed call. The server's own rules (length, no
/// spaces, no identity codes) are left to the server.
fn parse_metadata_value(text: &str) -> Result<AsciiMetadataValue, String> {
    const RULE: &str = "must be printable ASCII (it is sent as gRPC metadata)";
    if !text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(RULE.to_owned());
    }
    AsciiMetadataValue::try_from(text).map_err(|_| RULE.to_owned())
}

/// Tidies an identity code as typed; never fails and never echoes it (see [`IdentityCode`]).
fn parse_identity_code(text: &str) -> Result<IdentityCode, std::convert::Infallible> {
    Ok(IdentityCode(PersonalIdentityCode::normalize_typed(text)))
}

/// `referrals/{uuid}` or a bare UUID → `referrals/{uuid}`.
fn parse_referral_name(text: &str) -> Result<String, String> {
    resource_name(REFERRALS_PREFIX, text)
}

/// `consents/{uuid}` or a bare UUID → `consents/{uuid}`.
fn parse_consent_name(text: &str) -> Result<String, String> {
    resource_name(CONSENTS_PREFIX, text)
}

/// A `{prefix}{uuid}` resource name from either the full name or the bare UUID. The UUID is
/// written in its canonical lower-case hyphenated form, the form the server issues, so that a
/// pasted upper-case or braced UUID still finds the resource.
fn resource_name(prefix: &str, text: &str) -> Result<String, String> {
    let text = text.trim();
    let id = text.strip_prefix(prefix).unwrap_or(text);
    Uuid::parse_str(id)
        .map(|uuid| format!("{prefix}{}", uuid.hyphenated()))
        .map_err(|_| format!("expected {prefix}{{uuid}} or a bare UUID"))
}

/// `hva-15` or `organizations/hva-15` → `organizations/hva-15`. The id itself is checked by the
/// server; only what cannot be an id at all is refused here.
fn parse_organization_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    let id = text.strip_prefix(ORGANIZATIONS_PREFIX).unwrap_or(text);
    if id.is_empty() || id.contains('/') || id.contains(char::is_whitespace) {
        return Err("expected an organisation id such as hva-15 or organizations/hva-15".into());
    }
    Ok(format!("{ORGANIZATIONS_PREFIX}{id}"))
}

/// RFC 3339 with an explicit offset, so that a time never depends on the machine's time zone.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| format!("{e}; expected RFC 3339, e.g. 2025-03-01T09:00:00+02:00"))
}

/// `YYYY-MM-DD`.
fn parse_date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|e| format!("{e}; expected YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    use clap::{CommandFactory as _, Parser};
    use tonic::Code;
    use tonic_types::{ErrorDetails, FieldViolation};

    /// The shape the real CLI has: `referral-exchange client …`.
    #[derive(Parser, Debug)]
    #[command(name = "referral-exchange")]
    struct TestCli {
        #[command(subcommand)]
        top: Top,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Top {
        Client(ClientArgs),
    }

    const REFERRAL_UUID: &str = "0b9a4c1e-8f7d-4c61-9a1e-3f5d2b7c8e90";
    const CONSENT_UUID: &str = "5d6c0e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";

    fn parse(args: &[&str]) -> Result<ClientArgs, clap::Error> {
        let mut argv = vec!["referral-exchange", "client"];
        argv.extend_from_slice(args);
        TestCli::try_parse_from(argv).map(|cli| match cli.top {
            Top::Client(args) => args,
        })
    }

    fn parse_ok(args: &[&str]) -> ClientArgs {
        match parse(args) {
            Ok(args) => args,
            Err(error) => panic!("{args:?} should parse: {error}"),
        }
    }

    fn parse_err(args: &[&str]) -> clap::Error {
        match parse(args) {
            Ok(parsed) => panic!("{args:?} should be refused, got {parsed:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn command_definition_is_consistent() {
        TestCli::command().debug_assert();
    }

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
        let Command::CreateReferral(create) = args.command else {
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
        let Command::CreateReferral(create) = args.command else {
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
    fn create_referral_needs_exactly_one_basis() {
        let base = [
            "create-referral",
            "--kind",
            "need-for-social-work",
            "--identity-code",
            "131052-308T",
            "--home-municipality",
            "091",
            "--reason",
            "housing",
        ];
        let error = parse_err(&base);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);

        let mut both = base.to_vec();
        both.extend([
            "--consent",
            CONSENT_UUID,
            "--statutory-ground",
            "child-best-interest",
            "--reason-text",
            "x",
        ]);
        assert_eq!(parse_err(&both).kind(), ErrorKind::ArgumentConflict);

        // A statutory ground needs a reason text (API contract).
        let mut no_text = base.to_vec();
        no_text.extend(["--statutory-ground", "child-best-interest"]);
        assert_eq!(
            parse_err(&no_text).kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn identity_code_is_not_in_debug_output() {
        let args = parse_ok(&["list-referrals", "--identity-code", "131052-308T"]);
        let debug = format!("{args:?}");
        assert!(!debug.contains("131052"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
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
        let Command::RecordConsent(record) = args.command else {
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
        let Command::RecordConsent(record) = args.command else {
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

    #[test]
    fn record_consent_refuses_two_expiries_and_no_recipient() {
        let error = parse_err(&[
            "record-consent",
            "--identity-code",
            "131052-308T",
            "--recipient",
            "hva-15",
            "--form",
            "written",
            "--given-by",
            "subject",
            "--expire-time",
            "2026-01-01T00:00:00Z",
            "--valid-days",
            "3",
        ]);
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        let error = parse_err(&[
            "record-consent",
            "--identity-code",
            "131052-308T",
            "--form",
            "oral",
            "--given-by",
            "subject",
        ]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn connection_options_and_global_position() {
        let args = parse_ok(&[
            "--endpoint",
            "exchange.example:443",
            "--profile",
            "var/pki/clients/kela",
            "get-referral",
            REFERRAL_UUID,
            "--user",
            "handler-7",
            "--correlation-id",
            "case-42",
            "--ca",
            "/etc/other-ca.pem",
        ]);
        let c = &args.connection;
        assert_eq!(c.endpoint, "https://exchange.example:443");
        assert_eq!(c.server_name, "localhost");
        assert_eq!(
            c.user.as_ref().map(|v| v.as_bytes()),
            Some(&b"handler-7"[..])
        );
        assert_eq!(
            c.correlation_id.as_ref().map(|v| v.as_bytes()),
            Some(&b"case-42"[..])
        );
        let files = c.tls_files().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            files,
            TlsFiles {
                cert: PathBuf::from("var/pki/clients/kela/cert.pem"),
                key: PathBuf::from("var/pki/clients/kela/key.pem"),
                ca: PathBuf::from("/etc/other-ca.pem"),
            }
        );
        let Command::GetReferral { name } = args.command else {
            panic!("wrong command: {:?}", args.command);
        };
        assert_eq!(name, format!("referrals/{REFERRAL_UUID}"));
    }

    #[test]
    fn missing_tls_files_are_a_local_error() {
        let args = parse_ok(&["--cert", "c.pem", "health"]);
        let error = args.connection.tls_files().err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("no key.pem: give --profile DIR (or REFERRAL_EXCHANGE_PROFILE) or --key FILE")
        );
    }

    #[test]
    fn endpoints_must_be_https() {
        assert_eq!(
            parse_endpoint("localhost:50051").as_deref(),
            Ok("https://localhost:50051")
        );
        assert_eq!(
            parse_endpoint("https://10.0.0.1:50051").as_deref(),
            Ok("https://10.0.0.1:50051")
        );
        assert!(parse_endpoint("http://localhost:50051").is_err());
        assert!(parse_endpoint("https://").is_err());
        assert_eq!(
            parse_err(&["--endpoint", "http://localhost:1", "health"]).kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn metadata_values_must_be_ascii() {
        assert_eq!(
            parse_err(&["--user", "käsittelijä", "health"]).kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse_err(&["--user", "a\nb", "health"]).kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn transitions_parse() {
        let args = parse_ok(&[
            "reject-referral",
            &format!("referrals/{}", REFERRAL_UUID.to_uppercase()),
            "--reason",
            "not-social-welfare-matter",
            "--reason-text",
            "asked for a pension",
            "--etag",
            "W/\"3\"",
        ]);
        let Command::RejectReferral {
            change,
            reason,
            reason_text,
        } = args.command
        else {
            panic!("wrong command: {:?}", args.command);
        };
        assert_eq!(change.name, format!("referrals/{REFERRAL_UUID}"));
        assert_eq!(change.etag.as_deref(), Some("W/\"3\""));
        assert_eq!(reason, referral::RejectionReason::NotSocialWelfareMatter);
        assert_eq!(reason_text.as_deref(), Some("asked for a pension"));

        let args = parse_ok(&[
            "complete-referral",
            REFERRAL_UUID,
            "--outcome",
            "Services_Started",
        ]);
        assert!(matches!(
            args.command,
            Command::CompleteReferral {
                outcome: referral::Outcome::ServicesStarted,
                ..
            }
        ));
        assert_eq!(
            parse_err(&["complete-referral", REFERRAL_UUID]).kind(),
            ErrorKind::MissingRequiredArgument
        );

        let args = parse_ok(&[
            "forward-referral",
            REFERRAL_UUID,
            "--home-municipality",
            "478",
        ]);
        assert!(matches!(
            args.command,
            Command::ForwardReferral { ref home_municipality_code, .. } if home_municipality_code == "478"
        ));
    }

    #[test]
    fn mailbox_commands_parse() {
        let args = parse_ok(&["pull-messages"]);
        assert!(matches!(
            args.command,
            Command::PullMessages {
                max_messages: 10,
                lease_seconds: 60,
                wait_seconds: 0
            }
        ));
        let args = parse_ok(&["modify-leases", "a1", "a2", "--lease-seconds", "0"]);
        let Command::ModifyLeases {
            ack_ids,
            lease_seconds,
        } = args.command
        else {
            panic!("wrong command: {:?}", args.command);
        };
        assert_eq!(ack_ids, ["a1", "a2"]);
        assert_eq!(lease_seconds, 0);
        assert_eq!(
            parse_err(&["acknowledge-messages"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse_err(&["modify-leases", "a1", "--lease-seconds=-1"]).kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn audit_log_commands_parse() {
        let args = parse_ok(&["get-checkpoint", "--note"]);
        assert!(matches!(
            args.command,
            Command::GetCheckpoint { note: true }
        ));
        let args = parse_ok(&["get-inclusion-proof", "--leaf-index", "5"]);
        assert!(matches!(
            args.command,
            Command::GetInclusionProof {
                leaf_index: 5,
                tree_size: None
            }
        ));
        let args = parse_ok(&["get-consistency-proof", "--first", "3", "--second", "9"]);
        assert!(matches!(
            args.command,
            Command::GetConsistencyProof {
                first_tree_size: 3,
                second_tree_size: Some(9)
            }
        ));
        let args = parse_ok(&["export-audit-events", "--end-index", "100"]);
        assert!(matches!(
            args.command,
            Command::ExportAuditEvents {
                start_index: 0,
                end_index: Some(100)
            }
        ));
        let args = parse_ok(&[
            "get-subject-access-report",
            "--identity-code",
            "131052-308t",
            "--format",
            "table",
        ]);
        let Command::GetSubjectAccessReport {
            identity_code,
            format,
            ..
        } = args.command
        else {
            panic!("parsed as another command");
        };
        assert_eq!(identity_code.as_str(), "131052-308T");
        assert_eq!(format, ReportFormat::Table);
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
    fn directory_and_audit_commands_parse() {
        let args = parse_ok(&["list-organizations", "--role", "RECEIVER"]);
        assert!(matches!(
            args.command,
            Command::ListOrganizations {
                role: Some(organization::Role::Receiver)
            }
        ));
        let args = parse_ok(&[
            "resolve-recipient",
            "--home-municipality",
            "588",
            "--date",
            "2024-12-31",
        ]);
        assert!(matches!(
            args.command,
            Command::ResolveRecipient { date: Some(d), .. } if d == NaiveDate::from_ymd_opt(2024, 12, 31).unwrap_or_default()
        ));
        assert_eq!(
            parse_err(&[
                "resolve-recipient",
                "--home-municipality",
                "091",
                "--date",
                "31.12.2024"
            ])
            .kind(),
            ErrorKind::ValueValidation
        );
        let args = parse_ok(&[
            "list-audit-events",
            "--organization",
            "kela",
            "--start-time",
            "2025-01-01T00:00:00Z",
            "--page-size",
            "50",
        ]);
        let Command::ListAuditEvents {
            organization,
            time,
            page,
            ..
        } = args.command
        else {
            panic!("wrong command: {:?}", args.command);
        };
        assert_eq!(organization.as_deref(), Some("organizations/kela"));
        assert_eq!(
            time.start_time.map(timestamp).map(|t| t.seconds),
            Some(1_735_689_600)
        );
        assert_eq!(page.page_size, Some(50));
        assert_eq!(
            parse_err(&["list-audit-events", "--start-time", "2025-01-01"]).kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn enum_flags_accept_kebab_and_snake_in_any_case() {
        for text in [
            "need-for-social-work",
            "NEED_FOR_SOCIAL_WORK",
            "Need-For_Social-work",
        ] {
            assert_eq!(
                parse_proto_enum::<referral::Kind>(text),
                Some(referral::Kind::NeedForSocialWork),
                "{text}"
            );
        }
        assert_eq!(
            parse_proto_enum::<referral::Kind>("unemployed-25-plus-12-months"),
            Some(referral::Kind::Unemployed25Plus12Months)
        );
        assert_eq!(
            parse_proto_enum::<referral::DeadlineGroup>("over-75"),
            Some(referral::DeadlineGroup::Over75)
        );
        // The zero value and other enums' values are refused.
        assert_eq!(parse_proto_enum::<referral::Kind>("KIND_UNSPECIFIED"), None);
        assert_eq!(parse_proto_enum::<referral::Kind>("kind-unspecified"), None);
        assert_eq!(parse_proto_enum::<referral::Kind>("housing"), None);
        assert_eq!(parse_proto_enum::<referral::Kind>(""), None);
    }

    /// Every value of every flag enum round-trips through its flag spelling, and no list is empty
    /// or includes the zero value.
    #[test]
    fn every_enum_value_has_a_flag_spelling() {
        fn check<E: ProtoEnum + PartialEq + fmt::Debug>(expected_count: usize) {
            let names = E::flag_names();
            assert_eq!(names.len(), expected_count, "{names:?}");
            for (name, value) in names.iter().zip(defined_values::<E>()) {
                assert!(!name.contains("unspecified"), "{name}");
                assert_eq!(parse_proto_enum::<E>(name), Some(value), "{name}");
                assert_eq!(
                    parse_proto_enum::<E>(&name.to_uppercase().replace('-', "_")),
                    Some(value)
                );
            }
        }
        check::<referral::Kind>(9);
        check::<referral::StatutoryGround>(3);
        check::<referral::Reason>(9);
        check::<referral::DeadlineGroup>(4);
        check::<referral::State>(7);
        check::<referral::Outcome>(5);
        check::<referral::RejectionReason>(3);
        check::<consent::Purpose>(1);
        check::<consent::Form>(3);
        check::<consent::GivenBy>(2);
        check::<consent::State>(4);
        check::<organization::Role>(3);
        assert_eq!(
            consent::Form::flag_names(),
            ["oral", "written", "electronic"]
        );
    }

    #[test]
    fn unknown_enum_value_is_a_usage_error_listing_the_values() {
        let error = parse_err(&["list-organizations", "--role", "admin"]);
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
        let text = error.to_string();
        assert!(text.contains("invalid value 'admin'"), "{text}");
        assert!(text.contains("--role <ROLE>"), "{text}");
        assert!(
            text.contains("[possible values: referrer, receiver, auditor]"),
            "{text}"
        );
        // Clap's usage-error exit code (2), not a call failure.
        assert_eq!(error.exit_code(), 2);

        let error = parse_err(&["list-referrals", "--state", "state-unspecified"]);
        assert_eq!(error.kind(), ErrorKind::InvalidValue);

        // --help lists the values too.
        let help = TestCli::command()
            .find_subcommand_mut("client")
            .and_then(|c| c.find_subcommand_mut("record-consent"))
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(
            help.contains("oral") && help.contains("legal-representative"),
            "{help}"
        );
    }

    #[test]
    fn resource_names_are_normalised() {
        let full = format!("referrals/{REFERRAL_UUID}");
        assert_eq!(parse_referral_name(REFERRAL_UUID), Ok(full.clone()));
        assert_eq!(parse_referral_name(&full), Ok(full.clone()));
        assert_eq!(
            parse_referral_name(&format!(" {} ", REFERRAL_UUID.to_uppercase())),
            Ok(full.clone())
        );
        assert_eq!(
            parse_consent_name(&format!("consents/{CONSENT_UUID}")),
            Ok(format!("consents/{CONSENT_UUID}"))
        );
        // A consent name is not a referral name, and vice versa.
        assert!(parse_referral_name(&format!("consents/{CONSENT_UUID}")).is_err());
        assert!(parse_consent_name(&full).is_err());
        assert!(parse_referral_name("referrals/").is_err());
        assert!(parse_referral_name("not-a-uuid").is_err());
        assert_eq!(
            parse_err(&["get-consent", "123"]).kind(),
            ErrorKind::ValueValidation
        );

        assert_eq!(
            parse_organization_name("hva-15").as_deref(),
            Ok("organizations/hva-15")
        );
        assert_eq!(
            parse_organization_name("organizations/aland-478").as_deref(),
            Ok("organizations/aland-478")
        );
        assert!(parse_organization_name("organizations/").is_err());
        assert!(parse_organization_name("referrals/x").is_err());
    }

    #[test]
    fn identity_codes_are_tidied_not_validated() {
        let tidy = |s: &str| parse_identity_code(s).map(|c| c.0);
        assert_eq!(tidy(" 131052-308t"), Ok("131052-308T".to_owned()));
        // The century sign is kept as typed.
        assert_eq!(tidy("010190y999w"), Ok("010190Y999W".to_owned()));
        // Invalid codes go through: the server is the judge.
        assert_eq!(tidy("not a code"), Ok("NOTACODE".to_owned()));
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
