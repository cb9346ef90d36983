//! Throttling of failed sign-ins, per account and per client address, across every dialect.
//!
//! Each failed password or API-key sign-in counts against the account (the login or API key as
//! typed, whether or not it exists, so that throttling reveals nothing) and against the client's
//! address. An account waits an increasing delay after each failure (`throttle.delay`, doubling),
//! and both are locked out for `throttle.lockout` once they reach their number of failures within
//! `throttle.window`. While throttled, even the right password fails. A success clears the
//! account's count. The counts live in memory: a restart forgets them, as it forgets nothing else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::Error;
use crate::config;

/// Who is calling, as the core needs to know it: for throttling and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub addr: Option<IpAddr>,
    pub dialect: &'static str,
}

impl Caller {
    pub fn new(addr: Option<IpAddr>, dialect: &'static str) -> Caller {
        Caller { addr, dialect }
    }

    /// The command line, or the core itself.
    pub fn local() -> Caller {
        Caller { addr: None, dialect: "cli" }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: i64,
    last_failure: i64,
    locked_until: i64,
}

/// What a failure led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    /// This failure locked the key out.
    LockedOut,
}

pub struct Throttle {
    cfg: config::Throttle,
    entries: Mutex<HashMap<String, Entry>>,
}

/// Beyond this many entries, expired ones are swept before a new one is added.
const SWEEP_AT: usize = 100_000;

impl Throttle {
    pub fn new(cfg: config::Throttle) -> Throttle {
        Throttle { cfg, entries: Mutex::new(HashMap::new()) }
    }

    fn keys(account: &str, caller: &Caller) -> (String, Option<String>) {
        (format!("a:{}", account.to_lowercase()), caller.addr.map(|a| format!("n:{a}")))
    }

    fn limit(&self, key: &str) -> u32 {
        if key.starts_with("a:") {
            self.cfg.account_failures
        } else {
            self.cfg.address_failures
        }
    }

    /// Err(Throttled) when the account or the address must wait; the wait is in milliseconds.
    pub fn check(&self, account: &str, caller: &Caller, now: i64) -> Result<(), Error> {
        let (acct, addr) = Self::keys(account, caller);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = 0i64;
        for key in std::iter::once(&acct).chain(addr.as_ref()) {
            let Some(e) = entries.get(key) else { continue };
            if e.locked_until > now {
                wait = wait.max(e.locked_until - now);
            } else if key.starts_with("a:") && e.failures > 0 && now - e.window_start < self.cfg.window.millis() {
                let shift = e.failures.saturating_sub(1).min(20);
                let delay = self.cfg.delay.millis().saturating_mul(1 << shift).min(self.cfg.lockout.millis());
                let until = e.last_failure.saturating_add(delay);
                if until > now {
                    wait = wait.max(until - now);
                }
            }
        }
        if wait > 0 {
            Err(Error::Throttled { retry_after_ms: wait })
        } else {
            Ok(())
        }
    }

    /// Counts a failure against the account and the address; says whether it locked one out.
    pub fn failed(&self, account: &str, caller: &Caller, now: i64) -> Outcome {
        let (acct, addr) = Self::keys(account, caller);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SWEEP_AT {
            let (window, lockout) = (self.cfg.window.millis(), self.cfg.lockout.millis());
            entries.retain(|_, e| e.locked_until > now || now - e.window_start < window.max(lockout));
        }
        let mut outcome = Outcome::Counted;
        for key in std::iter::once(acct).chain(addr) {
            let limit = self.limit(&key);
            let e = entries.entry(key).or_default();
            if now - e.window_start >= self.cfg.window.millis() || (e.locked_until != 0 && e.locked_until <= now) {
                *e = Entry { window_start: now, ..Entry::default() };
            }
            e.failures += 1;
            e.last_failure = now;
            if e.failures >= limit && e.locked_until <= now {
                e.locked_until = now.saturating_add(self.cfg.lockout.millis());
                outcome = Outcome::LockedOut;
            }
        }
        outcome
    }

    /// A success clears the account's count (not the address's).
    pub fn succeeded(&self, account: &str) {
        let key = format!("a:{}", account.to_lowercase());
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Seconds;
    use std::time::Duration;

    fn throttle() -> Throttle {
        Throttle::new(config::Throttle {
            account_failures: 3,
            address_failures: 5,
            window: Seconds::secs(60),
            lockout: Seconds::secs(300),
            delay: Seconds(Duration::from_millis(1000)),
        })
    }

    fn from(ip: &str) -> Caller {
        Caller::new(Some(ip.parse().unwrap()), "test")
    }

    #[test]
    fn the_delay_doubles_then_the_account_locks() {
        let t = throttle();
        let c = from("10.0.0.1");
        assert!(t.check("bob", &c, 0).is_ok());
        assert_eq!(t.failed("bob", &c, 0), Outcome::Counted);
        assert!(matches!(t.check("bob", &c, 500), Err(Error::Throttled { retry_after_ms: 500 })));
        assert!(t.check("bob", &c, 1000).is_ok());
        t.failed("bob", &c, 1000);
        assert!(
            matches!(t.check("bob", &c, 2000), Err(Error::Throttled { retry_after_ms: 1000 })),
            "2 s after the second"
        );
        assert!(t.check("bob", &c, 3000).is_ok());
        assert_eq!(t.failed("bob", &c, 3000), Outcome::LockedOut);
        assert!(matches!(t.check("bob", &c, 100_000), Err(Error::Throttled { .. })));
        assert!(t.check("bob", &c, 303_001).is_ok(), "the lockout ends");
        // Another account from another address is not held up.
        assert!(t.check("alice", &from("10.0.0.2"), 3000).is_ok());
    }

    #[test]
    fn a_success_clears_the_account() {
        let t = throttle();
        let c = from("10.0.0.1");
        t.failed("bob", &c, 0);
        t.failed("bob", &c, 1000);
        t.succeeded("BOB");
        assert!(t.check("bob", &c, 1001).is_ok());
        t.failed("bob", &c, 1001);
        assert_eq!(t.failed("bob", &c, 3001), Outcome::Counted, "the count started again");
    }

    #[test]
    fn an_address_guessing_many_accounts_locks() {
        let t = throttle();
        let c = from("10.0.0.9");
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            assert_eq!(t.failed(name, &c, i as i64), Outcome::Counted);
        }
        assert_eq!(t.failed("e", &c, 10), Outcome::LockedOut);
        assert!(matches!(t.check("someone-new", &c, 20), Err(Error::Throttled { .. })));
        assert!(t.check("someone-new", &from("10.0.0.10"), 20).is_ok());
    }
}
