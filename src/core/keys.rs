//! The OpenID Connect provider's signing keys: one RS256, one ES256 and one EdDSA key signing at a
//! time, each published in the JWKS before it signs and after it stops.
//!
//! A key's life (store::signing_keys holds the times): made, it is published at once; it signs
//! from `signs_from` (at once for the first key of an algorithm, `oidc.key_publication_delay`
//! later for a rotated one, so that relying parties caching the JWKS have it before they see it);
//! the key it replaces stops signing at that moment (`retired_at`) and stays published until the
//! last token it signed has expired (`drop_after`), after which the reaper deletes it.
//!
//! Keys are made lazily (the first signature or JWKS asked for) and when the server starts
//! (`ensure_signing_keys`), never in `Core::open`: RSA key generation takes a while. Several nodes
//! over one PostgreSQL may race to make the first keys: the extra key is harmless (both are
//! published; the one with the latest `signs_from` signs on every node).
//!
//! The private key's DER is sealed under the master key (context `signing-key:{kid}`) and opened
//! once per process; the key signing for each algorithm is read again from the store at most every
//! `REFRESH_MS`, so that a rotation by another node or the command line is seen.
//!
//! Tokens are made by `jsonwebtoken::encode` (the JOSE header, the claims, base64url, the compact
//! form), and their signatures by ring: this module installs jsonwebtoken's process-wide
//! `CryptoProvider` when the first `Core` is opened, one that signs RS256, ES256 and EdDSA with the
//! ring key pair opened once per key (found by the SHA-256 of the key's DER, kept next to it for
//! jsonwebtoken's `EncodingKey`), and leaves everything else (verification, the JWK utilities, the
//! other algorithms) to jsonwebtoken's RustCrypto provider. ring's RS256 signature is several
//! times faster than that provider's (0.5 ms against 4 ms in `tests::signing_cost`, which also reads
//! the key's DER again for each one). The keys are made by the rsa crate (RSA: ring cannot make
//! one) and ring, and the public JWKs built by jsonwebtoken. Private keys are never logged.

use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwtSigner};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use super::crypto::random_bytes;
use super::{internal, iso8601, now_ms, Core, Error};
use crate::store::signing_keys::{self, KeyRow, NewKey};

/// How long the key signing for an algorithm is used before it is read again from the store.
const REFRESH_MS: i64 = 5_000;

/// A retired key stays published this much longer than the longest token it may have signed:
/// relying parties' clock skew and leeway.
const DROP_MARGIN_MS: i64 = 10 * 60_000;

/// RSA modulus size of the RS256 keys.
const RSA_BITS: usize = 2048;

/// The PKCS#8 v1 header of an Ed25519 private key, before its 32-byte seed (RFC 8410).
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A JWS signing algorithm of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::Rs256, Alg::Es256, Alg::EdDsa];

    /// The JOSE name (RFC 7518, RFC 8037).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm of a JOSE name, exactly as written (`alg` values are case-sensitive).
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn index(self) -> usize {
        match self {
            Alg::Rs256 => 0,
            Alg::Es256 => 1,
            Alg::EdDsa => 2,
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::EdDsa => Algorithm::EdDSA,
        }
    }

    /// The algorithm of jsonwebtoken's, when it is one of ours.
    fn of(alg: Algorithm) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.jwt() == alg)
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key made by `rotate_signing_keys`, or the one a rotation still pending had made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub kid: String,
    pub alg: Alg,
    /// When it starts signing (Unix ms).
    pub signs_from: i64,
    /// False: a rotation was already pending (its key not signing yet), and this is its key; no
    /// key was made.
    pub created: bool,
}

/// ring's key pair of an opened private key, ready to sign.
enum KeyPair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// An opened private key: jsonwebtoken's `EncodingKey` (its DER), which `jsonwebtoken::encode` is
/// given, and ring's key pair made from it once, which the provider finds by the DER's digest
/// while this holds it.
struct Opened {
    key: EncodingKey,
    /// Held, not read (but by the tests): while it is, `registered` finds the pair.
    #[cfg_attr(not(test), allow(dead_code))]
    pair: Arc<KeyPair>,
}

/// The key signing for one algorithm, as last read from the store.
struct Current {
    kid: String,
    opened: Arc<Opened>,
    /// When it was read (Unix ms): read again `REFRESH_MS` later.
    read_at: i64,
    /// When it stops signing, if it was retired when read.
    until: Option<i64>,
}

/// The signing keys opened so far: the current one of each algorithm.
pub(crate) struct Signing {
    current: RwLock<[Option<Current>; 3]>,
}

impl Default for Signing {
    /// Made by `Core::open`, so before anything in the process uses jsonwebtoken: installs the
    /// provider.
    fn default() -> Self {
        install_provider();
        Signing { current: RwLock::new([None, None, None]) }
    }
}

impl Signing {
    fn cached(&self, alg: Alg, now: i64) -> Option<(String, Arc<Opened>)> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        let c = current[alg.index()].as_ref()?;
        let fresh = now >= c.read_at && now - c.read_at < REFRESH_MS && c.until.is_none_or(|u| now < u);
        fresh.then(|| (c.kid.clone(), Arc::clone(&c.opened)))
    }

    /// The opened key `kid` if it is the one cached for `alg` (a key is opened once).
    fn opened(&self, alg: Alg, kid: &str) -> Option<Arc<Opened>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current[alg.index()].as_ref().filter(|c| c.kid == kid).map(|c| Arc::clone(&c.opened))
    }

    fn set(&self, alg: Alg, c: Option<Current>) {
        self.current.write().unwrap_or_else(|e| e.into_inner())[alg.index()] = c;
    }
}

/// A key made, before it is stored: its sealed private half and public JWK.
struct Made {
    kid: String,
    alg: Alg,
    private_enc: Vec<u8>,
    public_jwk: String,
}

fn seal_context(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// A fresh private key of `alg` as DER: PKCS#1 for RSA, PKCS#8 v1 for P-256 and Ed25519 (the forms
/// jsonwebtoken's EncodingKey and ring both read).
fn generate(alg: Alg) -> Result<Zeroizing<Vec<u8>>, Error> {
    match alg {
        Alg::Rs256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS)
                .map_err(|e| internal(format!("RSA key generation: {e}")))?;
            let der = key.to_pkcs1_der().map_err(|e| internal(format!("RSA key encoding: {e}")))?;
            Ok(Zeroizing::new(der.as_bytes().to_vec()))
        }
        Alg::Es256 => {
            let rng = SystemRandom::new();
            let doc = EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| internal("P-256 key generation failed"))?;
            Ok(Zeroizing::new(doc.as_ref().to_vec()))
        }
        Alg::EdDsa => {
            let seed = Zeroizing::new(random_bytes::<32>());
            let mut der = Zeroizing::new(Vec::with_capacity(48));
            der.extend_from_slice(&ED25519_PKCS8_PREFIX);
            der.extend_from_slice(&seed[..]);
            Ok(der)
        }
    }
}

/// jsonwebtoken's view of a private key's DER (for its public JWK, and to sign with).
fn encoding_key(alg: Alg, der: &[u8]) -> EncodingKey {
    match alg {
        Alg::Rs256 => EncodingKey::from_rsa_der(der),
        Alg::Es256 => EncodingKey::from_ec_der(der),
        Alg::EdDsa => EncodingKey::from_ed_der(der),
    }
}

/// The public JWK of a private key, with its kid, alg and use.
fn public_jwk(alg: Alg, kid: &str, der: &[u8]) -> Result<String, Error> {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(alg, der), alg.jwt())
        .map_err(|e| internal(format!("{alg} public key: {e}")))?;
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    serde_json::to_string(&jwk).map_err(internal)
}

/// ring's key pair from a private key's DER.
fn key_pair(alg: Alg, der: &[u8]) -> Option<KeyPair> {
    match alg {
        Alg::Rs256 => RsaKeyPair::from_der(der).ok().map(KeyPair::Rsa),
        Alg::Es256 => {
            let rng = SystemRandom::new();
            EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).ok().map(KeyPair::Ec)
        }
        Alg::EdDsa => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).ok().map(KeyPair::Ed),
    }
}

impl KeyPair {
    fn alg(&self) -> Alg {
        match self {
            KeyPair::Rsa(_) => Alg::Rs256,
            KeyPair::Ec(_) => Alg::Es256,
            KeyPair::Ed(_) => Alg::EdDsa,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        let rng = SystemRandom::new();
        match self {
            KeyPair::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| jsonwebtoken::signature::Error::new())?;
                Ok(sig)
            }
            KeyPair::Ec(k) => {
                Ok(k.sign(&rng, message).map_err(|_| jsonwebtoken::signature::Error::new())?.as_ref().to_vec())
            }
            KeyPair::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

/// jsonwebtoken's process-wide `CryptoProvider` as gatehouse installs it: ring signs RS256, ES256
/// and EdDSA; the rest is jsonwebtoken's RustCrypto provider.
fn provider() -> &'static CryptoProvider {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| CryptoProvider { signer_factory: ring_signer, ..rust_crypto::DEFAULT_PROVIDER.clone() })
}

/// Installs `provider()` as jsonwebtoken's, once per process; answers whether jsonwebtoken's is
/// ours. It is not when something used jsonwebtoken before (which fixes its RustCrypto provider
/// for the process) or installed another: it can be installed only once, and not undone.
fn install_provider() -> bool {
    static OURS: OnceLock<bool> = OnceLock::new();
    *OURS.get_or_init(|| {
        let ours = provider();
        // Err: one is installed already, perhaps by another thread's call here (then it is ours).
        let _ = ours.install_default();
        // Only after install_default: try_get_default fixes the RustCrypto provider if none is set.
        let ok = CryptoProvider::try_get_default().is_some_and(|p| std::ptr::eq(p, ours));
        if !ok {
            log::error!("jsonwebtoken's CryptoProvider is not gatehouse's (it was used before the first Core was opened): tokens are not signed");
        }
        ok
    })
}

/// The ring key pairs of the opened keys, by the SHA-256 of their DER; held weakly (by `Opened`),
/// so a key dropped from `Signing` leaves. A handful at most: a key per algorithm and `Core`, and
/// one retired in a rotation for a moment.
static PAIRS: Mutex<Vec<([u8; 32], Weak<KeyPair>)>> = Mutex::new(Vec::new());

fn der_digest(der: &[u8]) -> [u8; 32] {
    let mut d = [0; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    d
}

fn register(der: &[u8], pair: &Arc<KeyPair>) {
    let digest = der_digest(der);
    let mut pairs = PAIRS.lock().unwrap_or_else(|e| e.into_inner());
    pairs.retain(|(_, p)| p.strong_count() > 0);
    pairs.push((digest, Arc::downgrade(pair)));
}

/// The ring key pair opened for the private key `der` of `alg`, if one is held.
fn registered(alg: Alg, der: &[u8]) -> Option<Arc<KeyPair>> {
    let digest = der_digest(der);
    let pairs = PAIRS.lock().unwrap_or_else(|e| e.into_inner());
    pairs.iter().filter(|(d, _)| *d == digest).filter_map(|(_, p)| p.upgrade()).find(|p| p.alg() == alg)
}

/// The provider's `signer_factory`: ring's key pair of `key` for RS256, ES256 and EdDSA (the one
/// opened already, else made from the DER: any key of these works, an opened one saves the
/// milliseconds of reading an RSA key), RustCrypto's signer for the other algorithms.
fn ring_signer(alg: &Algorithm, key: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    let Some(ours) = Alg::of(*alg) else {
        return (rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key);
    };
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let pair = match registered(ours, key.as_bytes()) {
        Some(pair) => pair,
        None => Arc::new(key_pair(ours, key.as_bytes()).ok_or_else(|| match ours {
            Alg::Rs256 => ErrorKind::InvalidRsaKey("not a PKCS#1 RSA private key".to_string()),
            Alg::Es256 => ErrorKind::InvalidEcdsaKey,
            Alg::EdDsa => ErrorKind::InvalidEddsaKey,
        })?),
    };
    Ok(Box::new(RingSigner(pair)))
}

/// A jsonwebtoken signer on a ring key pair.
struct RingSigner(Arc<KeyPair>);

impl jsonwebtoken::signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        self.0.sign(message)
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.0.alg().jwt()
    }
}

impl Core {
    /// Makes one key of each algorithm that has none signing (the first start, or keys deleted).
    /// Called when the server starts; the first signature or JWKS asked for calls it too.
    pub fn ensure_signing_keys(&self) -> Result<(), Error> {
        self.ensure_signing_keys_at(now_ms())
    }

    /// A compact JWS of `claims` with the header {alg, typ, kid}, signed by the key of `alg` signing
    /// now. Blocking (a store read now and then, an RSA signature): run it off the executor.
    pub fn sign_jwt(&self, alg: Alg, typ: &str, claims: &serde_json::Value) -> Result<String, Error> {
        self.sign_jwt_at(alg, typ, claims, now_ms())
    }

    /// The JWKS document: `{"keys": [...]}`, every key published now (the ones signing, the next
    /// ones before they sign, the retired ones until their last token expired).
    pub fn jwks(&self) -> Result<serde_json::Value, Error> {
        self.jwks_at(now_ms())
    }

    /// Makes a new key of `alg` (of every algorithm when None) that signs `oidc.key_publication_delay`
    /// from now, and retires the key signing now at that moment; the retired key stays published
    /// until the tokens it signed have expired. An algorithm whose last rotation is still pending
    /// (its new key not signing yet) gets no other key: its answer is that pending key, with
    /// `created` false. An algorithm with no key at all gets one that signs at once.
    pub fn rotate_signing_keys(&self, alg: Option<Alg>) -> Result<Vec<Rotated>, Error> {
        self.rotate_signing_keys_at(alg, now_ms())
    }

    fn ensure_signing_keys_at(&self, now: i64) -> Result<(), Error> {
        let missing: Vec<Alg> = self.store.with(|c| -> Result<_, Error> {
            let mut missing = Vec::new();
            for alg in Alg::ALL {
                if signing_keys::current(c, alg.as_str(), now)?.is_none() {
                    missing.push(alg);
                }
            }
            Ok(missing)
        })?;
        if missing.is_empty() {
            return Ok(());
        }
        // Made before the write: an RSA key takes a while, and the writer waits for no one.
        let made = missing.into_iter().map(|alg| self.make_key(alg)).collect::<Result<Vec<_>, _>>()?;
        let stored = self.store.write(|tx| -> Result<_, Error> {
            let mut stored = Vec::new();
            for m in &made {
                if signing_keys::current(tx, m.alg.as_str(), now)?.is_none() {
                    signing_keys::insert(tx, &new_key(m, now, now))?;
                    stored.push((m.alg, m.kid.clone()));
                }
            }
            Ok(stored)
        })?;
        for (alg, kid) in stored {
            log::info!("made the {alg} signing key {kid}");
        }
        Ok(())
    }

    fn rotate_signing_keys_at(&self, alg: Option<Alg>, now: i64) -> Result<Vec<Rotated>, Error> {
        let delay = self.config.oidc.key_publication_delay.millis();
        // The longest a token signed just before retirement lives: an id_token (from a sign-in or
        // a refresh, the same lifetime), or an access token should one be a JWT.
        let oidc = &self.config.oidc;
        let keep = oidc.id_token_lifetime.millis().max(oidc.access_lifetime.millis()).saturating_add(DROP_MARGIN_MS);
        let algs = alg.map_or(Alg::ALL.to_vec(), |a| vec![a]);
        let mut out = Vec::new();
        for alg in algs {
            if let Some(p) = self.store.with(|c| signing_keys::pending(c, alg.as_str(), now))? {
                out.push(Rotated { kid: p.kid, alg, signs_from: p.signs_from, created: false });
                continue;
            }
            let m = self.make_key(alg)?;
            let rotated = self.store.write(|tx| -> Result<_, Error> {
                // Another rotation may have been written since the read above.
                if let Some(p) = signing_keys::pending(tx, alg.as_str(), now)? {
                    return Ok(Rotated { kid: p.kid, alg, signs_from: p.signs_from, created: false });
                }
                let signing = signing_keys::current(tx, alg.as_str(), now)?.is_some();
                let signs_from = if signing { now.saturating_add(delay) } else { now };
                signing_keys::insert(tx, &new_key(&m, now, signs_from))?;
                signing_keys::retire_others(tx, alg.as_str(), &m.kid, signs_from, signs_from.saturating_add(keep))?;
                Ok(Rotated { kid: m.kid.clone(), alg, signs_from, created: true })
            })?;
            if rotated.created {
                log::info!("made the {alg} signing key {}, signing from {}", rotated.kid, iso8601(rotated.signs_from));
                // This node sees its own rotation at once.
                self.signing.set(alg, None);
            }
            out.push(rotated);
        }
        Ok(out)
    }

    fn make_key(&self, alg: Alg) -> Result<Made, Error> {
        let kid = URL_SAFE_NO_PAD.encode(random_bytes::<16>());
        let der = generate(alg)?;
        let public_jwk = public_jwk(alg, &kid, &der)?;
        let private_enc = self.key.seal(&seal_context(&kid), &der);
        Ok(Made { kid, alg, private_enc, public_jwk })
    }

    fn sign_jwt_at(&self, alg: Alg, typ: &str, claims: &serde_json::Value, now: i64) -> Result<String, Error> {
        if !install_provider() {
            return Err(internal("jsonwebtoken's CryptoProvider is not gatehouse's: no token is signed"));
        }
        let (kid, opened) = self.signing_key(alg, now)?;
        let mut header = Header::new(alg.jwt());
        header.typ = Some(typ.to_string());
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, claims, &opened.key).map_err(|e| internal(format!("{alg} signature: {e}")))
    }

    /// The key of `alg` signing at `now`: the cached one while fresh, else read again (and made
    /// if there is none).
    fn signing_key(&self, alg: Alg, now: i64) -> Result<(String, Arc<Opened>), Error> {
        if let Some(hit) = self.signing.cached(alg, now) {
            return Ok(hit);
        }
        let row = match self.store.with(|c| signing_keys::current(c, alg.as_str(), now))? {
            Some(row) => row,
            None => {
                self.ensure_signing_keys_at(now)?;
                self.store
                    .with(|c| signing_keys::current(c, alg.as_str(), now))?
                    .ok_or_else(|| internal(format!("no {alg} signing key after making one")))?
            }
        };
        let opened = match self.signing.opened(alg, &row.kid) {
            Some(opened) => opened,
            None => Arc::new(self.open_key(alg, &row)?),
        };
        let kid = row.kid;
        let current = Current { kid: kid.clone(), opened: Arc::clone(&opened), read_at: now, until: row.retired_at };
        self.signing.set(alg, Some(current));
        Ok((kid, opened))
    }

    /// Opens a stored key: an error (logged with its correlation id, never the key) when it does
    /// not open under this master key or is not a key of its algorithm.
    fn open_key(&self, alg: Alg, row: &KeyRow) -> Result<Opened, Error> {
        if Alg::parse(&row.alg) != Some(alg) {
            return Err(internal(format!("signing key {} is {}, not {alg}", row.kid, row.alg)));
        }
        let der = self
            .key
            .open(&seal_context(&row.kid), &row.private_enc)
            .ok_or_else(|| internal(format!("signing key {} does not open under this master key", row.kid)))?;
        let pair =
            key_pair(alg, &der).ok_or_else(|| internal(format!("signing key {} is not a valid {alg} key", row.kid)))?;
        let pair = Arc::new(pair);
        register(&der, &pair);
        Ok(Opened { key: encoding_key(alg, &der), pair })
    }

    fn jwks_at(&self, now: i64) -> Result<serde_json::Value, Error> {
        let mut published = self.store.with(|c| signing_keys::published(c, now))?;
        if published.is_empty() {
            self.ensure_signing_keys_at(now)?;
            published = self.store.with(|c| signing_keys::published(c, now))?;
        }
        let keys = published
            .iter()
            .map(|jwk| serde_json::from_str::<serde_json::Value>(jwk).map_err(internal))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(serde_json::json!({ "keys": keys }))
    }
}

fn new_key(m: &Made, created_at: i64, signs_from: i64) -> NewKey<'_> {
    NewKey {
        kid: &m.kid,
        alg: m.alg.as_str(),
        private_enc: &m.private_enc,
        public_jwk: &m.public_jwk,
        created_at,
        signs_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    fn open() -> (tempfile::TempDir, Core) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
        let core = Core::open(config).unwrap();
        (dir, core)
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({ "iss": "https://box.example", "sub": "42", "exp": 4_000_000_000i64, "nonce": "n-0S6" })
    }

    /// The JWK of `kid` in a JWKS document.
    fn jwk_of(jwks: &serde_json::Value, kid: &str) -> Option<Jwk> {
        let keys = jwks["keys"].as_array().unwrap();
        let key = keys.iter().find(|k| k["kid"] == kid)?;
        Some(serde_json::from_value(key.clone()).unwrap())
    }

    fn kids(jwks: &serde_json::Value, alg: Alg) -> Vec<String> {
        let keys = jwks["keys"].as_array().unwrap();
        keys.iter().filter(|k| k["alg"] == alg.as_str()).map(|k| k["kid"].as_str().unwrap().to_string()).collect()
    }

    /// Checks a token's signature with jsonwebtoken (another implementation than the signer's) and
    /// the public key the JWKS publishes; answers its kid.
    fn verify(token: &str, jwks: &serde_json::Value, alg: Alg) -> Result<String, jsonwebtoken::errors::Error> {
        let header = decode_header(token)?;
        assert_eq!(header.alg, alg.jwt());
        let kid = header.kid.clone().unwrap();
        let jwk = jwk_of(jwks, &kid).expect("the kid is published");
        let key = DecodingKey::from_jwk(&jwk)?;
        let data = decode::<serde_json::Value>(token, &key, &Validation::new(alg.jwt()))?;
        assert_eq!(data.claims, claims());
        Ok(kid)
    }

    /// The cost of a signature of each algorithm, the whole token (header, claims, base64url, the
    /// signature) with the key cached: `cargo test --lib keys::tests::signing_cost -- --ignored
    /// --nocapture` (ring and rsa are built with opt-level 3 in the test profile too).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn signing_cost() {
        let (_dir, core) = open();
        let t = now_ms();
        core.ensure_signing_keys_at(t).unwrap();
        let claims = claims();
        // Per signature, the best and the median of 20 batches (the machine may be shared).
        let per_op = |n: u32, f: &mut dyn FnMut()| {
            let mut batches: Vec<f64> = (0..20)
                .map(|_| {
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        f();
                    }
                    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
                })
                .collect();
            batches.sort_by(f64::total_cmp);
            format!("best {:.1} µs, median {:.1} µs", batches[0], batches[10])
        };
        for alg in Alg::ALL {
            let n = if alg == Alg::Rs256 { 25 } else { 250 };
            core.sign_jwt_at(alg, "JWT", &claims, t).unwrap();
            let cost = per_op(n, &mut || {
                std::hint::black_box(core.sign_jwt_at(alg, "JWT", &claims, t).unwrap());
            });
            println!("{alg} token: {cost}");
        }
        // For comparison, RustCrypto's RS256 signature alone (what jsonwebtoken alone would do).
        let (_, opened) = core.signing_key(Alg::Rs256, t).unwrap();
        let signer = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&Algorithm::RS256, &opened.key).unwrap();
        let cost = per_op(10, &mut || {
            std::hint::black_box(signer.try_sign(b"header.claims").unwrap());
        });
        println!("RS256 signature alone, by the rsa crate (jsonwebtoken's RustCrypto signer): {cost}");
        let cost = per_op(10, &mut || {
            std::hint::black_box(opened.pair.sign(b"header.claims").unwrap());
        });
        println!("RS256 signature alone, by ring: {cost}");
    }

    /// The header of a token, as its JSON object.
    fn header_json(token: &str) -> serde_json::Map<String, serde_json::Value> {
        let part = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn tokens_are_made_by_jsonwebtoken_signed_by_ring_with_the_header_as_before() {
        let (_dir, core) = open();
        let t = now_ms();
        core.ensure_signing_keys_at(t).unwrap();
        let jwks = core.jwks_at(t).unwrap();
        // jsonwebtoken's provider is ours, installed by Core::open.
        assert!(install_provider());
        assert!(std::ptr::eq(CryptoProvider::try_get_default().unwrap(), provider()));
        for alg in Alg::ALL {
            for typ in ["JWT", "logout+jwt"] {
                let token = core.sign_jwt_at(alg, typ, &claims(), t).unwrap();
                // {alg, typ, kid}, nothing else, as the hand-made header had.
                let header = header_json(&token);
                let mut names: Vec<&str> = header.keys().map(String::as_str).collect();
                names.sort_unstable();
                assert_eq!(names, ["alg", "kid", "typ"], "{alg}");
                assert_eq!((header["alg"].as_str(), header["typ"].as_str()), (Some(alg.as_str()), Some(typ)));
                let kid = header["kid"].as_str().unwrap();
                assert_eq!(kids(&jwks, alg), vec![kid.to_string()]);
                // jsonwebtoken::decode verifies it against the JWKS (RustCrypto: not the signer).
                let jwk = jwk_of(&jwks, kid).unwrap();
                let data = decode::<serde_json::Value>(
                    &token,
                    &DecodingKey::from_jwk(&jwk).unwrap(),
                    &Validation::new(alg.jwt()),
                )
                .unwrap();
                assert_eq!(data.claims, claims());
                assert_eq!(data.header.typ.as_deref(), Some(typ));
                assert_eq!(data.header.kid.as_deref(), Some(kid));
            }
            // The signer was ring's pair opened for the key, found by the key's digest.
            let (_, opened) = core.signing_key(alg, t).unwrap();
            let found = registered(alg, opened.key.as_bytes()).expect("the opened pair is registered");
            assert!(Arc::ptr_eq(&found, &opened.pair), "{alg}");
            let signer = ring_signer(&alg.jwt(), &opened.key).unwrap();
            assert_eq!(signer.algorithm(), alg.jwt());
            // RS256 (PKCS#1 v1.5) and Ed25519 signatures are deterministic: ring's are RustCrypto's.
            if alg != Alg::Es256 {
                let rust_crypto = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&alg.jwt(), &opened.key).unwrap();
                assert_eq!(signer.try_sign(b"a.b").unwrap(), rust_crypto.try_sign(b"a.b").unwrap(), "{alg}");
            }
        }
    }

    #[test]
    fn the_provider_signs_with_keys_it_has_not_opened_and_leaves_other_algorithms_to_rust_crypto() {
        let (_dir, _core) = open();
        let claims = claims();
        for alg in [Alg::Es256, Alg::EdDsa] {
            // A key never opened: ring's pair is made from the DER.
            let der = generate(alg).unwrap();
            let key = encoding_key(alg, &der);
            assert!(registered(alg, &der).is_none());
            let token = jsonwebtoken::encode(&Header::new(alg.jwt()), &claims, &key).unwrap();
            let jwk = Jwk::from_encoding_key(&key, alg.jwt()).unwrap();
            let data =
                decode::<serde_json::Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &Validation::new(alg.jwt()))
                    .unwrap();
            assert_eq!(data.claims, claims);
            // A key of another family is refused.
            let wrong = encoding_key(Alg::Rs256, &der);
            assert!(ring_signer(&alg.jwt(), &wrong).is_err());
        }
        // Not a key at all.
        assert!(ring_signer(&Algorithm::EdDSA, &EncodingKey::from_ed_der(b"not a key")).is_err());
        // HS256 is RustCrypto's.
        let secret = b"a secret of thirty-two bytes....";
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret).unwrap())
                .unwrap();
        let key = DecodingKey::from_secret(secret).unwrap();
        let data = decode::<serde_json::Value>(&token, &key, &Validation::new(Algorithm::HS256)).unwrap();
        assert_eq!(data.claims, claims);
    }

    #[test]
    fn alg_names_round_trip() {
        for alg in Alg::ALL {
            assert_eq!(Alg::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(Alg::parse("EdDSA"), Some(Alg::EdDsa));
        assert_eq!(Alg::parse("rs256"), None);
        assert_eq!(Alg::parse("HS256"), None);
        assert_eq!(Alg::parse("none"), None);
    }

    #[test]
    fn each_alg_signs_what_its_published_key_verifies() {
        let (_dir, core) = open();
        // Nothing is made by Core::open.
        assert_eq!(core.store.with(|c| signing_keys::published(c, now_ms())).unwrap().len(), 0);
        // The first signature makes the keys.
        let token = core.sign_jwt(Alg::Es256, "JWT", &claims()).unwrap();
        let jwks = core.jwks().unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 3);
        for k in jwks["keys"].as_array().unwrap() {
            assert_eq!(k["use"], "sig");
            assert!(k["kid"].as_str().is_some_and(|kid| kid.len() == 22), "{k}");
            assert!(k.get("d").is_none() && k.get("p").is_none(), "no private part is published: {k}");
        }
        verify(&token, &jwks, Alg::Es256).unwrap();
        for alg in Alg::ALL {
            let token = core.sign_jwt(alg, "logout+jwt", &claims()).unwrap();
            assert_eq!(decode_header(&token).unwrap().typ.as_deref(), Some("logout+jwt"));
            let kid = verify(&token, &jwks, alg).unwrap();
            assert_eq!(kids(&jwks, alg), vec![kid]);
            // A changed payload does not verify.
            let parts: Vec<&str> = token.split('.').collect();
            let other = URL_SAFE_NO_PAD.encode(br#"{"sub":"43"}"#);
            let forged = format!("{}.{other}.{}", parts[0], parts[2]);
            assert!(verify(&forged, &jwks, alg).is_err(), "{alg}");
        }
        let mut kty: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kty"].as_str().unwrap()).collect();
        kty.sort_unstable();
        assert_eq!(kty, ["EC", "OKP", "RSA"]);
        // Making the keys again makes none.
        core.ensure_signing_keys().unwrap();
        assert_eq!(core.jwks().unwrap(), jwks);
    }

    #[test]
    fn rotation_publishes_first_signs_later_and_drops_the_old_key_after_its_tokens() {
        let (_dir, core) = open();
        let oidc = core.config.oidc.clone();
        let delay = oidc.key_publication_delay.millis();
        let t0 = now_ms();
        core.ensure_signing_keys_at(t0).unwrap();
        let old = kids(&core.jwks_at(t0).unwrap(), Alg::Rs256);
        assert_eq!(old.len(), 1);
        let old = old[0].clone();
        let signed = core.sign_jwt_at(Alg::Rs256, "JWT", &claims(), t0).unwrap();
        assert_eq!(verify(&signed, &core.jwks_at(t0).unwrap(), Alg::Rs256).unwrap(), old);

        let t1 = t0 + 1_000;
        let rotated = core.rotate_signing_keys_at(Some(Alg::Rs256), t1).unwrap();
        assert_eq!(rotated.len(), 1);
        let new = rotated[0].clone();
        assert!(new.created);
        assert_eq!((new.alg, new.signs_from), (Alg::Rs256, t1 + delay));
        assert_ne!(new.kid, old);
        // Published at once, both of them; the other algorithms untouched.
        let jwks = core.jwks_at(t1).unwrap();
        assert_eq!(kids(&jwks, Alg::Rs256), vec![old.clone(), new.kid.clone()]);
        assert_eq!(kids(&jwks, Alg::Es256).len(), 1);
        // A second rotation while this one is pending makes no key.
        let again = core.rotate_signing_keys_at(None, t1 + 10).unwrap();
        assert_eq!(again.iter().filter(|r| r.created).count(), 2, "ES256 and EdDSA rotate");
        let rs = again.iter().find(|r| r.alg == Alg::Rs256).unwrap();
        assert_eq!((rs.kid.as_str(), rs.signs_from, rs.created), (new.kid.as_str(), new.signs_from, false));
        assert_eq!(kids(&core.jwks_at(t1 + 10).unwrap(), Alg::Rs256).len(), 2);

        // The old key signs until the new one's signs_from, then the new one.
        let before = core.sign_jwt_at(Alg::Rs256, "JWT", &claims(), new.signs_from - 1).unwrap();
        assert_eq!(verify(&before, &jwks, Alg::Rs256).unwrap(), old);
        let after = core.sign_jwt_at(Alg::Rs256, "JWT", &claims(), new.signs_from).unwrap();
        assert_eq!(verify(&after, &jwks, Alg::Rs256).unwrap(), new.kid);

        // The old key stays published until its last token expired, margin included.
        let row = core.store.with(|c| signing_keys::by_kid(c, &old)).unwrap().unwrap();
        assert_eq!(row.retired_at, Some(new.signs_from));
        let drop_after = row.drop_after.unwrap();
        assert!(drop_after >= new.signs_from + oidc.id_token_lifetime.millis() + DROP_MARGIN_MS);
        assert!(kids(&core.jwks_at(drop_after - 1).unwrap(), Alg::Rs256).contains(&old));
        assert_eq!(kids(&core.jwks_at(drop_after).unwrap(), Alg::Rs256), vec![new.kid.clone()]);
        // The reaper leaves it before drop_after and deletes it from then on.
        assert_eq!(core.store.write(|tx| signing_keys::reap(tx, drop_after - 1, 100)).unwrap(), 0);
        assert_eq!(core.store.write(|tx| signing_keys::reap(tx, drop_after, 100)).unwrap(), 1);
        assert!(core.store.with(|c| signing_keys::by_kid(c, &old)).unwrap().is_none());
        assert!(core.store.with(|c| signing_keys::by_kid(c, &new.kid)).unwrap().is_some());
    }

    #[test]
    fn the_reaper_deletes_keys_past_drop_after() {
        let (_dir, core) = open();
        // A rotation long enough ago that the key it retired is past its drop_after now.
        let past = now_ms() - 30 * 86_400_000;
        core.ensure_signing_keys_at(past).unwrap();
        let old = kids(&core.jwks_at(past).unwrap(), Alg::EdDsa).remove(0);
        let new = core.rotate_signing_keys_at(Some(Alg::EdDsa), past + 1).unwrap().remove(0);
        // The one that has not been rotated stays, like the new one.
        let es = kids(&core.jwks_at(past).unwrap(), Alg::Es256).remove(0);
        core.reap().unwrap();
        assert!(core.store.with(|c| signing_keys::by_kid(c, &old)).unwrap().is_none());
        assert!(core.store.with(|c| signing_keys::by_kid(c, &new.kid)).unwrap().is_some());
        assert!(core.store.with(|c| signing_keys::by_kid(c, &es)).unwrap().is_some());
        let token = core.sign_jwt(Alg::EdDsa, "JWT", &claims()).unwrap();
        assert_eq!(verify(&token, &core.jwks().unwrap(), Alg::EdDsa).unwrap(), new.kid);
    }

    #[test]
    fn a_rotation_of_an_algorithm_without_keys_signs_at_once() {
        let (_dir, core) = open();
        let t = now_ms();
        let r = core.rotate_signing_keys_at(Some(Alg::Es256), t).unwrap().remove(0);
        assert!(r.created);
        assert_eq!(r.signs_from, t);
        let token = core.sign_jwt_at(Alg::Es256, "JWT", &claims(), t).unwrap();
        assert_eq!(verify(&token, &core.jwks_at(t).unwrap(), Alg::Es256).unwrap(), r.kid);
    }

    #[test]
    fn a_key_sealed_under_another_master_key_does_not_open() {
        let (dir, core) = open();
        let other = crate::base::crypto::MasterKey::create(&dir.path().join("other.key")).unwrap();
        let t = now_ms();
        let kid = "foreign-key";
        let der = generate(Alg::EdDsa).unwrap();
        let sealed = other.seal(&seal_context(kid), &der);
        let jwk = public_jwk(Alg::EdDsa, kid, &der).unwrap();
        let row = NewKey { kid, alg: "EdDSA", private_enc: &sealed, public_jwk: &jwk, created_at: t, signs_from: t };
        core.store.write(|tx| signing_keys::insert(tx, &row)).unwrap();
        assert!(matches!(core.sign_jwt_at(Alg::EdDsa, "JWT", &claims(), t), Err(Error::Internal(_))));
        // Sealed under this master key but for another kid: it does not open either.
        let moved = core.key.seal(&seal_context("another-kid"), &der);
        let row = NewKey { kid: "moved-key", private_enc: &moved, signs_from: t + 1, ..row };
        core.store.write(|tx| signing_keys::insert(tx, &row)).unwrap();
        assert!(matches!(core.sign_jwt_at(Alg::EdDsa, "JWT", &claims(), t + 1), Err(Error::Internal(_))));
        // Its own key opens.
        let own = core.key.seal(&seal_context("own-key"), &der);
        let row = NewKey { kid: "own-key", private_enc: &own, signs_from: t + 2, ..row };
        core.store.write(|tx| signing_keys::insert(tx, &row)).unwrap();
        assert!(core.sign_jwt_at(Alg::EdDsa, "JWT", &claims(), t + 2).is_ok());
    }
}
