//! Group commit: concurrent calls share one database transaction and one fsync.
//!
//! A durable commit costs a flush to disk. Calls that arrive while others are running join the open
//! *batch*: one real transaction in which they run one after another, each inside its own savepoint.
//! A call that fails rolls back to its savepoint, so it leaves nothing behind and its batch-mates are
//! unaffected: each call stays atomic. When the last member of a batch finishes, the batch commits,
//! and only then does any member's `commit` return: no caller is told of a change before it is
//! durable. New arrivals meanwhile open the next batch (on another connection), so batches form
//! naturally from whoever arrives during a commit, as in the database's own group commit, up to
//! `max_members` per batch.
//!
//! Members of a batch run one at a time, so one batch uses one connection. To keep the database busy
//! on all its cores there are several *lanes*, each with its own open batch; calls are spread over
//! them in turn.
//!
//! Members of one batch see each other's uncommitted writes, as later transactions would see them
//! after the commit; nobody outside sees them before. If the commit itself fails, every member gets
//! the error, and nothing of any of them was committed.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{OwnedMutexGuard, watch};

use super::{Store, Tx};
use crate::error::{Error, Result};

/// Calls committed together at most, by default.
pub const DEFAULT_MAX_MEMBERS: usize = 32;
/// Group-commit batches open at a time, by default.
pub const DEFAULT_LANES: usize = 4;

/// A transaction a use case runs in: its own, or a member of a group-commit batch. Dereferences to
/// the [`Tx`] operations.
pub enum TxHandle {
    Own(Box<dyn Tx>),
    Member(Member),
}

impl AsMut<dyn Tx> for TxHandle {
    fn as_mut(&mut self) -> &mut (dyn Tx + 'static) {
        &mut **self
    }
}

impl TxHandle {
    /// Commits. For a batch member: once the whole batch has committed.
    pub async fn commit(self) -> Result<()> {
        match self {
            TxHandle::Own(tx) => tx.commit().await,
            TxHandle::Member(member) => member.commit().await,
        }
    }
}

impl Deref for TxHandle {
    type Target = dyn Tx;

    fn deref(&self) -> &(dyn Tx + 'static) {
        match self {
            TxHandle::Own(tx) => tx.as_ref(),
            TxHandle::Member(member) => member.tx(),
        }
    }
}

impl DerefMut for TxHandle {
    fn deref_mut(&mut self) -> &mut (dyn Tx + 'static) {
        match self {
            TxHandle::Own(tx) => tx.as_mut(),
            TxHandle::Member(member) => member.tx_mut(),
        }
    }
}

/// Batches transactions of one store.
pub struct GroupCommit {
    store: Arc<dyn Store>,
    max_members: usize,
    /// Each lane's open batch.
    lanes: Vec<Mutex<Option<Arc<Batch>>>>,
    next_lane: std::sync::atomic::AtomicUsize,
    batches: AtomicU64,
    members: AtomicU64,
}

/// The transaction of a batch and what its members left for the next.
struct Shared {
    tx: Option<Box<dyn Tx>>,
    /// A member that failed: roll back to its savepoint before anything else happens.
    rollback_to: Option<u64>,
    savepoints: u64,
}

#[derive(Default)]
struct Counts {
    joined: usize,
    finished: usize,
    closed: bool,
}

struct Batch {
    lane: usize,
    shared: Arc<tokio::sync::Mutex<Shared>>,
    counts: Mutex<Counts>,
    /// Set once, when the batch has committed (or failed to).
    outcome: watch::Sender<Option<std::result::Result<(), Failure>>>,
}

/// Why a batch did not commit, as each of its members is told. A database that went away (mid-
/// commit, say) stays UNAVAILABLE for every member, as it is for a call on its own: clients retry
/// that, and with its `request_id` a retry is answered with the first result should the commit have
/// happened after all. Anything else is INTERNAL.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    /// `Error::Unavailable`'s reason and retry delay, when it was that.
    unavailable: Option<(crate::error::Reason, std::time::Duration)>,
}

impl Failure {
    fn of(error: &Error) -> Self {
        use std::error::Error as _;
        Self {
            // The cause, which the shared error's own text ("internal error") would hide.
            message: error
                .source()
                .map_or_else(|| error.to_string(), |cause| cause.to_string()),
            unavailable: match error {
                Error::Unavailable {
                    reason,
                    retry_after,
                    ..
                } => Some((*reason, *retry_after)),
                _ => None,
            },
        }
    }

    /// The error one member gets.
    fn error(&self) -> Error {
        let source = format!("the batch did not commit: {}", self.message);
        match self.unavailable {
            Some((reason, retry_after)) => Error::Unavailable {
                reason,
                retry_after,
                source: source.into(),
            },
            None => Error::internal(source),
        }
    }
}

impl Batch {
    fn new(lane: usize) -> Self {
        Self {
            lane,
            shared: Arc::new(tokio::sync::Mutex::new(Shared {
                tx: None,
                rollback_to: None,
                savepoints: 0,
            })),
            counts: Mutex::new(Counts::default()),
            outcome: watch::channel(None).0,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits the batch (after undoing a last failed member) and tells every member.
    async fn commit(&self) {
        let mut shared = self.shared.lock().await;
        let result = match shared.tx.take() {
            None => Ok(()),
            Some(mut tx) => {
                let undone = match shared.rollback_to.take() {
                    Some(n) => tx.rollback_to_savepoint(n).await,
                    None => Ok(()),
                };
                match undone {
                    Ok(()) => tx.commit().await,
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "a group-commit batch failed to commit");
        }
        self.outcome
            .send_replace(Some(result.map_err(|e| Failure::of(&e))));
    }
}

impl GroupCommit {
    /// Batches of at most `max_members` calls, `lanes` batches open at a time.
    pub fn new(store: Arc<dyn Store>, max_members: usize, lanes: usize) -> Self {
        Self {
            store,
            max_members: max_members.max(1),
            lanes: (0..lanes.max(1)).map(|_| Mutex::new(None)).collect(),
            next_lane: std::sync::atomic::AtomicUsize::new(0),
            batches: AtomicU64::new(0),
            members: AtomicU64::new(0),
        }
    }

    /// How many batches have opened and how many members joined them, since start.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.members.load(Ordering::Relaxed),
        )
    }

    /// Joins the open batch, or opens one, and waits for this member's turn in it.
    pub async fn begin(self: &Arc<Self>) -> Result<TxHandle> {
        let lane = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let batch = {
            let mut open = self.lanes[lane].lock().unwrap_or_else(|p| p.into_inner());
            let joined = open.as_ref().filter(|batch| {
                let mut counts = batch.counts();
                let room = !counts.closed && counts.joined < self.max_members;
                if room {
                    counts.joined += 1;
                }
                room
            });
            match joined {
                Some(batch) => batch.clone(),
                None => {
                    let batch = Arc::new(Batch::new(lane));
                    batch.counts().joined = 1;
                    *open = Some(batch.clone());
                    self.batches.fetch_add(1, Ordering::Relaxed);
                    batch
                }
            }
        };
        self.members.fetch_add(1, Ordering::Relaxed);
        let guard = batch.shared.clone().lock_owned().await;
        // From here the member counts as joined: on any error, dropping it finishes it.
        let mut member = Member {
            guard: Some(guard),
            batch,
            group: self.clone(),
            savepoint: None,
            finished: false,
        };
        member.enter(&self.store).await?;
        Ok(TxHandle::Member(member))
    }

    /// Marks a member of `batch` finished; true for the last one, which is then to commit the batch.
    fn finish(&self, batch: &Arc<Batch>) -> bool {
        let mut open = self.lanes[batch.lane]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut counts = batch.counts();
        counts.finished += 1;
        if counts.finished < counts.joined {
            return false;
        }
        counts.closed = true;
        if open.as_ref().is_some_and(|o| Arc::ptr_eq(o, batch)) {
            *open = None;
        }
        true
    }
}

/// One call's share of a batch: its turn on the batch's transaction, inside its own savepoint.
pub struct Member {
    /// Held from the member's turn until it is done: members run one at a time.
    guard: Option<OwnedMutexGuard<Shared>>,
    batch: Arc<Batch>,
    group: Arc<GroupCommit>,
    savepoint: Option<u64>,
    /// Set once the member counted as finished in its batch.
    finished: bool,
}

impl Member {
    /// Opens the batch's transaction if this is its first member, undoes a failed predecessor, and
    /// sets this member's savepoint.
    async fn enter(&mut self, store: &Arc<dyn Store>) -> Result<()> {
        let Some(guard) = self.guard.as_mut() else {
            return Err(Error::internal("group commit: no turn"));
        };
        let Shared {
            tx,
            rollback_to,
            savepoints,
        } = &mut **guard;
        if tx.is_none() {
            *tx = Some(store.begin().await?);
        }
        let Some(tx) = tx.as_mut() else {
            return Err(Error::internal("group commit: no transaction"));
        };
        // Cleared only once done: should undoing fail, the batch must not commit that member's work.
        if let Some(n) = *rollback_to {
            tx.rollback_to_savepoint(n).await?;
            *rollback_to = None;
        }
        *savepoints += 1;
        tx.savepoint(*savepoints).await?;
        self.savepoint = Some(*savepoints);
        Ok(())
    }

    fn tx(&self) -> &(dyn Tx + 'static) {
        match self.guard.as_ref().and_then(|shared| shared.tx.as_deref()) {
            Some(tx) => tx,
            // A member is only handed out with its turn and an open transaction (see `enter`).
            None => unreachable!("a group-commit member without its transaction"),
        }
    }

    fn tx_mut(&mut self) -> &mut (dyn Tx + 'static) {
        match self
            .guard
            .as_mut()
            .and_then(|shared| shared.tx.as_deref_mut())
        {
            Some(tx) => tx,
            None => unreachable!("a group-commit member without its transaction"),
        }
    }

    /// Keeps this member's work, lets the next member in, and waits for the batch to commit.
    async fn commit(mut self) -> Result<()> {
        // Held writes go now, so that an error in one fails this member alone (and is undone).
        self.tx_mut().flush().await?;
        let mut outcome = self.batch.outcome.subscribe();
        // The savepoint stays open (see `Tx::savepoint`): the next member's nests inside it, and a
        // rollback to a later one leaves this member's work alone.
        self.savepoint = None;
        self.guard = None;
        self.finished = true;
        if self.group.finish(&self.batch) {
            self.batch.commit().await;
        }
        let result = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(Error::internal)?
            .clone();
        result.unwrap_or(Ok(())).map_err(|failure| failure.error())
    }
}

impl Drop for Member {
    /// A member dropped without committing (a refusal or an error) leaves nothing behind: the next
    /// user of the transaction first rolls back to this member's savepoint.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let (Some(mut shared), Some(n)) = (self.guard.take(), self.savepoint) {
            // Members run one at a time and each first undoes its predecessor, so at most one
            // rollback is pending; an earlier one still pending is older and wider, keep it.
            shared.rollback_to = Some(shared.rollback_to.map_or(n, |pending| pending.min(n)));
        }
        if self.group.finish(&self.batch) {
            let batch = self.batch.clone();
            tokio::spawn(async move { batch.commit().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Reason;

    #[test]
    fn a_batch_the_database_lost_is_unavailable_for_every_member_and_anything_else_internal() {
        let lost = Error::Unavailable {
            reason: Reason::DatabaseUnavailable,
            retry_after: std::time::Duration::from_secs(1),
            source: "connection reset".into(),
        };
        let failure = Failure::of(&lost);
        for member in [failure.error(), failure.clone().error()] {
            assert_eq!(member.code(), tonic::Code::Unavailable);
            assert_eq!(member.reason(), Reason::DatabaseUnavailable);
            let shown = std::error::Error::source(&member).map(ToString::to_string);
            assert_eq!(
                shown.as_deref(),
                Some("the batch did not commit: connection reset"),
                "the log says why"
            );
        }
        let broken = Failure::of(&Error::internal("disk full")).error();
        assert_eq!(broken.code(), tonic::Code::Internal);
    }
}
