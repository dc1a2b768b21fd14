//! What the benchmark's clients do. Every scenario counts only what succeeded, reports errors
//! separately, and checks its own results where it can.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::sync::Barrier;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{Outcome, Percentiles, rest::RestClient, server::Target};
use referral_exchange::{
    domain::PersonalIdentityCode,
    proto::v1::{
        self as pb, audit_service_client::AuditServiceClient,
        consent_service_client::ConsentServiceClient, mailbox_service_client::MailboxServiceClient,
        referral_service_client::ReferralServiceClient,
    },
};

/// Made-up people with distinct codes: 800 individual numbers (002–801) on each of 10,000 days.
const PERSONS: u64 = 800 * 10_000;

/// A valid identity code for person `i`: born on the (i / 800)th day from 1930-01-01, individual
/// number 002–801. Distinct for i < [`PERSONS`]; beyond, person `i` is person `i % PERSONS` again.
pub fn identity_code(i: u64) -> String {
    let person = i % PERSONS;
    // 1930-01-01 plus fewer than 10,000 days is in the 1900s; individual numbers stay in 002–801.
    let individual = 2 + (person % 800) as u16;
    chrono::NaiveDate::from_ymd_opt(1930, 1, 1)
        .and_then(|first| first.checked_add_days(chrono::Days::new(person / 800)))
        .and_then(|born| PersonalIdentityCode::from_birth_date(born, individual).ok())
        .map(|code| code.as_str().to_owned())
        .expect("1930–1957 and 002–801 make valid identity codes")
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn seconds(s: i64) -> Option<pbjson_types::Duration> {
    Some(pbjson_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

pub fn notification(code: &str) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        referral: Some(pb::Referral {
            kind: pb::referral::Kind::NeedNotificationWithoutConsent as i32,
            subject: Some(pb::Subject {
                personal_identity_code: code.into(),
                ..Default::default()
            }),
            home_municipality_code: "179".into(),
            reasons: vec![pb::referral::Reason::Health as i32],
            reason_text: "Benchmark notification".into(),
            deadline_group: pb::referral::DeadlineGroup::NoStatutoryGroup as i32,
            basis: Some(pb::referral::Basis::StatutoryGround(
                pb::referral::StatutoryGround::UnableToCareForSelf as i32,
            )),
            ..Default::default()
        }),
        request_id: request_id(),
    }
}

pub fn referral_with_consent(code: &str, consent: &str) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        referral: Some(pb::Referral {
            kind: pb::referral::Kind::NeedForSocialWork as i32,
            subject: Some(pb::Subject {
                personal_identity_code: code.into(),
                ..Default::default()
            }),
            home_municipality_code: "179".into(),
            reasons: vec![
                pb::referral::Reason::Housing as i32,
                pb::referral::Reason::Debt as i32,
            ],
            reason_text: "Benchmark referral".into(),
            deadline_group: pb::referral::DeadlineGroup::NoStatutoryGroup as i32,
            basis: Some(pb::referral::Basis::Consent(consent.into())),
            ..Default::default()
        }),
        request_id: request_id(),
    }
}

/// Records a written consent of person `i` covering hva-15 for a year: Kela's clients refer against it.
pub async fn written_consent(target: &Target, i: u64) -> anyhow::Result<String> {
    let mut consents =
        ConsentServiceClient::new(target.channel("kela", &format!("bench-{i}")).await?);
    let expire = chrono::Utc::now() + chrono::Duration::days(365);
    let consent = consents
        .record_consent(pb::RecordConsentRequest {
            consent: Some(pb::Consent {
                subject: Some(pb::Subject {
                    personal_identity_code: identity_code(i),
                    ..Default::default()
                }),
                purpose: pb::consent::Purpose::SocialWelfareReferral as i32,
                recipients: vec!["organizations/hva-15".into()],
                form: pb::consent::Form::Written as i32,
                given_by: pb::consent::GivenBy::Subject as i32,
                expire_time: Some(pbjson_types::Timestamp {
                    seconds: expire.timestamp(),
                    nanos: 0,
                }),
                evidence_reference: format!("Y100-BENCH-{i}"),
                ..Default::default()
            }),
            request_id: request_id(),
        })
        .await?
        .into_inner();
    Ok(consent.name)
}

/// What one client did.
#[derive(Default)]
pub struct ClientResult {
    pub ops: usize,
    pub errors: usize,
    pub latencies: Vec<Duration>,
    /// RPCs sent, where an operation takes more than one (`roundtrip`).
    pub calls: usize,
}

impl ClientResult {
    /// Counts one call that began at `started`: its latency if it succeeded, an error if not.
    fn record<T, E>(&mut self, started: Instant, outcome: Result<T, E>) {
        match outcome {
            Ok(_) => {
                self.ops += 1;
                self.latencies.push(started.elapsed());
            }
            Err(_) => self.errors += 1,
        }
    }
}

/// Runs `clients` clients: each sets up, all start together, each runs until `duration` has passed.
/// `client(i, start)` returns the client's work as a future.
async fn run_clients<F, Fut>(
    clients: usize,
    duration: Duration,
    client: F,
) -> anyhow::Result<(ClientResult, f64)>
where
    F: Fn(usize, Arc<Barrier>, Duration) -> Fut,
    Fut: Future<Output = anyhow::Result<ClientResult>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(client(i, barrier.clone(), duration)))
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut total = ClientResult::default();
    for task in tasks {
        let result = task.await??;
        total.ops += result.ops;
        total.errors += result.errors;
        total.calls += result.calls;
        total.latencies.extend(result.latencies);
    }
    Ok((
        total,
        started.elapsed().as_secs_f64().max(duration.as_secs_f64()),
    ))
}

fn outcome(scenario: &str, clients: usize, mut result: ClientResult, seconds: f64) -> Outcome {
    let mut outcome = Outcome::new(scenario, clients, result.ops, seconds);
    outcome.errors = result.errors;
    if result.calls > 0 && result.ops > 0 {
        outcome.calls_per_operation = Some(result.calls as f64 / result.ops as f64);
    }
    outcome.latency_ms = Percentiles::of(&mut result.latencies);
    outcome
}

/// Kela's clients create referrals against written consents, one consent per client. With `rate`,
/// each client sends on a fixed schedule (its share of `rate` creates per second) and latency counts
/// from the scheduled time, so that a slow answer is not hidden by the next request waiting for it.
pub async fn create(
    target: Target,
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
    edge: crate::Edge,
) -> anyhow::Result<Outcome> {
    let (result, seconds) = run_clients(clients, duration, |i, barrier, duration| {
        let target = target.clone();
        async move {
            let consent = written_consent(&target, i as u64).await?;
            let user = format!("bench-{i}");
            let mut referrals = ReferralServiceClient::new(target.channel("kela", &user).await?);
            let mut rest = match edge {
                crate::Edge::Grpc => None,
                crate::Edge::Http => Some(RestClient::connect(&target, "kela", &user).await?),
            };
            let code = identity_code(i as u64);
            barrier.wait().await;
            let begun = Instant::now();
            let deadline = begun + duration;
            let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
            let mut result = ClientResult::default();
            let mut sent = 0u32;
            while Instant::now() < deadline {
                let started = match interval {
                    Some(interval) => {
                        // The clients' schedules are spread over one interval.
                        let at =
                            begun + interval.mul_f64(i as f64 / clients as f64) + interval * sent;
                        tokio::time::sleep_until(at.into()).await;
                        sent += 1;
                        at
                    }
                    None => Instant::now(),
                };
                let request = referral_with_consent(&code, &consent);
                match &mut rest {
                    None => result.record(started, referrals.create_referral(request).await),
                    Some(rest) => {
                        // The same request as proto3 JSON: the referral is the body (AIP-133).
                        let body = serde_json::to_vec(&request.referral)?;
                        let path = format!("/v1/referrals?requestId={}", request.request_id);
                        result.record(started, rest.post(&path, body).await);
                    }
                }
            }
            Ok(result)
        }
    })
    .await?;
    let name = match edge {
        crate::Edge::Grpc => "create",
        crate::Edge::Http => "create-http",
    };
    Ok(outcome(name, clients, result, seconds))
}

/// Shared bookkeeping of the roundtrip: when each referral was created, and how often its routed
/// message was taken (exactly once is the rule).
#[derive(Default)]
struct Lifecycles {
    created: HashMap<String, Instant>,
    taken: HashMap<String, usize>,
    completed: HashMap<String, Duration>,
}

/// Takes delivery of what is in hva-15's mailbox and works each referral to COMPLETED; returns how
/// many it completed.
async fn work_mailbox(
    mailbox: &mut MailboxServiceClient<super::server::Authenticated>,
    referrals: &mut ReferralServiceClient<super::server::Authenticated>,
    book: &Mutex<Lifecycles>,
    tally: &mut ClientResult,
) -> anyhow::Result<usize> {
    let request = pb::PullMessagesRequest {
        max_messages: 10,
        lease_duration: seconds(60),
        wait_duration: None,
    };
    tally.calls += 1;
    let Ok(pulled) = mailbox.pull_messages(request).await else {
        tally.errors += 1;
        return Ok(0);
    };
    let messages = pulled.into_inner().messages;
    if messages.is_empty() {
        return Ok(0);
    }
    let ack_ids = messages.iter().map(|m| m.ack_id.clone()).collect();
    tally.calls += 1;
    let Ok(acked) = mailbox
        .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
        .await
    else {
        tally.errors += 1;
        return Ok(0);
    };
    let results = acked.into_inner().results;
    let mut completed = 0;
    for (message, result) in messages.iter().zip(results) {
        if !result.applied || message.r#type != pb::message::Type::ReferralRouted as i32 {
            continue;
        }
        let Some(referral) = &message.referral else {
            continue;
        };
        *book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .taken
            .entry(referral.name.clone())
            .or_default() += 1;
        let name = referral.name.clone();
        tally.calls += 3;
        let steps = async {
            let accepted = referrals
                .accept_referral(pb::AcceptReferralRequest {
                    name: name.clone(),
                    etag: String::new(),
                    request_id: request_id(),
                })
                .await?
                .into_inner();
            let started = referrals
                .start_assessment(pb::StartAssessmentRequest {
                    name: name.clone(),
                    etag: accepted.etag,
                    request_id: request_id(),
                })
                .await?
                .into_inner();
            referrals
                .complete_referral(pb::CompleteReferralRequest {
                    name: name.clone(),
                    etag: started.etag,
                    request_id: request_id(),
                    outcome: pb::referral::Outcome::ServicesStarted as i32,
                })
                .await
        };
        match steps.await {
            Ok(_) => {
                let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(created) = book.created.get(&name).copied() {
                    book.completed.insert(name, created.elapsed());
                }
                completed += 1;
            }
            Err(_) => tally.errors += 1,
        }
    }
    Ok(completed)
}

/// Kela takes the coded state changes out of its mailbox.
async fn drain_kela(
    mailbox: &mut MailboxServiceClient<super::server::Authenticated>,
    tally: &mut ClientResult,
) -> anyhow::Result<usize> {
    tally.calls += 1;
    let messages = mailbox
        .pull_messages(pb::PullMessagesRequest {
            max_messages: 100,
            lease_duration: seconds(60),
            wait_duration: None,
        })
        .await?
        .into_inner()
        .messages;
    if !messages.is_empty() {
        let ack_ids = messages.iter().map(|m| m.ack_id.clone()).collect();
        tally.calls += 1;
        mailbox
            .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
            .await?;
    }
    Ok(messages.len())
}

/// One referral's whole life per iteration: Kela creates; the receiver pulls, acknowledges, accepts,
/// starts and completes (whichever client's referral it pulled); Kela pulls the state changes.
/// Throughput is completed lifecycles per second; latency is from create to completion.
pub async fn roundtrip(
    target: Target,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let book = Arc::new(Mutex::new(Lifecycles::default()));
    let (result, seconds) = run_clients(clients, duration, |i, barrier, duration| {
        let target = target.clone();
        let book = book.clone();
        async move {
            let consent = written_consent(&target, i as u64).await?;
            let mut kela =
                ReferralServiceClient::new(target.channel("kela", &format!("bench-{i}")).await?);
            let mut kela_mailbox =
                MailboxServiceClient::new(target.channel("kela", &format!("bench-{i}")).await?);
            let receiver = target.channel("hva-15", &format!("worker-{i}")).await?;
            let mut mailbox = MailboxServiceClient::new(receiver.clone());
            let mut referrals = ReferralServiceClient::new(receiver);
            let code = identity_code(i as u64);
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut result = ClientResult::default();
            while Instant::now() < deadline {
                let created_at = Instant::now();
                result.calls += 1;
                match kela
                    .create_referral(referral_with_consent(&code, &consent))
                    .await
                {
                    Ok(created) => {
                        book.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .created
                            .insert(created.into_inner().name, created_at);
                    }
                    Err(_) => result.errors += 1,
                }
                let completed =
                    work_mailbox(&mut mailbox, &mut referrals, &book, &mut result).await?;
                result.ops += completed;
                drain_kela(&mut kela_mailbox, &mut result).await?;
            }
            Ok(result)
        }
    })
    .await?;

    // After the clock: finish what is still in flight, then check exactly-once delivery.
    let receiver = target.channel("hva-15", "bench-drain").await?;
    let (mut mailbox, mut referrals) = (
        MailboxServiceClient::new(receiver.clone()),
        ReferralServiceClient::new(receiver),
    );
    let mut kela_mailbox = MailboxServiceClient::new(target.channel("kela", "bench-drain").await?);
    // Not counted in the throughput: the clock has stopped. Only errors are added.
    let mut after = ClientResult::default();
    while work_mailbox(&mut mailbox, &mut referrals, &book, &mut after).await? > 0 {}
    while drain_kela(&mut kela_mailbox, &mut after).await? > 0 {}
    let book = book.lock().unwrap_or_else(|p| p.into_inner());
    let duplicates = book.taken.values().filter(|n| **n > 1).count();
    anyhow::ensure!(
        duplicates == 0,
        "{duplicates} referrals were taken more than once"
    );
    let missing = book
        .created
        .keys()
        .filter(|name| !book.taken.contains_key(*name))
        .count();
    anyhow::ensure!(
        missing == 0,
        "{missing} created referrals never reached the receiver"
    );
    let mut out = outcome(
        "roundtrip",
        clients,
        ClientResult {
            errors: result.errors + after.errors,
            latencies: Vec::new(),
            ..result
        },
        seconds,
    );
    let mut lifecycle: Vec<Duration> = book.completed.values().copied().collect();
    out.latency_ms = Percentiles::of(&mut lifecycle);
    Ok(out)
}

/// Creates `count` statutory notifications (no consent needed) for persons 0..`subjects`.
pub async fn preload(target: &Target, count: usize, subjects: u64) -> anyhow::Result<Vec<String>> {
    let names = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut writers = Vec::new();
    for w in 0..8usize {
        let channel = target.channel("kela", &format!("preload-{w}")).await?;
        let names = names.clone();
        writers.push(tokio::spawn(async move {
            let mut referrals = ReferralServiceClient::new(channel);
            for n in (w..count).step_by(8) {
                let created = referrals
                    .create_referral(notification(&identity_code(n as u64 % subjects)))
                    .await?;
                names
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(created.into_inner().name);
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let names = names.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(names)
}

/// Kela reads stored referrals at random.
pub async fn read(target: Target, clients: usize, duration: Duration) -> anyhow::Result<Outcome> {
    let names = Arc::new(preload(&target, 500, 100).await?);
    let (result, seconds) = run_clients(clients, duration, |i, barrier, duration| {
        read_referrals(
            target.clone(),
            format!("bench-{i}"),
            names.clone(),
            (i, None),
            barrier,
            duration,
        )
    })
    .await?;
    Ok(outcome("read", clients, result, seconds))
}

/// One of Kela's clients (`user`) reading `names` in a scattered order from when `barrier` opens
/// until `duration` has passed.
async fn read_referrals(
    target: Target,
    user: String,
    names: Arc<Vec<String>>,
    (i, pace): (usize, Option<Duration>),
    barrier: Arc<Barrier>,
    duration: Duration,
) -> anyhow::Result<ClientResult> {
    let mut referrals = ReferralServiceClient::new(target.channel("kela", &user).await?);
    barrier.wait().await;
    let begun = Instant::now();
    let deadline = begun + duration;
    let mut result = ClientResult::default();
    let mut n = i;
    let mut calls = 0u32;
    while Instant::now() < deadline {
        n = (n * 7919 + 13) % names.len();
        let started = match pace {
            // On a fixed schedule, latency counted from the scheduled time.
            Some(pace) => {
                let at = begun + pace * calls;
                calls += 1;
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let request = pb::GetReferralRequest {
            name: names[n].clone(),
        };
        result.record(started, referrals.get_referral(request).await);
    }
    Ok(result)
}

/// Health checks (`grpc.health.v1.Health/Check`) over the same mutual-TLS channels as the API: the
/// cost of a call when no database is involved, which no API call can undercut. With the calls a
/// `roundtrip` lifecycle takes, it bounds the lifecycles per second this machine can serve at all.
pub async fn transport(
    target: Target,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let (result, seconds) = run_clients(clients, duration, |i, barrier, duration| {
        let target = target.clone();
        async move {
            let mut health =
                HealthClient::new(target.channel("kela", &format!("bench-{i}")).await?);
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut result = ClientResult::default();
            while Instant::now() < deadline {
                let started = Instant::now();
                let request = HealthCheckRequest {
                    service: String::new(),
                };
                result.record(started, health.check(request).await);
            }
            Ok(result)
        }
    })
    .await?;
    Ok(outcome("transport", clients, result, seconds))
}

/// Auditors list a person's audit events (ListAuditEvents by subject, 100 per page).
pub async fn audit(target: Target, clients: usize, duration: Duration) -> anyhow::Result<Outcome> {
    const SUBJECTS: u64 = 100;
    preload(&target, 500, SUBJECTS)
        .await
        .context("preloading")?;
    let (result, seconds) = run_clients(clients, duration, |i, barrier, duration| {
        let target = target.clone();
        async move {
            let mut audit =
                AuditServiceClient::new(target.channel("auditor-dpo", &format!("dpo-{i}")).await?);
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut result = ClientResult::default();
            let mut n = i as u64;
            while Instant::now() < deadline {
                n = (n * 31 + 7) % SUBJECTS;
                let started = Instant::now();
                let request = pb::ListAuditEventsRequest {
                    personal_identity_code: identity_code(n),
                    page_size: 100,
                    ..Default::default()
                };
                result.record(started, audit.list_audit_events(request).await);
            }
            Ok(result)
        }
    })
    .await?;
    Ok(outcome("audit", clients, result, seconds))
}

/// One mailbox filled with `messages` routed referrals, drained by `pullers` that pull and acknowledge.
pub async fn pull(target: Target, pullers: usize, messages: usize) -> anyhow::Result<Outcome> {
    preload(&target, messages, 100).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..pullers {
        let mut mailbox =
            MailboxServiceClient::new(target.channel("hva-15", &format!("worker-{p}")).await?);
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut errors) = (0usize, 0usize);
            loop {
                let request = pb::PullMessagesRequest {
                    max_messages: 10,
                    lease_duration: seconds(60),
                    wait_duration: None,
                };
                let messages = match mailbox.pull_messages(request).await {
                    Ok(response) => response.into_inner().messages,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                if messages.is_empty() {
                    return (acked, errors);
                }
                let ack_ids = messages.into_iter().map(|m| m.ack_id).collect();
                match mailbox
                    .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
                    .await
                {
                    Ok(response) => {
                        acked += response
                            .into_inner()
                            .results
                            .iter()
                            .filter(|r| r.applied)
                            .count()
                    }
                    Err(_) => errors += 1,
                }
            }
        }));
    }
    let (mut acked, mut errors) = (0, 0);
    for task in tasks {
        let (a, e) = task.await?;
        acked += a;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        acked == messages,
        "{acked} of {messages} messages were acknowledged exactly once"
    );
    let mut out = Outcome::new("pull", pullers, acked, seconds);
    out.errors = errors;
    Ok(out)
}

/// A long-poll waits on `waiting` while a referral is created through `writing`: from sending the
/// create to the waiting pull's answer, next to the create's own latency.
pub async fn wakeup(writing: Target, waiting: Target, samples: usize) -> anyhow::Result<Outcome> {
    let mut kela = ReferralServiceClient::new(writing.channel("kela", "bench-writer").await?);
    let mut mailbox = MailboxServiceClient::new(waiting.channel("hva-15", "bench-waiter").await?);
    let (mut wake, mut create, mut errors) = (Vec::new(), Vec::new(), 0);
    let started = Instant::now();
    for n in 0..samples {
        let mut waiting_mailbox = mailbox.clone();
        let waiter = tokio::spawn(async move {
            let request = pb::PullMessagesRequest {
                max_messages: 1,
                lease_duration: seconds(60),
                wait_duration: seconds(20),
            };
            let response = waiting_mailbox.pull_messages(request).await;
            (Instant::now(), response)
        });
        // Let the pull reach the server and start waiting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        if kela
            .create_referral(notification(&identity_code(n as u64)))
            .await
            .is_err()
        {
            errors += 1;
        }
        create.push(sent.elapsed());
        let (woke, response) = waiter.await?;
        match response.map(|r| r.into_inner().messages) {
            Ok(messages) if messages.len() == 1 => {
                wake.push(woke.duration_since(sent));
                let ack_ids = messages.into_iter().map(|m| m.ack_id).collect();
                mailbox
                    .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
                    .await?;
            }
            _ => errors += 1,
        }
    }
    let mut out = Outcome::new("wakeup", 1, wake.len(), started.elapsed().as_secs_f64());
    out.errors = errors;
    out.latency_ms = Percentiles::of(&mut wake);
    out.create_latency_ms = Percentiles::of(&mut create);
    Ok(out)
}

/// The quiet organisation's pace in the `limits` scenario: 50 calls a second.
const QUIET_INTERVAL: Duration = Duration::from_millis(20);

/// Per-organisation limits (src/limits.rs) at the server's defaults: one organisation (Kela) with
/// `clients` clients reading referrals as fast as it can, beside a quiet one (hva-15, one client
/// asking for its mailbox's stats 50 times a second). Three rows: the quiet organisation alone, Kela's
/// accepted calls per second (refusals, RESOURCE_EXHAUSTED, as errors), and the quiet organisation
/// beside it. What the limit is for: the quiet one's p99 stays where it was.
pub async fn limits(
    target: Target,
    clients: usize,
    duration: Duration,
    offered_rate: u32,
) -> anyhow::Result<Vec<Outcome>> {
    // Each noisy client's interval between calls, on a fixed schedule; none: as fast as it can.
    let pace = (offered_rate > 0)
        .then(|| Duration::from_secs_f64(clients as f64 / f64::from(offered_rate)));
    // Within Kela's burst, then a pause that refills it.
    let names = Arc::new(preload(&target, 200, 100).await?);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet = |target: Target, duration: Duration| async move {
        let mut mailbox = MailboxServiceClient::new(target.channel("hva-15", "quiet-1").await?);
        let begun = Instant::now();
        let deadline = begun + duration;
        let mut result = ClientResult::default();
        let mut n = 0u32;
        while Instant::now() < deadline {
            // Well within its own limit: QUIET_RATE calls a second on a fixed schedule, latency
            // counted from the scheduled time.
            let started = begun + QUIET_INTERVAL * n;
            n += 1;
            tokio::time::sleep_until(started.into()).await;
            result.record(
                started,
                mailbox
                    .get_mailbox_stats(pb::GetMailboxStatsRequest::default())
                    .await,
            );
        }
        anyhow::Ok(result)
    };
    let started = Instant::now();
    let alone = quiet(target.clone(), duration).await?;
    let alone_seconds = started.elapsed().as_secs_f64();

    let quiet_beside = tokio::spawn(quiet(target.clone(), duration));
    let (noisy, seconds) = run_clients(clients, duration, |i, barrier, duration| {
        read_referrals(
            target.clone(),
            format!("noisy-{i}"),
            names.clone(),
            (i, pace),
            barrier,
            duration,
        )
    })
    .await?;
    let beside = quiet_beside.await??;
    Ok(vec![
        outcome("limits-quiet-alone", 1, alone, alone_seconds),
        outcome("limits-noisy-org", clients, noisy, seconds),
        outcome("limits-quiet-beside", 1, beside, duration.as_secs_f64()),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_identity_codes_are_valid_and_distinct() {
        let codes: std::collections::HashSet<String> =
            (0..5000).map(super::identity_code).collect();
        assert_eq!(codes.len(), 5000);
        assert!(
            codes
                .iter()
                .all(|c| referral_exchange::domain::PersonalIdentityCode::parse(c).is_ok())
        );
    }

    /// The same people as before the benchmark built codes through the library: figures from earlier
    /// sittings were measured on these.
    #[test]
    fn the_made_up_people_are_the_ones_earlier_runs_used() {
        for (i, code) in [
            (0, "010130-0028"),
            (1, "010130-0039"),
            (799, "010130-8011"),
            (800, "020130-002W"),
            (7_999_999, "180557-8016"),
            (8_000_000, "010130-0028"),
        ] {
            assert_eq!(super::identity_code(i), code, "person {i}");
        }
    }
}
