//! referral-exchange: Kela refers clients to social welfare; the receiving organisers report back.
//!
//! How the crate is laid out, outside in:
//!
//! - [`grpc`]: one file per gRPC service. Converts proto messages to domain types and back; nothing
//!   else crosses this edge. Authenticates the caller from its client certificate.
//! - [`exchange`]: the use cases (create a referral, record a consent, change a state…). Each runs in
//!   one database transaction together with its audit event and outgoing mailbox messages.
//! - [`mailbox`]: per-organisation mailboxes: leased pull delivery, acknowledgement, redelivery.
//! - [`audit`]: the access and disclosure log, and the keyed pseudonyms it records instead of
//!   identity codes.
//! - [`access`]: who may call what, and what each party may see.
//! - [`domain`]: the rules of the field as pure code (identity codes, municipalities, working days,
//!   the referral state machine, consent).
//! - [`store`]: one trait of transactional operations, with an adapter each for SQLite (the embedded
//!   default) and PostgreSQL (production, several replicas).
//! - [`error`]: the one place where errors become `tonic::Status`.
//! - [`config`], [`tls`], [`telemetry`], [`server`], [`cli`]: running it; [`background`]: tasks that run
//!   once per deployment; [`affinity`]: why a SQLite server keeps to one CPU. The benchmark is a
//!   binary of its own (`src/bin/referral-exchange-bench/`) that uses this library as any client would.

pub mod access;
pub mod affinity;
pub mod audit;
pub mod background;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod exchange;
pub mod grpc;
pub mod mailbox;
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
