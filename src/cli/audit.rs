//! `referral-exchange audit …`: the auditor's offline tools.
//!
//! - `verify`: checks an export of the audit log (JSON lines, as `client export-audit-events` writes
//!   them) against a signed checkpoint and the log's public key, and optionally against an earlier
//!   checkpoint the auditor kept. It trusts nothing the server says except what the signature
//!   covers: it recomputes every leaf hash from `leaf_data`, checks that the fields shown are the
//!   ones the leaf data holds, recomputes the root, checks the signature, and checks that the earlier
//!   checkpoint's tree is a prefix of the exported one. It exits 1 naming the first bad leaf.
//! - `generate-key`: a new checkpoint signing key for `serve --audit-signing-key-file`.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::ExitCode,
};

use crate::{audit::note::NoteSigner, proto::v1 as pb};
use anyhow::Context;
use clap::{Args, Subcommand};

pub use crate::grpc::log_verify::{Failure, Verified, verify};

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an export of the audit log offline against a signed checkpoint (and an earlier one).
    Verify(VerifyArgs),
    /// Write a new Ed25519 checkpoint signing key (signed-note signer key format) and print its
    /// verifier key, which auditors need.
    GenerateKey {
        /// The log's origin, which is also the key's name, e.g. `exchange.example.fi/audit-log`.
        #[arg(long)]
        origin: String,
        /// Where to write the private key (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("key").required(true).args(["public_key", "public_key_file"])))]
pub struct VerifyArgs {
    /// The export: one JSON `AuditEvent` per line, from leaf 0 up to at least the checkpoint's size.
    #[arg(long, value_name = "FILE")]
    export: PathBuf,
    /// The signed checkpoint (the note text of GetCheckpoint's `checkpoint`).
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// An earlier checkpoint kept from before: the exported tree must extend it.
    #[arg(long, value_name = "FILE")]
    earlier_checkpoint: Option<PathBuf>,
    /// The log's verifier key, `<name>+<key id>+<base64>`, as obtained out of band.
    #[arg(long, value_name = "KEY")]
    public_key: Option<String>,
    /// A file holding the verifier key.
    #[arg(long, value_name = "FILE")]
    public_key_file: Option<PathBuf>,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify(args) => verify_command(args),
        AuditCommand::GenerateKey { origin, out } => {
            let signer = NoteSigner::generate(&origin).context("the origin is the key's name")?;
            crate::config::write_secret(&out, &signer.to_signer_key())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "signingKeyFile": out,
                    "verifierKey": signer.verifier().to_string(),
                }))?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify_command(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = match (&args.public_key, &args.public_key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(file)) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        }
        (None, None) => anyhow::bail!("give --public-key or --public-key-file"),
    };
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let checkpoint = read(&args.checkpoint)?;
    let earlier = args.earlier_checkpoint.as_ref().map(read).transpose()?;
    let file = std::fs::File::open(&args.export)
        .with_context(|| format!("reading {}", args.export.display()))?;
    // The export is read as it is verified, so that its size is bounded by the disk, not memory.
    let unreadable: std::cell::RefCell<Option<anyhow::Error>> = std::cell::RefCell::new(None);
    let export_name = args.export.display().to_string();
    let events = BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map_while(|(n, line)| {
            let parsed = line
                .with_context(|| format!("reading {export_name}"))
                .and_then(|line| {
                    serde_json::from_str::<pb::AuditEvent>(&line).with_context(|| {
                        format!("{export_name} line {}: not an AuditEvent in JSON", n + 1)
                    })
                });
            match parsed {
                Ok(event) => Some(event),
                Err(e) => {
                    *unreadable.borrow_mut() = Some(e);
                    None
                }
            }
        });
    let outcome = verify(&key, &checkpoint, earlier.as_deref(), events);
    if let Some(e) = unreadable.into_inner() {
        return Err(e);
    }
    match outcome {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            eprintln!("FAILED: {failure}");
            Ok(ExitCode::FAILURE)
        }
    }
}
