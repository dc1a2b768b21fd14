//! The client's command line as the binary has it, for parsing tests.

use clap::Parser;

use super::ClientArgs;

/// The shape the real CLI has: `referral-exchange client …`.
#[derive(Parser, Debug)]
#[command(name = "referral-exchange")]
pub(super) struct TestCli {
    #[command(subcommand)]
    top: Top,
}

#[derive(clap::Subcommand, Debug)]
enum Top {
    Client(ClientArgs),
}

pub(super) const REFERRAL_UUID: &str = "0b9a4c1e-8f7d-4c61-9a1e-3f5d2b7c8e90";
pub(super) const CONSENT_UUID: &str = "5d6c0e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";

/// `referral-exchange client <args>`, parsed.
pub(super) fn parse(args: &[&str]) -> Result<ClientArgs, clap::Error> {
    let mut argv = vec!["referral-exchange", "client"];
    argv.extend_from_slice(args);
    TestCli::try_parse_from(argv).map(|cli| match cli.top {
        Top::Client(args) => args,
    })
}

pub(super) fn parse_ok(args: &[&str]) -> ClientArgs {
    match parse(args) {
        Ok(args) => args,
        Err(error) => panic!("{args:?} should parse: {error}"),
    }
}

pub(super) fn parse_err(args: &[&str]) -> clap::Error {
    match parse(args) {
        Ok(parsed) => panic!("{args:?} should be refused, got {parsed:?}"),
        Err(error) => error,
    }
}
