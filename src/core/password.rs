//! Argon2id on a fixed pool of worker threads, each with its own preallocated memory.
//!
//! - At most `workers` hashes run at once, on threads of their own at a lower scheduling priority,
//!   so a flood of logins leaves the cores to token checks and management calls first.
//! - Each worker hashes into the same `memory_kib` buffer every time: the memory of hashing is at
//!   most `workers x memory_kib`. (Letting the crate allocate per hash on whichever thread asks
//!   made glibc keep gigabytes in per-thread arenas under a login flood.) A worker allocates its
//!   buffer at its first job and frees it after `IDLE_RELEASE` without work, so an idle server
//!   holds none.
//! - At most `queue` hashes wait; beyond that a sign-in is turned away (`Error::Busy`, 503).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Mutex;

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;

use super::crypto::{ct_eq, random_bytes, Secret};
use super::{internal, Error};
use crate::config;

const OUTPUT_LEN: usize = 32;
/// A worker without work for this long gives its memory back.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(30);

enum Job {
    Hash { password: Secret, reply: mpsc::Sender<Result<String, Error>> },
    Verify { password: Secret, phc: String, reply: mpsc::Sender<Result<bool, Error>> },
}

pub struct Hasher {
    jobs: SyncSender<Job>,
    waiting: std::sync::Arc<AtomicUsize>,
    /// How many hashes may wait.
    capacity: usize,
    rejected: AtomicU64,
    /// A hash of a random password, verified for unknown accounts so timing tells nothing.
    dummy: String,
    /// The configured parameters, which a stored hash is compared with (`is_current`).
    params: Params,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// One worker's state: the configured parameters and the memory it hashes in.
struct Worker {
    params: Params,
    memory: Vec<Block>,
}

impl Worker {
    fn memory(&mut self) -> &mut Vec<Block> {
        if self.memory.is_empty() {
            self.memory = vec![Block::default(); self.params.block_count()];
        }
        &mut self.memory
    }

    fn hash(&mut self, password: &Secret) -> Result<String, Error> {
        let salt = random_bytes::<16>();
        let mut out = [0u8; OUTPUT_LEN];
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        argon
            .hash_password_into_with_memory(password.expose().as_bytes(), &salt, &mut out, self.memory())
            .map_err(internal)?;
        let p = &self.params;
        Ok(format!("$argon2id$v=19$m={},t={},p={}${}${}", p.m_cost(), p.t_cost(), p.p_cost(), b64(&salt), b64(&out)))
    }

    fn verify(&mut self, password: &Secret, phc: &str) -> Result<bool, Error> {
        let parsed = PasswordHash::new(phc).map_err(|e| internal(format!("stored password hash: {e}")))?;
        let algorithm =
            Algorithm::try_from(parsed.algorithm).map_err(|e| internal(format!("stored password hash: {e}")))?;
        let version = parsed.version.map(Version::try_from).transpose().map_err(internal)?.unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(|e| internal(format!("stored password hash: {e}")))?;
        let mut salt_buf = [0u8; 64];
        let salt = parsed.salt.ok_or_else(|| internal("stored password hash has no salt"))?;
        let salt = salt.decode_b64(&mut salt_buf).map_err(internal)?;
        let expected = parsed.hash.ok_or_else(|| internal("stored password hash has no output"))?;
        let mut out = vec![0u8; expected.len()];
        let argon = Argon2::new(algorithm, version, params.clone());
        // A hash made under other parameters (the configuration changed) gets memory of its own.
        let mut other;
        let memory = if params.block_count() == self.params.block_count() {
            self.memory()
        } else {
            other = vec![Block::default(); params.block_count()];
            &mut other
        };
        argon.hash_password_into_with_memory(password.expose().as_bytes(), salt, &mut out, memory).map_err(internal)?;
        Ok(ct_eq(&out, expected.as_bytes()))
    }
}

/// Lowers the calling thread's scheduling priority (Linux: nice applies per thread). A refusal
/// (a seccomp filter denying `@resources` with EPERM, a container without the right) is logged
/// once and changes nothing else: the hashes run at the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        static TOLD: std::sync::Once = std::sync::Once::new();
        // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
        let failed = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0
        };
        if failed {
            let e = std::io::Error::last_os_error();
            TOLD.call_once(|| {
                log::warn!("password hashing runs at normal priority: setpriority was refused ({e}); set argon2.lower_priority = false to skip it");
            });
        }
    }
}

impl Hasher {
    pub fn new(cfg: &config::Argon2, workers: usize, queue: usize) -> Result<Hasher, argon2::Error> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, Some(OUTPUT_LEN))?;
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let waiting = std::sync::Arc::new(AtomicUsize::new(0));
        let lower = cfg.lower_priority;
        for i in 0..workers.max(1) {
            let (rx, waiting) = (rx.clone(), waiting.clone());
            let mut worker = Worker { memory: Vec::new(), params: params.clone() };

            let spawned = std::thread::Builder::new().name(format!("gatehouse-argon2-{i}")).spawn(move || {
                if lower {
                    lower_priority();
                }
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv_timeout(IDLE_RELEASE),
                        Err(p) => p.into_inner().recv_timeout(IDLE_RELEASE),
                    };
                    let job = match job {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            worker.memory = Vec::new();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                    waiting.fetch_sub(1, Ordering::Relaxed);
                    match job {
                        Job::Hash { password, reply } => {
                            let _ = reply.send(worker.hash(&password));
                        }
                        Job::Verify { password, phc, reply } => {
                            let _ = reply.send(worker.verify(&password, &phc));
                        }
                    }
                }
            });
            if spawned.is_err() {
                return Err(argon2::Error::ThreadsTooMany);
            }
        }
        // The dummy is hashed here, on a buffer freed at once, so no worker holds memory until the
        // first sign-in.
        let mut once = Worker { memory: Vec::new(), params: params.clone() };
        let dummy = once
            .hash(&Secret::new(super::crypto::hex(&random_bytes::<16>())))
            .map_err(|_| argon2::Error::AlgorithmInvalid)?;
        drop(once);
        Ok(Hasher { jobs: tx, waiting, capacity: queue.max(1), rejected: AtomicU64::new(0), dummy, params })
    }

    fn submit(&self, job: Job) -> Result<(), Error> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Error::Busy)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                Err(internal("the hashing workers are gone"))
            }
        }
    }

    /// The PHC string of `password` under the configured parameters.
    pub fn hash(&self, password: &Secret) -> Result<String, Error> {
        let (reply, answer) = mpsc::channel();
        self.submit(Job::Hash { password: password.clone(), reply })?;
        answer.recv().map_err(internal)?
    }

    /// True when `password` matches `hash`. With no hash (unknown account, or an account without a
    /// password) a dummy hash is verified instead, and the answer is false.
    pub fn verify(&self, password: &Secret, hash: Option<&str>) -> Result<bool, Error> {
        let (phc, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy.as_str(), false),
        };
        let (reply, answer) = mpsc::channel();
        self.submit(Job::Verify { password: password.clone(), phc: phc.to_string(), reply })?;
        let ok = answer.recv().map_err(internal)??;
        Ok(ok && real)
    }

    /// True when `phc` is an Argon2id hash (version 0x13) under the configured parameters; false
    /// for anything else (other costs, another algorithm, a string that does not parse), which
    /// the next successful sign-in hashes again (`Core::with_password`).
    pub fn is_current(&self, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else { return false };
        let same = |p: &Params| {
            p.m_cost() == self.params.m_cost()
                && p.t_cost() == self.params.t_cost()
                && p.p_cost() == self.params.p_cost()
                && p.output_len() == self.params.output_len()
        };
        hash.algorithm.as_str() == "argon2id"
            && hash.version == Some(Version::V0x13 as u32)
            && Params::try_from(&hash).is_ok_and(|p| same(&p))
    }

    /// Turns a sign-in away (`Busy`) while the queue is full, before any other work is done for
    /// it: under a flood of sign-ins, refusing is the cheap part, and what it saves keeps the rest
    /// of the server answering.
    pub fn admit(&self) -> Result<(), Error> {
        if self.waiting.load(Ordering::Relaxed) >= self.capacity {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy);
        }
        Ok(())
    }

    /// (hashes waiting for a worker now, sign-ins turned away so far).
    pub fn queue_stats(&self) -> (u64, u64) {
        (self.waiting.load(Ordering::Relaxed) as u64, self.rejected.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    fn hasher(workers: usize, queue: usize) -> Hasher {
        Hasher::new(&config::Argon2::default(), workers, queue).unwrap()
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_that_argon2_itself_verifies() {
        let h = hasher(2, 8);
        let phc = h.hash(&Secret::new("correct horse")).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(h.verify(&Secret::new("correct horse"), Some(&phc)).unwrap());
        assert!(!h.verify(&Secret::new("wrong horse"), Some(&phc)).unwrap());
    }

    #[test]
    fn hashes_made_under_other_parameters_still_verify() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8192, 3, 1, None).unwrap());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = other.hash_password(b"pw of old", &salt).unwrap().to_string();
        let h = hasher(1, 4);
        assert!(h.verify(&Secret::new("pw of old"), Some(&phc)).unwrap());
        assert!(!h.verify(&Secret::new("pw of new"), Some(&phc)).unwrap());
    }

    #[test]
    fn unknown_accounts_never_verify() {
        let h = hasher(1, 4);
        assert!(!h.verify(&Secret::new(""), None).unwrap());
        assert!(!h.verify(&Secret::new("anything"), None).unwrap());
    }

    #[test]
    fn beyond_its_queue_the_hasher_answers_busy() {
        let h = std::sync::Arc::new(hasher(1, 1));
        let phc = h.hash(&Secret::new("pw")).unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..12).map(|_| s.spawn(|| h.verify(&Secret::new("pw"), Some(&phc)))).collect();
            handles.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let busy = results.iter().filter(|r| matches!(r, Err(Error::Busy))).count();
        let ok = results.iter().filter(|r| matches!(r, Ok(true))).count();
        assert!(busy > 0 && ok > 0 && busy + ok == 12, "{busy} busy, {ok} ok");
        assert_eq!(h.queue_stats().1, busy as u64);
    }

    #[test]
    fn a_hash_is_current_only_under_the_configured_parameters() {
        let h = hasher(1, 4);
        let phc = h.hash(&Secret::new("a long password")).unwrap();
        assert!(h.is_current(&phc), "{phc}");
        let cheaper =
            config::Argon2 { iterations: config::Argon2::default().iterations + 1, ..config::Argon2::default() };
        let other = Hasher::new(&cheaper, 1, 4).unwrap();
        assert!(!other.is_current(&phc), "other costs");
        assert!(other.is_current(&other.hash(&Secret::new("x")).unwrap()));
        assert!(!h.is_current("$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"));
        assert!(!h.is_current("not a hash"));
    }
}
