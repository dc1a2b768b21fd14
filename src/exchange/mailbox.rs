//! The mailbox use cases: pull (and long-poll), stream, acknowledge, modify leases, dead letters,
//! history, stats. Each is one transaction with its audit event; deliveries carry the referral as
//! the mailbox's owner may see it, and each such disclosure is logged with its basis.
//!
//! `StreamMessages` is pull delivery as a server stream, with at most `max_outstanding` messages
//! delivered and not yet acknowledged. Acknowledgements arrive through `AcknowledgeMessages`, which
//! wakes the stream; a message whose lease expires stops counting too. When the client goes away
//! the stream ends and its leases expire as usual, so nothing is lost.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Exchange, Outbox, Page, RequestKey, referrals::ReferralView};
use crate::{
    access::{Call, Caller},
    domain::{
        calendar,
        consent::Consent,
        referral::{Action, Referral, State},
    },
    error::{Error, Result},
    mailbox::{AckId, AckOutcome, AckResult, MessageType, NewMessage, StoredMessage, check_lease},
    store::{MailboxCounts, Tx},
};

/// A message delivered to its mailbox's owner, with the referral as that party may see it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: StoredMessage,
    pub referral: Option<ReferralView>,
    /// Whether this delivery holds a lease (a pull or stream) or merely shows the message (history,
    /// dead letters): only a lease has an ack id.
    pub leased: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxStats {
    pub counts: MailboxCounts,
    pub oldest_pending_age: Duration,
}

impl Exchange {
    /// Leases up to `max_messages` messages, waiting up to `wait` for the first if none is ready.
    /// Returns early, empty, when the server begins to shut down.
    pub async fn pull_messages(
        &self,
        call: &Call,
        max_messages: i64,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let caller = call.authorize()?;
        let deadline = tokio::time::Instant::now() + wait.to_std().unwrap_or_default();
        let signal = self.store.signals().subscribe(caller.organization.as_str());
        let mut closing = self.closing();
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let last_look = remaining.is_zero() || *closing.borrow();
            if let Some(deliveries) = self
                .lease_batch(call, caller, max_messages, lease, last_look)
                .await?
            {
                return Ok(deliveries);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = closing.changed() => {}
                _ = tokio::time::sleep(remaining.min(self.delivery.poll_interval)) => {}
            }
        }
    }

    /// Leases and renders up to `max` messages in one transaction with `call`'s audit event. With
    /// nothing to lease, answers empty only if `even_if_empty` (the call touched no one: counted, not
    /// audited); otherwise rolls back and returns `None`, so that waiting writes nothing.
    pub(crate) async fn lease_batch(
        &self,
        call: &Call,
        caller: &Caller,
        max: i64,
        lease: Duration,
        even_if_empty: bool,
    ) -> Result<Option<Vec<Delivery>>> {
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let mailbox = caller.organization.as_str();
        // A counter held elsewhere is a reader numbering (and leasing) this mailbox now, or the
        // sweeper numbering messages older than it leaves to readers: skipped, not waited for.
        tx.number_messages(mailbox).await?;
        let leased = tx
            .lease_messages(
                mailbox,
                max,
                self.delivery.max_delivery_attempts,
                now,
                now + lease,
            )
            .await?;
        if leased.is_empty() {
            if !even_if_empty {
                return Ok(None);
            }
            // What the transaction numbered stays numbered.
            self.commit_unprocessed(call, Some(tx)).await?;
            return Ok(Some(Vec::new()));
        }
        let redelivered = leased
            .iter()
            .filter(|m| m.delivery_attempt > m.redrive_base + 1)
            .count() as u64;
        if redelivered > 0 {
            let mailbox = opentelemetry::KeyValue::new("mailbox", mailbox.to_owned());
            crate::telemetry::metrics()
                .lease_expiries
                .add(redelivered, &[mailbox]);
        }
        let today = calendar::helsinki_date(now);
        let deliveries = self
            .render(tx.as_mut(), call, caller, leased, true, today)
            .await?;
        self.commit(call, tx, Outbox::default()).await?;
        Ok(Some(deliveries))
    }

    /// Attaches to each message its referral as the mailbox owner may see it, and logs the
    /// disclosures. The referrals and their consents are read in one statement each, not two per
    /// message: Kela's pull of a hundred state changes was two hundred round trips.
    async fn render(
        &self,
        tx: &mut dyn Tx,
        call: &Call,
        caller: &Caller,
        messages: Vec<StoredMessage>,
        leased: bool,
        today: NaiveDate,
    ) -> Result<Vec<Delivery>> {
        let mut referral_ids: Vec<Uuid> = messages.iter().filter_map(|m| m.referral_id).collect();
        referral_ids.sort_unstable();
        referral_ids.dedup();
        let referrals: HashMap<Uuid, Referral> = tx
            .get_referrals(&referral_ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let mut consent_ids: Vec<Uuid> = referrals
            .values()
            .filter_map(|r| r.basis.consent_id())
            .collect();
        consent_ids.sort_unstable();
        consent_ids.dedup();
        let consents: HashMap<Uuid, Consent> = tx
            .get_consents(&consent_ids)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();

        let mut deliveries = Vec::with_capacity(messages.len());
        for message in messages {
            call.touch_resource(format!("messages/{}", message.id));
            let Some(referral_id) = message.referral_id else {
                deliveries.push(Delivery {
                    message,
                    referral: None,
                    leased,
                });
                continue;
            };
            let stored = referrals
                .get(&referral_id)
                .ok_or_else(|| crate::store::corrupt("message referral"))?;
            let referral = stored.view_for(&caller.organization);
            if let Some(view) = &referral {
                let pseudonym = self.referral_pseudonym(view);
                call.touch_resource(view.name());
                call.touch_subject(&pseudonym);
                let consent = view.basis.consent_id().and_then(|id| consents.get(&id));
                call.disclose(self.referral_disclosure_with(&caller.organization, view, consent));
            }
            deliveries.push(Delivery {
                message,
                referral: referral.map(|view| ReferralView::on(view, today, caller.role())),
                leased,
            });
        }
        Ok(deliveries)
    }

    /// Acknowledges deliveries. Acknowledging a routed referral is taking delivery of it.
    pub async fn acknowledge_messages(
        &self,
        call: &Call,
        ack_ids: Vec<String>,
    ) -> Result<Vec<AckResult>> {
        let caller = call.authorize()?;
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let mut outbox = Outbox::default();
        let (outcomes, applied) = check_leases(tx.as_mut(), caller, &ack_ids, now, true).await?;
        let ids: Vec<Uuid> = applied.iter().map(|m| m.id).collect();
        tx.acknowledge_messages(&ids, now).await?;
        for message in applied {
            call.touch_resource(format!("messages/{}", message.id));
            if message.message_type == MessageType::ReferralRouted
                && let Some(referral_id) = message.referral_id
            {
                self.take_delivery(tx.as_mut(), call, caller, referral_id, now, &mut outbox)
                    .await?;
            }
        }
        self.commit(call, tx, outbox).await?;
        // A stream bounded by its unacknowledged messages may now deliver more.
        self.store.signals().notify(caller.organization.as_str());
        Ok(results(ack_ids, outcomes))
    }

    /// The receiver's system has the referral: RECEIVED, deadlines start, Kela is told. Nothing happens
    /// if the referral moved on meanwhile (cancelled, or forwarded elsewhere).
    async fn take_delivery(
        &self,
        tx: &mut dyn Tx,
        call: &Call,
        caller: &Caller,
        referral_id: Uuid,
        now: DateTime<Utc>,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let Some(mut referral) = tx.get_referral(referral_id, true).await? else {
            return Ok(());
        };
        if !caller.is(&referral.recipient) || referral.state != State::Requested {
            return Ok(());
        }
        let change = referral
            .apply(Action::Receive, &caller.organization, now, self.deadlines)
            .map_err(Error::internal)?;
        tx.update_referral(&referral).await?;
        call.touch_resource(referral.name());
        call.touch_subject(self.referral_pseudonym(&referral));
        outbox.push(NewMessage::state_changed(referral.id, change, now));
        Ok(())
    }

    /// Extends leases (`lease` > 0) or releases them for immediate redelivery (`lease` = 0).
    pub async fn modify_leases(
        &self,
        call: &Call,
        ack_ids: Vec<String>,
        lease: Duration,
    ) -> Result<Vec<AckResult>> {
        let caller = call.authorize()?;
        let mailbox = caller.organization.as_str();
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let (outcomes, applied) = check_leases(tx.as_mut(), caller, &ack_ids, now, false).await?;
        let ids: Vec<Uuid> = applied.iter().map(|m| m.id).collect();
        for id in &ids {
            call.touch_resource(format!("messages/{id}"));
        }
        tx.set_message_leases(&ids, now + lease).await?;
        if lease.is_zero() && outcomes.contains(&AckOutcome::Applied) {
            tx.signal_mailbox(mailbox).await?;
        }
        self.commit(call, tx, Outbox::default()).await?;
        if lease.is_zero() {
            self.store.signals().notify(mailbox);
        }
        Ok(results(ack_ids, outcomes))
    }

    /// The mailbox's dead letters, oldest first, after `after_sequence`.
    pub async fn list_dead_letters(
        &self,
        call: &Call,
        after_sequence: i64,
        page_size: i64,
    ) -> Result<Page<Delivery>> {
        let caller = call.authorize()?;
        let mut tx = self.begin().await?;
        let mut found = tx
            .list_dead_letters(caller.organization.as_str(), after_sequence, page_size + 1)
            .await?;
        let more = found.len() as i64 > page_size;
        found.truncate(page_size as usize);
        if found.is_empty() {
            self.commit_unprocessed(call, Some(tx)).await?;
            return Ok(Page {
                items: Vec::new(),
                more,
            });
        }
        let items = self
            .render(tx.as_mut(), call, caller, found, false, self.today())
            .await?;
        self.commit(call, tx, Outbox::default()).await?;
        Ok(Page { items, more })
    }

    /// Puts dead letters (all, or those named) back for delivery; they get `max_delivery_attempts`
    /// new tries.
    pub async fn redrive_dead_letters(
        &self,
        call: &Call,
        ids: Option<Vec<Uuid>>,
        key: Option<RequestKey>,
    ) -> Result<u64> {
        let caller = call.authorize()?;
        let mailbox = caller.organization.as_str();
        let mut tx = self.begin().await?;
        if let Some(done) = self
            .replay::<u64>(tx.as_mut(), caller, key.as_ref())
            .await?
        {
            self.commit(call, tx, Outbox::default()).await?;
            return Ok(done);
        }
        for id in ids.iter().flatten() {
            call.touch_resource(format!("messages/{id}"));
        }
        let redriven = tx.redrive_dead_letters(mailbox, ids.as_deref()).await?;
        self.remember(tx.as_mut(), caller, key.as_ref(), &redriven)
            .await?;
        self.commit(call, tx, Outbox::default()).await?;
        self.store.signals().notify(mailbox);
        Ok(redriven)
    }

    /// The mailbox's messages after `since` in sequence order, acknowledged ones included, and the
    /// sequence to continue from.
    pub async fn mailbox_history(
        &self,
        call: &Call,
        since: i64,
        page_size: i64,
    ) -> Result<(Vec<Delivery>, i64)> {
        let caller = call.authorize()?;
        let mut tx = self.begin().await?;
        // Skips a busy counter: what is being numbered now comes in the next page, after `next`.
        tx.number_messages(caller.organization.as_str()).await?;
        let found = tx
            .mailbox_history(caller.organization.as_str(), since, page_size)
            .await?;
        let next = found.last().map_or(since, |m| m.sequence);
        if found.is_empty() {
            // Polling the history: nothing new, no one's data.
            self.commit_unprocessed(call, Some(tx)).await?;
            return Ok((Vec::new(), next));
        }
        let items = self
            .render(tx.as_mut(), call, caller, found, false, self.today())
            .await?;
        self.commit(call, tx, Outbox::default()).await?;
        Ok((items, next))
    }

    pub async fn mailbox_stats(&self, call: &Call) -> Result<MailboxStats> {
        let caller = call.authorize()?;
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let counts = tx.mailbox_stats(caller.organization.as_str(), now).await?;
        // Counts and an age: about the mailbox, not about anyone in it.
        self.commit_unprocessed(call, Some(tx)).await?;
        let oldest_pending_age = counts
            .oldest_pending_publish_time
            .map_or(Duration::zero(), |t| (now - t).max(Duration::zero()));
        Ok(MailboxStats {
            counts,
            oldest_pending_age,
        })
    }

    /// Opens a stream. Opening touches no one (counted, not audited); each batch it delivers is
    /// audited as a call of its own, so an idle stream writes nothing to the audit trail.
    pub async fn stream_messages(
        self: &Arc<Self>,
        call: Arc<Call>,
        lease: Duration,
        max_outstanding: usize,
    ) -> Result<mpsc::Receiver<Result<Delivery>>> {
        let caller = call.authorize()?.clone();
        self.commit_unprocessed(&call, None).await?;
        let (sender, receiver) = mpsc::channel(max_outstanding.max(1));
        let exchange = self.clone();
        tokio::spawn(async move {
            let signal = exchange
                .store
                .signals()
                .subscribe(caller.organization.as_str());
            let mut closing = exchange.closing();
            let mut outstanding: Vec<(Uuid, i32)> = Vec::new();
            // Ends at its age like a connection does (`DeliveryPolicy::max_stream_age`); the
            // client's next stream is a new call, with the identity checked again.
            let ends_at = tokio::time::Instant::now() + exchange.delivery.max_stream_age;
            while !sender.is_closed() && !*closing.borrow() && tokio::time::Instant::now() < ends_at
            {
                let notified = signal.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();

                if let Err(e) = exchange
                    .forget_settled(&caller.organization, &mut outstanding)
                    .await
                {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
                let room = max_outstanding.saturating_sub(outstanding.len());
                if room > 0 {
                    let batch = call.sibling();
                    match exchange
                        .lease_batch(&batch, &caller, room as i64, lease, false)
                        .await
                    {
                        Ok(Some(deliveries)) => {
                            for delivery in deliveries {
                                outstanding
                                    .push((delivery.message.id, delivery.message.delivery_attempt));
                                if sender.send(Ok(delivery)).await.is_err() {
                                    // The client is gone; what it did not get is leased and will expire.
                                    return;
                                }
                            }
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            // Audit the failed batch, then end the stream with its error.
                            if let Err(e) = exchange.finish(&batch, Err::<(), _>(e)).await {
                                let _ = sender.send(Err(e)).await;
                            }
                            return;
                        }
                    }
                }
                tokio::select! {
                    _ = &mut notified => {}
                    _ = closing.changed() => {}
                    _ = sender.closed() => {}
                    _ = tokio::time::sleep(exchange.delivery.poll_interval) => {}
                    _ = tokio::time::sleep_until(ends_at) => {}
                }
            }
        });
        Ok(receiver)
    }

    /// Drops from `outstanding` the deliveries that were acknowledged or whose lease expired.
    async fn forget_settled(
        &self,
        mailbox: &crate::domain::OrganizationId,
        outstanding: &mut Vec<(Uuid, i32)>,
    ) -> Result<()> {
        if outstanding.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_solo().await?;
        let live = tx
            .live_leases(mailbox.as_str(), outstanding, self.clock.now())
            .await?;
        drop(tx);
        outstanding.retain(|(id, _)| live.contains(id));
        Ok(())
    }
}

/// Locks the messages that `ack_ids` name in the caller's mailbox (one statement) and judges each ack
/// id against its message's live lease. Returns the outcome of every ack id, in request order, and
/// the messages whose lease an ack id holds, each once; when `acknowledging`, an ack id repeated in
/// one request finds its message already acknowledged, as it would in a second request.
async fn check_leases(
    tx: &mut dyn Tx,
    caller: &Caller,
    ack_ids: &[String],
    now: DateTime<Utc>,
    acknowledging: bool,
) -> Result<(Vec<AckOutcome>, Vec<StoredMessage>)> {
    let order = in_lock_order(ack_ids);
    let ids: Vec<Uuid> = order.iter().map(|(_, ack)| ack.message_id).collect();
    let mut messages: HashMap<Uuid, StoredMessage> = tx
        .get_messages(caller.organization.as_str(), &ids)
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    let mut outcomes = vec![AckOutcome::UnknownAckId; ack_ids.len()];
    let mut applied: Vec<StoredMessage> = Vec::new();
    for (i, ack) in order {
        let message = messages.get_mut(&ack.message_id);
        outcomes[i] = check_lease(message.as_deref(), ack, now);
        if let (AckOutcome::Applied, Some(message)) = (outcomes[i], message)
            && applied.last().is_none_or(|last| last.id != message.id)
        {
            applied.push(message.clone());
            if acknowledging {
                message.ack_time = Some(now);
            }
        }
    }
    Ok((outcomes, applied))
}

/// The parseable ack ids with their positions, ordered by message id: concurrent requests then lock
/// message rows in the same order.
fn in_lock_order(ack_ids: &[String]) -> Vec<(usize, AckId)> {
    let mut parsed: Vec<(usize, AckId)> = ack_ids
        .iter()
        .enumerate()
        .filter_map(|(i, s)| AckId::parse(s).map(|a| (i, a)))
        .collect();
    parsed.sort_by_key(|(_, a)| a.message_id);
    parsed
}

fn results(ack_ids: Vec<String>, outcomes: Vec<AckOutcome>) -> Vec<AckResult> {
    ack_ids
        .into_iter()
        .zip(outcomes)
        .map(|(ack_id, outcome)| AckResult { ack_id, outcome })
        .collect()
}
