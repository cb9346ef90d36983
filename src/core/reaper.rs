//! The reaper: deletes what has expired or been revoked, on an interval, in bounded batches.

use std::sync::atomic::AtomicU64;

use super::{now_ms, Core, Error};
use crate::store::{audit, auth_sessions, devices, links, signing_keys, throttle, tokens, Db};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub tokens: usize,
    pub links: usize,
    pub nonces: usize,
    pub audit: usize,
    /// IAMPASS sign-ins a day past their end.
    pub signins: usize,
}

/// The advisory locks of the reaper, one per kind of row (added to this): with several nodes, one
/// reaps a kind at a time.
const REAPER_LOCK: i64 = 0x6761_7465_0100;

impl Core {
    /// One sweep: each kind of row deleted `reaper.batch` rows per transaction, so that a write
    /// waits at most for one batch, until a batch finds fewer than that. With several nodes, a
    /// batch that finds another node's reaper at work is skipped.
    pub fn reap(&self) -> Result<Reaped, Error> {
        // Idle tokens are judged by their last use: fold the uses kept in memory in first. They
        // are judged as of a time before the fold began, so that a token used while the fold runs
        // (its use kept in memory, not yet in its row) was alive by its row at that time too, and
        // is not taken for idle.
        let now = now_ms();
        self.fold_uses()?;
        let retention = self.config.audit.retention.millis();
        // Hourly quotas (`Throttle::take`) live beside the failure counts.
        let keep_throttle =
            self.config.throttle.window.millis().max(self.config.throttle.lockout.millis()).max(3_600_000);
        let shared = self.store.is_shared();
        let c = &self.counters;
        let reaped = Reaped {
            tokens: self.reap_tokens(now)?,
            links: self.reap_batches(2, &c.reaped_links, |tx, n| links::reap(tx, now, n))?,
            nonces: self.reap_batches(3, &c.reaped_nonces, |tx, n| devices::reap_nonces(tx, now, n))?,
            audit: self.reap_batches(4, &c.reaped_audit, |tx, n| audit::reap(tx, now.saturating_sub(retention), n))?,
            // Kept a day past their end, so that a late status call still reads how it ended.
            signins: self.reap_batches(6, &AtomicU64::new(0), |tx, n| {
                auth_sessions::reap(tx, now.saturating_sub(86_400_000), n)
            })?,
        };
        // OpenID Connect signing keys retired long enough that no token they signed is still alive.
        self.reap_batches(12, &AtomicU64::new(0), |tx, n| signing_keys::reap(tx, now, n))?;
        // Codes, grants, client tokens and device codes past their end (a grant ends with the
        // last token of its family, so a live family keeps its scope and sid).
        for which in 0..crate::store::oidc::EXPIRING.len() {
            self.reap_batches(13 + which as i64, &AtomicU64::new(0), |tx, n| {
                crate::store::oidc::reap(tx, which, now, n)
            })?;
        }
        // Requests nobody answered in time become `timeout`, each an audit event.
        self.time_out_signins()?;
        if shared {
            self.reap_batches(5, &AtomicU64::new(0), |tx, n| throttle::reap(tx, now, keep_throttle, n))?;
        }
        self.nonces.reap(now);
        super::stats::bump(&c.reaper_sweeps, 1);
        if reaped != Reaped::default() {
            log::info!(
                "reaper removed {} tokens, {} links, {} nonces, {} audit events, {} sign-ins",
                reaped.tokens,
                reaped.links,
                reaped.nonces,
                reaped.audit,
                reaped.signins
            );
        } else {
            log::debug!("reaper removed nothing");
        }
        Ok(reaped)
    }

    /// For kinds whose dead rows an index finds: runs `delete` (at most `reaper.batch` rows) in one
    /// write after another until one deletes fewer; answers how many rows went. Each batch is its
    /// own transaction, so a write waiting meanwhile goes between two of them. A batch that finds
    /// another node's reaper at work ends this node's sweep of that kind: the other goes on.
    fn reap_batches(
        &self,
        kind: i64,
        removed: &AtomicU64,
        delete: impl Fn(&Db, i64) -> Result<usize, crate::store::Error> + Sync,
    ) -> Result<usize, Error> {
        let batch = i64::from(self.config.reaper.batch);
        let mut total = 0;
        while !self.stopping() {
            let Some(n) = self.reap_batch(kind, removed, |tx| delete(tx, batch))? else {
                return Ok(total);
            };
            total += n;
            if (n as i64) < batch {
                break;
            }
        }
        Ok(total)
    }

    /// Tokens: a window of the table is read on a reading connection (no index finds the dead
    /// ones, see `tokens::dead_range`), and the writer taken only to delete the dead ones found,
    /// at most `reaper.batch` per transaction. A sweep examines at most `reaper.scan` tokens and
    /// the next goes on from there; at the end of the table the walk starts again.
    fn reap_tokens(&self, now: i64) -> Result<usize, Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let batch = i64::from(self.config.reaper.batch);
        let mut budget = i64::from(self.config.reaper.scan);
        let (mut total, mut after) = (0, self.reaper_cursor.load(Relaxed));
        while budget > 0 && !self.stopping() {
            let scan = budget.min((batch * 20).max(10_000));
            let Some((upto, dead)) = self.store.with(|c| tokens::dead_range(c, now, after, scan, batch))? else {
                after = 0;
                break;
            };
            if dead > 0 {
                let removed = &self.counters.reaped_tokens;
                let Some(n) = self.reap_batch(1, removed, |tx| tokens::delete_dead(tx, now, after, upto))? else {
                    break;
                };
                total += n;
            }
            // Ids are handed out in order, so the span of ids is at least the rows examined.
            budget -= (upto - after).min(scan);
            after = upto;
        }
        self.reaper_cursor.store(after, Relaxed);
        Ok(total)
    }

    /// One batch in a write of its own, under the reaper's lock of `kind` (None: another node
    /// holds it); `removed` counts the rows as it commits, for /metrics. A batch that deleted rows
    /// is followed by a pause as long as it took: a sweep through a backlog takes at most half of
    /// the writer's time (each deleted token dirties pages of two indexes keyed at random, and
    /// writes queued behind a run of batches waited hundreds of milliseconds without it).
    pub(super) fn reap_batch(
        &self,
        kind: i64,
        removed: &AtomicU64,
        delete: impl Fn(&Db) -> Result<usize, crate::store::Error> + Sync,
    ) -> Result<Option<usize>, Error> {
        let started = std::time::Instant::now();
        let n = self.store.write(|tx| -> Result<_, Error> {
            if !crate::store::try_cluster_lock(tx, REAPER_LOCK + kind)? {
                return Ok(None);
            }
            Ok(Some(delete(tx)?))
        })?;
        super::stats::bump(&self.counters.reaper_batches, 1);
        super::stats::bump(removed, n.unwrap_or(0) as u64);
        if n.unwrap_or(0) > 0 && !self.stopping() {
            std::thread::sleep(started.elapsed());
        }
        Ok(n)
    }
}
