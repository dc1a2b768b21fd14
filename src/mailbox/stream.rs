//! `StreamMessages`: pull delivery as a server stream, with at most `max_outstanding` messages
//! delivered and not yet acknowledged. Acknowledgements arrive through `AcknowledgeMessages`, which
//! wakes the stream; a message whose lease expires stops counting too. When the client goes away the
//! stream ends and its leases expire as usual, so nothing is lost.

use std::sync::Arc;

use chrono::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Delivery, delivery::MAILBOX_ROLES};
use crate::{access::Call, error::Result, exchange::Exchange};

impl Exchange {
    /// Opens a stream. Opening is audited as the call; each batch it delivers is audited as a call of
    /// its own (an idle stream writes nothing).
    pub async fn stream_messages(
        self: &Arc<Self>,
        call: Arc<Call>,
        lease: Duration,
        max_outstanding: usize,
    ) -> Result<mpsc::Receiver<Result<Delivery>>> {
        let caller = call.require(MAILBOX_ROLES)?.clone();
        self.audit_only(&call).await?;
        let (sender, receiver) = mpsc::channel(max_outstanding.max(1));
        let exchange = self.clone();
        tokio::spawn(async move {
            let signal = exchange
                .store
                .signals()
                .subscribe(caller.organization.as_str());
            let mut closing = exchange.closing();
            let mut outstanding: Vec<(Uuid, i32)> = Vec::new();
            while !sender.is_closed() && !*closing.borrow() {
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
