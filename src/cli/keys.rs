//! `referral-exchange keys`: operator tasks on the keys the data is written with.
//!
//! `keys rewrap` moves every sealed value (`crate::sealing`, `store::sealed`) to the current data
//! key, while the service runs: start the servers with the new key as `--data-key-file` and the old
//! one as `--previous-data-key-file`, run this with the same keys, and drop the old key once it
//! reports nothing left (deploy/README.md, "Keys").

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Args, Subcommand};

use crate::{
    config::DataKeyArgs,
    mailbox::MailboxSignals,
    store::{
        self, Schema, Store,
        sealed::{After, SEALED, SealedColumn},
    },
};

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-seal every value still under a previous data key (or from before sealing) under the
    /// current one, in bounded batches, while the service runs. Safe to interrupt and run again.
    Rewrap(RewrapArgs),
}

#[derive(Debug, Args)]
struct RewrapArgs {
    /// Directory of the default SQLite database and the development data key.
    #[arg(long, env = "REFERRAL_EXCHANGE_DATA_DIR", default_value = "var")]
    data_dir: PathBuf,

    /// `sqlite:PATH` or `postgres://…`. Default: the SQLite file in the data directory.
    #[arg(long, env = "REFERRAL_EXCHANGE_DATABASE_URL")]
    database_url: Option<String>,

    #[command(flatten)]
    keys: DataKeyArgs,

    /// Values re-sealed per transaction: each batch holds the database briefly.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    batch: i64,

    /// Pause between batches, to leave the database to the service.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,

    /// Only count what is left under other keys; change nothing.
    #[arg(long)]
    check: bool,
}

pub async fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Rewrap(args) => rewrap(args).await,
    }
}

async fn rewrap(args: RewrapArgs) -> anyhow::Result<ExitCode> {
    let keys = Arc::new(args.keys.keys(&args.data_dir)?);
    let url = crate::config::default_database_url(&args.database_url, &args.data_dir);
    let store = store::connect(
        &url,
        Schema::RequireCurrent,
        Arc::new(MailboxSignals::default()),
        Some(keys.clone()),
    )
    .await?;
    eprintln!("current data key {}", keys.current_id());
    let mut left_in_all = 0;
    for column in SEALED {
        let left = if args.check {
            count(&*store, *column).await?.0
        } else {
            rewrap_column(&*store, *column, &args).await?
        };
        left_in_all += left;
    }
    store.close().await;
    if left_in_all == 0 {
        eprintln!("every sealed value is under the current key: previous data keys can be dropped");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{left_in_all} values are not under the current key yet: keep the previous keys{}",
            if args.check { "" } else { " and run again" }
        );
        Ok(ExitCode::from(2))
    }
}

async fn count(store: &dyn Store, column: SealedColumn) -> anyhow::Result<(u64, u64)> {
    let mut tx = store.begin().await?;
    let counts = tx.count_not_current(column).await?;
    tx.commit().await?;
    eprintln!(
        "{}: {} of {} values not under the current key",
        column.place, counts.0, counts.1
    );
    Ok(counts)
}

/// Re-seals `column` batch by batch; what is left afterwards (values written under an old key by a
/// server still running without the new one).
async fn rewrap_column(
    store: &dyn Store,
    column: SealedColumn,
    args: &RewrapArgs,
) -> anyhow::Result<u64> {
    let (todo, _) = count(store, column).await?;
    if todo == 0 {
        return Ok(0);
    }
    let mut after = After::Start;
    let mut done = 0;
    loop {
        let mut tx = store.begin().await?;
        let batch = tx.rewrap_batch(column, &after, args.batch).await?;
        tx.commit().await?;
        done += batch.rewrapped;
        eprintln!("{}: {done}/{todo} re-sealed", column.place);
        match batch.next {
            Some(next) => after = next,
            None => break,
        }
        if args.pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
    }
    Ok(count(store, column).await?.0)
}
