//! The audit log's Merkle tree (RFC 6962) as stored: leaves, the perfect subtrees they complete,
//! signed checkpoints, and the queue of committed events not yet in the tree.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    DbTime, corrupt,
    dialect::Dialect,
    rows::{AuditRow, LeafRow},
    sql::SqlTx,
};
use crate::{
    audit::{
        AuditRecord, StoredAuditEvent,
        merkle::{Hash, Node},
    },
    error::{Error, Result},
};

/// The most rows one multi-row statement writes: PostgreSQL takes at most 65535 parameters.
const ROWS_PER_STATEMENT: usize = 5000;

/// A leaf as the sequencer appends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLeaf {
    pub leaf_index: i64,
    pub event_sequence: i64,
    pub leaf_hash: Hash,
}

/// A signed checkpoint of the audit log's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub tree_size: i64,
    pub root_hash: Hash,
    pub time: DateTime<Utc>,
    /// The C2SP signed note.
    pub note: String,
}

/// A leaf of the tree with the event row it stands for, as the database holds them now: the event
/// is `None` when its row is gone, which is exactly what an export must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLeaf {
    pub leaf_index: i64,
    pub event_sequence: i64,
    /// As stored; not necessarily 32 bytes if someone rewrote it.
    pub leaf_hash: Vec<u8>,
    pub event: Option<AuditRecord>,
}

#[async_trait]
pub trait AuditLog {
    /// Serialises sequencer rounds across the deployment: waits while another round is running.
    async fn lock_audit_sequencer(&mut self) -> Result<()>;
    /// How many leaves the tree has.
    async fn audit_tree_size(&mut self) -> Result<i64>;
    /// Up to `limit` committed events that are not yet leaves, lowest sequence first.
    async fn pending_audit_events(&mut self, limit: i64) -> Result<Vec<StoredAuditEvent>>;
    /// The stored hashes of these perfect subtrees (level 0: leaf hashes); missing ones are absent.
    async fn audit_tree_nodes(&mut self, nodes: &[Node]) -> Result<Vec<(Node, Hash)>>;
    /// Appends leaves and the perfect subtrees they complete, and takes the leaves' events off the
    /// queue of pending events.
    async fn append_audit_leaves(
        &mut self,
        leaves: &[AuditLeaf],
        nodes: &[(Node, Hash)],
    ) -> Result<()>;
    async fn insert_audit_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<()>;
    /// The checkpoint of the largest tree.
    async fn latest_audit_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>>;
    /// Leaves `start..end` in order, each with its event row as it is now.
    async fn audit_leaf_range(&mut self, start: i64, end: i64) -> Result<Vec<ExportedLeaf>>;
}

fn to_hash(bytes: Vec<u8>, what: &str) -> Result<Hash> {
    bytes.try_into().map_err(|_| corrupt(what))
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(Error::internal)
}

#[async_trait]
impl<D: Dialect> AuditLog for SqlTx<D> {
    async fn lock_audit_sequencer(&mut self) -> Result<()> {
        let lock = format!("SELECT id FROM audit_sequencer WHERE id = 1{}", D::LOCK);
        self.execute(Self::sql(lock)).await.map(drop)
    }

    async fn audit_tree_size(&mut self) -> Result<i64> {
        let (max,) = self
            .fetch_one::<(Option<i64>,)>(Self::sql("SELECT MAX(leaf_index) FROM audit_leaves"))
            .await?;
        Ok(max.map_or(0, |m| m + 1))
    }

    async fn pending_audit_events(&mut self, limit: i64) -> Result<Vec<StoredAuditEvent>> {
        let select = Self::sql(
            "SELECT e.*, CAST(NULL AS BIGINT) AS leaf_index FROM audit_pending p \
             JOIN audit_events e ON e.sequence = p.event_sequence \
             ORDER BY p.event_sequence LIMIT $1",
        )
        .arg(limit);
        let rows: Vec<AuditRow> = self.fetch_all(select).await?;
        rows.into_iter().map(AuditRow::into_domain).collect()
    }

    async fn audit_tree_nodes(&mut self, nodes: &[Node]) -> Result<Vec<(Node, Hash)>> {
        let mut found = Vec::with_capacity(nodes.len());
        let (leaves, inner): (Vec<&Node>, Vec<&Node>) = nodes.iter().partition(|n| n.level == 0);
        for chunk in leaves.chunks(ROWS_PER_STATEMENT) {
            let indexes = chunk
                .iter()
                .map(|n| to_i64(n.index))
                .collect::<Result<Vec<_>>>()?;
            let mut q =
                Self::sql("SELECT leaf_index, leaf_hash FROM audit_leaves WHERE leaf_index IN ");
            q.list(indexes);
            for (index, hash) in self.fetch_all::<(i64, Vec<u8>)>(q).await? {
                let index = u64::try_from(index).map_err(Error::internal)?;
                found.push((Node { level: 0, index }, to_hash(hash, "leaf hash")?));
            }
        }
        for chunk in inner.chunks(ROWS_PER_STATEMENT / 2) {
            let mut q = Self::sql("SELECT level, node_index, hash FROM audit_tree_nodes WHERE ");
            for (i, n) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(" OR ");
                }
                q.push("(level = ")
                    .bind(i16::from(n.level))
                    .push(" AND node_index = ")
                    .bind(to_i64(n.index)?)
                    .push(")");
            }
            for (level, index, hash) in self.fetch_all::<(i16, i64, Vec<u8>)>(q).await? {
                let node = Node {
                    level: u8::try_from(level).map_err(Error::internal)?,
                    index: u64::try_from(index).map_err(Error::internal)?,
                };
                found.push((node, to_hash(hash, "tree node")?));
            }
        }
        Ok(found)
    }

    async fn append_audit_leaves(
        &mut self,
        leaves: &[AuditLeaf],
        nodes: &[(Node, Hash)],
    ) -> Result<()> {
        for chunk in leaves.chunks(ROWS_PER_STATEMENT) {
            let mut insert = Self::sql(
                "INSERT INTO audit_leaves (leaf_index, event_sequence, leaf_hash) VALUES ",
            );
            for (i, leaf) in chunk.iter().enumerate() {
                if i > 0 {
                    insert.push(", ");
                }
                insert
                    .push("(")
                    .bind(leaf.leaf_index)
                    .push(", ")
                    .bind(leaf.event_sequence)
                    .push(", ")
                    .bind(leaf.leaf_hash.to_vec())
                    .push(")");
            }
            self.execute(insert).await?;

            let mut dequeue = Self::sql("DELETE FROM audit_pending WHERE event_sequence IN ");
            dequeue.list(chunk.iter().map(|leaf| leaf.event_sequence));
            if self.execute(dequeue).await? != chunk.len() as u64 {
                // Another round took some of these events: give this one up.
                return Err(Error::internal(
                    "pending audit events changed during a sequencer round",
                ));
            }
        }
        for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
            let mut insert =
                Self::sql("INSERT INTO audit_tree_nodes (level, node_index, hash) VALUES ");
            for (i, (node, hash)) in chunk.iter().enumerate() {
                if i > 0 {
                    insert.push(", ");
                }
                insert
                    .push("(")
                    .bind(i16::from(node.level))
                    .push(", ")
                    .bind(to_i64(node.index)?)
                    .push(", ")
                    .bind(hash.to_vec())
                    .push(")");
            }
            self.execute(insert).await?;
        }
        Ok(())
    }

    async fn insert_audit_checkpoint(&mut self, c: &StoredCheckpoint) -> Result<()> {
        let insert = Self::sql(
            "INSERT INTO audit_checkpoints (tree_size, root_hash, time, note) VALUES ($1, $2, $3, $4)",
        )
        .arg(c.tree_size)
        .arg(c.root_hash.to_vec())
        .arg(DbTime(c.time))
        .arg(c.note.as_str());
        self.execute(insert).await.map(drop)
    }

    async fn latest_audit_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>> {
        let select = Self::sql(
            "SELECT tree_size, root_hash, time, note FROM audit_checkpoints \
             ORDER BY tree_size DESC LIMIT 1",
        );
        let row = self
            .fetch_optional::<(i64, Vec<u8>, DbTime, String)>(select)
            .await?;
        row.map(|(tree_size, root, time, note)| {
            Ok(StoredCheckpoint {
                tree_size,
                root_hash: to_hash(root, "checkpoint root")?,
                time: time.0,
                note,
            })
        })
        .transpose()
    }

    async fn audit_leaf_range(&mut self, start: i64, end: i64) -> Result<Vec<ExportedLeaf>> {
        let select = Self::sql(
            "SELECT l.leaf_index, l.event_sequence, l.leaf_hash, e.time, e.organization, \
               e.user_id, e.method, e.resources, e.subject_pseudonyms, e.status_code, \
               e.correlation_id, e.disclosures \
             FROM audit_leaves l LEFT JOIN audit_events e ON e.sequence = l.event_sequence \
             WHERE l.leaf_index >= $1 AND l.leaf_index < $2 ORDER BY l.leaf_index",
        )
        .arg(start)
        .arg(end);
        let rows: Vec<LeafRow> = self.fetch_all(select).await?;
        rows.into_iter().map(LeafRow::into_domain).collect()
    }
}
