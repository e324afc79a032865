//! The lockout pre-check (`lockout_precheck = true`): before a bind, the user's
//! `badPwdCount` is read on an admin connection, and the request is refused without a bind
//! when one more failure would lock the account — so a device retrying stale passwords, or
//! a guessing attack through the VPN, never locks the user out of the whole domain.
//!
//! The threshold is the user's fine-grained password policy (`msDS-ResultantPSO` →
//! `msDS-LockoutThreshold`) when one applies, else the domain's `lockoutThreshold` (domain
//! root object); both are cached for `lockout_policy_refresh`. As AD does, failures older
//! than the policy's observation window (`badPasswordTime` + `lockOutObservationWindow`) no
//! longer count, so a refused user can log on again once the window has passed. A threshold
//! of 0 (no lockout) or 1 (nothing can be tried safely) turns the check off for that policy.
//! When the reads fail the bind goes ahead (the pre-check protects, it does not gate).

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ldap3::{Scope, SearchEntry};
use parking_lot::Mutex;

use super::{first, AdVerifier};
use crate::auth::AuthError;
use crate::metrics::METRICS;

/// A lockout policy: failures allowed and how long one counts (100 ns units, like AD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Policy {
    pub threshold: u32,
    pub window: i64,
}

/// Policies read from the directory, by DN (the domain's under its base DN).
#[derive(Default)]
pub(super) struct Policies {
    cache: Mutex<HashMap<String, (Instant, Policy)>>,
}

/// FILETIME (100 ns since 1601) of the Unix epoch.
const FILETIME_UNIX_EPOCH: i64 = 116_444_736_000_000_000;

fn filetime_now() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    FILETIME_UNIX_EPOCH + (d.as_nanos() / 100) as i64
}

/// Whether one more failure would reach the threshold: `bad_count` failures, the last at
/// `bad_time` (FILETIME), seen at `now`.
pub(super) fn one_short(p: Policy, bad_count: u32, bad_time: i64, now: i64) -> bool {
    if p.threshold < 2 {
        return false;
    }
    let expired = p.window > 0 && bad_time.saturating_add(p.window) <= now;
    let count = if expired { 0 } else { bad_count };
    count >= p.threshold - 1
}

fn number(e: &SearchEntry, attr: &str) -> i64 {
    first(e, attr).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl AdVerifier {
    /// `Err(LockoutPrevented)` when the user is one failure short of a lockout.
    /// `bind_name` is the account the bind would try (for the log line).
    pub(super) async fn lockout_precheck(
        &self,
        name: &str,
        bind_name: &str,
    ) -> Result<(), AuthError> {
        match self.one_failure_short(name).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                METRICS.lockout_precheck.inc();
                tracing::info!(user = %bind_name, "one failure short of a lockout: refused before binding");
                Err(AuthError::LockoutPrevented)
            }
            Err(e) => {
                tracing::warn!(error = %e, "lockout pre-check failed: binding anyway");
                Ok(())
            }
        }
    }

    /// The account the bind would try: the one with the name's sAMAccountName.
    async fn one_failure_short(&self, name: &str) -> Result<bool, AuthError> {
        let filter = format!(
            "(&(objectCategory=person)(objectClass=user)(sAMAccountName={}))",
            ldap3::ldap_escape(self.config.sam(name))
        );
        let users = self
            .admin_search(
                &self.config.base_dn(),
                Scope::Subtree,
                &filter,
                &["badPwdCount", "badPasswordTime", "msDS-ResultantPSO"],
            )
            .await?;
        let now = filetime_now();
        for u in &users {
            let policy = match first(u, "msDS-ResultantPSO") {
                Some(pso) => {
                    self.policy(
                        pso,
                        ["msDS-LockoutThreshold", "msDS-LockoutObservationWindow"],
                    )
                    .await?
                }
                None => {
                    self.policy(
                        &self.config.base_dn(),
                        ["lockoutThreshold", "lockOutObservationWindow"],
                    )
                    .await?
                }
            };
            let count = number(u, "badPwdCount").clamp(0, u32::MAX as i64) as u32;
            if one_short(policy, count, number(u, "badPasswordTime"), now) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The lockout policy of the object `dn` (the domain or a PSO), cached.
    async fn policy(&self, dn: &str, attrs: [&str; 2]) -> Result<Policy, AuthError> {
        let key = dn.to_ascii_lowercase();
        if let Some((at, p)) = self.policies.cache.lock().get(&key) {
            if at.elapsed() < self.config.lockout_policy_refresh {
                return Ok(*p);
            }
        }
        let found = self
            .admin_search(dn, Scope::Base, "(objectClass=*)", &attrs)
            .await?;
        let e = found
            .first()
            .ok_or_else(|| AuthError::Internal(format!("lockout policy {dn} not readable")))?;
        let p = Policy {
            threshold: number(e, attrs[0]).clamp(0, u32::MAX as i64) as u32,
            // Stored negative (a relative time).
            window: number(e, attrs[1]).saturating_abs(),
        };
        self.policies.cache.lock().insert(key, (Instant::now(), p));
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 600_000_000; // one minute in 100 ns

    #[test]
    fn refuses_one_failure_short_within_the_window() {
        let p = Policy {
            threshold: 5,
            window: 30 * MIN,
        };
        let now = filetime_now();
        assert!(!one_short(p, 3, now - MIN, now));
        assert!(one_short(p, 4, now - MIN, now));
        assert!(one_short(p, 5, now - MIN, now));
        // The window has passed since the last failure: the count no longer applies.
        assert!(!one_short(p, 4, now - 31 * MIN, now));
        // No lockout policy, or a threshold nothing can be tried under.
        for threshold in [0, 1] {
            assert!(!one_short(Policy { threshold, ..p }, 9, now, now));
        }
        assert!(one_short(Policy { threshold: 2, ..p }, 1, now, now));
    }
}
