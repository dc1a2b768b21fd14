//! The mailbox sweeper, a deployment-wide background job: moves messages whose last allowed delivery
//! expired to the dead letters (and tells Kela about its referrals) even when nobody pulls the
//! mailbox any more, and forgets acknowledged messages older than the history retention.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    access::Call,
    background::Job,
    domain::OrganizationId,
    error::Result,
    mailbox::{MessageType, NewMessage},
};

use super::{Exchange, Outbox};

pub const JOB_NAME: &str = "mailbox-sweeper";

/// How old an unnumbered message must be before the sweeper numbers it rather than its mailbox's
/// reader: longer than a polling reader takes to come back (long-polls look again every 500 ms).
pub const LEFT_TO_READERS: chrono::Duration = chrono::Duration::seconds(5);

pub struct MailboxSweeper(pub Arc<Exchange>);

#[async_trait]
impl Job for MailboxSweeper {
    fn name(&self) -> &'static str {
        JOB_NAME
    }

    async fn run_once(&self) -> Result<()> {
        self.0.sweep_mailboxes().await.map(|_| ())
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub dead_lettered: usize,
    pub forgotten: u64,
    pub numbered: u64,
}

impl Exchange {
    /// One round of the sweeper. Audited as the service's own call when it changed anything.
    pub async fn sweep_mailboxes(&self) -> Result<Swept> {
        let call = Call::system("background/mailbox-sweeper");
        let mut tx = self.begin_background().await?;
        let now = self.clock.now();
        let dead = tx
            .dead_letter_exhausted(None, self.delivery.max_delivery_attempts, now)
            .await?;
        let mut outbox = Outbox::default();
        for message in &dead {
            call.touch_resource(format!("messages/{}", message.id));
            if message.mailbox == OrganizationId::kela().as_str() {
                continue;
            }
            if let Some(referral_id) = message.referral_id {
                call.touch_resource(format!("referrals/{referral_id}"));
                let mut failed = NewMessage::about_referral(
                    OrganizationId::kela(),
                    MessageType::ReferralDeliveryFailed,
                    referral_id,
                    now,
                );
                failed.failed = Some((message.id, message.mailbox.clone()));
                outbox.push(failed);
            }
            tracing::warn!(mailbox = %message.mailbox, message = %message.id, "message dead-lettered");
        }
        // Messages of mailboxes nobody reads get their numbers too, so the history stays current.
        // Fresh ones are left to their readers: a pull that finds the counter taken skips numbering,
        // and would answer empty while the sweeper numbers the one message that is there.
        let mut numbered = 0;
        for mailbox in tx.mailboxes_to_number(now - LEFT_TO_READERS).await? {
            numbered += tx.number_messages(&mailbox).await?;
        }
        let forgotten = tx
            .delete_acknowledged_before(now - self.delivery.history_retention)
            .await?;
        let swept = Swept {
            dead_lettered: dead.len(),
            forgotten,
            numbered,
        };
        crate::telemetry::metrics()
            .dead_letters
            .add(dead.len() as u64, &[]);
        if swept.dead_lettered > 0 || swept.forgotten > 0 {
            self.commit(&call, tx, outbox).await?;
        } else if swept.numbered > 0 {
            // Numbering touches no one's data: nothing for the audit trail.
            tx.commit().await?;
        }
        Ok(swept)
    }
}
