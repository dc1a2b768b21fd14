//! The audit trail: one event per call, refusals included, and the indexes auditors search it by.

use async_trait::async_trait;

use super::{
    DbTime,
    dialect::{AuditIndex, Bind, Dialect},
    rows::AuditRow,
    sql::SqlTx,
    to_json,
};
use crate::{
    audit::{AuditQuery, AuditRecord, StoredAuditEvent},
    error::Result,
};

#[async_trait]
pub trait AuditTrail {
    /// Appends a call's event. Its person and resource indexes come from the JSON columns, in the
    /// same statement: GIN indexes over them (PostgreSQL, migration 0012), or index rows written
    /// by the database's trigger (SQLite, migration 0005).
    async fn insert_audit_event(&mut self, record: &AuditRecord) -> Result<()>;
    async fn list_audit_events(&mut self, query: &AuditQuery) -> Result<Vec<StoredAuditEvent>>;
}

#[async_trait]
impl<D: Dialect> AuditTrail for SqlTx<D> {
    async fn insert_audit_event(&mut self, e: &AuditRecord) -> Result<()> {
        let resources = to_json(&e.resources)?;
        let subjects = to_json(&e.subject_pseudonyms)?;
        let disclosures = to_json(&e.disclosures)?;
        self.write(
            "INSERT INTO audit_events (time, organization, user_id, method, resources, \
               subject_pseudonyms, status_code, correlation_id, disclosures) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            |args| {
                args.bind(DbTime(e.time))?;
                args.bind(e.organization.as_str())?;
                args.bind(e.user_id.as_str())?;
                args.bind(e.method.as_str())?;
                args.bind(resources)?;
                args.bind(subjects)?;
                args.bind(e.status_code)?;
                args.bind(e.correlation_id.as_str())?;
                args.bind(disclosures)
            },
        )
        .await
    }

    async fn list_audit_events(&mut self, query: &AuditQuery) -> Result<Vec<StoredAuditEvent>> {
        let mut q = Self::sql(
            "SELECT e.*, l.leaf_index FROM audit_events e \
             LEFT JOIN audit_leaves l ON l.event_sequence = e.sequence",
        );
        // One event records one person under one key, so a person's pseudonyms under several
        // keys never match the same event twice.
        let subjects = query.subject_pseudonyms.iter().map(String::as_str);
        match D::AUDIT_INDEX {
            AuditIndex::Tables => {
                if !query.subject_pseudonyms.is_empty() {
                    q.push(
                        " JOIN audit_event_subjects s ON s.event_sequence = e.sequence \
                         AND s.subject_pseudonym IN ",
                    )
                    .list(subjects);
                }
                if let Some(r) = &query.resource {
                    q.push(
                        " JOIN audit_event_resources r \
                         ON r.event_sequence = e.sequence AND r.resource = ",
                    )
                    .bind(r.as_str());
                }
                q.push(" WHERE 1 = 1");
            }
            AuditIndex::InTheEvent => {
                q.push(" WHERE 1 = 1");
                // `@>` on the same expressions as the GIN indexes: the planner finds the few
                // events through them, then sorts those by sequence.
                if !query.subject_pseudonyms.is_empty() {
                    q.push(" AND (");
                    for (i, subject) in subjects.enumerate() {
                        if i > 0 {
                            q.push(" OR ");
                        }
                        q.push("e.subject_pseudonyms::jsonb @> jsonb_build_array(CAST(")
                            .bind(subject)
                            .push(" AS TEXT))");
                    }
                    q.push(")");
                }
                if let Some(r) = &query.resource {
                    q.push(" AND e.resources::jsonb @> jsonb_build_array(CAST(")
                        .bind(r.as_str())
                        .push(" AS TEXT))");
                }
            }
        }
        if let Some(org) = &query.organization {
            q.push(" AND e.organization = ").bind(org.as_str());
        }
        if let Some(user) = &query.user_id {
            q.push(" AND e.user_id = ").bind(user.as_str());
        }
        if let Some(method) = &query.method {
            if method.starts_with('/') {
                q.push(" AND e.method = ").bind(method.as_str());
            } else {
                q.push(" AND e.method LIKE ").bind(format!("%/{method}"));
            }
        }
        if let Some(t) = query.start_time {
            q.push(" AND e.time >= ").bind(DbTime(t));
        }
        if let Some(t) = query.end_time {
            q.push(" AND e.time < ").bind(DbTime(t));
        }
        if let Some(after) = query.after_sequence {
            q.push(" AND e.sequence > ").bind(after);
        }
        q.push(" ORDER BY e.sequence LIMIT ").bind(query.limit);
        let rows: Vec<AuditRow> = self.fetch_all(q).await?;
        rows.into_iter().map(AuditRow::into_domain).collect()
    }
}
