//! Delivery beside its peer (issue 19): messages created, pulled and acknowledged per second
//! through the exchange, and the same through RabbitMQ with the same durability, at the same
//! concurrency, in one sitting.
//!
//! - [`exchange`]: half the clients create referrals (Kela, on written consent: each create puts
//!   one routed message in the receiver's mailbox), half pull that mailbox (long-polls for up to 10
//!   messages) and acknowledge what they got. A message counts when its acknowledgement is applied
//!   inside the run's time. Afterwards everything still in flight is delivered, and every created
//!   referral's message must have been acknowledged exactly once.
//! - [`rabbitmq`]: the same shape on a durable queue of a RabbitMQ already running (Debian's
//!   `rabbitmq-server`; nothing is installed here): publishers send persistent messages in confirm
//!   mode and wait for each confirm, as a create waits for its answer; consumers with a prefetch of
//!   10 acknowledge each delivery. The bodies are as large as the exchange's pulled messages were
//!   (their encoded size). The queue is the run's own and deleted afterwards.
//!
//! Both start every client together once all are connected ([`measure`]), and count what was
//! acknowledged when the time is up: no backlog made before the clock starts counts.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    BasicProperties, Confirmation, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use prost::Message;
use referral_exchange::proto::v1::{
    self as pb, mailbox_service_client::MailboxServiceClient,
    referral_service_client::ReferralServiceClient,
};
use tokio::{sync::Barrier, task::JoinHandle};

use super::{
    Outcome,
    scenarios::{identity_code, referral_with_consent, written_consent},
    server::Target,
};

/// How long after the run the stragglers may take to arrive.
const DRAIN: Duration = Duration::from_secs(30);

/// Messages a pull or a consumer takes at most at once.
const BATCH: u16 = 10;

/// The exchange: `clients / 2` creators and as many pullers, for `duration`.
pub async fn exchange(
    target: Target,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let creators = (clients / 2).max(1);
    let pullers = (clients - creators).max(1);
    let go = Arc::new(Barrier::new(creators + pullers + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    // How often each message was acknowledged (exactly once is the rule).
    let taken: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let bytes = Arc::new(AtomicUsize::new(0));

    let mut creating = Vec::new();
    for i in 0..creators {
        let consent = written_consent(&target, i as u64).await?;
        let mut kela =
            ReferralServiceClient::new(target.channel("kela", &format!("bench-{i}")).await?);
        let (go, stop, created) = (go.clone(), stop.clone(), created.clone());
        let code = identity_code(i as u64);
        creating.push(tokio::spawn(async move {
            go.wait().await;
            let mut errors = 0usize;
            while !stop.load(Ordering::Relaxed) {
                match kela
                    .create_referral(referral_with_consent(&code, &consent))
                    .await
                {
                    Ok(_) => {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => errors += 1,
                }
            }
            errors
        }));
    }
    let mut pulling = Vec::new();
    for p in 0..pullers {
        let mut mailbox =
            MailboxServiceClient::new(target.channel("hva-15", &format!("worker-{p}")).await?);
        let (go, stop, taken, bytes, acked) = (
            go.clone(),
            stop.clone(),
            taken.clone(),
            bytes.clone(),
            acked.clone(),
        );
        pulling.push(tokio::spawn(async move {
            go.wait().await;
            let mut errors = 0usize;
            let mut idle_since: Option<Instant> = None;
            loop {
                let messages = match pull(&mut mailbox).await {
                    Ok(messages) => messages,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                if messages.is_empty() {
                    // After the run: done once nothing came for a while.
                    if stop.load(Ordering::Relaxed) {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(2) {
                            return errors;
                        }
                    }
                    continue;
                }
                idle_since = None;
                let mut names = Vec::new();
                let mut ack_ids = Vec::new();
                for m in messages {
                    bytes.fetch_add(m.encoded_len(), Ordering::Relaxed);
                    names.push(m.message_id.clone());
                    ack_ids.push(m.ack_id);
                }
                match mailbox
                    .acknowledge_messages(pb::AcknowledgeMessagesRequest { ack_ids })
                    .await
                {
                    Ok(response) => {
                        let applied = response.into_inner().results;
                        let mut taken = taken.lock().unwrap_or_else(|p| p.into_inner());
                        for (name, result) in names.into_iter().zip(applied) {
                            if result.applied {
                                *taken.entry(name).or_default() += 1;
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
        }));
    }
    let (delivered, errors) = measure(
        duration,
        &go,
        &stop,
        &acked,
        creating,
        pulling,
        "the pullers did not drain the mailbox",
    )
    .await?;
    let taken = taken.lock().unwrap_or_else(|p| p.into_inner());
    let created = created.load(Ordering::Relaxed);
    let twice = taken.values().filter(|n| **n > 1).count();
    anyhow::ensure!(
        twice == 0 && taken.len() == created,
        "{} of {created} referrals' messages acknowledged, {twice} more than once",
        taken.len()
    );
    let mut outcome = Outcome::new("delivery", clients, delivered, duration.as_secs_f64());
    outcome.errors = errors;
    outcome.message_bytes = Some(bytes.load(Ordering::Relaxed) / taken.len().max(1));
    Ok(outcome)
}

/// Lets every client go at once, takes what `done` counts when `duration` is up, then stops the
/// producers and waits (at most [`DRAIN`]) for the consumers to take what is still in flight.
/// The count in time, and the errors of all.
async fn measure(
    duration: Duration,
    go: &Barrier,
    stop: &AtomicBool,
    done: &AtomicUsize,
    producers: Vec<JoinHandle<usize>>,
    consumers: Vec<JoinHandle<usize>>,
    late: &'static str,
) -> anyhow::Result<(usize, usize)> {
    go.wait().await;
    tokio::time::sleep(duration).await;
    let in_time = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for task in producers {
        errors += task.await?;
    }
    let drained = tokio::time::timeout(DRAIN, async {
        let mut errors = 0;
        for task in consumers {
            errors += task.await?;
        }
        anyhow::Ok(errors)
    })
    .await
    .context(late)??;
    Ok((in_time, errors + drained))
}

/// One long-poll of up to [`BATCH`] messages.
async fn pull(
    mailbox: &mut MailboxServiceClient<super::server::Authenticated>,
) -> Result<Vec<pb::Message>, tonic::Status> {
    let request = pb::PullMessagesRequest {
        max_messages: i32::from(BATCH),
        lease_duration: Some(pbjson_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        wait_duration: Some(pbjson_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
    };
    Ok(mailbox.pull_messages(request).await?.into_inner().messages)
}

/// RabbitMQ at `url`: `clients / 2` publishers and as many consumers of one durable queue, bodies
/// of `body_bytes`, for `duration`.
pub async fn rabbitmq(
    url: &str,
    clients: usize,
    duration: Duration,
    body_bytes: usize,
) -> anyhow::Result<Outcome> {
    let publishers = (clients / 2).max(1);
    let consumers = (clients - publishers).max(1);
    let queue = format!("referral-exchange-bench-{}", std::process::id());
    let setup = Connection::connect(url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {url}"))?;
    let channel = setup.create_channel().await?;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;

    let go = Arc::new(Barrier::new(publishers + consumers + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(vec![b'x'; body_bytes]);
    // Every client on its own connection, as every client of the exchange has its own.
    let mut connections = Vec::new();
    let mut publishing = Vec::new();
    for _ in 0..publishers {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        connections.push(connection);
        let (go, stop, published, body, queue) = (
            go.clone(),
            stop.clone(),
            published.clone(),
            body.clone(),
            queue.clone(),
        );
        publishing.push(tokio::spawn(async move {
            go.wait().await;
            let mut errors = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let confirmed = async {
                    channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            // Persistent: written to disk before the confirm.
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await?
                        .await
                }
                .await;
                match confirmed {
                    Ok(Confirmation::Ack(_)) => {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => errors += 1,
                }
            }
            errors
        }));
    }
    let mut consuming = Vec::new();
    for c in 0..consumers {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel.basic_qos(BATCH, BasicQosOptions::default()).await?;
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                format!("consumer-{c}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        connections.push(connection);
        let (go, stop, published, consumed) = (
            go.clone(),
            stop.clone(),
            published.clone(),
            consumed.clone(),
        );
        consuming.push(tokio::spawn(async move {
            go.wait().await;
            let mut errors = 0usize;
            loop {
                let next =
                    tokio::time::timeout(Duration::from_millis(200), deliveries.next()).await;
                match next {
                    Ok(Some(Ok(delivery))) => {
                        match delivery.ack(BasicAckOptions::default()).await {
                            Ok(_) => {
                                consumed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => errors += 1,
                        }
                    }
                    Ok(Some(Err(_))) => errors += 1,
                    Ok(None) => return errors,
                    // Quiet: done once the run is over and everything published was consumed.
                    Err(_) => {
                        if stop.load(Ordering::Relaxed)
                            && consumed.load(Ordering::Relaxed) >= published.load(Ordering::Relaxed)
                        {
                            return errors;
                        }
                    }
                }
            }
        }));
    }
    let (in_time, errors) = measure(
        duration,
        &go,
        &stop,
        &consumed,
        publishing,
        consuming,
        "the consumers did not drain the queue",
    )
    .await?;
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    for connection in connections.into_iter().chain([setup]) {
        connection.close(200, "done".into()).await.ok();
    }
    let (published, consumed) = (
        published.load(Ordering::Relaxed),
        consumed.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        consumed == published,
        "{consumed} of {published} confirmed messages were consumed"
    );
    let mut outcome = Outcome::new("rabbitmq", clients, in_time, duration.as_secs_f64());
    outcome.engine = "rabbitmq";
    outcome.errors = errors;
    Ok(outcome)
}
