//! Per-organisation mailboxes: how referrals reach receivers and coded state changes reach Kela.
//!
//! Delivery is at-least-once with leases, as in Google Pub/Sub pull. A pull leases messages to the
//! puller until it acknowledges them or the lease runs out; then they are delivered again with the
//! attempt count raised. An `ack_id` names one delivery (message and attempt), so an ack that arrives
//! after its lease expired, or after the message was delivered again, acknowledges nothing, and the
//! reply says so: a receiver's system must never believe a referral was taken when it was not.
//!
//! Acknowledging a `REFERRAL_ROUTED` message is the receiver's system taking delivery: the referral
//! becomes RECEIVED in the same transaction, and its deadlines start.
//!
//! A message delivered `max_delivery_attempts` times without an acknowledgement goes to the mailbox's
//! dead letters, and Kela is told when a message about one of its referrals does: a receiver whose
//! system cannot process a referral must not make it vanish. Every message has a per-mailbox
//! `sequence`, given when the mailbox is read (a pull, the history, the sweeper) under the mailbox
//! counter's row lock, so numbering order is commit order and a reader paging the history by sequence
//! never misses a message.
//!
//! This module holds the types and rules; the use cases (pull, acknowledge, modify leases, dead
//! letters, history, stats, streams, the sweeper) are in `exchange/mailbox.rs` and
//! `exchange/mailbox_sweeper.rs`.
//!
//! - [`delivery`]: the delivery policy and when an ack id names a live lease.

pub mod delivery;

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

pub use self::delivery::{AckOutcome, AckResult, DeliveryPolicy, check_lease};
use chrono::NaiveDate;

use crate::domain::{
    OrganizationId, code_enum,
    referral::{DeadlineKind, StateChange},
};

/// Why a message went to the dead letters.
pub const MAX_DELIVERY_ATTEMPTS_EXCEEDED: &str = "MAX_DELIVERY_ATTEMPTS_EXCEEDED";

code_enum! {
    pub enum MessageType {
        ReferralRouted = "REFERRAL_ROUTED",
        ReferralCancelled = "REFERRAL_CANCELLED",
        ConsentWithdrawn = "CONSENT_WITHDRAWN",
        ReferralStateChanged = "REFERRAL_STATE_CHANGED",
        ReferralOverdue = "REFERRAL_OVERDUE",
        ReferralDeliveryFailed = "REFERRAL_DELIVERY_FAILED",
    }
}

/// A message on its way into a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: Uuid,
    pub mailbox: OrganizationId,
    pub message_type: MessageType,
    pub referral_id: Option<Uuid>,
    pub consent_id: Option<Uuid>,
    pub state_change: Option<StateChange>,
    /// For REFERRAL_OVERDUE.
    pub deadline: Option<(DeadlineKind, NaiveDate)>,
    /// For REFERRAL_DELIVERY_FAILED: the message given up and its mailbox.
    pub failed: Option<(Uuid, String)>,
    pub publish_time: DateTime<Utc>,
}

impl NewMessage {
    /// The coded message that tells the referrer (Kela) about a change of one of its referrals.
    pub fn state_changed(referral_id: Uuid, change: StateChange, now: DateTime<Utc>) -> NewMessage {
        let mut message = NewMessage::about_referral(
            OrganizationId::kela(),
            MessageType::ReferralStateChanged,
            referral_id,
            now,
        );
        message.state_change = Some(change);
        message
    }

    pub fn about_referral(
        mailbox: OrganizationId,
        message_type: MessageType,
        referral_id: Uuid,
        now: DateTime<Utc>,
    ) -> NewMessage {
        NewMessage {
            id: crate::domain::new_id(now),
            mailbox,
            message_type,
            referral_id: Some(referral_id),
            consent_id: None,
            state_change: None,
            deadline: None,
            failed: None,
            publish_time: now,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: Uuid,
    pub mailbox: String,
    pub sequence: i64,
    pub message_type: MessageType,
    pub referral_id: Option<Uuid>,
    pub consent_id: Option<Uuid>,
    pub state_change: Option<StateChange>,
    pub deadline: Option<(DeadlineKind, NaiveDate)>,
    pub failed: Option<(Uuid, String)>,
    pub publish_time: DateTime<Utc>,
    /// How many times the message has been leased; 0 before the first pull. Never decreases, so an
    /// ack id of an old delivery can never match a new one.
    pub delivery_attempt: i32,
    /// `delivery_attempt` when the message was last redriven: attempts since then count toward the limit.
    pub redrive_base: i32,
    pub lease_expire_time: Option<DateTime<Utc>>,
    pub ack_time: Option<DateTime<Utc>>,
    pub dead_letter_time: Option<DateTime<Utc>>,
    pub dead_letter_reason: Option<String>,
}

impl StoredMessage {
    pub fn ack_id(&self) -> String {
        AckId {
            message_id: self.id,
            attempt: self.delivery_attempt,
        }
        .to_string()
    }
}

/// Names one delivery of one message: `{message uuid}.{attempt}`. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckId {
    pub message_id: Uuid,
    pub attempt: i32,
}

impl AckId {
    pub fn parse(s: &str) -> Option<AckId> {
        let (id, attempt) = s.split_once('.')?;
        Some(AckId {
            message_id: Uuid::parse_str(id).ok()?,
            attempt: attempt.parse().ok()?,
        })
    }
}

impl std::fmt::Display for AckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.message_id.simple(), self.attempt)
    }
}

/// Wakes long-polls in this process when a transaction that wrote to their mailbox commits.
#[derive(Debug, Default)]
pub struct MailboxSignals {
    waiters: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
}

impl MailboxSignals {
    /// The signal of `mailbox`. Create its `notified()` future *before* looking for messages, so that
    /// a commit between the look and the wait is not missed.
    pub fn subscribe(&self, mailbox: &str) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.entry(mailbox.to_owned()).or_default().clone()
    }

    pub fn notify(&self, mailbox: &str) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = waiters.get(mailbox) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter, e.g. after the connection that carries cross-process signals was lost and
    /// signals may have been missed: each looks again.
    pub fn notify_all(&self) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for notify in waiters.values() {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids_round_trip_and_reject_garbage() {
        let id = AckId {
            message_id: Uuid::from_u128(7),
            attempt: 3,
        };
        assert_eq!(AckId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "x.1",
            "00000000000000000000000000000007",
            "00000000000000000000000000000007.x",
        ] {
            assert_eq!(AckId::parse(bad), None, "{bad}");
        }
    }
}
