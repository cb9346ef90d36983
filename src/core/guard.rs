//! Throttling of failed sign-ins, per account and per client address, across every dialect.
//!
//! Each failed password or API-key sign-in counts against the account (the login or API key as
//! typed, whether or not it exists, so that throttling reveals nothing) and against the client's
//! address. An account waits an increasing delay after each failure (`throttle.delay`, doubling),
//! and both are locked out for `throttle.lockout` once they reach their number of failures within
//! `throttle.window`. While throttled, even the right password fails. A success clears the
//! account's count. With SQLite the counts live in memory (a restart forgets them); with PostgreSQL
//! they live in the database, so that failures spread over several nodes count as on one.

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

use crate::store::throttle::{self as shared, Entry};
use crate::store::Store;

/// What a failure led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    /// This failure locked the account out (and maybe the address with it).
    LockedOut,
    /// This failure locked the client's address out, not the account.
    AddressLockedOut,
}

pub struct Throttle {
    cfg: config::Throttle,
    entries: Mutex<HashMap<String, Entry>>,
    /// The store that keeps the counts when several nodes share it.
    shared: Option<Store>,
}

/// Beyond this many entries, expired ones are swept before a new one is added.
const SWEEP_AT: usize = 100_000;

impl Throttle {
    /// Counts kept in this process's memory.
    pub fn new(cfg: config::Throttle) -> Throttle {
        Throttle { cfg, entries: Mutex::new(HashMap::new()), shared: None }
    }

    /// Counts kept in `store` when other nodes share it, else in memory.
    pub fn for_store(cfg: config::Throttle, store: &Store) -> Throttle {
        Throttle { shared: store.is_shared().then(|| store.clone()), ..Throttle::new(cfg) }
    }

    /// The account's key is the account folded like a login (`text::fold`: case and
    /// normalization form), so that every spelling of one account counts against it.
    fn account_key(account: &str) -> String {
        format!("a:{}", super::text::fold(account))
    }

    fn keys(account: &str, caller: &Caller) -> (String, Option<String>) {
        (Self::account_key(account), caller.addr.map(|a| format!("n:{a}")))
    }

    fn limit(&self, key: &str) -> i64 {
        i64::from(if key.starts_with("a:") { self.cfg.account_failures } else { self.cfg.address_failures })
    }

    /// How long `key`, with its count `e`, must wait at `now` (0: not at all).
    fn wait(&self, key: &str, e: &Entry, now: i64) -> i64 {
        if e.locked_until > now {
            return e.locked_until - now;
        }
        if key.starts_with("a:") && e.failures > 0 && now - e.window_start < self.cfg.window.millis() {
            let shift = e.failures.saturating_sub(1).min(20);
            let delay = self.cfg.delay.millis().saturating_mul(1 << shift).min(self.cfg.lockout.millis());
            return e.last_failure.saturating_add(delay).saturating_sub(now).max(0);
        }
        0
    }

    /// Counts one failure in `e`; true when it locked `key` out.
    fn count(&self, key: &str, e: &mut Entry, now: i64) -> bool {
        if now - e.window_start >= self.cfg.window.millis() || (e.locked_until != 0 && e.locked_until <= now) {
            *e = Entry { window_start: now, ..Entry::default() };
        }
        e.failures += 1;
        e.last_failure = now;
        if e.failures >= self.limit(key) && e.locked_until <= now {
            e.locked_until = now.saturating_add(self.cfg.lockout.millis());
            return true;
        }
        false
    }

    /// Err(Throttled) when the account or the address must wait; the wait is in milliseconds.
    pub fn check(&self, account: &str, caller: &Caller, now: i64) -> Result<(), Error> {
        let (acct, addr) = Self::keys(account, caller);
        let keys: Vec<&String> = std::iter::once(&acct).chain(addr.as_ref()).collect();
        let mut wait = 0i64;
        if let Some(store) = &self.shared {
            for key in keys {
                if let Some(e) = store.with(|c| shared::get(c, key))? {
                    wait = wait.max(self.wait(key, &e, now));
                }
            }
        } else {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            for key in keys {
                if let Some(e) = entries.get(key) {
                    wait = wait.max(self.wait(key, e, now));
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
    pub fn failed(&self, account: &str, caller: &Caller, now: i64) -> Result<Outcome, Error> {
        let (acct, addr) = Self::keys(account, caller);
        if let Some(store) = &self.shared {
            let locked = store.write(|tx| {
                let mut locked = Vec::new();
                for key in std::iter::once(&acct).chain(addr.as_ref()) {
                    let mut e = shared::get_for_update(tx, key)?.unwrap_or_default();
                    if self.count(key, &mut e, now) {
                        locked.push(key.starts_with("a:"));
                    }
                    shared::put(tx, key, &e)?;
                }
                Ok(locked)
            })?;
            return Ok(Self::outcome(&locked));
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SWEEP_AT {
            let (window, lockout) = (self.cfg.window.millis(), self.cfg.lockout.millis());
            // Quotas (`take`) count by the hour.
            let keep = window.max(lockout).max(3_600_000);
            entries.retain(|_, e| e.locked_until > now || now - e.window_start < keep);
        }
        let mut locked = Vec::new();
        for key in std::iter::once(acct).chain(addr) {
            let mut e = entries.get(&key).copied().unwrap_or_default();
            if self.count(&key, &mut e, now) {
                locked.push(key.starts_with("a:"));
            }
            entries.insert(key, e);
        }
        Ok(Self::outcome(&locked))
    }

    /// What the keys locked by one failure (true: the account's) amount to.
    fn outcome(locked: &[bool]) -> Outcome {
        if locked.contains(&true) {
            Outcome::LockedOut
        } else if locked.is_empty() {
            Outcome::Counted
        } else {
            Outcome::AddressLockedOut
        }
    }

    /// Counts one use of `key` (e.g. a reset mail asked for an account, or from an address) in a
    /// fixed window of `window_ms`; false once `limit` uses were counted in the window. Kept where
    /// the failure counts are (in memory, or in the shared store), under keys of their own.
    pub fn take(&self, key: &str, limit: u32, window_ms: i64, now: i64) -> Result<bool, Error> {
        let key = format!("q:{key}");
        let step = |e: &mut Entry| {
            if now - e.window_start >= window_ms || e.window_start > now {
                *e = Entry { window_start: now, ..Entry::default() };
            }
            e.failures += 1;
            e.last_failure = now;
            e.failures <= i64::from(limit)
        };
        if let Some(store) = &self.shared {
            return store.write(|tx| {
                let mut e = shared::get_for_update(tx, &key)?.unwrap_or_default();
                let ok = step(&mut e);
                shared::put(tx, &key, &e)?;
                Ok(ok)
            });
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = entries.get(&key).copied().unwrap_or_default();
        let ok = step(&mut e);
        entries.insert(key, e);
        Ok(ok)
    }

    /// Forgets the account's failures when its password was set (at `set_at`, maybe by another
    /// process: the CLI) after the last of them; true when it did. The address keeps its count.
    pub fn forget_if_before(&self, account: &str, set_at: i64) -> Result<bool, Error> {
        let key = Self::account_key(account);
        let last = if let Some(store) = &self.shared {
            store.with(|c| shared::get(c, &key))?.map(|e| e.last_failure)
        } else {
            self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(&key).map(|e| e.last_failure)
        };
        if last.is_some_and(|last| last < set_at) {
            self.succeeded(account)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// A success clears the account's count (not the address's).
    pub fn succeeded(&self, account: &str) -> Result<(), Error> {
        let key = Self::account_key(account);
        if let Some(store) = &self.shared {
            return store.write(|tx| shared::clear(tx, &key));
        }
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        Ok(())
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
        assert_eq!(t.failed("bob", &c, 0).unwrap(), Outcome::Counted);
        assert!(matches!(t.check("bob", &c, 500), Err(Error::Throttled { retry_after_ms: 500 })));
        assert!(t.check("bob", &c, 1000).is_ok());
        t.failed("bob", &c, 1000).unwrap();
        assert!(
            matches!(t.check("bob", &c, 2000), Err(Error::Throttled { retry_after_ms: 1000 })),
            "2 s after the second"
        );
        assert!(t.check("bob", &c, 3000).is_ok());
        assert_eq!(t.failed("bob", &c, 3000).unwrap(), Outcome::LockedOut);
        assert!(matches!(t.check("bob", &c, 100_000), Err(Error::Throttled { .. })));
        assert!(t.check("bob", &c, 303_001).is_ok(), "the lockout ends");
        // Another account from another address is not held up.
        assert!(t.check("alice", &from("10.0.0.2"), 3000).is_ok());
    }

    #[test]
    fn a_success_clears_the_account() {
        let t = throttle();
        let c = from("10.0.0.1");
        t.failed("bob", &c, 0).unwrap();
        t.failed("bob", &c, 1000).unwrap();
        t.succeeded("BOB").unwrap();
        assert!(t.check("bob", &c, 1001).is_ok());
        t.failed("bob", &c, 1001).unwrap();
        assert_eq!(t.failed("bob", &c, 3001).unwrap(), Outcome::Counted, "the count started again");
    }

    #[test]
    fn every_spelling_of_an_account_counts_against_it() {
        let t = throttle();
        // Three failures from three addresses, each spelling "José" another way.
        t.failed("jos\u{e9}", &from("10.0.0.1"), 0).unwrap();
        t.failed("jose\u{301}", &from("10.0.0.2"), 1000).unwrap();
        assert_eq!(t.failed("JOSE\u{301}", &from("10.0.0.3"), 3000).unwrap(), Outcome::LockedOut);
        assert!(matches!(t.check("Jos\u{c9}", &from("10.0.0.4"), 3001), Err(Error::Throttled { .. })));
        t.succeeded("JOSE\u{301}").unwrap();
        assert!(t.check("jos\u{e9}", &from("10.0.0.4"), 3002).is_ok(), "a success clears every spelling");
    }

    #[test]
    fn an_address_guessing_many_accounts_locks() {
        let t = throttle();
        let c = from("10.0.0.9");
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            assert_eq!(t.failed(name, &c, i as i64).unwrap(), Outcome::Counted);
        }
        assert_eq!(t.failed("e", &c, 10).unwrap(), Outcome::AddressLockedOut);
        assert!(matches!(t.check("someone-new", &c, 20), Err(Error::Throttled { .. })));
        assert!(t.check("someone-new", &from("10.0.0.10"), 20).is_ok());
    }
}
