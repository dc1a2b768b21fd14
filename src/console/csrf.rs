//! CSRF tokens for the console's forms: every POST carries one, or it is refused before anything
//! runs.
//!
//! A token is `<issued unix seconds>.<hex HMAC-SHA256>` of the signed-in person (organisation and
//! user, from the certificate) and the time, under a key made at random when the process starts. A
//! page from another site cannot read one (the console's pages are same-origin only, framed
//! nowhere), and a token taken from one person's page does not work for another. Tokens last
//! [`LIFETIME`]; a restart, or a form sent to another replica, makes the person reload the page.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How long a form stays usable.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

pub struct Csrf {
    key: [u8; 32],
}

impl Csrf {
    pub fn new() -> Self {
        Self {
            key: rand::random(),
        }
    }

    fn mac(&self, organization: &str, user: &str, issued: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        // Lengths first, so that no two (organisation, user) pairs run together the same way.
        for part in [organization, user] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(&issued.to_be_bytes());
        mac
    }

    /// A token for `organization`/`user`, issued at `now` (unix seconds).
    pub fn token(&self, organization: &str, user: &str, now: i64) -> String {
        let tag = self.mac(organization, user, now).finalize().into_bytes();
        format!("{now}.{}", hex::encode(tag))
    }

    /// Whether `token` was issued by this process to `organization`/`user` no longer than
    /// [`LIFETIME`] before `now`.
    pub fn check(&self, token: &str, organization: &str, user: &str, now: i64) -> bool {
        let Some((issued, tag)) = token.split_once('.') else {
            return false;
        };
        let (Ok(issued), Ok(tag)) = (issued.parse::<i64>(), hex::decode(tag)) else {
            return false;
        };
        let age = now.saturating_sub(issued);
        if !(0..=LIFETIME.as_secs() as i64).contains(&age) {
            return false;
        }
        // Constant-time comparison.
        self.mac(organization, user, issued)
            .verify_slice(&tag)
            .is_ok()
    }
}

impl Default for Csrf {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_for_its_person_and_time_only() {
        let csrf = Csrf::new();
        let token = csrf.token("hva-15", "w-anna", 1000);
        assert!(csrf.check(&token, "hva-15", "w-anna", 1000));
        assert!(csrf.check(&token, "hva-15", "w-anna", 1000 + 3600));
        assert!(!csrf.check(&token, "hva-15", "w-other", 1000));
        assert!(!csrf.check(&token, "hva-1", "5w-anna", 1000));
        assert!(!csrf.check(&token, "hva-15", "w-anna", 1000 + 9 * 3600));
        assert!(!csrf.check(&token, "hva-15", "w-anna", 999));
        assert!(!csrf.check("", "hva-15", "w-anna", 1000));
        assert!(!csrf.check("1000.00", "hva-15", "w-anna", 1000));
        assert!(!Csrf::new().check(&token, "hva-15", "w-anna", 1000));
    }
}
