//! Argon2id behind a bounded gate: at most `workers` hashes run at once, so a flood of logins
//! cannot take all the memory (memory_kib x workers) or all the cores.

use std::sync::{Condvar, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::crypto::{random_bytes, Secret};
use super::{internal, Error};
use crate::config;

pub struct Hasher {
    argon: Argon2<'static>,
    gate: Gate,
    /// A hash of a random password, verified for unknown accounts so timing tells nothing.
    dummy: String,
}

impl Hasher {
    pub fn new(cfg: &config::Argon2, workers: usize, queue: usize) -> Result<Hasher, argon2::Error> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut h = Hasher { argon, gate: Gate::new(workers.max(1), queue), dummy: String::new() };
        let random = Secret::new(super::crypto::hex(&random_bytes::<16>()));
        h.dummy = h.hash(&random).map_err(|_| argon2::Error::AlgorithmInvalid)?;
        Ok(h)
    }

    /// The PHC string of `password` under the configured parameters.
    pub fn hash(&self, password: &Secret) -> Result<String, Error> {
        let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(internal)?;
        let _permit = self.gate.enter();
        self.argon.hash_password(password.expose().as_bytes(), &salt).map(|h| h.to_string()).map_err(internal)
    }

    /// (hashes waiting for a worker now, sign-ins turned away so far).
    pub fn queue_stats(&self) -> (u64, u64) {
        let waiting = self.gate.state.lock().map(|s| s.waiting as u64).unwrap_or(0);
        (waiting, self.gate.rejected.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// True when `password` matches `hash`. With no hash (unknown account, or an account without a
    /// password) a dummy hash is verified instead, and the answer is false.
    pub fn verify(&self, password: &Secret, hash: Option<&str>) -> Result<bool, Error> {
        let (phc, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy.as_str(), false),
        };
        let parsed = PasswordHash::new(phc).map_err(|e| internal(format!("stored password hash: {e}")))?;
        let _permit = self.gate.enter()?;
        let ok = self.argon.verify_password(password.expose().as_bytes(), &parsed).is_ok();
        Ok(ok && real)
    }
}

/// A counting semaphore for blocking threads, with a bounded number of waiters.
struct Gate {
    state: Mutex<GateState>,
    freed: Condvar,
    max_waiting: usize,
    rejected: std::sync::atomic::AtomicU64,
}

struct GateState {
    free: usize,
    waiting: usize,
}

struct Permit<'a>(&'a Gate);

impl Gate {
    fn new(n: usize, max_waiting: usize) -> Gate {
        Gate {
            state: Mutex::new(GateState { free: n, waiting: 0 }),
            freed: Condvar::new(),
            max_waiting,
            rejected: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A permit, waiting for one if need be; `Busy` when too many wait already.
    fn enter(&self) -> Result<Permit<'_>, Error> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.free == 0 {
            if st.waiting >= self.max_waiting {
                self.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(Error::Busy);
            }
            st.waiting += 1;
            while st.free == 0 {
                st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.waiting -= 1;
        }
        st.free -= 1;
        Ok(Permit(self))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        st.free += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn hasher() -> Hasher {
        Hasher::new(&config::Argon2::default(), 2, 8).unwrap()
    }

    #[test]
    fn hashes_are_argon2id_with_the_configured_parameters() {
        let h = hasher();
        let phc = h.hash(&Secret::new("correct horse")).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(&Secret::new("correct horse"), Some(&phc)).unwrap());
        assert!(!h.verify(&Secret::new("wrong horse"), Some(&phc)).unwrap());
    }

    #[test]
    fn unknown_accounts_never_verify() {
        let h = hasher();
        assert!(!h.verify(&Secret::new(""), None).unwrap());
        assert!(!h.verify(&Secret::new("anything"), None).unwrap());
    }

    #[test]
    fn the_gate_holds_concurrency_to_its_size() {
        let gate = Arc::new(Gate::new(2, 8));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    let _p = gate.enter().unwrap();
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn beyond_its_queue_the_gate_answers_busy() {
        let gate = Gate::new(1, 1);
        let held = gate.enter().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| gate.enter().map(|_| ()));
            while gate.state.lock().unwrap().waiting == 0 {
                std::thread::yield_now();
            }
            assert!(matches!(gate.enter(), Err(Error::Busy)), "one waits already: the next is turned away");
            drop(held);
            assert!(waiter.join().unwrap().is_ok());
        });
    }
}
