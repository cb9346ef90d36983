//! The reaper: deletes what has expired or been revoked, on an interval.

use super::{now_ms, Core, Error};
use crate::store::{devices, links, tokens};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub tokens: usize,
    pub links: usize,
    pub nonces: usize,
}

impl Core {
    /// One sweep.
    pub fn reap(&self) -> Result<Reaped, Error> {
        let now = now_ms();
        let reaped = self.store.write(|tx| {
            Ok(Reaped {
                tokens: tokens::reap(tx, now)?,
                links: links::reap(tx, now)?,
                nonces: devices::reap_nonces(tx, now)?,
            })
        })?;
        if reaped != Reaped::default() {
            log::info!("reaper removed {} tokens, {} links, {} nonces", reaped.tokens, reaped.links, reaped.nonces);
        } else {
            log::debug!("reaper removed nothing");
        }
        Ok(reaped)
    }
}
