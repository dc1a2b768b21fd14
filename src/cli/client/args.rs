//! The command line of `referral-exchange client`: connection flags and one subcommand per API
//! method, grouped by service. How each flag's text is read is in `values.rs`.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use tonic::metadata::AsciiMetadataValue;
use uuid::Uuid;

use super::values::{
    IdentityCode, ProtoEnumParser, parse_consent_name, parse_date, parse_endpoint,
    parse_identity_code, parse_metadata_value, parse_organization_name, parse_referral_name,
    parse_time,
};
use crate::proto::v1::{Dimension, consent, organization, referral};

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

/// One subcommand per API method, grouped by service here but flattened on the command line
/// (`client get-referral`, not `client referral get`); `--help` lists them in this order.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Consent(ConsentCommand),
    #[command(flatten)]
    Referral(ReferralCommand),
    #[command(flatten)]
    Mailbox(MailboxCommand),
    #[command(flatten)]
    Audit(AuditCommand),
    #[command(flatten)]
    Directory(DirectoryCommand),
    #[command(flatten)]
    Reporting(ReportingCommand),
    /// Check that the server is up (standard gRPC health check of the whole server). Exits 1 when
    /// it answers but is not SERVING.
    Health,
}

/// `ConsentService`: consents and the consent log.
#[derive(clap::Subcommand, Debug)]
pub enum ConsentCommand {
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
}

/// `ReferralService`: creating referrals and moving them through their states.
#[derive(clap::Subcommand, Debug)]
pub enum ReferralCommand {
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
}

/// `MailboxService`: the calling organisation's messages.
#[derive(clap::Subcommand, Debug)]
pub enum MailboxCommand {
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
        /// Acknowledge every pulled message once printed (for a script that has just handed
        /// them on). Exits 3 if any acknowledgement did not apply.
        #[arg(long)]
        ack: bool,
    },

    /// Acknowledge delivered messages. Acknowledging REFERRAL_ROUTED is how a receiver takes
    /// delivery (the referral becomes RECEIVED and its deadlines start). Exits 3, naming the ack
    /// ids and why on stderr, if any of them did not apply (expired lease, unknown id, …).
    AcknowledgeMessages {
        /// `ack_id`s from pull-messages.
        #[arg(required = true, value_name = "ACK_ID")]
        ack_ids: Vec<String>,
    },

    /// Extend leases, or release them (`--lease-seconds 0`) for immediate redelivery. Exits 3,
    /// naming the ack ids and why on stderr, if any lease change did not apply.
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
        /// Acknowledge each message once printed. Exits 3 at the end if any acknowledgement
        /// did not apply.
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
}

/// `AuditService`: the access log, its tamper-evident tree and subject access reports.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
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
        /// `json` (the response as is) or `table` (for reading; as wide as the terminal, `COLUMNS`
        /// when set, or 100 columns into a file or pipe).
        #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
        format: ReportFormat,
    },
}

/// `DirectoryService`: who takes part and who receives for a municipality.
#[derive(clap::Subcommand, Debug)]
pub enum DirectoryCommand {
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
}

/// `ReportingService`: statistics.
#[derive(clap::Subcommand, Debug)]
pub enum ReportingCommand {
    /// Referral statistics over whole days (Helsinki time), with every subtotal and the total.
    /// Cells about too few people, and cells that would give those away, are suppressed (`·`).
    /// Kela, receivers and auditors.
    ReferralStatistics {
        /// Dimensions to group by, comma-separated or repeated: kind, reason, recipient, month,
        /// outcome, state. None: the grand total only.
        #[arg(long, value_delimiter = ',', value_parser = ProtoEnumParser::<Dimension>::new())]
        group_by: Vec<Dimension>,
        /// First day (`YYYY-MM-DD`, Helsinki), included.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        from: NaiveDate,
        /// Last day (`YYYY-MM-DD`, Helsinki), included.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        to: NaiveDate,
        /// `table` (for reading), `csv` (as `GET /v1/statistics/referrals:csv` gives) or `json`
        /// (the response as is).
        #[arg(long, value_enum, default_value_t = StatisticsFormat::Table)]
        format: StatisticsFormat,
    },
}

/// How `referral-statistics` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatisticsFormat {
    Table,
    Csv,
    Json,
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
    /// End of validity as a number of days from `--valid-from` (or from now: then it is printed
    /// on stderr as `expire_time: …`, and a retry with `--request-id` must give that as
    /// `--expire-time`, because "now" will have moved).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500), value_name = "N")]
    pub valid_days: Option<u32>,
    /// Where the evidence is kept, e.g. the archive reference of a signed form. No personal data.
    #[arg(long)]
    pub evidence_reference: Option<String>,
    #[command(flatten)]
    pub request: RequestIdArgs,
}

impl RecordConsentArgs {
    /// Whether the end of validity would be computed from this machine's clock: `--valid-days`
    /// with neither `--valid-from` nor `--expire-time` to count from.
    pub(super) fn expiry_depends_on_the_clock(&self) -> bool {
        self.valid_days.is_some() && self.valid_from.is_none() && self.expire_time.is_none()
    }
}

impl Command {
    /// Usage errors clap cannot express, found before anything is sent.
    ///
    /// A retry with the same `--request-id` must send the same body (AIP-155: the server answers a
    /// reused id with another body `ALREADY_EXISTS`/`REQUEST_ID_REUSED`). Every field of every
    /// mutating command is taken from its flags as given, except one: `record-consent
    /// --valid-days N` without `--valid-from` counts from now, so a retry would carry another
    /// `expire_time`. With a given `--request-id` (which is how a retry looks) that is refused here.
    pub fn usage_error(&self) -> Option<clap::Error> {
        match self {
            Command::Consent(ConsentCommand::RecordConsent(args))
                if args.request.request_id.is_some() && args.expiry_depends_on_the_clock() =>
            {
                Some(clap::Error::raw(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--valid-days without --valid-from counts from now, so a retry with the same \
                     --request-id would send another expire_time and be refused as \
                     REQUEST_ID_REUSED; give --expire-time RFC3339 (or --valid-from RFC3339 with \
                     --valid-days), or drop --request-id\n",
                ))
            }
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    use clap::CommandFactory as _;
    use clap::error::ErrorKind;

    use super::super::test_support::*;

    #[test]
    fn command_definition_is_consistent() {
        TestCli::command().debug_assert();
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
    fn a_retry_cannot_count_validity_from_now() {
        let base = [
            "record-consent",
            "--identity-code",
            "131052-308T",
            "--recipient",
            "hva-15",
            "--form",
            "written",
            "--given-by",
            "subject",
        ];
        let with = |extra: &[&'static str]| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(extra);
            parse_ok(&argv).command.usage_error()
        };
        let error = with(&["--valid-days", "30", "--request-id", REFERRAL_UUID]);
        let text = error.as_ref().map(ToString::to_string).unwrap_or_default();
        assert_eq!(
            error.map(|e| (e.kind(), e.exit_code())),
            Some((ErrorKind::ArgumentConflict, 2)),
            "{text}"
        );
        for expected in [
            "--expire-time",
            "--valid-from",
            "drop --request-id",
            "REQUEST_ID_REUSED",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        // Anchored, or without a given id (the first try), it is fine.
        assert!(with(&["--valid-days", "30"]).is_none());
        assert!(
            with(&[
                "--valid-days",
                "30",
                "--valid-from",
                "2025-03-01T09:00:00+02:00",
                "--request-id",
                REFERRAL_UUID
            ])
            .is_none()
        );
        assert!(
            with(&[
                "--expire-time",
                "2026-03-01T09:00:00+02:00",
                "--request-id",
                REFERRAL_UUID
            ])
            .is_none()
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
        let Command::Referral(ReferralCommand::RejectReferral {
            change,
            reason,
            reason_text,
        }) = args.command
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
            Command::Referral(ReferralCommand::CompleteReferral {
                outcome: referral::Outcome::ServicesStarted,
                ..
            })
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
            Command::Referral(ReferralCommand::ForwardReferral { ref home_municipality_code, .. }) if home_municipality_code == "478"
        ));
    }

    #[test]
    fn mailbox_commands_parse() {
        let args = parse_ok(&["pull-messages"]);
        assert!(matches!(
            args.command,
            Command::Mailbox(MailboxCommand::PullMessages {
                max_messages: 10,
                lease_seconds: 60,
                wait_seconds: 0,
                ack: false,
            })
        ));
        let args = parse_ok(&["modify-leases", "a1", "a2", "--lease-seconds", "0"]);
        let Command::Mailbox(MailboxCommand::ModifyLeases {
            ack_ids,
            lease_seconds,
        }) = args.command
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
            Command::Audit(AuditCommand::GetCheckpoint { note: true })
        ));
        let args = parse_ok(&["get-inclusion-proof", "--leaf-index", "5"]);
        assert!(matches!(
            args.command,
            Command::Audit(AuditCommand::GetInclusionProof {
                leaf_index: 5,
                tree_size: None
            })
        ));
        let args = parse_ok(&["get-consistency-proof", "--first", "3", "--second", "9"]);
        assert!(matches!(
            args.command,
            Command::Audit(AuditCommand::GetConsistencyProof {
                first_tree_size: 3,
                second_tree_size: Some(9)
            })
        ));
        let args = parse_ok(&["export-audit-events", "--end-index", "100"]);
        assert!(matches!(
            args.command,
            Command::Audit(AuditCommand::ExportAuditEvents {
                start_index: 0,
                end_index: Some(100)
            })
        ));
        let args = parse_ok(&[
            "get-subject-access-report",
            "--identity-code",
            "131052-308t",
            "--format",
            "table",
        ]);
        let Command::Audit(AuditCommand::GetSubjectAccessReport {
            identity_code,
            format,
            ..
        }) = args.command
        else {
            panic!("parsed as another command");
        };
        assert_eq!(identity_code.as_str(), "131052-308T");
        assert_eq!(format, ReportFormat::Table);
    }

    #[test]
    fn referral_statistics_parses_dimensions_and_days() {
        let args = parse_ok(&[
            "referral-statistics",
            "--group-by",
            "recipient,REASON",
            "--group-by",
            "month",
            "--from",
            "2027-01-01",
            "--to",
            "2027-12-31",
            "--format",
            "csv",
        ]);
        let Command::Reporting(ReportingCommand::ReferralStatistics {
            group_by,
            from,
            to,
            format,
        }) = args.command
        else {
            panic!("not referral-statistics: {:?}", args.command);
        };
        assert_eq!(
            group_by,
            [Dimension::Recipient, Dimension::Reason, Dimension::Month]
        );
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("2027-01-01".into(), "2027-12-31".into())
        );
        assert_eq!(format, StatisticsFormat::Csv);
    }

    #[test]
    fn directory_and_audit_commands_parse() {
        let args = parse_ok(&["list-organizations", "--role", "RECEIVER"]);
        assert!(matches!(
            args.command,
            Command::Directory(DirectoryCommand::ListOrganizations {
                role: Some(organization::Role::Receiver)
            })
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
            Command::Directory(DirectoryCommand::ResolveRecipient { date: Some(d), .. }) if d == NaiveDate::from_ymd_opt(2024, 12, 31).unwrap_or_default()
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
        let Command::Audit(AuditCommand::ListAuditEvents {
            organization,
            time,
            page,
            ..
        }) = args.command
        else {
            panic!("wrong command: {:?}", args.command);
        };
        assert_eq!(organization.as_deref(), Some("organizations/kela"));
        assert_eq!(time.start_time.map(|t| t.timestamp()), Some(1_735_689_600));
        assert_eq!(page.page_size, Some(50));
        assert_eq!(
            parse_err(&["list-audit-events", "--start-time", "2025-01-01"]).kind(),
            ErrorKind::ValueValidation
        );
    }
}
