//! Tasks that must run once per deployment, however many replicas serve it: the deadline watch, the
//! audit sequencer, consent expiry. Each replica runs a [`Singleton`] loop; the one that holds the
//! task's lock ([`Store::try_lead`]) does the work, the others wait to take over. With SQLite there is
//! one process and it always leads.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::watch, task::JoinHandle};

use crate::{error::Result, store::Store};

/// One round of a deployment-wide task.
#[async_trait]
pub trait Job: Send + Sync + 'static {
    /// The lock name: one holder per deployment.
    fn name(&self) -> &'static str;

    /// Does one round of work. Errors are logged and the round is tried again next interval.
    async fn run_once(&self) -> Result<()>;

    /// The schedule of this task, given the deployment's default; a task may run more often.
    fn schedule(&self, default: Schedule) -> Schedule {
        default
    }
}

/// How often a leader works and a follower tries to take over.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub interval: Duration,
    /// How long after a leader's death another replica at the latest takes over.
    pub takeover: Duration,
}

/// Runs `job` on `schedule` until `stop` turns true. Returns the task. `settled` counts up once,
/// when the task's first round is over: done, or left to the replica that holds its lock.
pub fn spawn(
    store: Arc<dyn Store>,
    job: Arc<dyn Job>,
    schedule: Schedule,
    mut stop: watch::Receiver<bool>,
    settled: Arc<AtomicUsize>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let name = job.name();
        let mut first = Some(settled);
        let mut settle = || {
            if let Some(settled) = first.take() {
                settled.fetch_add(1, Ordering::SeqCst);
            }
        };
        while !*stop.borrow() {
            let leadership = match store.try_lead(name).await {
                Ok(leadership) => leadership,
                Err(e) => {
                    tracing::warn!(task = name, error = %e, "could not ask for the task lock");
                    None
                }
            };
            let Some(mut leadership) = leadership else {
                settle();
                if sleep_or_stop(&mut stop, schedule.takeover).await {
                    return;
                }
                continue;
            };
            tracing::info!(task = name, "leading this background task");
            loop {
                // Each round is a trace of its own, with the store transactions as its children.
                let round =
                    tracing::info_span!(parent: None, "background", otel.name = name, task = name);
                if let Err(e) = tracing::Instrument::instrument(job.run_once(), round).await {
                    tracing::warn!(task = name, error = %e, "background round failed");
                }
                settle();
                if sleep_or_stop(&mut stop, schedule.interval).await {
                    return;
                }
                if !leadership.still_leading().await {
                    tracing::warn!(task = name, "lost the task lock");
                    break;
                }
            }
        }
    })
}

/// Sleeps `duration`; true if `stop` turned true meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}
