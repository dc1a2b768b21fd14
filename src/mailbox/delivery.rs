//! Pull, acknowledge, modify leases: the delivery use cases.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{AckId, MessageType, NewMessage, StoredMessage};
use crate::{
    access::{Call, Caller},
    domain::{
        OrganizationId, Role,
        referral::{Action, Referral, State},
    },
    error::{Error, Result},
    exchange::{Exchange, Outbox},
    store::Tx,
};

/// Bounds of pull requests, in the spirit of Pub/Sub's.
#[derive(Debug, Clone, Copy)]
pub struct LeaseLimits {
    pub min_lease: Duration,
    pub max_lease: Duration,
    pub max_wait: Duration,
    pub max_messages: i64,
    /// How often a waiting pull looks again even without a signal: leases of other pullers expire
    /// without anyone committing anything.
    pub poll_interval: StdDuration,
}

impl Default for LeaseLimits {
    fn default() -> Self {
        Self {
            min_lease: Duration::seconds(10),
            max_lease: Duration::seconds(600),
            max_wait: Duration::seconds(20),
            max_messages: 100,
            poll_interval: StdDuration::from_millis(500),
        }
    }
}

/// A message delivered to its mailbox's owner, with the referral as that party may see it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: StoredMessage,
    pub referral: Option<Referral>,
}

/// Why an ack id did not take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    Applied,
    LeaseExpired,
    UnknownAckId,
    LeaseSuperseded,
    AlreadyAcknowledged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckResult {
    pub ack_id: String,
    pub outcome: AckOutcome,
}

/// Whether `ack` still names the live lease of `message` at `now`.
fn check_lease(message: Option<&StoredMessage>, ack: AckId, now: DateTime<Utc>) -> AckOutcome {
    let Some(message) = message else {
        return AckOutcome::UnknownAckId;
    };
    if message.ack_time.is_some() {
        AckOutcome::AlreadyAcknowledged
    } else if ack.attempt > message.delivery_attempt || ack.attempt < 1 {
        AckOutcome::UnknownAckId
    } else if ack.attempt < message.delivery_attempt {
        AckOutcome::LeaseSuperseded
    } else if message.lease_expire_time.is_none_or(|until| until <= now) {
        AckOutcome::LeaseExpired
    } else {
        AckOutcome::Applied
    }
}

const MAILBOX_ROLES: &[Role] = &[Role::Referrer, Role::Receiver];

impl Exchange {
    /// Leases up to `max_messages` messages, waiting up to `wait` for the first if none is ready.
    pub async fn pull_messages(
        &self,
        call: &Call,
        max_messages: i64,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let caller = call.require(MAILBOX_ROLES)?;
        let mailbox = caller.organization.as_str();
        let deadline = tokio::time::Instant::now() + wait.to_std().unwrap_or_default();
        let signal = self.store.signals().subscribe(mailbox);
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let mut tx = self.store.begin().await?;
            let now = self.clock.now();
            let leased = tx
                .lease_messages(mailbox, max_messages, now, now + lease)
                .await?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !leased.is_empty() || remaining.is_zero() {
                let mut deliveries = Vec::with_capacity(leased.len());
                for message in leased {
                    deliveries.push(self.render(tx.as_mut(), call, caller, message).await?);
                }
                self.commit(call, tx, Outbox::default()).await?;
                return Ok(deliveries);
            }
            drop(tx);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(remaining.min(self.leases.poll_interval)) => {}
            }
        }
    }

    /// Attaches the referral as the mailbox owner may see it, and logs the disclosure.
    async fn render(
        &self,
        tx: &mut dyn Tx,
        call: &Call,
        caller: &Caller,
        message: StoredMessage,
    ) -> Result<Delivery> {
        call.touch_resource(format!("messages/{}", message.id));
        let Some(referral_id) = message.referral_id else {
            return Ok(Delivery {
                message,
                referral: None,
            });
        };
        let stored = tx
            .get_referral(referral_id, false)
            .await?
            .ok_or_else(|| crate::store::corrupt("message referral"))?;
        let referral = stored.view_for(&caller.organization);
        if let Some(view) = &referral {
            let pseudonym = self.pseudonym(&view.subject.personal_identity_code);
            call.touch_resource(view.name());
            call.touch_subject(&pseudonym);
            call.disclose(
                self.referral_disclosure(tx, &caller.organization, view)
                    .await?,
            );
        }
        Ok(Delivery { message, referral })
    }

    /// Acknowledges deliveries. Acknowledging a routed referral is taking delivery of it.
    pub async fn acknowledge_messages(
        &self,
        call: &Call,
        ack_ids: Vec<String>,
    ) -> Result<Vec<AckResult>> {
        let caller = call.require(MAILBOX_ROLES)?;
        let mut tx = self.store.begin().await?;
        let now = self.clock.now();
        let mut outbox = Outbox::default();
        let mut outcomes = vec![AckOutcome::UnknownAckId; ack_ids.len()];
        for (i, ack) in in_lock_order(&ack_ids) {
            let message = tx
                .get_message(caller.organization.as_str(), ack.message_id)
                .await?;
            outcomes[i] = check_lease(message.as_ref(), ack, now);
            if let (AckOutcome::Applied, Some(message)) = (outcomes[i], message) {
                call.touch_resource(format!("messages/{}", message.id));
                tx.acknowledge_message(message.id, now).await?;
                if message.message_type == MessageType::ReferralRouted
                    && let Some(referral_id) = message.referral_id
                {
                    self.take_delivery(tx.as_mut(), call, caller, referral_id, now, &mut outbox)
                        .await?;
                }
            }
        }
        self.commit(call, tx, outbox).await?;
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
            .apply(Action::Receive, &caller.organization, now)
            .map_err(Error::internal)?;
        tx.update_referral(&referral).await?;
        call.touch_resource(referral.name());
        call.touch_subject(self.pseudonym(&referral.subject.personal_identity_code));
        outbox.push(state_changed(&referral, change, now));
        Ok(())
    }

    /// Extends leases (`lease` > 0) or releases them for immediate redelivery (`lease` = 0).
    pub async fn modify_leases(
        &self,
        call: &Call,
        ack_ids: Vec<String>,
        lease: Duration,
    ) -> Result<Vec<AckResult>> {
        let caller = call.require(MAILBOX_ROLES)?;
        let mut tx = self.store.begin().await?;
        let now = self.clock.now();
        let mut outcomes = vec![AckOutcome::UnknownAckId; ack_ids.len()];
        for (i, ack) in in_lock_order(&ack_ids) {
            let message = tx
                .get_message(caller.organization.as_str(), ack.message_id)
                .await?;
            outcomes[i] = check_lease(message.as_ref(), ack, now);
            if let (AckOutcome::Applied, Some(message)) = (outcomes[i], message) {
                call.touch_resource(format!("messages/{}", message.id));
                tx.set_message_lease(message.id, now + lease).await?;
            }
        }
        self.commit(call, tx, Outbox::default()).await?;
        if lease.is_zero() {
            self.store.signals().notify(caller.organization.as_str());
        }
        Ok(results(ack_ids, outcomes))
    }
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

/// The coded message that tells the referrer about a change.
pub(crate) fn state_changed(
    referral: &Referral,
    change: crate::domain::referral::StateChange,
    now: DateTime<Utc>,
) -> NewMessage {
    let mut message = NewMessage::about_referral(
        OrganizationId::kela(),
        MessageType::ReferralStateChanged,
        referral.id,
        now,
    );
    message.state_change = Some(change);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn message(attempt: i32, lease_until: Option<DateTime<Utc>>, acked: bool) -> StoredMessage {
        let t = Utc
            .with_ymd_and_hms(2025, 1, 1, 12, 0, 0)
            .single()
            .expect("valid");
        StoredMessage {
            id: Uuid::from_u128(1),
            mailbox: "hva-15".into(),
            sequence: 1,
            message_type: MessageType::ReferralRouted,
            referral_id: None,
            consent_id: None,
            state_change: None,
            publish_time: t,
            delivery_attempt: attempt,
            lease_expire_time: lease_until,
            ack_time: acked.then_some(t),
        }
    }

    #[test]
    fn only_the_newest_unexpired_lease_counts() {
        let now = Utc
            .with_ymd_and_hms(2025, 1, 1, 12, 0, 30)
            .single()
            .expect("valid");
        let later = Some(now + Duration::seconds(10));
        let earlier = Some(now - Duration::seconds(1));
        let ack = |attempt| AckId {
            message_id: Uuid::from_u128(1),
            attempt,
        };
        assert_eq!(
            check_lease(Some(&message(2, later, false)), ack(2), now),
            AckOutcome::Applied
        );
        assert_eq!(
            check_lease(Some(&message(2, later, false)), ack(1), now),
            AckOutcome::LeaseSuperseded
        );
        assert_eq!(
            check_lease(Some(&message(2, earlier, false)), ack(2), now),
            AckOutcome::LeaseExpired
        );
        assert_eq!(
            check_lease(Some(&message(2, Some(now), false)), ack(2), now),
            AckOutcome::LeaseExpired
        );
        assert_eq!(
            check_lease(Some(&message(2, later, true)), ack(2), now),
            AckOutcome::AlreadyAcknowledged
        );
        assert_eq!(
            check_lease(Some(&message(2, later, false)), ack(3), now),
            AckOutcome::UnknownAckId
        );
        assert_eq!(check_lease(None, ack(1), now), AckOutcome::UnknownAckId);
    }
}
