//! The one writer of a process, with group commit.
//!
//! Every write transaction of the process runs on one dedicated connection, in turn, under a lock.
//! Writers queue on that lock instead of racing for SQLite's write lock, whose busy handler sleeps
//! for milliseconds at a time (the cause of second-long p99 latencies under concurrent writes).
//!
//! Writes that arrive together share one commit: each runs in a savepoint of the open transaction
//! (a write that fails rolls back its savepoint alone), and a committer thread commits whatever the
//! transaction holds. A writer is answered only after the COMMIT that holds its savepoint has
//! returned, so an answered write is as durable as `synchronous` makes a commit (FULL: an fsync of
//! the WAL), and one fsync covers every write that arrived while the previous one ran.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusqlite::Connection;

use super::Error;

pub(super) struct Writer {
    state: Mutex<State>,
    /// What wakes the committer. A lock of its own: an executor that queues a write must not
    /// wait while a commit holds `state`.
    queue: Mutex<Queue>,
    /// Signalled under `queue`: there is work for the committer.
    work: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Writes sent from async code (`Writer::write_async`), for the committer to run.
    jobs: Vec<Job>,
    /// A parked writer's write waits in the open transaction for a commit.
    parked: bool,
}

struct State {
    conn: Connection,
    /// How to answer each write the open transaction holds (a parked writer or a queued one),
    /// once its commit is known.
    waiting: Vec<Answer>,
    /// Writes committed, and commits made (for /metrics: their ratio is the batch size).
    writes: u64,
    commits: u64,
}

/// A write sent from async code, run by the committer in the open transaction: `None` when it
/// failed (and was answered at once), else how to answer it once the commit is known.
type Job = Box<dyn FnOnce(&mut MutexGuard<'_, State>) -> Option<Answer> + Send>;
/// Answers a write: true when the commit holding it succeeded.
type Answer = Box<dyn FnOnce(bool) + Send>;

/// A writer parked until the commit of its write.
struct Waiter {
    thread: std::thread::Thread,
    /// PENDING, then COMMITTED or FAILED.
    outcome: AtomicU8,
}

const PENDING: u8 = 0;
const COMMITTED: u8 = 1;
const FAILED: u8 = 2;

thread_local! {
    /// Set while this thread runs a write: a nested write would wait for itself.
    static IN_WRITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct InWrite;

impl InWrite {
    fn enter() -> Result<InWrite, Error> {
        if IN_WRITE.with(|w| w.replace(true)) {
            return Err(Error::internal("a write was started inside another write"));
        }
        Ok(InWrite)
    }
}

impl Drop for InWrite {
    fn drop(&mut self) {
        IN_WRITE.with(|w| w.set(false));
    }
}

/// Runs one statement without text in it, prepared once per connection.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The savepoint of one write: rolled back when dropped unreleased (an error, or a panic in the
/// write), so nothing of a failed write reaches the commit.
struct Savepoint<'c>(&'c Connection, bool);

impl<'c> Savepoint<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Savepoint<'c>> {
        exec(conn, "SAVEPOINT w")?;
        Ok(Savepoint(conn, false))
    }

    fn release(mut self) -> rusqlite::Result<()> {
        exec(self.0, "RELEASE w")?;
        self.1 = true;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.1 {
            let _ = exec(self.0, "ROLLBACK TO w");
            let _ = exec(self.0, "RELEASE w");
        }
    }
}

impl Writer {
    /// Takes `conn` as the writer and starts its committer thread, which ends once the writer is
    /// dropped.
    pub(super) fn start(conn: Connection) -> std::io::Result<Arc<Writer>> {
        let writer = Arc::new(Writer {
            state: Mutex::new(State { conn, waiting: Vec::new(), writes: 0, commits: 0 }),
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
        });
        let weak = Arc::downgrade(&writer);
        std::thread::Builder::new().name("gatehouse-commit".into()).spawn(move || committer(weak))?;
        Ok(writer)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in a savepoint of the open transaction and returns its result once the
    /// transaction has been committed. A failing `f` changes nothing and is answered at once.
    pub(super) fn write<T, E: From<Error>>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E> {
        let _guard = InWrite::enter()?;
        let mut st = self.lock();
        let out = run(&mut st, f)?;
        let me = Arc::new(Waiter { thread: std::thread::current(), outcome: AtomicU8::new(PENDING) });
        let waiter = Arc::clone(&me);
        st.waiting.push(Box::new(move |committed: bool| {
            waiter.outcome.store(if committed { COMMITTED } else { FAILED }, Ordering::Release);
            waiter.thread.unpark();
        }));
        drop(st);
        self.queue().parked = true;
        self.work.notify_one();
        loop {
            match me.outcome.load(Ordering::Acquire) {
                PENDING => std::thread::park(),
                COMMITTED => return Ok(out),
                _ => return Err(Error::internal("the commit of a write failed").into()),
            }
        }
    }

    /// [`Writer::write`] for async code, for a small write: the committer thread runs `f` in the
    /// open transaction, and the future resolves once the commit holding it is done, with no
    /// thread waiting for it. The write is queued at once, before the future is first polled.
    /// `f` runs on the committer, so it must be short and use nothing but its connection (a
    /// `write` inside it fails at once; a panic in it is answered as an error).
    pub(super) fn write_async<T, E, F>(&self, f: F) -> impl std::future::Future<Output = Result<T, E>> + use<T, E, F>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |st: &mut MutexGuard<'_, State>| -> Option<Answer> {
            match run(st, f) {
                Ok(out) => Some(Box::new(move |committed: bool| {
                    let _ = tx.send(if committed {
                        Ok(out)
                    } else {
                        Err(Error::internal("the commit of a write failed").into())
                    });
                })),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    None
                }
            }
        });
        self.queue().jobs.push(job);
        self.work.notify_one();
        async move { rx.await.unwrap_or_else(|_| Err(Error::internal("a queued write was dropped unanswered").into())) }
    }

    /// Starts a thread that checkpoints the WAL on `conn`, a connection of its own, every `every`
    /// while commits go on, until the writer is dropped. A passive checkpoint runs beside the
    /// writer and its readers and waits for neither, so the pages are copied off the commit path;
    /// the writer's own checkpoint (every `WAL_CHECKPOINT_PAGES`) then finds little left to copy,
    /// and only it can let the WAL start over from its beginning.
    pub(super) fn start_checkpointer(self: &Arc<Self>, conn: Connection, every: Duration) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new().name("gatehouse-ckpt".into()).spawn(move || {
            let mut seen = 0;
            loop {
                std::thread::sleep(every);
                let Some(w) = weak.upgrade() else { return };
                let (_, commits) = w.stats();
                drop(w);
                if commits == seen {
                    continue;
                }
                seen = commits;
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    log::warn!("checkpoint of the write-ahead log failed: {e}");
                }
            }
        })?;
        Ok(())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (writes committed, commits made).
    pub(super) fn stats(&self) -> (u64, u64) {
        let st = self.lock();
        (st.writes, st.commits)
    }
}

/// Commits the open transaction whenever it holds writes, until the writer is dropped.
fn committer(writer: Weak<Writer>) {
    loop {
        let Some(w) = writer.upgrade() else { return };
        let jobs = {
            let mut q = w.queue();
            // Every writer sets `parked` or queues a job under `queue` after its write is in
            // `state`, so nothing arrives unseen between this look and the wait.
            if !q.parked && q.jobs.is_empty() {
                q = w.work.wait_timeout(q, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner()).0;
            }
            q.parked = false;
            std::mem::take(&mut q.jobs)
        };
        let mut st = w.lock();
        if !jobs.is_empty() {
            // The queued writes run here, in turn with the parked writers' (under the lock).
            let _guard = InWrite::enter();
            for job in jobs {
                // A panicking write is rolled back by its savepoint and answered with an error
                // (its sender is dropped); the committer goes on.
                let st = &mut st;
                if let Ok(Some(answer)) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(st))) {
                    st.waiting.push(answer);
                }
            }
        }
        if st.waiting.is_empty() {
            continue;
        }
        let count = st.waiting.len();
        let committed = match exec(&st.conn, "COMMIT") {
            Ok(()) => {
                st.writes += count as u64;
                st.commits += 1;
                true
            }
            Err(e) => {
                log::error!("commit of {count} writes failed: {e}");
                if !st.conn.is_autocommit() {
                    let _ = exec(&st.conn, "ROLLBACK");
                }
                false
            }
        };
        let batch = std::mem::take(&mut st.waiting);
        // The writers run on once the lock is free.
        drop(st);
        settle(batch, committed);
    }
}

/// Runs `f` in a savepoint of the open transaction, beginning one if need be. A failing `f`
/// changes nothing; when its failure took the whole transaction with it (SQLite rolls back on
/// I/O errors), the writes the transaction held are answered as failed.
fn run<T, E: From<Error>>(st: &mut MutexGuard<'_, State>, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E> {
    if !st.waiting.is_empty() && st.conn.is_autocommit() {
        lost(st);
    }
    if st.conn.is_autocommit() {
        // BEGIN IMMEDIATE: the write lock now, so no statement fails half-way on an upgrade.
        exec(&st.conn, "BEGIN IMMEDIATE").map_err(Error::from)?;
    }
    let out = Savepoint::begin(&st.conn)
        .map_err(|e| E::from(Error::from(e)))
        .and_then(|sp| f(sp.0).and_then(|out| sp.release().map(|()| out).map_err(|e| E::from(Error::from(e)))));
    if out.is_err() {
        if !st.waiting.is_empty() && st.conn.is_autocommit() {
            lost(st);
        } else if st.waiting.is_empty() && !st.conn.is_autocommit() {
            // Nothing else in the transaction: end it rather than hold the lock.
            let _ = exec(&st.conn, "ROLLBACK");
        }
    }
    out
}

/// The open transaction ended without a commit (rolled back by SQLite): its writes failed.
fn lost(st: &mut State) {
    log::error!("{} writes were rolled back by the database", st.waiting.len());
    settle(std::mem::take(&mut st.waiting), false);
}

/// Tells the writers of a batch how it ended.
fn settle(batch: Vec<Answer>, committed: bool) {
    for answer in batch {
        answer(committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, Arc<Writer>, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);")
            .unwrap();
        (dir, Writer::start(conn).unwrap(), path)
    }

    fn count(path: &std::path::Path) -> i64 {
        Connection::open(path).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn concurrent_writes_are_all_committed_and_share_commits() {
        let (_dir, w, path) = writer();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        w.write(|c| -> Result<_, Error> {
                            Ok(c.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [t * 1000 + i])?)
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every answered write is visible to another connection: it was committed before the answer.
        assert_eq!(count(&path), 800);
        let (writes, commits) = w.stats();
        assert_eq!(writes, 800);
        assert!(commits < writes, "{commits} commits for {writes} writes: none were shared");
    }

    #[test]
    fn a_failed_write_changes_nothing_and_spares_its_batch() {
        let (_dir, w, path) = writer();
        let failed = w.write(|c| {
            c.execute("INSERT INTO t (k, v) VALUES (1, 'half')", [])?;
            Err::<(), _>(Error::Conflict("k (refused after a statement)".into()))
        });
        assert!(matches!(failed, Err(Error::Conflict(_))));
        w.write(|c| -> Result<_, Error> { Ok(c.execute("INSERT INTO t (k, v) VALUES (2, 'kept')", [])?) }).unwrap();
        // A constraint violation inside a batch fails that write alone.
        let dup = w.write(|c| -> Result<_, Error> { Ok(c.execute("INSERT INTO t (k, v) VALUES (2, 'dup')", [])?) });
        assert!(dup.is_err());
        assert_eq!(count(&path), 1);
    }

    #[test]
    fn a_panicking_write_is_rolled_back_and_the_writer_goes_on() {
        let (_dir, w, path) = writer();
        let w2 = Arc::clone(&w);
        let panicked = std::thread::spawn(move || {
            let _ = w2.write(|c| -> Result<(), Error> {
                c.execute("INSERT INTO t (k, v) VALUES (7, 'partial')", []).unwrap();
                panic!("a bug in a write");
            });
        })
        .join();
        assert!(panicked.is_err());
        w.write(|c| -> Result<_, Error> { Ok(c.execute("INSERT INTO t (k, v) VALUES (8, 'after')", [])?) }).unwrap();
        let keys: Vec<i64> = Connection::open(&path)
            .unwrap()
            .prepare("SELECT k FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, vec![8]);
    }

    #[test]
    fn async_writes_share_commits_with_parked_ones_and_fail_alone() {
        let (_dir, w, path) = writer();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let parked: Vec<_> = (0..4)
            .map(|t| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        w.write(|c| -> Result<_, Error> {
                            Ok(c.execute("INSERT INTO t (k, v) VALUES (?1, 'sync')", [t * 1000 + i])?)
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        rt.block_on(async {
            let writes: Vec<_> = (0..200)
                .map(|i| {
                    w.write_async(move |c| -> Result<_, Error> {
                        Ok(c.execute("INSERT INTO t (k, v) VALUES (?1, 'async')", [10_000 + i])?)
                    })
                })
                .collect();
            for f in writes {
                assert_eq!(f.await.unwrap(), 1);
            }
            // A failing write and a panicking one are answered with errors and change nothing.
            let failed = w.write_async(|c| {
                c.execute("INSERT INTO t (k, v) VALUES (-1, 'half')", [])?;
                Err::<(), _>(Error::Conflict("k (refused after a statement)".into()))
            });
            assert!(matches!(failed.await, Err(Error::Conflict(_))));
            let panicked = w.write_async(|c| -> Result<(), Error> {
                c.execute("INSERT INTO t (k, v) VALUES (-2, 'partial')", []).unwrap();
                panic!("a bug in a write");
            });
            assert!(matches!(panicked.await, Err(Error::Internal(_))));
            // A write inside a queued write fails instead of waiting for itself.
            let w2 = Arc::clone(&w);
            let nested = w.write_async(move |_| -> Result<_, Error> {
                Ok(w2.write(|c| -> Result<_, Error> { Ok(c.execute("INSERT INTO t (k, v) VALUES (-3, 'x')", [])?) }))
            });
            assert!(matches!(nested.await, Ok(Err(Error::Internal(_)))));
            let after = w.write_async(|c| -> Result<_, Error> {
                Ok(c.execute("INSERT INTO t (k, v) VALUES (-4, 'after')", [])?)
            });
            assert_eq!(after.await.unwrap(), 1);
        });
        for t in parked {
            t.join().unwrap();
        }
        // Every answered write is visible to another connection: it was committed before the answer.
        assert_eq!(count(&path), 200 + 200 + 1);
        let (writes, commits) = w.stats();
        assert!(commits < writes, "{commits} commits for {writes} writes");
    }

    #[test]
    fn the_checkpointer_copies_committed_pages_into_the_database_file() {
        let (_dir, w, path) = writer();
        w.start_checkpointer(Connection::open(&path).unwrap(), Duration::from_millis(10)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        // 50 rows of 8 KiB: far below the writer's own checkpoint (1000 pages by default).
        for i in 0..50 {
            w.write(|c| -> Result<_, Error> {
                Ok(c.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![i, "x".repeat(8192)])?)
            })
            .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while size() < before + 50 * 8192 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(size() >= before + 50 * 8192, "the file grew from {before} to {} bytes only", size());
    }

    #[test]
    fn a_write_inside_a_write_fails_instead_of_waiting_for_itself() {
        let (_dir, w, path) = writer();
        let inner = w.write(|_| -> Result<_, Error> {
            Ok(w.write(|c| -> Result<_, Error> { Ok(c.execute("INSERT INTO t (k, v) VALUES (1, 'x')", [])?) }))
        });
        assert!(matches!(inner, Ok(Err(Error::Internal(_)))));
        assert_eq!(count(&path), 0);
    }
}
