//! The reaper: deletes what has expired or been revoked, on an interval, in bounded batches.

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
        let reaped = Reaped {
            tokens: self.reap_batches(1, |tx, n| tokens::reap(tx, now, n))?,
            links: self.reap_batches(2, |tx, n| links::reap(tx, now, n))?,
            nonces: self.reap_batches(3, |tx, n| devices::reap_nonces(tx, now, n))?,
            audit: self.reap_batches(4, |tx, n| audit::reap(tx, now.saturating_sub(retention), n))?,
        };
        if shared {
            self.reap_batches(5, |tx, n| throttle::reap(tx, now, keep_throttle, n))?;
        }
        self.nonces.reap(now);
        let c = &self.counters;
        super::stats::bump(&c.reaped_tokens, reaped.tokens as u64);
        super::stats::bump(&c.reaped_links, reaped.links as u64);
        super::stats::bump(&c.reaped_nonces, reaped.nonces as u64);
        super::stats::bump(&c.reaped_audit, reaped.audit as u64);
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

    /// Runs `delete` (at most n rows) in one write after another until one deletes fewer than a
    /// batch; answers how many rows went. A batch that finds another node's reaper at work ends
    /// this node's sweep of that kind: the other goes on to the end.
    fn reap_batches(
        &self,
        kind: i64,
        delete: impl Fn(&Db, i64) -> Result<usize, Error> + Sync,
    ) -> Result<usize, Error> {
        let batch = i64::from(self.config.reaper.batch);
        let mut total = 0;
        loop {
            let n = self.store.write(|tx| {
                if !crate::store::try_cluster_lock(tx, REAPER_LOCK + kind)? {
                    return Ok(None);
                }
                delete(tx, batch).map(Some)
            })?;
            match n {
                Some(n) if (n as i64) == batch => total += n,
                Some(n) => return Ok(total + n),
                None => return Ok(total),
            }
        }
    }
}
