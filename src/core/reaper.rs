//! The reaper: deletes what has expired or been revoked, on an interval.

use super::{now_ms, Core, Error};
use crate::store::{audit, devices, links, tokens};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub tokens: usize,
    pub links: usize,
    pub nonces: usize,
    pub audit: usize,
}

impl Core {
    /// One sweep.
    pub fn reap(&self) -> Result<Reaped, Error> {
        // Idle tokens are judged by their last use: write the uses kept in memory first.
        self.flush_touches()?;
        let now = now_ms();
        let retention = self.config.audit.retention.millis();
        let reaped = self.store.write(|tx| {
            Ok(Reaped {
                tokens: tokens::reap(tx, now)?,
                links: links::reap(tx, now)?,
                nonces: devices::reap_nonces(tx, now)?,
                audit: audit::reap(tx, now.saturating_sub(retention))?,
            })
        })?;
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
}
