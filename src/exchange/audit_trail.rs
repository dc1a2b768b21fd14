//! Reading the audit trail. Auditors only: the log is personal data itself.

use super::{Exchange, Outbox, Page};
use crate::{
    access::Call,
    audit::{AuditQuery, StoredAuditEvent},
    domain::PersonalIdentityCode,
    error::Result,
};

impl Exchange {
    /// Events matching every given filter, oldest first. A subject is given as an identity code and
    /// matched through its pseudonym; the code itself is neither stored nor logged.
    pub async fn list_audit_events(
        &self,
        call: &Call,
        subject: Option<PersonalIdentityCode>,
        mut query: AuditQuery,
    ) -> Result<Page<StoredAuditEvent>> {
        call.authorize()?;
        // Reading a person's log is processing their data: it goes into their log too.
        query.subject_pseudonyms = self.lookup_pseudonyms(subject.as_ref(), call);
        if let Some(resource) = &query.resource {
            call.touch_resource(resource);
        }
        let page_size = query.limit;
        query.limit = page_size + 1;
        let mut tx = self.begin().await?;
        let mut items = tx.list_audit_events(&query).await?;
        let more = items.len() as i64 > page_size;
        items.truncate(page_size as usize);
        self.commit(call, tx, Outbox::default()).await?;
        Ok(Page { items, more })
    }
}
