//! The reaper: deletes what has expired or been revoked, on an interval, in bounded batches.

use std::sync::atomic::AtomicU64;

use super::{now_ms, Core, Error};
use crate::store::{audit, devices, links, throttle, tokens, Db};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub tokens: usize,
    pub links: usize,
    pub nonces: usize,
    pub audit: usize,
}

/// The advisory locks of the reaper, one per kind of row (added to this): with several nodes, one
/// reaps a kind at a time.
const REAPER_LOCK: i64 = 0x6761_7465_0100;

impl Core {
    /// One sweep: each kind of row deleted `reaper.batch` rows per transaction, so that a write
    /// waits at most for one batch, until a batch finds fewer than that. With several nodes, a
    /// batch that finds another node's reaper at work is skipped.
    pub fn reap(&self) -> Result<Reaped, Error> {
        // Idle tokens are judged by their last use: write the uses kept in memory first.
        self.flush_touches()?;
        let now = now_ms();
        let retention = self.config.audit.retention.millis();
        let keep_throttle = self.config.throttle.window.millis().max(self.config.throttle.lockout.millis());
        let shared = self.store.is_shared();
        let c = &self.counters;
        let reaped = Reaped {
            tokens: self.reap_batches(1, &c.reaped_tokens, |tx, n, after| tokens::reap(tx, now, after, n))?,
            links: self.reap_batches(2, &c.reaped_links, |tx, n, _| until_short(links::reap(tx, now, n), n))?,
            nonces: self
                .reap_batches(3, &c.reaped_nonces, |tx, n, _| until_short(devices::reap_nonces(tx, now, n), n))?,
            audit: self.reap_batches(4, &c.reaped_audit, |tx, n, _| {
                until_short(audit::reap(tx, now.saturating_sub(retention), n), n)
            })?,
        };
        if shared {
            let unused = AtomicU64::new(0);
            self.reap_batches(5, &unused, |tx, n, _| until_short(throttle::reap(tx, now, keep_throttle, n), n))?;
        }
        self.nonces.reap(now);
        if reaped != Reaped::default() {
            log::info!(
                "reaper removed {} tokens, {} links, {} nonces, {} audit events",
                reaped.tokens,
                reaped.links,
                reaped.nonces,
                reaped.audit
            );
        } else {
            log::debug!("reaper removed nothing");
        }
        Ok(reaped)
    }

    /// Runs `batch` in one write after another until it says the sweep is over; answers how many
    /// rows went. A batch gets `reaper.batch` and the cursor the previous one answered (0 at
    /// first), and answers how many rows it deleted and the next cursor (None: done). Each batch is
    /// its own transaction, so a write waiting meanwhile goes between two of them; `removed` counts
    /// the rows as each batch commits, for /metrics. A batch that
    /// finds another node's reaper at work ends this node's sweep of that kind: the other goes on.
    fn reap_batches(
        &self,
        kind: i64,
        removed: &AtomicU64,
        batch: impl Fn(&Db, i64, i64) -> Result<(usize, Option<i64>), Error> + Sync,
    ) -> Result<usize, Error> {
        let size = i64::from(self.config.reaper.batch);
        let (mut total, mut cursor) = (0, 0);
        loop {
            let done = self.store.write(|tx| {
                if !crate::store::try_cluster_lock(tx, REAPER_LOCK + kind)? {
                    return Ok(None);
                }
                batch(tx, size, cursor).map(Some)
            })?;
            super::stats::bump(&self.counters.reaper_batches, 1);
            let Some((n, next)) = done else { return Ok(total) };
            super::stats::bump(removed, n as u64);
            total += n;
            match next {
                Some(next) => cursor = next,
                None => return Ok(total),
            }
        }
    }
}

/// For kinds whose dead rows an index finds: another batch while the last one was full.
fn until_short(deleted: Result<usize, Error>, batch: i64) -> Result<(usize, Option<i64>), Error> {
    deleted.map(|n| (n, ((n as i64) == batch).then_some(0)))
}
