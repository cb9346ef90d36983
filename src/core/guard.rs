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

/// What a failure counts against.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A person's account, as typed (a login, an email): its password is one a person chose, so
    /// the account itself waits and locks after its failures, wherever they came from.
    Account(&'a str),
    /// A credential of high entropy whose name others may know (an application's id with its
    /// secret, an API key's id): never held back for everyone, or a stranger could lock its owner
    /// out. Only the caller is: per address and credential, and per address.
    Shared(&'a str),
}

/// The address the throttle and the connection cap count as one: an IPv4 address, or an IPv6
/// /64 (what one host is given; an attacker with one has 2^64 addresses of it).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & (u128::MAX << 64))),
        v4 => v4,
    }
}

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

    /// The subject's own key (an account's, or a shared credential's as tried from one address),
    /// and the address's.
    fn keys(subject: Subject, caller: &Caller) -> (String, Option<String>) {
        let addr = caller.addr.map(address_key);
        let own = match subject {
            Subject::Account(account) => Self::account_key(account),
            Subject::Shared(credential) => {
                format!("p:{}|{credential}", addr.map_or_else(|| "-".to_string(), |a| a.to_string()))
            }
        };
        (own, addr.map(|a| format!("n:{a}")))
    }

    /// An account's, or a credential's from one address: the key that waits a doubling delay.
    fn is_own(key: &str) -> bool {
        key.starts_with("a:") || key.starts_with("p:")
    }

    fn limit(&self, key: &str) -> i64 {
        i64::from(if Self::is_own(key) { self.cfg.account_failures } else { self.cfg.address_failures })
    }

    /// How long `key`, with its count `e`, must wait at `now` (0: not at all).
    fn wait(&self, key: &str, e: &Entry, now: i64) -> i64 {
        if e.locked_until > now {
            return e.locked_until - now;
        }
        if Self::is_own(key) && e.failures > 0 && now - e.window_start < self.cfg.window.millis() {
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

    /// Err(Throttled) when the subject or the address must wait; the wait is in milliseconds.
    pub fn check(&self, subject: Subject, caller: &Caller, now: i64) -> Result<(), Error> {
        let (acct, addr) = Self::keys(subject, caller);
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

    /// Counts a failure against the subject and the address; says whether it locked one out.
    pub fn failed(&self, subject: Subject, caller: &Caller, now: i64) -> Result<Outcome, Error> {
        let (acct, addr) = Self::keys(subject, caller);
        if let Some(store) = &self.shared {
            let locked = store.write(|tx| -> Result<_, Error> {
                let mut locked = Vec::new();
                for key in std::iter::once(&acct).chain(addr.as_ref()) {
                    let mut e = shared::get_for_update(tx, key)?.unwrap_or_default();
                    if self.count(key, &mut e, now) {
                        locked.push(Self::is_own(key));
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
                locked.push(Self::is_own(&key));
            }
            entries.insert(key, e);
        }
        Ok(Self::outcome(&locked))
    }

    /// What the keys locked by one failure (true: the subject's own) amount to.
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
            return store.write(|tx| -> Result<_, Error> {
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
            return Ok(store.write(|tx| shared::clear(tx, &key))?);
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
    use Subject::Account;

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
        assert!(t.check(Account("bob"), &c, 0).is_ok());
        assert_eq!(t.failed(Account("bob"), &c, 0).unwrap(), Outcome::Counted);
        assert!(matches!(t.check(Account("bob"), &c, 500), Err(Error::Throttled { retry_after_ms: 500 })));
        assert!(t.check(Account("bob"), &c, 1000).is_ok());
        t.failed(Account("bob"), &c, 1000).unwrap();
        assert!(
            matches!(t.check(Account("bob"), &c, 2000), Err(Error::Throttled { retry_after_ms: 1000 })),
            "2 s after the second"
        );
        assert!(t.check(Account("bob"), &c, 3000).is_ok());
        assert_eq!(t.failed(Account("bob"), &c, 3000).unwrap(), Outcome::LockedOut);
        assert!(matches!(t.check(Account("bob"), &c, 100_000), Err(Error::Throttled { .. })));
        assert!(t.check(Account("bob"), &c, 303_001).is_ok(), "the lockout ends");
        // Another account from another address is not held up.
        assert!(t.check(Account("alice"), &from("10.0.0.2"), 3000).is_ok());
    }

    #[test]
    fn a_success_clears_the_account() {
        let t = throttle();
        let c = from("10.0.0.1");
        t.failed(Account("bob"), &c, 0).unwrap();
        t.failed(Account("bob"), &c, 1000).unwrap();
        t.succeeded("BOB").unwrap();
        assert!(t.check(Account("bob"), &c, 1001).is_ok());
        t.failed(Account("bob"), &c, 1001).unwrap();
        assert_eq!(t.failed(Account("bob"), &c, 3001).unwrap(), Outcome::Counted, "the count started again");
    }

    #[test]
    fn every_spelling_of_an_account_counts_against_it() {
        let t = throttle();
        // Three failures from three addresses, each spelling "José" another way.
        t.failed(Account("jos\u{e9}"), &from("10.0.0.1"), 0).unwrap();
        t.failed(Account("jose\u{301}"), &from("10.0.0.2"), 1000).unwrap();
        assert_eq!(t.failed(Account("JOSE\u{301}"), &from("10.0.0.3"), 3000).unwrap(), Outcome::LockedOut);
        assert!(matches!(t.check(Account("Jos\u{c9}"), &from("10.0.0.4"), 3001), Err(Error::Throttled { .. })));
        t.succeeded("JOSE\u{301}").unwrap();
        assert!(t.check(Account("jos\u{e9}"), &from("10.0.0.4"), 3002).is_ok(), "a success clears every spelling");
    }

    #[test]
    fn an_address_guessing_many_accounts_locks() {
        let t = throttle();
        let c = from("10.0.0.9");
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            assert_eq!(t.failed(Account(name), &c, i as i64).unwrap(), Outcome::Counted);
        }
        assert_eq!(t.failed(Account("e"), &c, 10).unwrap(), Outcome::AddressLockedOut);
        assert!(matches!(t.check(Account("someone-new"), &c, 20), Err(Error::Throttled { .. })));
        assert!(t.check(Account("someone-new"), &from("10.0.0.10"), 20).is_ok());
    }

    #[test]
    fn a_shared_credential_holds_back_the_address_that_failed_never_the_owner() {
        let t = throttle();
        let (guesser, owner) = (from("10.0.0.66"), from("10.0.0.1"));
        for i in 0..2 {
            assert_eq!(t.failed(Subject::Shared("client:app"), &guesser, i).unwrap(), Outcome::Counted);
        }
        assert_eq!(t.failed(Subject::Shared("client:app"), &guesser, 2).unwrap(), Outcome::LockedOut);
        assert!(matches!(t.check(Subject::Shared("client:app"), &guesser, 3), Err(Error::Throttled { .. })));
        assert!(t.check(Subject::Shared("client:app"), &owner, 3).is_ok(), "the owner's address is free");
        assert!(t.check(Account("client:app"), &owner, 3).is_ok(), "and nothing counted against the name itself");
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let t = throttle();
        for i in 0..4u16 {
            let c = Caller::new(Some(format!("2001:db8:1:2::{i:x}").parse().unwrap()), "test");
            assert_eq!(t.failed(Account(&format!("user{i}")), &c, i64::from(i)).unwrap(), Outcome::Counted);
        }
        let fifth = Caller::new(Some("2001:db8:1:2:ffff::5".parse().unwrap()), "test");
        assert_eq!(t.failed(Account("user4"), &fifth, 10).unwrap(), Outcome::AddressLockedOut);
        let same_64 = Caller::new(Some("2001:db8:1:2:abcd::1".parse().unwrap()), "test");
        assert!(matches!(t.check(Account("someone-new"), &same_64, 20), Err(Error::Throttled { .. })));
        let next_64 = Caller::new(Some("2001:db8:1:3::1".parse().unwrap()), "test");
        assert!(t.check(Account("someone-new"), &next_64, 20).is_ok());
        // An IPv4 address written as IPv6 is that IPv4 address.
        assert_eq!(address_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
