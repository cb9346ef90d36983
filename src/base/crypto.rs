//! The one place for randomness, digests, constant-time comparison, secret values and the master key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A secret string (password, token, API secret, link code): wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Zeroizing::new(s.into()))
    }

    /// The secret itself: call only where it is used or handed to the one response that creates it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn rng() -> &'static SystemRandom {
    static RNG: std::sync::OnceLock<SystemRandom> = std::sync::OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

/// `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // SystemRandom fails only when the OS has no randomness at all; nothing secure can go on then.
    #[allow(clippy::expect_used)]
    rng().fill(&mut buf).expect("the operating system's random generator failed");
    buf
}

/// 256 random bits as 64 lower-case hex characters: tokens, secrets, link codes.
pub fn random_token() -> Secret {
    Secret::new(hex(&random_bytes::<32>()))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over data given a piece at a time (a file read in chunks).
pub struct HmacSha256(hmac::Hmac<Sha256>);

impl HmacSha256 {
    pub fn new(key: &[u8]) -> HmacSha256 {
        use hmac::Mac;
        // HMAC takes keys of any length.
        #[allow(clippy::expect_used)]
        HmacSha256(hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length"))
    }

    pub fn update(&mut self, data: &[u8]) {
        hmac::Mac::update(&mut self.0, data);
    }

    pub fn finish(self) -> [u8; 32] {
        hmac::Mac::finalize(self.0).into_bytes().into()
    }
}

/// Constant-time equality of two byte strings (their lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

/// The key that encrypts application secrets at rest (AES-256-GCM), and derives the secrets the
/// server need not store (an IAMPASS session's, see [`MasterKey::derive`]).
pub struct MasterKey(LessSafeKey, Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("master key file {0} does not hold 64 hex characters")]
    Malformed(String),
    /// Readable or writable by its group or others: refused, as ssh refuses such a private key.
    #[error("master key file {path} has mode {mode:04o}: others may read or change it; run `chmod 600 {path}`")]
    Exposed { path: String, mode: u32 },
    /// In a directory others may write (without the sticky bit): they could put a key of their own
    /// in its place.
    #[error(
        "master key file {path} is in {dir}, which has mode {mode:04o}: others may replace the key; run `chmod go-w {dir}`"
    )]
    DirExposed { path: String, dir: String, mode: u32 },
}

/// Refuses a key file its group or others may read or write, or one in a directory they may write.
#[cfg(unix)]
fn check_private(path: &Path, file: Option<&fs::File>) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.display().to_string();
    if let Some(file) = file {
        let mode = file.metadata().map_err(|e| KeyError::Io(name.clone(), e))?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path: name, mode });
        }
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mode = fs::metadata(dir).map_err(|e| KeyError::Io(dir.display().to_string(), e))?.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(KeyError::DirExposed { path: name, dir: dir.display().to_string(), mode });
    }
    Ok(())
}

impl MasterKey {
    fn from_bytes(bytes: &[u8; 32]) -> MasterKey {
        // AES-256 takes any 32 bytes.
        #[allow(clippy::expect_used)]
        let key = UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        // A key of its own for derivation, so that no byte string is ever both an AES key and an
        // HMAC key.
        let derive = Zeroizing::new(hmac_sha256(bytes, &[b"gatehouse derivation key v1"]));
        MasterKey(LessSafeKey::new(key), derive)
    }

    /// A secret derived from `input` for one `purpose`: HMAC-SHA256 under a key of its own taken
    /// from the master key. The same input always gives the same secret, so it need not be stored.
    pub fn derive(&self, purpose: &str, input: &[u8]) -> [u8; 32] {
        hmac_sha256(self.1.as_slice(), &[purpose.as_bytes(), &[0], input])
    }

    /// An HMAC-SHA256 for one `purpose` (a backup file's seal), under a key derived for it alone.
    pub fn mac(&self, purpose: &str) -> HmacSha256 {
        let key = Zeroizing::new(self.derive(purpose, b""));
        HmacSha256::new(key.as_slice())
    }

    /// Reads the key file (64 hex characters), which only its owner may read and write, in a
    /// directory others may not write (see [`KeyError::Exposed`]).
    pub fn load(path: &Path) -> Result<MasterKey, KeyError> {
        use std::io::Read;
        let name = path.display().to_string();
        let mut file = fs::File::open(path).map_err(|e| KeyError::Io(name.clone(), e))?;
        // The mode of the file opened, not of whatever the path names a moment later.
        #[cfg(unix)]
        check_private(path, Some(&file))?;
        let mut text = Zeroizing::new(String::with_capacity(128));
        file.read_to_string(&mut text).map_err(|e| KeyError::Io(name.clone(), e))?;
        let bytes = Zeroizing::new(unhex(text.trim()).ok_or_else(|| KeyError::Malformed(name.clone()))?);
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Malformed(name))?;
        let arr = Zeroizing::new(arr);
        Ok(MasterKey::from_bytes(&arr))
    }

    /// Creates a new key file, readable by its owner only; fails if one exists.
    pub fn create(path: &Path) -> Result<MasterKey, KeyError> {
        let name = path.display().to_string();
        #[cfg(unix)]
        check_private(path, None)?;
        let bytes = Zeroizing::new(random_bytes::<32>());
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(|e| KeyError::Io(name.clone(), e))?;
        let text = Zeroizing::new(format!("{}\n", hex(bytes.as_slice())));
        file.write_all(text.as_bytes()).and_then(|_| file.sync_all()).map_err(|e| KeyError::Io(name, e))?;
        Ok(MasterKey::from_bytes(&bytes))
    }

    /// nonce || ciphertext || tag, bound to `context` (the application id).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        // Sealing fails only for inputs over 64 GiB.
        #[allow(clippy::expect_used)]
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM seals any small input");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// The plaintext, or None when the data was not sealed by this key for this context.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self.0.open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf).ok()?.len();
        buf.truncate(len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abff").unwrap(), vec![0, 0xab, 0xff]);
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }

    #[test]
    fn tokens_are_256_bits_and_differ() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Secret(***)");
    }

    #[test]
    fn sealed_secrets_open_only_under_their_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::create(&path).unwrap();
        let sealed = key.seal("app-1", b"s3cr3t");
        assert_eq!(key.open("app-1", &sealed).unwrap().as_slice(), b"s3cr3t");
        assert!(key.open("app-2", &sealed).is_none());
        let again = MasterKey::load(&path).unwrap();
        assert_eq!(again.open("app-1", &sealed).unwrap().as_slice(), b"s3cr3t");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(MasterKey::create(&path).is_err(), "an existing key is never overwritten");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_its_group_or_others_may_read_or_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::create(&path).unwrap();
        let set = |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602, 0o644] {
            set(&path, mode);
            let err = MasterKey::load(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("mode {mode:04o}")) && err.contains("chmod 600"), "{err}");
        }
        for mode in [0o600, 0o400] {
            set(&path, mode);
            MasterKey::load(&path).unwrap();
        }
        set(&path, 0o600);
        set(dir.path(), 0o777);
        assert!(matches!(MasterKey::load(&path), Err(KeyError::DirExposed { mode: 0o777, .. })));
        assert!(matches!(MasterKey::create(&dir.path().join("new.key")), Err(KeyError::DirExposed { .. })));
        // The sticky bit keeps others from replacing what is not theirs (/tmp).
        set(dir.path(), 0o1777);
        MasterKey::load(&path).unwrap();
        set(dir.path(), 0o700);
    }
}
