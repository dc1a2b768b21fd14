//! Per-organisation limits: one organisation's runaway client must not take every database
//! connection or every worker from the others.
//!
//! Each organisation (as its certificate names it) has
//!
//! - a **rate**: at most `requests_per_second` calls, with bursts of `burst` (GCRA, the `governor`
//!   crate), and
//! - a **concurrency**: at most `concurrent` of its calls running at once (a semaphore; a waiting
//!   long-poll counts while it waits).
//!
//! Both apply to every call from every edge (gRPC, HTTP, the console), where a call is admitted
//! ([`crate::grpc::handle`]), after its caller is identified and before any database work. A call
//! over either limit is refused `RESOURCE_EXHAUSTED` (HTTP 429) with `RetryInfo` saying when to
//! come back, and audited in aggregate: one event per organisation, user, method and second with
//! the count ([`crate::exchange::refusal_tally`]), so that refusals cost the others almost nothing. A
//! stream counts while it is being opened, not while it
//! delivers (its deliveries are paced by its leases).
//!
//! Besides, all organisations together may run at most `global_concurrent` calls, a bound on the
//! work one process takes on however many organisations call it. Database connections are bounded
//! apart from it: calls, long-polls included, far outnumber the connections, and a call takes one
//! only while it runs a transaction. On PostgreSQL the calls share
//! [`crate::store::postgres::CALL_CONNECTIONS`], and the background tasks (and readiness) have
//! [`crate::store::postgres::BACKGROUND_CONNECTIONS`] of their own that no call can take
//! ([`crate::store::Store::begin_background`]).
//!
//! What the defaults do is measured in bench/RESULTS.md ("Per-organisation limits"): the limit is
//! exact, and the other organisations' latency while one organisation is refused thousands of
//! calls a second is measured there too.

use std::{collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Reason};

/// The settings (`serve --org-requests-per-second`, `--org-burst`, `--org-concurrent-calls`,
/// `--max-concurrent-calls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub requests_per_second: u32,
    pub burst: u32,
    pub concurrent: u32,
    pub global_concurrent: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 200,
            burst: 400,
            concurrent: 64,
            global_concurrent: 256,
        }
    }
}

/// The limits in force, shared by every edge.
pub struct Limits {
    settings: LimitSettings,
    rate: DefaultKeyedRateLimiter<String>,
    concurrency: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    global: Arc<Semaphore>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .finish()
    }
}

/// What an admitted call holds until it ends.
#[derive(Debug)]
pub struct Admission {
    _organization: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// How long a caller refused for concurrency should wait: about one call's time.
const CONCURRENCY_RETRY: Duration = Duration::from_millis(100);

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(settings.requests_per_second).unwrap_or(one))
            .allow_burst(NonZeroU32::new(settings.burst).unwrap_or(one));
        Self {
            settings,
            rate: RateLimiter::keyed(quota),
            concurrency: std::sync::Mutex::default(),
            global: Arc::new(Semaphore::new(settings.global_concurrent.max(1) as usize)),
        }
    }

    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    /// Admits a call of `organization`, or says when to try again.
    pub fn admit(&self, organization: &str) -> Result<Admission, Error> {
        if let Err(not_until) = self.rate.check_key(&organization.to_owned()) {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            return Err(refusal(
                Reason::RateLimited,
                format!(
                    "over this organisation's {} calls per second (bursts of {})",
                    self.settings.requests_per_second, self.settings.burst
                ),
                wait.max(Duration::from_millis(10)),
            ));
        }
        let semaphore = {
            let mut map = self
                .concurrency
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match map.get(organization) {
                Some(semaphore) => semaphore.clone(),
                None => {
                    let semaphore =
                        Arc::new(Semaphore::new(self.settings.concurrent.max(1) as usize));
                    map.insert(organization.to_owned(), semaphore.clone());
                    semaphore
                }
            }
        };
        let organization_permit = semaphore.try_acquire_owned().map_err(|_| {
            refusal(
                Reason::TooManyConcurrentCalls,
                format!(
                    "this organisation already has {} calls running",
                    self.settings.concurrent
                ),
                CONCURRENCY_RETRY,
            )
        })?;
        let global_permit = self.global.clone().try_acquire_owned().map_err(|_| {
            refusal(
                Reason::TooManyConcurrentCalls,
                "the exchange is at its limit of calls running at once".to_owned(),
                CONCURRENCY_RETRY,
            )
        })?;
        Ok(Admission {
            _organization: organization_permit,
            _global: global_permit,
        })
    }
}

fn refusal(reason: Reason, message: String, retry_after: Duration) -> Error {
    Error::Overloaded {
        reason,
        message,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: u32, burst: u32, concurrent: u32, global: u32) -> Limits {
        Limits::new(LimitSettings {
            requests_per_second: rps,
            burst,
            concurrent,
            global_concurrent: global,
        })
    }

    #[test]
    fn a_burst_is_admitted_then_the_rate_refuses_with_a_wait() {
        let l = limits(1, 3, 100, 100);
        for _ in 0..3 {
            drop(l.admit("kela").expect("within the burst"));
        }
        let refused = l.admit("kela").expect_err("over the rate");
        assert_eq!(refused.reason(), Reason::RateLimited);
        match refused {
            Error::Overloaded { retry_after, .. } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        // Another organisation has its own budget.
        drop(l.admit("hva-15").expect("hva-15 is not limited by kela"));
    }

    #[test]
    fn concurrency_is_per_organisation_and_released_when_a_call_ends() {
        let l = limits(1000, 1000, 2, 100);
        let a = l.admit("kela").expect("one");
        let _b = l.admit("kela").expect("two");
        assert_eq!(
            l.admit("kela").expect_err("a third").reason(),
            Reason::TooManyConcurrentCalls
        );
        let _other = l.admit("hva-15").expect("others are not affected");
        drop(a);
        l.admit("kela").expect("room again once a call ended");
    }

    #[test]
    fn the_global_limit_holds_across_organisations() {
        let l = limits(1000, 1000, 10, 2);
        let _a = l.admit("kela").expect("one");
        let _b = l.admit("hva-15").expect("two");
        assert_eq!(
            l.admit("helsinki")
                .expect_err("over the global limit")
                .reason(),
            Reason::TooManyConcurrentCalls
        );
    }
}
