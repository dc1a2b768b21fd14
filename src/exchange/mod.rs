//! The use cases of the exchange, each one transaction.
//!
//! Every use case has the same shape:
//!
//! 1. check that the caller's role may call the method ([`Call::authorize`], one table for all);
//! 2. begin a transaction; for a change, claim its `request_id` (a retry gets the first result);
//! 3. read and lock what will change; let [`crate::domain`] decide;
//! 4. write the change, queue mailbox messages in an [`Outbox`];
//! 5. [`Exchange::commit`]: messages, then the audit event, then COMMIT, then wake long-polls.
//!
//! A refusal anywhere rolls the transaction back; [`Exchange::finish`] then writes the refusal's own
//! audit event. So each call that processed personal data, and each refusal, leaves exactly one audit
//! event, and there is never a change without one.
//!
//! The audit trail is an access log of *processing*, not of polling (DOMAIN.md, "What the exchange
//! keeps"): a use case whose call touched no one's data — a pull or stream that delivered nothing, a
//! directory look-up, a checkpoint or proof, mailbox counts — ends with
//! [`Exchange::commit_unprocessed`] instead, which writes no audit event (and so no Merkle leaf) and
//! counts the call in the metrics by method and organisation. The use case declares it, because it
//! knows what its answer disclosed; a call that touched a person anyway is audited regardless.
//!
//! - [`referrals`]: create, read, list and move referrals through their states.
//! - [`consents`]: record, read, list and withdraw consents; the consent log; expiry by the clock.
//! - [`directory`]: organisations and routing by municipality.
//! - [`audit_trail`]: reading the audit trail.
//! - [`deadlines`]: the background watch that tells Kela and receivers when a deadline passes.
//! - [`mailbox`]: pull, stream, acknowledge, leases, dead letters, history, stats;
//!   [`mailbox_sweeper`]: the background job that dead-letters what nobody pulls and forgets old
//!   acknowledged messages.
//! - [`audit_log`]: the tamper-evident log: sequencer, checkpoints, proofs, exports, subject access
//!   reports.
//! - [`gauges`]: what the metric gauges read.
//! - [`reporting`]: referral statistics, with disclosure control.
//! - [`retention`]: the background job that erases personal content kept past its retention.

pub mod audit_log;
pub mod audit_trail;
pub mod consents;
pub mod deadlines;
pub mod directory;
pub mod gauges;
pub mod mailbox;
pub mod mailbox_sweeper;
pub mod referrals;
pub mod refusal_tally;
pub mod reporting;
pub mod retention;

use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use crate::{
    access::{Call, Caller},
    audit::{Pseudonymizer, note::NoteSigner},
    clock::Clock,
    domain::{
        PersonalIdentityCode, calendar, municipality::MunicipalityRegistry,
        referral::DeadlinePolicy,
    },
    error::{Error, Reason, Result},
    mailbox::{DeliveryPolicy, NewMessage},
    store::{
        Recorded, Store, Tx,
        group::{GroupCommit, TxHandle},
    },
};

/// The service's core: storage, time, and the keys it computes pseudonyms with.
pub struct Exchange {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) pseudonyms: Pseudonymizer,
    pub(crate) registry: &'static MunicipalityRegistry,
    pub(crate) delivery: DeliveryPolicy,
    pub(crate) deadlines: DeadlinePolicy,
    /// Statistics cells with fewer distinct people are suppressed (see `domain::statistics`).
    pub(crate) min_cell_size: u64,
    /// How long personal content is kept after a referral closes or a consent stops being ACTIVE
    /// (see [`retention`]).
    pub(crate) content_retention: chrono::Duration,
    /// Turns true when the server begins to shut down: long-polls and streams end.
    closing: watch::Sender<bool>,
    /// Signs the audit log's checkpoints; without it the sequencer cannot run.
    pub(crate) log_signer: Option<NoteSigner>,
    /// Batches the calls' transactions (see [`crate::store::group`]); `None`: one transaction each.
    group_commit: Option<Arc<GroupCommit>>,
    /// Calls per second and calls at once, per organisation and in all (see [`crate::limits`]).
    limits: Arc<crate::limits::Limits>,
    /// Refusals for those limits, audited in aggregate (see [`refusal_tally`]).
    refusal_tally: refusal_tally::RefusalTally,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Whether more items follow the last one.
    pub more: bool,
}

/// A client-chosen request id with a fingerprint of the request it came with (AIP-155).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub request_id: String,
    /// Differs when the same `request_id` comes back with another body.
    pub fingerprint: String,
}

/// Messages a use case sends, written at commit (in mailbox order, so that what one transaction wrote
/// reads in a stable order).
#[derive(Debug, Default)]
pub struct Outbox(Vec<NewMessage>);

impl Outbox {
    pub fn push(&mut self, message: NewMessage) {
        self.0.push(message);
    }
}

impl Exchange {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        pseudonyms: Pseudonymizer,
        delivery: DeliveryPolicy,
        deadlines: DeadlinePolicy,
    ) -> Self {
        Self {
            store,
            clock,
            pseudonyms,
            registry: crate::domain::municipality::embedded(),
            delivery,
            deadlines,
            min_cell_size: crate::domain::statistics::DEFAULT_MIN_CELL_SIZE,
            content_retention: chrono::Duration::days(retention::DEFAULT_CONTENT_RETENTION_DAYS),
            closing: watch::channel(false).0,
            log_signer: None,
            group_commit: None,
            limits: Arc::new(crate::limits::Limits::new(
                crate::limits::LimitSettings::default(),
            )),
            refusal_tally: refusal_tally::RefusalTally::default(),
        }
    }

    /// Today in Helsinki, the day deadlines are counted in.
    pub fn today(&self) -> NaiveDate {
        calendar::helsinki_date(self.clock.now())
    }

    /// Ends long-polls and streams, and a retention round after its batch in hand: the first step
    /// of a graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Commits concurrent calls together, at most `max_members` per batch (1: each alone), in
    /// `lanes` batches at a time.
    pub fn with_group_commit(mut self, max_members: usize, lanes: usize) -> Self {
        self.group_commit = (max_members > 1)
            .then(|| Arc::new(GroupCommit::new(self.store.clone(), max_members, lanes)));
        self
    }

    /// Batches opened and members joined by group commit since start.
    pub fn group_commit_counters(&self) -> Option<(u64, u64)> {
        self.group_commit.as_ref().map(|g| g.counters())
    }

    /// The transaction of a call: a member of a group-commit batch when group commit is on. A call
    /// holds one at a time: beginning a second while holding the first could wait for itself.
    pub(crate) async fn begin(&self) -> Result<TxHandle> {
        match &self.group_commit {
            Some(group) => group.begin().await,
            None => self.begin_solo().await,
        }
    }

    /// A transaction of its own, for a call's work that is long or need not wait for a batch.
    pub(crate) async fn begin_solo(&self) -> Result<TxHandle> {
        Ok(TxHandle::Own(self.store.begin().await?))
    }

    /// A transaction that only reads, for a long read ([`crate::store::Store::begin_read`]).
    pub(crate) async fn begin_read(&self) -> Result<TxHandle> {
        Ok(TxHandle::Own(self.store.begin_read().await?))
    }

    /// A transaction of a background task, on the connections kept for them
    /// ([`crate::store::Store::begin_background`]).
    pub(crate) async fn begin_background(&self) -> Result<TxHandle> {
        Ok(TxHandle::Own(self.store.begin_background().await?))
    }

    /// The statistics threshold: cells with fewer distinct people are suppressed. Raised to the
    /// floor ([`crate::domain::statistics::MIN_MIN_CELL_SIZE`]) if below: `serve` refuses such a
    /// value at start.
    pub fn with_min_cell_size(mut self, min_cell_size: u64) -> Self {
        self.min_cell_size = min_cell_size.max(crate::domain::statistics::MIN_MIN_CELL_SIZE);
        self
    }

    /// How long personal content is kept after its referral closes or its consent stops being
    /// ACTIVE (0: erased at the next retention round).
    pub fn with_content_retention(mut self, retention: chrono::Duration) -> Self {
        self.content_retention = retention.max(chrono::Duration::zero());
        self
    }

    /// The per-organisation and global call limits (see [`crate::limits`]).
    pub fn with_limits(mut self, settings: crate::limits::LimitSettings) -> Self {
        self.limits = Arc::new(crate::limits::Limits::new(settings));
        self
    }

    pub fn limits(&self) -> &crate::limits::Limits {
        &self.limits
    }

    /// The key that signs the audit log's checkpoints; its name is the log's origin.
    pub fn with_log_signer(mut self, signer: NoteSigner) -> Self {
        self.log_signer = Some(signer);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn registry(&self) -> &'static MunicipalityRegistry {
        self.registry
    }

    pub fn pseudonym(&self, code: &PersonalIdentityCode) -> String {
        self.pseudonyms.pseudonym(code)
    }

    /// Whom `referral` is about, as a pseudonym under the current key; once its content is erased,
    /// the pseudonym stored with it (computed under the key of its day).
    pub(crate) fn referral_pseudonym(
        &self,
        referral: &crate::domain::referral::Referral,
    ) -> String {
        match &referral.subject {
            Some(subject) => self.pseudonym(&subject.personal_identity_code),
            None => referral.subject_pseudonym.clone(),
        }
    }

    /// The same for a consent.
    pub(crate) fn consent_pseudonym(&self, consent: &crate::domain::consent::Consent) -> String {
        match &consent.subject {
            Some(subject) => self.pseudonym(subject),
            None => consent.subject_pseudonym.clone(),
        }
    }

    /// The pseudonyms to look `subject` up by (under the current and previous keys; none without a
    /// subject). The call is recorded as concerning the person.
    pub(crate) fn lookup_pseudonyms(
        &self,
        subject: Option<&PersonalIdentityCode>,
        call: &Call,
    ) -> Vec<String> {
        let Some(subject) = subject else {
            return Vec::new();
        };
        let pseudonyms = self.pseudonyms.lookup(subject);
        if let Some(current) = pseudonyms.first() {
            call.touch_subject(current);
        }
        pseudonyms
    }

    /// Writes the outbox and the call's audit event, commits, and wakes whoever waits on the
    /// mailboxes written to.
    pub(crate) async fn commit(&self, call: &Call, mut tx: TxHandle, outbox: Outbox) -> Result<()> {
        let mut messages = outbox.0;
        messages.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
        for message in &messages {
            tx.insert_message(message).await?;
        }
        // Other replicas hear of the new messages from the store itself (see `Tx::insert_message`).
        let mut mailboxes: Vec<&str> = messages.iter().map(|m| m.mailbox.as_str()).collect();
        mailboxes.dedup();
        tx.insert_audit_event(&call.record(tonic::Code::Ok, self.clock.now()))
            .await?;
        tx.commit().await?;
        call.mark_audited();
        for mailbox in mailboxes {
            self.store.signals().notify(mailbox);
        }
        Ok(())
    }

    /// Ends a successful call that processed no one's personal data: commits what its transaction
    /// holds (if it has one; e.g. mailbox numbering) *without* an audit event, and counts the call in
    /// `referral_exchange.calls.without_personal_data` by method and organisation instead.
    ///
    /// A use case calls this only when its answer disclosed nothing about anyone: an empty pull, a
    /// directory look-up, a checkpoint or proof, mailbox counts. Should the call have touched a person
    /// after all (a subject looked up or a disclosure made), it is audited as usual: the declaration
    /// can only err towards the log. Refusals never come here: [`Exchange::finish`] audits them.
    pub(crate) async fn commit_unprocessed(&self, call: &Call, tx: Option<TxHandle>) -> Result<()> {
        if call.touched_someone() {
            let tx = match tx {
                Some(tx) => tx,
                None => self.begin().await?,
            };
            return self.commit(call, tx, Outbox::default()).await;
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        crate::telemetry::metrics().calls_without_personal_data.add(
            1,
            &[
                opentelemetry::KeyValue::new("method", call.method()),
                opentelemetry::KeyValue::new("organization", call.organization().to_owned()),
            ],
        );
        Ok(())
    }

    /// Ends a call: a refusal that no transaction recorded gets its own audit event.
    pub async fn finish<T>(&self, call: &Call, result: Result<T>) -> Result<T> {
        if let Err(error) = &result
            && !call.is_audited()
        {
            let record = call.record(error.code(), self.clock.now());
            if matches!(error, Error::Overloaded { .. }) && record.subject_pseudonyms.is_empty() {
                // Over a limit: counted, and audited in aggregate (see `refusal_tally`).
                self.refusal_tally.add(&record);
                call.mark_audited();
                return result;
            }
            let written = async {
                let mut tx = self.begin().await?;
                tx.insert_audit_event(&record).await?;
                tx.commit().await
            }
            .await;
            match written {
                Ok(()) => call.mark_audited(),
                // The database is away (the refusal is likely UNAVAILABLE for that very reason):
                // the event is kept and written once it answers again (see `refusal_tally`).
                Err(e) if self.refusal_tally.keep(record) => {
                    tracing::warn!(method = call.method(), error = %e, "could not audit a refused call yet: kept for the next round");
                    call.mark_audited();
                }
                // The refusal stands; losing its record is logged loudly (without personal data).
                Err(e) => {
                    tracing::error!(method = call.method(), error = %e, "could not audit a refused call")
                }
            }
        }
        result
    }

    /// Looks `key` up in `tx`. `Some(response)` when this is a retry of a request that already
    /// succeeded; ALREADY_EXISTS when the id was used for a different request.
    pub(crate) async fn replay<T: DeserializeOwned>(
        &self,
        tx: &mut dyn Tx,
        caller: &Caller,
        key: Option<&RequestKey>,
    ) -> Result<Option<T>> {
        let Some(key) = key else { return Ok(None) };
        match tx
            .find_request(caller.organization.as_str(), &key.request_id)
            .await?
        {
            None => Ok(None),
            Some(Recorded {
                fingerprint,
                response,
            }) if fingerprint == key.fingerprint => serde_json::from_str(&response)
                .map(Some)
                .map_err(Error::internal),
            Some(_) => Err(Error::AlreadyExists {
                reason: Reason::RequestIdReused,
                message: "request_id was already used for a different request".into(),
            }),
        }
    }

    /// Records the response of a request for its retries, with the call's writes.
    pub(crate) async fn remember<T: Serialize>(
        &self,
        tx: &mut dyn Tx,
        caller: &Caller,
        key: Option<&RequestKey>,
        response: &T,
    ) -> Result<()> {
        let Some(key) = key else { return Ok(()) };
        let json = serde_json::to_string(response).map_err(Error::internal)?;
        tx.record_request(
            caller.organization.as_str(),
            &key.request_id,
            &key.fingerprint,
            &json,
            self.clock.now(),
        )
        .await
    }
}
