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
    pub fn new(cfg: &config::Argon2, workers: usize) -> Result<Hasher, argon2::Error> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut h = Hasher { argon, gate: Gate::new(workers.max(1)), dummy: String::new() };
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

    /// True when `password` matches `hash`. With no hash (unknown account, or an account without a
    /// password) a dummy hash is verified instead, and the answer is false.
    pub fn verify(&self, password: &Secret, hash: Option<&str>) -> Result<bool, Error> {
        let (phc, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy.as_str(), false),
        };
        let parsed = PasswordHash::new(phc).map_err(|e| internal(format!("stored password hash: {e}")))?;
        let _permit = self.gate.enter();
        let ok = self.argon.verify_password(password.expose().as_bytes(), &parsed).is_ok();
        Ok(ok && real)
    }
}

/// A counting semaphore for blocking threads.
struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a Gate);

impl Gate {
    fn new(n: usize) -> Gate {
        Gate { free: Mutex::new(n), freed: Condvar::new() }
    }

    fn enter(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn hasher() -> Hasher {
        Hasher::new(&config::Argon2::default(), 2).unwrap()
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
        let gate = Arc::new(Gate::new(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    let _p = gate.enter();
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
}
