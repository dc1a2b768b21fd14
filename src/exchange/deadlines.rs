//! The deadline watch, a deployment-wide background job: when a referral's deadline passes without
//! the state it requires (see `Referral::overdue`), Kela and the current recipient get a
//! REFERRAL_OVERDUE message, once per deadline. This is what makes a referral that nobody picked up, or
//! that waits too long for its assessment, impossible to miss.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Exchange, Outbox};
use crate::{
    access::Call,
    background::Job,
    domain::OrganizationId,
    error::Result,
    mailbox::{MessageType, NewMessage},
};

pub const JOB_NAME: &str = "deadline-watch";

/// Referrals looked at per transaction.
const BATCH: i64 = 200;

pub struct DeadlineWatch(pub Arc<Exchange>);

#[async_trait]
impl Job for DeadlineWatch {
    fn name(&self) -> &'static str {
        JOB_NAME
    }

    async fn run_once(&self) -> Result<()> {
        self.0.notice_overdue().await.map(|_| ())
    }
}

impl Exchange {
    /// Tells every deadline that passed and was not told yet. Returns how many were told.
    pub async fn notice_overdue(&self) -> Result<usize> {
        let mut told = 0;
        loop {
            let call = Call::system("background/deadline-watch");
            let mut tx = self.begin_background().await?;
            let now = self.clock.now();
            let today = self.today();
            let ids = tx.unnoticed_overdue(today, BATCH).await?;
            let mut outbox = Outbox::default();
            let told_before = told;
            for id in &ids {
                let Some(referral) = tx.get_referral(*id, true).await? else {
                    continue;
                };
                for (kind, due) in referral.overdue(today) {
                    if !tx
                        .insert_overdue_notice(referral.id, kind, due, now)
                        .await?
                    {
                        continue;
                    }
                    call.touch_resource(referral.name());
                    call.touch_subject(self.referral_pseudonym(&referral));
                    for mailbox in [OrganizationId::kela(), referral.recipient.clone()] {
                        let mut message = NewMessage::about_referral(
                            mailbox,
                            MessageType::ReferralOverdue,
                            referral.id,
                            now,
                        );
                        message.deadline = Some((kind, due));
                        outbox.push(message);
                    }
                    told += 1;
                    let kind = opentelemetry::KeyValue::new("deadline", kind.as_str());
                    crate::telemetry::metrics().overdue_notices.add(1, &[kind]);
                }
            }
            if told == told_before {
                // Nothing (more) to tell. Also a guard: should the SQL of the overdue rule ever select
                // a referral the domain rule does not find overdue, do not loop on it.
                return Ok(told);
            }
            self.commit(&call, tx, outbox).await?;
            if (ids.len() as i64) < BATCH {
                return Ok(told);
            }
        }
    }
}
