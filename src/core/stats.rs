//! Counters the core keeps for `/metrics`: plain atomics, no locks on the hot paths.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Core;

#[derive(Default)]
pub struct Counters {
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub throttled: AtomicU64,
    pub lockouts: AtomicU64,
    /// Failures not written to the audit log because their caller was already held back.
    pub audit_not_written: AtomicU64,
    pub reaped_tokens: AtomicU64,
    pub reaped_links: AtomicU64,
    pub reaped_nonces: AtomicU64,
    pub reaped_audit: AtomicU64,
    /// Transactions of the reaper (each a bounded batch).
    pub reaper_batches: AtomicU64,
    /// Sweeps of the reaper finished.
    pub reaper_sweeps: AtomicU64,
    /// Token uses folded from SQLite's log into their tokens (see `core::uses`).
    pub uses_folded: AtomicU64,
}

pub fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A reading of every counter and gauge.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub throttled: u64,
    pub lockouts: u64,
    pub audit_not_written: u64,
    pub hash_waiting: u64,
    pub hash_rejected: u64,
    pub reaped_tokens: u64,
    pub reaped_links: u64,
    pub reaped_nonces: u64,
    pub reaped_audit: u64,
    pub reaper_batches: u64,
    pub reaper_sweeps: u64,
    pub pool_waits: u64,
    pub pool_open: u64,
    pub pool_idle: u64,
    pub db_writes: u64,
    pub db_commits: u64,
    /// PostgreSQL: transactions run again (serialization failure, deadlock, lost connection).
    pub db_retries: u64,
    /// PostgreSQL: calls answered 503 because the store could not be reached or could not commit.
    pub db_unavailable: u64,
    pub nonces_kept: u64,
    pub uses_folded: u64,
    /// Tokens whose last use is kept in memory, not yet in their rows.
    pub uses_unfolded: u64,
}

impl Core {
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hash_waiting, hash_rejected) = self.hasher.queue_stats();
        let (pool_waits, pool_open, pool_idle) = self.store.pool_stats();
        let (db_writes, db_commits) = self.store.commit_stats();
        let (db_retries, db_unavailable) = self.store.fault_stats();
        Stats {
            logins_ok: get(&c.logins_ok),
            logins_failed: get(&c.logins_failed),
            throttled: get(&c.throttled),
            lockouts: get(&c.lockouts),
            audit_not_written: get(&c.audit_not_written),
            hash_waiting,
            hash_rejected,
            reaped_tokens: get(&c.reaped_tokens),
            reaped_links: get(&c.reaped_links),
            reaped_nonces: get(&c.reaped_nonces),
            reaped_audit: get(&c.reaped_audit),
            reaper_batches: get(&c.reaper_batches),
            reaper_sweeps: get(&c.reaper_sweeps),
            uses_folded: get(&c.uses_folded),
            uses_unfolded: {
                let (pending, logged) = self.uses.kept();
                (pending + logged) as u64
            },
            pool_waits,
            pool_open,
            pool_idle,
            db_writes,
            db_commits,
            db_retries,
            db_unavailable,
            nonces_kept: self.nonces.len() as u64,
        }
    }
}
