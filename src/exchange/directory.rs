//! The directory: who takes part, and which organiser is responsible for a municipality.

use chrono::NaiveDate;

use super::Exchange;
use crate::{
    access::Call,
    domain::{
        Role, calendar,
        municipality::{Municipality, Receiver},
        referral::municipality_violation,
    },
    error::{Error, Result},
};

/// Kela and the auditors are parties too, but they are not organisers: the directory lists
/// the receivers from the code list, and Kela.
impl Exchange {
    pub async fn list_organizations(
        &self,
        call: &Call,
        role: Option<Role>,
    ) -> Result<(bool, Vec<Receiver>)> {
        call.authorize()?;
        let receivers = match role {
            None | Some(Role::Receiver) => self.registry.receivers(),
            _ => Vec::new(),
        };
        let include_kela = matches!(role, None | Some(Role::Referrer));
        // The code list is public: no one's data is processed.
        self.commit_unprocessed(call, None).await?;
        Ok((include_kela, receivers))
    }

    /// The organiser of `code` on the code list valid on `date` (default: today in Helsinki).
    pub async fn resolve_recipient(
        &self,
        call: &Call,
        code: &str,
        date: Option<NaiveDate>,
    ) -> Result<(Municipality, i32)> {
        call.authorize()?;
        let date = date.unwrap_or_else(|| calendar::helsinki_date(self.clock.now()));
        let municipality = self
            .registry
            .lookup(code, date)
            .map_err(|e| {
                Error::invalid(vec![municipality_violation("home_municipality_code", &e)])
            })?
            .clone();
        let year = self.registry.code_list_year(date).unwrap_or_default();
        self.commit_unprocessed(call, None).await?;
        Ok((municipality, year))
    }
}
