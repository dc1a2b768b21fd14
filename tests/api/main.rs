//! The one integration test binary: a real server over mutual TLS on 127.0.0.1, on SQLite and on
//! PostgreSQL, exercised the way Kela, receivers and auditors use it.

mod cluster;
mod helpers;
mod rest;

mod audit;
mod authorization;
mod background;
mod bench;
mod cli;
mod consents;
mod console;
mod console_browser;
mod crash;
mod deadlines;
mod delivery;
mod deploy;
mod exchange;
mod group_commit;
mod http;
mod keys;
mod limits;
mod logs;
mod mailbox;
mod openapi;
mod operations;
mod outage;
mod postgres_tls;
mod processing;
mod properties;
mod refusals;
mod replicas;
mod retention;
mod revocation;
mod sealing;
mod server;
mod statistics;
mod store;
mod telemetry;
