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
//!   `{"code":"INVALID_ARGUMENT","message":…,"reason":…,"fieldViolations":[…],"preconditionViolations":[…],"hint":…}`
//!   (the `google.rpc.Status` details of AIP-193), so a script can branch on `code` and `reason`
//!   without parsing messages. The server speaks the API's names; this client adds to each field
//!   violation the `flag` that sets the field (`lease_duration` → `--lease-seconds`) and, when it
//!   knows one, a `hint` in its own terms (a missing `x-user-id` is a missing `--user`). `health`
//!   also exits 1 when the server answers but is not `SERVING`.
//! * `2`: the server could not be reached or the connection broke (TCP, TLS, HTTP/2). stderr gets
//!   `error: …` with the whole source chain, because the outermost message of a transport error
//!   ("transport error") says nothing useful on its own; a `hint:` line follows when the failure
//!   points at one of the TLS files (the CA file for a server from another CA, the client
//!   certificate when the server refused it). clap's usage errors exit 2 as well, and so does
//!   the one usage rule checked after parsing ([`Command::usage_error`]).
//! * `3`: the call succeeded but some of its ack ids did not take effect: `acknowledge-messages`,
//!   `modify-leases`, `pull-messages --ack`, `stream-messages --ack`. The response is still on
//!   stdout; stderr gets one line of JSON naming each ack id and why:
//!   `{"code":"NOT_APPLIED","message":…,"notApplied":[{"ackId":…,"reason":"LEASE_EXPIRED","description":…}]}`.
//!   A script that acknowledges and moves on would otherwise believe a referral was received
//!   when it was not.
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
//!
//! # Where things are
//!
//! * here: [`run`] (connect, call, print, choose the exit code) and the connection;
//! * `args.rs`: the command line as clap definitions;
//! * `values.rs`: how flag text becomes request values (proto enums in one place);
//! * `calls.rs`: one function per service that builds the request and sends it;
//! * `output.rs`: the subject access report as a table, and error reports on stderr;
//! * `test_support.rs`: the command line as the binary has it, for parsing tests.

mod args;
mod calls;
mod output;
#[cfg(test)]
mod test_support;
mod values;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Channel, Endpoint};

pub use args::{
    AuditCommand, ClientArgs, Command, ConnectionArgs, ConsentCommand, CreateReferralArgs,
    DirectoryCommand, MailboxCommand, PageArgs, RecordConsentArgs, ReferralChangeArgs,
    ReferralCommand, ReportFormat, RequestIdArgs, TimeRangeArgs,
};
pub use values::IdentityCode;

use crate::tls::{client_tls_config, install_crypto_provider};
use calls::{CallError, Output, Session, execute};
use output::{error_chain, report_not_applied, report_status, tls_hint, with_hint};

/// How long to wait for the TCP connection and the TLS handshake together. Without a limit a
/// firewall that drops packets (rather than refusing) would hang a script for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code for a call the server refused (a `google.rpc.Status` came back).
const EXIT_REFUSED: u8 = 1;

/// Exit code for a server that could not be reached or a connection that broke.
const EXIT_TRANSPORT: u8 = 2;

/// Exit code for a call that succeeded but whose acknowledgements or lease changes (some of
/// them) did not apply.
const EXIT_NOT_APPLIED: u8 = 3;

/// Runs one `referral-exchange client` command: connects, calls, prints. See the module docs for
/// the exit codes.
pub async fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let ClientArgs {
        connection,
        command,
    } = args;
    if let Some(error) = command.usage_error() {
        eprint!("{error}");
        return Ok(ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2)));
    }
    let files = connection.tls_files()?;
    let channel = match connection.connect(&files).await? {
        Ok(channel) => channel,
        Err(message) => {
            let hint = tls_hint(&message, &files);
            eprintln!("error: {}", with_hint(message, hint));
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
            not_applied,
        }) => {
            let text = match text {
                Some(text) => text,
                None => serde_json::to_string_pretty(&json)? + "\n",
            };
            write!(std::io::stdout().lock(), "{text}").context("writing to stdout")?;
            Ok(if !not_applied.is_empty() {
                ExitCode::from(report_not_applied(&not_applied))
            } else if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REFUSED)
            })
        }
        Err(CallError::Rpc(status)) => {
            let code = report_status(&status, Some(&files));
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
    async fn connect(&self, files: &TlsFiles) -> anyhow::Result<Result<Channel, String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    use test_support::*;

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
        let Command::Referral(ReferralCommand::GetReferral { name }) = args.command else {
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
}
