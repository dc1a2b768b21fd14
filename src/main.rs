//! The `referral-exchange` binary: parses the command line and hands it to [`referral_exchange::cli`];
//! everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use referral_exchange::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
