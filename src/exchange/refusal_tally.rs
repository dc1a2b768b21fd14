//! Refusals for a limit, audited in aggregate.
//!
//! A call over its organisation's rate or concurrency ([`crate::limits`]) is refused before its
//! request is read: it touched no data and named no one. Auditing each such refusal in a
//! transaction of its own let a client that ignores `RetryInfo` make the exchange write thousands
//! of audit events a second, and the other organisations' calls queued behind them (on SQLite up
//! to 2 s; bench/RESULTS.md, "Per-organisation limits"). So these refusals are tallied in memory
//! and written by [`Exchange::flush_refusal_tally`], every second and at shutdown: one audit event
//! per organisation, user, method, status and second of the clock, in one transaction, its
//! `resources` naming how many calls it stands for (`refusedCalls/{count}`).
//!
//! Every other refusal is audited one by one, as before ([`Exchange::finish`]). When its event
//! cannot be written because the database is away (a refusal during an outage is UNAVAILABLE for
//! that reason), the event is kept here, whole, and written by the same flush once the database
//! answers, with its own time: at most [`MAX_KEPT`] of them, beyond which they are logged as lost.
//! What a `kill -9` can lose is the last second's tally and the events kept during an outage.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use chrono::{DateTime, Utc};

use super::Exchange;
use crate::{audit::AuditRecord, error::Result};

/// The resource an aggregated event names: `refusedCalls/{count}`.
pub const REFUSED_CALLS: &str = "refusedCalls";

/// What one aggregated event stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    second: i64,
    organization: String,
    user_id: String,
    method: String,
    status_code: i32,
}

/// Refused calls' events kept while the database is away, at most.
pub const MAX_KEPT: usize = 10_000;

/// Refusals for a limit since the last flush, counted by [`Key`], and the whole events of refusals
/// that could not be written.
#[derive(Debug, Default)]
pub(crate) struct RefusalTally {
    counted: Mutex<HashMap<Key, u64>>,
    kept: Mutex<VecDeque<AuditRecord>>,
}

impl Key {
    fn of(record: &AuditRecord) -> Self {
        Self {
            second: record.time.timestamp(),
            organization: record.organization.clone(),
            user_id: record.user_id.clone(),
            method: record.method.clone(),
            status_code: record.status_code,
        }
    }

    /// The audit event that stands for `count` refusals of this key.
    fn record(&self, count: u64) -> AuditRecord {
        AuditRecord {
            time: DateTime::<Utc>::from_timestamp(self.second, 0).unwrap_or_default(),
            organization: self.organization.clone(),
            user_id: self.user_id.clone(),
            method: self.method.clone(),
            resources: vec![format!("{REFUSED_CALLS}/{count}")],
            subject_pseudonyms: Vec::new(),
            status_code: self.status_code,
            correlation_id: String::new(),
            disclosures: Vec::new(),
        }
    }
}

impl RefusalTally {
    /// Keeps `record` to be written at the next flush; false if [`MAX_KEPT`] are already waiting.
    pub(crate) fn keep(&self, record: AuditRecord) -> bool {
        let mut kept = self.kept();
        if kept.len() >= MAX_KEPT {
            return false;
        }
        kept.push_back(record);
        true
    }

    /// Counts the refusal `record` describes.
    pub(crate) fn add(&self, record: &AuditRecord) {
        *self.counted().entry(Key::of(record)).or_default() += 1;
    }

    /// Everything counted so far (oldest second first), and an empty tally.
    fn take(&self) -> Vec<(Key, u64)> {
        let mut counts: Vec<(Key, u64)> =
            std::mem::take(&mut *self.counted()).into_iter().collect();
        counts.sort_unstable_by(|(a, _), (b, _)| {
            (a.second, &a.organization, &a.user_id, &a.method).cmp(&(
                b.second,
                &b.organization,
                &b.user_id,
                &b.method,
            ))
        });
        counts
    }

    /// Puts `counts` back (their transaction failed): counted again at the next flush.
    fn restore(&self, counts: Vec<(Key, u64)>) {
        let mut counted = self.counted();
        for (key, count) in counts {
            *counted.entry(key).or_default() += count;
        }
    }

    fn counted(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        self.counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, VecDeque<AuditRecord>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Exchange {
    /// Writes the tallied refusals, one audit event per [`Key`], in one transaction on the
    /// background connections. Returns how many events it wrote. On failure the tally keeps them
    /// for the next flush.
    pub async fn flush_refusal_tally(&self) -> Result<usize> {
        let kept: Vec<AuditRecord> = self.refusal_tally.kept().drain(..).collect();
        let counts = self.refusal_tally.take();
        if counts.is_empty() && kept.is_empty() {
            return Ok(0);
        }
        let tallied: Vec<AuditRecord> = counts.iter().map(|(key, n)| key.record(*n)).collect();
        let written = async {
            let mut tx = self.begin_background().await?;
            for record in kept.iter().chain(&tallied) {
                tx.insert_audit_event(record).await?;
            }
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => Ok(kept.len() + tallied.len()),
            Err(e) => {
                self.refusal_tally.restore(counts);
                let mut waiting = self.refusal_tally.kept();
                for record in kept.into_iter().rev() {
                    waiting.push_front(record);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(second: i64, organization: &str, method: &str) -> AuditRecord {
        AuditRecord {
            time: DateTime::from_timestamp(second, 250_000_000).expect("time"),
            organization: organization.into(),
            user_id: "u1".into(),
            method: method.into(),
            resources: Vec::new(),
            subject_pseudonyms: Vec::new(),
            status_code: tonic::Code::ResourceExhausted as i32,
            correlation_id: "c1".into(),
            disclosures: Vec::new(),
        }
    }

    #[test]
    fn refusals_are_counted_per_organisation_method_and_second() {
        let tally = RefusalTally::default();
        for _ in 0..3 {
            tally.add(&refusal(100, "kela", "/m/A"));
        }
        tally.add(&refusal(100, "kela", "/m/B"));
        tally.add(&refusal(101, "kela", "/m/A"));
        tally.add(&refusal(100, "hva-15", "/m/A"));
        let events: Vec<AuditRecord> = tally.take().iter().map(|(k, n)| k.record(*n)).collect();
        let summary: Vec<(i64, &str, &str, &str)> = events
            .iter()
            .map(|e| {
                (
                    e.time.timestamp(),
                    e.organization.as_str(),
                    e.method.as_str(),
                    e.resources[0].as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (100, "hva-15", "/m/A", "refusedCalls/1"),
                (100, "kela", "/m/A", "refusedCalls/3"),
                (100, "kela", "/m/B", "refusedCalls/1"),
                (101, "kela", "/m/A", "refusedCalls/1"),
            ]
        );
        assert!(events.iter().all(|e| e.correlation_id.is_empty()));
        assert!(tally.take().is_empty(), "taken once");
    }

    #[test]
    fn refused_calls_events_are_kept_up_to_a_bound() {
        let tally = RefusalTally::default();
        for _ in 0..MAX_KEPT {
            assert!(tally.keep(refusal(100, "kela", "/m/A")));
        }
        assert!(!tally.keep(refusal(100, "kela", "/m/A")), "bounded");
        assert_eq!(tally.kept().len(), MAX_KEPT);
    }

    #[test]
    fn a_failed_flush_keeps_its_counts() {
        let tally = RefusalTally::default();
        tally.add(&refusal(100, "kela", "/m/A"));
        tally.add(&refusal(100, "kela", "/m/A"));
        let counts = tally.take();
        tally.restore(counts);
        tally.add(&refusal(100, "kela", "/m/A"));
        let (key, count) = &tally.take()[0];
        assert_eq!(key.record(*count).resources, ["refusedCalls/3"]);
    }
}
