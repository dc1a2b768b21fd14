//! referral-exchange: Kela refers clients to social welfare; the receiving organisers report back.
//!
//! How the crate is laid out, outside in; each layer imports only from those below it
//! (ARCHITECTURE.md draws it):
//!
//! - [`server`], [`cli`]: assembling and running it, with [`config`] (flags and defaults), [`tls`]
//!   (mutual TLS, caller identity, the development PKI), [`telemetry`], [`background`] (tasks that run
//!   once per deployment) and [`affinity`] (why a SQLite server keeps to one CPU).
//! - [`http`], [`console`]: the HTTP face (REST/JSON) and the browser console on the same listener;
//!   both only convert, calling the gRPC edge's service implementations in process.
//! - [`grpc`]: the edge, one file per gRPC service. Converts proto messages to domain types and back,
//!   field rules included; nothing else happens there.
//! - [`exchange`]: every use case (create a referral, record a consent, pull a mailbox…). Each runs in
//!   one database transaction together with its audit event and outgoing mailbox messages, and
//!   returns everything its answer shows.
//! - [`store`]: one trait of transactional operations per aggregate, its SQL beside it, written once
//!   for SQLite (the embedded default) and PostgreSQL (production, several replicas).
//! - [`domain`], [`mailbox`], [`audit`], [`access`], [`error`], [`clock`]: types and rules as pure
//!   code (identity codes, routing, working days, the state machine, consent, leases, pseudonyms, the
//!   Merkle tree), who may call what, the closed set of errors, time; [`keys`]: fingerprints of the
//!   keys the database was written with.
//!
//! The benchmark is a binary of its own (`src/bin/referral-exchange-bench/`) that uses this library
//! as any client would.

pub mod access;
pub mod affinity;
pub mod audit;
pub mod background;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod domain;
pub mod error;
pub mod exchange;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod limits;
pub mod mailbox;
pub mod sealing;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;

/// Generated from `proto/referral_exchange/v1`.
pub mod proto {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("referral_exchange.v1");
        include!(concat!(env!("OUT_DIR"), "/referral_exchange.v1.serde.rs"));

        /// The compiled descriptors, served by gRPC reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
            env!("OUT_DIR"),
            "/referral_exchange_descriptor.bin"
        ));
    }
}
