//! Delivery as a rule: how long leases are, when an ack id still names a live lease, and what a
//! settled ack id says. The use cases that pull and acknowledge are in `exchange/mailbox.rs`.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use super::{AckId, StoredMessage};

/// How delivery behaves; the bounds are Pub/Sub's.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    pub min_lease: Duration,
    pub max_lease: Duration,
    pub max_wait: Duration,
    pub max_messages: i64,
    /// How often a waiting pull looks again without a signal: another puller's lease can expire
    /// without anyone committing anything.
    pub poll_interval: StdDuration,
    /// Deliveries without an acknowledgement after which a message goes to the dead letters.
    pub max_delivery_attempts: i32,
    /// How long acknowledged messages stay in the mailbox history.
    pub history_retention: Duration,
    /// How long a `StreamMessages` stream may stay open before the server ends it (the client opens
    /// a new one): the caller's certificate is checked again then, so a revoked identity cannot
    /// keep a stream forever. The server sets it to the connection age bound.
    pub max_stream_age: StdDuration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            min_lease: Duration::seconds(10),
            max_lease: Duration::seconds(600),
            max_wait: Duration::seconds(20),
            max_messages: 100,
            poll_interval: StdDuration::from_millis(500),
            max_delivery_attempts: 10,
            history_retention: Duration::days(90),
            max_stream_age: StdDuration::from_secs(3600),
        }
    }
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
pub fn check_lease(message: Option<&StoredMessage>, ack: AckId, now: DateTime<Utc>) -> AckOutcome {
    let Some(message) = message else {
        return AckOutcome::UnknownAckId;
    };
    if message.ack_time.is_some() {
        AckOutcome::AlreadyAcknowledged
    } else if ack.attempt > message.delivery_attempt || ack.attempt < 1 {
        AckOutcome::UnknownAckId
    } else if ack.attempt < message.delivery_attempt {
        AckOutcome::LeaseSuperseded
    } else if message.dead_letter_time.is_some()
        || message.lease_expire_time.is_none_or(|until| until <= now)
    {
        AckOutcome::LeaseExpired
    } else {
        AckOutcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MessageType;
    use chrono::TimeZone;
    use uuid::Uuid;

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
            deadline: None,
            failed: None,
            publish_time: t,
            delivery_attempt: attempt,
            redrive_base: 0,
            lease_expire_time: lease_until,
            ack_time: acked.then_some(t),
            dead_letter_time: None,
            dead_letter_reason: None,
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
        let mut dead = message(2, later, false);
        dead.dead_letter_time = Some(now);
        assert_eq!(
            check_lease(Some(&dead), ack(2), now),
            AckOutcome::LeaseExpired
        );
    }
}
