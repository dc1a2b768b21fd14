//! The tamper-evident audit log: the sequencer that turns committed audit events into leaves of an
//! RFC 6962 Merkle tree and signs checkpoints, and what auditors read from it (checkpoints, proofs,
//! exports, subject access reports). See `AUDIT_LOG.md` for the formats.
//!
//! Every call writes its audit event in its own transaction (see [`super`]). The events' sequence
//! numbers are handed out at insert time and, on PostgreSQL, do not become visible in order: a
//! transaction can take number 7 and commit after number 8 is already in the tree. So the tree does
//! not follow sequence numbers. A trigger queues every event in `audit_pending` in the transaction
//! that writes it; a queued row is visible exactly when its event is committed, however late. Each
//! sequencer round, in one transaction of its own and under a row lock that keeps rounds from
//! overlapping, takes what is queued, appends it to the tree with the next dense leaf indexes,
//! stores the perfect subtrees it completes, signs a checkpoint of the new tree and deletes the
//! queue rows. An event that commits late is simply in a later round.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Months, Utc};

use super::{Exchange, Outbox};
use crate::{
    access::Call,
    audit::{
        AuditQuery, AuditRecord, Disclosure, StoredAuditEvent, leaf,
        merkle::{self, Appender, Hash, Node, ProofError, ProofPlan},
        note::{Checkpoint, NoteSigner},
    },
    background::{Job, Schedule},
    domain::{
        OrganizationId, PersonalIdentityCode, Violation,
        consent::Consent,
        referral::{Basis, Referral},
    },
    error::{Error, Reason, Result},
    store::{AuditLeaf, ConsentEventFilter, StoredCheckpoint, StoredConsentEvent, Tx, corrupt},
};

/// How many events one sequencer round integrates at most.
pub const DEFAULT_SEQUENCER_BATCH: i64 = 10_000;
/// How many leaves an export reads per transaction.
const EXPORT_PAGE: i64 = 1000;
/// The most audit events (or consent events) one subject access report holds: one gRPC response,
/// below the 4 MiB that clients accept by default.
pub const MAX_REPORT_EVENTS: i64 = 10_000;

/// A proof and the sizes it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub leaf_index: i64,
    pub first_tree_size: i64,
    pub tree_size: i64,
    pub hashes: Vec<Hash>,
}

/// What one sequencer round did.
#[derive(Debug, Clone)]
pub struct Round {
    /// The checkpoint it signed.
    pub checkpoint: StoredCheckpoint,
    /// How many events it integrated.
    pub integrated: usize,
}

/// The latest checkpoint with the key that verifies it.
#[derive(Debug, Clone)]
pub struct SignedCheckpoint {
    pub checkpoint: StoredCheckpoint,
    pub origin: String,
    pub verifier_key: String,
}

/// A leaf as exported: the bytes rebuilt from the event row as it is now, and the stored hash.
#[derive(Debug, Clone)]
pub struct ExportLeaf {
    pub leaf_index: i64,
    pub event_sequence: i64,
    /// `leaf::encode` of the row; empty when the row is gone.
    pub leaf_data: Vec<u8>,
    pub leaf_hash: Vec<u8>,
    pub event: Option<AuditRecord>,
}

/// GetSubjectAccessReport: everything about one person in a time range.
#[derive(Debug, Clone)]
pub struct SubjectAccessReport {
    /// Under the current key.
    pub subject_pseudonym: String,
    /// Under the current and every previous key: what the report matched.
    pub lookup_pseudonyms: Vec<String>,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    /// Every audit event that concerned the person (reads, writes, refusals), oldest first.
    pub processing: Vec<StoredAuditEvent>,
    pub consent_events: Vec<StoredConsentEvent>,
}

impl SubjectAccessReport {
    /// The disclosures of the person's data, with the event that made each.
    pub fn disclosures(&self) -> impl Iterator<Item = (&StoredAuditEvent, &Disclosure)> {
        self.processing.iter().flat_map(move |e| {
            e.record
                .disclosures
                .iter()
                .filter(move |d| self.lookup_pseudonyms.contains(&d.subject_pseudonym))
                .map(move |d| (e, d))
        })
    }
}

fn size_u64(size: i64) -> Result<u64> {
    u64::try_from(size).map_err(|_| corrupt("audit tree size"))
}

fn proof_error(e: ProofError) -> Error {
    match e {
        ProofError::MissingNode => corrupt("audit tree node"),
        other => Error::internal(other),
    }
}

impl Exchange {
    pub fn log_signer(&self) -> Option<&NoteSigner> {
        self.log_signer.as_ref()
    }

    /// One sequencer round: integrates up to `max_events` committed events into the tree and signs
    /// a checkpoint of the result. `None` when there was nothing new to sign.
    pub async fn integrate_audit_events(&self, max_events: i64) -> Result<Option<Round>> {
        let signer = self
            .log_signer
            .as_ref()
            .ok_or_else(|| Error::internal("no audit log signing key is configured"))?;
        let mut tx = self.begin_background().await?;
        tx.lock_audit_sequencer().await?;
        let size = tx.audit_tree_size().await?;
        let pending = tx.pending_audit_events(max_events.max(1)).await?;
        let latest = tx.latest_audit_checkpoint().await?;
        if pending.is_empty() && latest.is_some_and(|c| c.tree_size == size) {
            return Ok(None);
        }
        let mut appender = appender(tx.as_mut(), size_u64(size)?).await?;
        let mut leaves = Vec::with_capacity(pending.len());
        for event in &pending {
            let leaf_hash = merkle::leaf_hash(&leaf::encode(event.sequence, &event.record));
            let leaf_index = appender.push(leaf_hash);
            leaves.push(AuditLeaf {
                leaf_index: i64::try_from(leaf_index).map_err(Error::internal)?,
                event_sequence: event.sequence,
                leaf_hash,
            });
        }
        tx.append_audit_leaves(&leaves, &appender.take_completed())
            .await?;
        let now = self.clock.now();
        let body = Checkpoint {
            origin: signer.name().to_owned(),
            size: appender.size(),
            root: appender.root(),
            time: Some(now),
        };
        let checkpoint = StoredCheckpoint {
            tree_size: i64::try_from(body.size).map_err(Error::internal)?,
            root_hash: body.root,
            time: now,
            note: signer.sign(&body.text()).map_err(Error::internal)?,
        };
        tx.insert_audit_checkpoint(&checkpoint).await?;
        tx.commit().await?;
        Ok(Some(Round {
            checkpoint,
            integrated: leaves.len(),
        }))
    }

    /// GetCheckpoint: the latest signed checkpoint. Auditors only.
    pub async fn get_checkpoint(&self, call: &Call) -> Result<SignedCheckpoint> {
        call.authorize()?;
        let mut tx = self.begin().await?;
        let checkpoint = latest(tx.as_mut()).await?;
        // Hashes and a signature: no one's data (the events themselves are read through an export).
        self.commit_unprocessed(call, Some(tx)).await?;
        let (origin, verifier_key) = match &self.log_signer {
            Some(s) => (s.name().to_owned(), s.verifier().to_string()),
            None => (String::new(), String::new()),
        };
        Ok(SignedCheckpoint {
            checkpoint,
            origin,
            verifier_key,
        })
    }

    /// GetInclusionProof: `PATH(leaf_index, D[tree_size])`; `tree_size` defaults to the latest
    /// checkpoint's. Any size up to the tree's current one can be proven.
    pub async fn inclusion_proof(
        &self,
        call: &Call,
        leaf_index: i64,
        tree_size: Option<i64>,
    ) -> Result<Proof> {
        call.authorize()?;
        let mut tx = self.begin().await?;
        let tree_size = self.proof_size(tx.as_mut(), tree_size, "tree_size").await?;
        if leaf_index < 0 || leaf_index >= tree_size {
            return Err(Error::invalid_field(
                "leaf_index",
                "in_tree",
                format!("must be at least 0 and smaller than the tree size {tree_size}"),
            ));
        }
        let plan = ProofPlan::inclusion(size_u64(leaf_index)?, size_u64(tree_size)?)
            .map_err(proof_error)?;
        let hashes = assemble(tx.as_mut(), &plan).await?;
        self.commit_unprocessed(call, Some(tx)).await?;
        Ok(Proof {
            leaf_index,
            first_tree_size: 0,
            tree_size,
            hashes,
        })
    }

    /// GetConsistencyProof: `PROOF(first, D[second])`; `second` defaults to the latest checkpoint's.
    pub async fn consistency_proof(
        &self,
        call: &Call,
        first: i64,
        second: Option<i64>,
    ) -> Result<Proof> {
        call.authorize()?;
        let mut tx = self.begin().await?;
        let second = self
            .proof_size(tx.as_mut(), second, "second_tree_size")
            .await?;
        if first < 1 || first > second {
            return Err(Error::invalid_field(
                "first_tree_size",
                "range",
                format!("must be at least 1 and at most the second tree size {second}"),
            ));
        }
        let plan =
            ProofPlan::consistency(size_u64(first)?, size_u64(second)?).map_err(proof_error)?;
        let hashes = assemble(tx.as_mut(), &plan).await?;
        self.commit_unprocessed(call, Some(tx)).await?;
        Ok(Proof {
            leaf_index: 0,
            first_tree_size: first,
            tree_size: second,
            hashes,
        })
    }

    /// A requested tree size, or the latest checkpoint's; never beyond the tree.
    async fn proof_size(&self, tx: &mut dyn Tx, size: Option<i64>, field: &str) -> Result<i64> {
        let Some(size) = size else {
            return Ok(latest(tx).await?.tree_size);
        };
        let current = tx.audit_tree_size().await?;
        if size < 1 || size > current {
            return Err(Error::invalid_field(
                field,
                "tree_size",
                format!("must be between 1 and the size of the tree, {current}"),
            ));
        }
        Ok(size)
    }

    /// ExportAuditEvents, first step: checks the range `start..end` (`end` defaults to the latest
    /// checkpoint's size) and records the export in the trail. The leaves follow with
    /// [`Exchange::export_page`].
    pub async fn begin_export(
        &self,
        call: &Call,
        start: i64,
        end: Option<i64>,
    ) -> Result<(i64, i64)> {
        call.authorize()?;
        let mut tx = self.begin().await?;
        let size = tx.audit_tree_size().await?;
        let end = match end {
            Some(end) => end,
            None => latest(tx.as_mut()).await?.tree_size,
        };
        let mut violations = Vec::new();
        if start < 0 || start > end {
            violations.push(Violation::new(
                "start_index",
                "range",
                "must be at least 0 and at most end_index",
            ));
        }
        if end > size {
            violations.push(Violation::new(
                "end_index",
                "tree_size",
                format!("must be at most the size of the tree, {size}"),
            ));
        }
        if !violations.is_empty() {
            return Err(Error::invalid(violations));
        }
        call.touch_resource(format!("auditLog/leaves/{start}-{end}"));
        self.commit(call, tx, Outbox::default()).await?;
        Ok((start, end))
    }

    /// Leaves `start..` (at most one page, never past `end`) with their data rebuilt from the event
    /// rows as they are now. Gaps (leaf rows gone) show as missing indexes.
    pub async fn export_page(&self, start: i64, end: i64) -> Result<Vec<ExportLeaf>> {
        let mut tx = self.begin_solo().await?;
        let leaves = tx
            .audit_leaf_range(start, end.min(start.saturating_add(EXPORT_PAGE)))
            .await?;
        drop(tx);
        Ok(leaves
            .into_iter()
            .map(|l| ExportLeaf {
                leaf_index: l.leaf_index,
                event_sequence: l.event_sequence,
                leaf_data: l
                    .event
                    .as_ref()
                    .map(|e| leaf::encode(l.event_sequence, e))
                    .unwrap_or_default(),
                leaf_hash: l.leaf_hash,
                event: l.event,
            })
            .collect())
    }

    pub fn export_page_size(&self) -> i64 {
        EXPORT_PAGE
    }

    /// GetSubjectAccessReport (703/2023 §11): who processed the person's data and when, what was
    /// disclosed to whom on which basis, and every event of their consents, from `start_time`
    /// (default: two years back) to `end_time` (default: now). Auditors only.
    pub async fn subject_access_report(
        &self,
        call: &Call,
        subject: &PersonalIdentityCode,
        start_time: Option<DateTime<Utc>>,
        end_time: Option<DateTime<Utc>>,
    ) -> Result<SubjectAccessReport> {
        call.authorize()?;
        let pseudonyms = self.lookup_pseudonyms(Some(subject), call);
        let now = self.clock.now();
        // Without an end the report runs up to this moment, inclusive.
        let end_filter = end_time;
        let end_time = end_time.unwrap_or(now);
        let start_time = match start_time {
            Some(t) => t,
            None => now
                .checked_sub_months(Months::new(24))
                .ok_or_else(|| Error::internal("time out of range"))?,
        };
        if end_filter.is_some() && start_time >= end_time {
            return Err(Error::invalid_field(
                "start_time",
                "before_end_time",
                "must be before end_time",
            ));
        }
        let too_large = || Error::FailedPrecondition {
            reason: Reason::ReportTooLarge,
            message: format!(
                "more than {MAX_REPORT_EVENTS} events in the range: narrow start_time and end_time"
            ),
            subject: None,
        };
        let mut tx = self.begin().await?;
        let processing = tx
            .list_audit_events(&AuditQuery {
                subject_pseudonyms: pseudonyms.clone(),
                start_time: Some(start_time),
                end_time: end_filter,
                limit: MAX_REPORT_EVENTS + 1,
                ..AuditQuery::default()
            })
            .await?;
        let consent_events = tx
            .list_consent_events(&ConsentEventFilter {
                subject_pseudonyms: pseudonyms.clone(),
                start_time: Some(start_time),
                end_time: end_filter,
                limit: MAX_REPORT_EVENTS + 1,
                ..ConsentEventFilter::default()
            })
            .await?;
        if processing.len() as i64 > MAX_REPORT_EVENTS
            || consent_events.len() as i64 > MAX_REPORT_EVENTS
        {
            return Err(too_large());
        }
        self.commit(call, tx, Outbox::default()).await?;
        Ok(SubjectAccessReport {
            subject_pseudonym: pseudonyms.first().cloned().unwrap_or_default(),
            lookup_pseudonyms: pseudonyms,
            start_time,
            end_time,
            processing,
            consent_events,
        })
    }

    /// The disclosure log entry for delivering `referral` (as `recipient` sees it) to `recipient`:
    /// its basis, and for a consent, the consent's state and version at this moment.
    pub(crate) async fn referral_disclosure(
        &self,
        tx: &mut dyn Tx,
        recipient: &OrganizationId,
        referral: &Referral,
    ) -> Result<Disclosure> {
        let consent = match referral.basis.consent_id() {
            Some(id) => tx.get_consent(id, false).await?,
            None => None,
        };
        Ok(self.referral_disclosure_with(recipient, referral, consent.as_ref()))
    }

    /// [`Self::referral_disclosure`] with the referral's consent already read (`None` for a
    /// statutory referral, or a consent that is gone).
    pub(crate) fn referral_disclosure_with(
        &self,
        recipient: &OrganizationId,
        referral: &Referral,
        consent: Option<&Consent>,
    ) -> Disclosure {
        let (consent_state, consent_version) = match (referral.basis, consent) {
            (Basis::Consent(_), Some(c)) => (
                Some(c.state_at(self.clock.now()).as_str().to_owned()),
                Some(c.version),
            ),
            _ => (None, None),
        };
        Disclosure {
            recipient: recipient.resource_name(),
            resource: referral.name(),
            subject_pseudonym: self.referral_pseudonym(referral),
            basis: referral.basis.name(),
            consent_state,
            consent_version,
        }
    }

    /// The disclosure log entry for delivering a consent record to a receiver it names.
    pub(crate) fn consent_disclosure(
        &self,
        recipient: &OrganizationId,
        consent: &Consent,
    ) -> Disclosure {
        Disclosure {
            recipient: recipient.resource_name(),
            resource: consent.name(),
            subject_pseudonym: self.consent_pseudonym(consent),
            basis: consent.name(),
            consent_state: Some(consent.state_at(self.clock.now()).as_str().to_owned()),
            consent_version: Some(consent.version),
        }
    }
}

async fn latest(tx: &mut dyn Tx) -> Result<StoredCheckpoint> {
    tx.latest_audit_checkpoint()
        .await?
        .ok_or_else(|| Error::FailedPrecondition {
            reason: Reason::NoCheckpointYet,
            message: "the audit log has no signed checkpoint yet; try again in a few seconds"
                .into(),
            subject: None,
        })
}

/// The tree of `size` leaves, ready to append to.
async fn appender(tx: &mut dyn Tx, size: u64) -> Result<Appender> {
    let nodes = Appender::edge_nodes(size);
    let stored: HashMap<Node, Hash> = tx.audit_tree_nodes(&nodes).await?.into_iter().collect();
    let edge = nodes
        .iter()
        .map(|n| stored.get(n).copied())
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| corrupt("audit tree edge"))?;
    Appender::new(size, edge).map_err(proof_error)
}

async fn assemble(tx: &mut dyn Tx, plan: &ProofPlan) -> Result<Vec<Hash>> {
    let stored: HashMap<Node, Hash> = tx
        .audit_tree_nodes(&plan.nodes())
        .await?
        .into_iter()
        .collect();
    plan.assemble(|n| stored.get(n).copied())
        .map_err(proof_error)
}

/// The sequencer as a deployment-wide task: drains the queue in rounds of `batch` events.
pub struct AuditSequencer {
    pub exchange: Arc<Exchange>,
    pub batch: i64,
    /// Overrides the background schedule's interval: how long an event waits at most before a
    /// round picks it up.
    pub interval: Option<Duration>,
}

#[async_trait]
impl Job for AuditSequencer {
    fn name(&self) -> &'static str {
        "audit-sequencer"
    }

    fn schedule(&self, default: Schedule) -> Schedule {
        Schedule {
            interval: self.interval.unwrap_or(default.interval),
            ..default
        }
    }

    async fn run_once(&self) -> Result<()> {
        // A full batch means more may be waiting: keep going until the queue is drained.
        while let Some(round) = self.exchange.integrate_audit_events(self.batch).await? {
            tracing::debug!(
                tree_size = round.checkpoint.tree_size,
                integrated = round.integrated,
                "signed an audit log checkpoint"
            );
            if (round.integrated as i64) < self.batch {
                break;
            }
        }
        Ok(())
    }
}
