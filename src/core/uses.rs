//! Uses of tokens with an idle timeout: a token check is a use, and the idle timeout counts from
//! the last one.
//!
//! A check records its use in memory (`Uses::record`); once a second the uses are written
//! together (`Core::flush_touches`). With SQLite they are appended to a log (`token_uses`) in a
//! file of its own beside the database (`store::uses_log_path`, through its own connection), and
//! folded into their tokens' rows before each reaper sweep, in id order and paced batches
//! (`Core::fold_uses`): a use written straight into its token dirtied one page of the token table
//! chosen at random, which on a large table cost more than the check itself, and a log in the
//! database file made it commit every second, after which every reading connection faults the
//! pages of the file in again. So a server that only answers checks commits nothing to the
//! database file between two sweeps. Until folded, a use is kept in memory, where checks and the
//! reaper find it, and the log is read back at start, so a crash loses at most a second of uses
//! (a token can then only expire that much earlier). The fold writes the tokens, then empties the
//! log of what it folded: a crash between the two only folds the same uses again at the next
//! sweep, which changes nothing (a token's last use never moves back, `tokens::touch`). With
//! PostgreSQL the nodes share uses through the tokens' rows, written once a second.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{Core, Error};
use crate::store::tokens;

/// Uses kept unfolded at most; past this many tokens a flush writes into the tokens' rows, as
/// with PostgreSQL, until the next fold (about 30 MB of memory).
const MAX_UNFOLDED: usize = 1_000_000;

/// The uses of tokens not yet in their rows, by token id.
#[derive(Default)]
pub struct Uses(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    /// Not written anywhere yet.
    pending: HashMap<i64, i64>,
    /// In the log (SQLite), not yet folded into their tokens.
    logged: HashMap<i64, i64>,
    /// The log's last sequence number that `logged` holds.
    logged_upto: i64,
}

/// Keeps `at` as token `id`'s last use in `map`, unless a later one is there.
fn keep_last(map: &mut HashMap<i64, i64>, id: i64, at: i64) {
    let e = map.entry(id).or_insert(at);
    *e = (*e).max(at);
}

/// The uses of `map`, in id order (the order the token table is written in).
fn sorted(map: &HashMap<i64, i64>) -> Vec<(i64, i64)> {
    let mut list: Vec<(i64, i64)> = map.iter().map(|(i, a)| (*i, *a)).collect();
    list.sort_unstable();
    list
}

impl Uses {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last use of token `id` kept here, if any.
    pub fn last(&self, id: i64) -> Option<i64> {
        let k = self.lock();
        match (k.pending.get(&id), k.logged.get(&id)) {
            (Some(a), Some(b)) => Some(*a.max(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    /// Records a use of token `id` at `at`.
    pub fn record(&self, id: i64, at: i64) {
        keep_last(&mut self.lock().pending, id, at);
    }

    /// Uses not written yet (in id order), and whether they go into the log.
    fn pending(&self) -> (Vec<(i64, i64)>, bool) {
        let k = self.lock();
        (sorted(&k.pending), k.logged.len() < MAX_UNFOLDED)
    }

    /// `written` are written: they leave `pending` (unless a later use came meanwhile), and when
    /// they went into the log up to `upto`, they are kept in `logged` until folded.
    fn written(&self, written: &[(i64, i64)], logged_upto: Option<i64>) {
        let mut k = self.lock();
        for (id, at) in written {
            if k.pending.get(id) == Some(at) {
                k.pending.remove(id);
            }
            if logged_upto.is_some() {
                keep_last(&mut k.logged, *id, *at);
            }
        }
        if let Some(upto) = logged_upto {
            k.logged_upto = k.logged_upto.max(upto);
        }
    }

    /// The logged uses to fold (in id order) and the log's last sequence number they cover.
    fn to_fold(&self) -> (Vec<(i64, i64)>, i64) {
        let k = self.lock();
        (sorted(&k.logged), k.logged_upto)
    }

    /// `folded` are in their tokens' rows: forgotten here, unless a later use came meanwhile.
    fn folded(&self, folded: &[(i64, i64)]) {
        let mut k = self.lock();
        for (id, at) in folded {
            if k.logged.get(id) == Some(at) {
                k.logged.remove(id);
            }
        }
        if k.logged.capacity() > 4 * k.logged.len().max(1024) {
            k.logged.shrink_to_fit();
        }
    }

    /// How many uses are kept (pending, logged): for /metrics and tests.
    pub fn kept(&self) -> (usize, usize) {
        let k = self.lock();
        (k.pending.len(), k.logged.len())
    }
}

impl Core {
    /// Reads SQLite's log of uses back (at start), from its file.
    pub(super) fn load_uses(&self) -> Result<(), Error> {
        if self.store.is_shared() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (uses, upto) = self.store.uses_log(tokens::logged_uses)?;
        self.uses.written(&uses, Some(upto));
        if !uses.is_empty() {
            log::info!("{} token uses read back from the log in {} ms", uses.len(), started.elapsed().as_millis());
        }
        Ok(())
    }

    /// Writes the uses kept in memory: into the log (SQLite, its own file), or into the tokens' rows
    /// (PostgreSQL, or SQLite past `MAX_UNFOLDED` tokens awaiting a fold). Answers how many.
    pub fn flush_touches(&self) -> Result<usize, Error> {
        let (list, log) = self.uses.pending();
        if list.is_empty() {
            return Ok(0);
        }
        if log && !self.store.is_shared() {
            let upto = self.store.uses_log(|tx| tokens::log_uses(tx, &list))?;
            self.uses.written(&list, Some(upto));
        } else {
            self.store.write(|tx| list.iter().try_for_each(|(id, at)| tokens::touch(tx, *id, *at)))?;
            self.uses.written(&list, None);
        }
        Ok(list.len())
    }

    /// Writes every use kept in memory into its token's row (SQLite: folds the log in, by id, a
    /// few reaper batches' worth of rows per transaction, each followed by a pause as long as it
    /// took, then empties the log of what was folded: in its own file, so not in the same
    /// transaction, and a crash between the two folds the same uses again, harmlessly). The reaper calls it before each sweep, so
    /// that idle tokens are judged by their last use. Answers how many tokens it wrote.
    pub fn fold_uses(&self) -> Result<usize, Error> {
        let flushed = self.flush_touches()?;
        if self.store.is_shared() {
            return Ok(flushed);
        }
        let (list, upto) = self.uses.to_fold();
        if list.is_empty() {
            return Ok(0);
        }
        // An update of a row by its key dirties one page, where a deleted token dirties three.
        let batch = (self.config.reaper.batch as usize * 4).max(1);
        let mut done = 0;
        for chunk in list.chunks(batch) {
            if self.stopping() {
                return Ok(done);
            }
            let written = self.reap_batch(7, &self.counters.uses_folded, |tx| {
                chunk.iter().try_for_each(|(id, at)| tokens::touch(tx, *id, *at))?;
                Ok(chunk.len())
            })?;
            if written.is_none() {
                return Ok(done);
            }
            self.uses.folded(chunk);
            done += chunk.len();
        }
        self.store.uses_log(|tx| tokens::forget_uses(tx, upto))?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_use_wins_wherever_it_is_kept() {
        let u = Uses::default();
        assert_eq!(u.last(7), None);
        u.record(7, 100);
        u.record(7, 90);
        assert_eq!(u.last(7), Some(100), "a use never moves back");
        let (pending, log) = u.pending();
        assert_eq!((pending.as_slice(), log), (&[(7, 100)][..], true));
        u.written(&pending, Some(1));
        assert_eq!(u.kept(), (0, 1));
        u.record(7, 120);
        assert_eq!(u.last(7), Some(120), "a pending use is newer than the logged one");
    }

    #[test]
    fn a_use_that_came_during_a_write_or_a_fold_is_kept() {
        let u = Uses::default();
        u.record(1, 10);
        u.record(2, 10);
        let (pending, _) = u.pending();
        // Token 1 is used again while the flush writes: the newer use stays pending.
        u.record(1, 20);
        u.written(&pending, Some(5));
        assert_eq!(u.kept(), (1, 2));
        assert_eq!(u.last(1), Some(20));
        let (fold, upto) = u.to_fold();
        assert_eq!((fold.as_slice(), upto), (&[(1, 10), (2, 10)][..], 5));
        // The newer use is logged while the fold runs: it is not forgotten with the folded one.
        let (pending, _) = u.pending();
        u.written(&pending, Some(6));
        u.folded(&fold);
        assert_eq!(u.kept(), (0, 1));
        assert_eq!(u.last(1), Some(20));
        assert_eq!(u.last(2), None, "folded: the token's row has it");
    }

    #[test]
    fn past_the_cap_uses_go_into_the_tokens_rows() {
        let u = Uses::default();
        let many: Vec<(i64, i64)> = (0..MAX_UNFOLDED as i64).map(|i| (i, 1)).collect();
        u.written(&many, Some(1));
        u.record(-1, 2);
        assert!(!u.pending().1, "no more into the log until a fold");
        u.folded(&many);
        assert!(u.pending().1);
    }
}
