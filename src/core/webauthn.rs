//! Server-side WebAuthn (Level 2) verification for ES256 platform authenticators with user verification.
//!
//! Scope, and why: gatehouse only needs "this phone's face/fingerprint unlock approved this login", so
//! attestation statements are deliberately *not* trusted (every `fmt` is handled like `"none"`, `attStmt` is
//! ignored), while everything the authenticator signs or that binds the ceremony to us (client data, RP id
//! hash, UP/UV flags, counter, signature) is checked as in WebAuthn §7.1 (registration) and §7.2 (assertion).
//!
//! What stays with the caller: issuing a fresh random challenge per ceremony and consuming it once; checking
//! that the credential id returned here is not yet registered (§7.1) and matches the response's
//! `rawId`; looking up the [`Credential`] by the assertion's `rawId` and that it belongs to the user; storing
//! the sign count returned by [`verify_assertion`].
//!
//! Nothing here panics on hostile input: all slicing goes through `get`, and CBOR is decoded with a small
//! recursion limit.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ciborium::value::Value;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use sha2::{Digest, Sha256};

/// A registered credential: what the server keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The credential id, as chosen by the authenticator (1..=1023 bytes).
    pub id: Vec<u8>,
    /// Uncompressed SEC1 P-256 point: `0x04 || x(32) || y(32)`, 65 bytes.
    pub public_key: Vec<u8>,
    /// The signature counter seen last; 0 if the authenticator does not keep one.
    pub sign_count: u32,
}

/// Which check failed. The texts are short and never contain request data, so they are safe to log.
#[derive(Debug, PartialEq, Eq)]
pub enum WebauthnError {
    /// The input could not be parsed or violates the format; the text names the part.
    Malformed(&'static str),
    /// `clientData.type` is not the one this ceremony expects (e.g. an assertion replayed as a registration).
    WrongType,
    /// `clientData.challenge` is not the challenge issued for this ceremony.
    WrongChallenge,
    /// `clientData.origin` is not our origin (phishing site or misconfiguration).
    WrongOrigin,
    /// The ceremony ran in a cross-origin iframe, which gatehouse never embeds.
    CrossOrigin,
    /// The authenticator data is scoped to another relying party id.
    WrongRp,
    /// The user-present flag is missing.
    NotPresent,
    /// The user-verified flag is missing (no biometric / PIN check happened).
    NotVerified,
    /// The public key is not a valid ES256 (P-256) key.
    UnsupportedKey,
    /// The assertion signature does not verify.
    BadSignature,
    /// The signature counter did not increase: a sign of a cloned authenticator.
    CounterWentBack,
}

impl std::fmt::Display for WebauthnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "webauthn: malformed {what}"),
            Self::WrongType => f.write_str("webauthn: wrong client data type"),
            Self::WrongChallenge => f.write_str("webauthn: challenge mismatch"),
            Self::WrongOrigin => f.write_str("webauthn: origin mismatch"),
            Self::CrossOrigin => f.write_str("webauthn: cross-origin ceremony rejected"),
            Self::WrongRp => f.write_str("webauthn: relying party id mismatch"),
            Self::NotPresent => f.write_str("webauthn: user not present"),
            Self::NotVerified => f.write_str("webauthn: user not verified"),
            Self::UnsupportedKey => f.write_str("webauthn: unsupported or invalid public key"),
            Self::BadSignature => f.write_str("webauthn: bad signature"),
            Self::CounterWentBack => f.write_str("webauthn: signature counter did not increase"),
        }
    }
}

impl std::error::Error for WebauthnError {}

use WebauthnError::*;

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;
/// rpIdHash(32) | flags(1) | signCount(4).
const AUTH_DATA_MIN: usize = 37;
/// The spec's security considerations ask for at least 16 random bytes; shorter ones make replay guessable.
const MIN_CHALLENGE: usize = 16;
/// Attestation objects, COSE keys and extensions are a few levels deep; this bounds stack use on hostile input.
const CBOR_DEPTH: usize = 16;

/// Verifies navigator.credentials.create()'s answer.
///
/// `client_data_json` is the raw `response.clientDataJSON`, `attestation_object` the raw
/// `response.attestationObject`. On success returns the credential to store.
pub fn verify_registration(
    rp_id: &str,
    origin: &str,
    challenge: &[u8],
    client_data_json: &[u8],
    attestation_object: &[u8],
) -> Result<Credential, WebauthnError> {
    check_client_data("webauthn.create", origin, challenge, client_data_json)?;

    let (att, rest) = decode_cbor_prefix(attestation_object, "attestation object")?;
    if !rest.is_empty() {
        return Err(Malformed("attestation object (trailing bytes)"));
    }
    let att = att.as_map().ok_or(Malformed("attestation object (not a map)"))?;
    // fmt and attStmt must be well-formed, but attestation is not trusted, so their contents are ignored.
    map_get(att, &Value::Text("fmt".into()))?.and_then(Value::as_text).ok_or(Malformed("attestation fmt"))?;
    map_get(att, &Value::Text("attStmt".into()))?.and_then(Value::as_map).ok_or(Malformed("attestation attStmt"))?;
    let auth_data = map_get(att, &Value::Text("authData".into()))?
        .and_then(Value::as_bytes)
        .ok_or(Malformed("attestation authData"))?;

    let (flags, sign_count, attested) = check_auth_data(rp_id, auth_data)?;
    if flags & FLAG_AT == 0 {
        return Err(Malformed("authenticator data (no attested credential data)"));
    }

    // Attested credential data: aaguid(16) | credIdLen(u16 BE) | credId | COSE_Key [| extensions].
    let id_len = attested.get(16..18).ok_or(Malformed("attested credential data (truncated)"))?;
    let id_len = usize::from(u16::from_be_bytes([id_len[0], id_len[1]]));
    if !(1..=1023).contains(&id_len) {
        return Err(Malformed("credential id length"));
    }
    let id = attested.get(18..18 + id_len).ok_or(Malformed("credential id (truncated)"))?;
    let key_bytes = attested.get(18 + id_len..).ok_or(Malformed("credential public key (truncated)"))?;

    // The COSE key is self-delimiting; anything after it must be exactly one extensions map, and only if ED says so.
    let (cose_key, rest) = decode_cbor_prefix(key_bytes, "credential public key")?;
    if flags & FLAG_ED != 0 {
        let (ext, rest) = decode_cbor_prefix(rest, "extensions")?;
        if ext.as_map().is_none() || !rest.is_empty() {
            return Err(Malformed("extensions"));
        }
    } else if !rest.is_empty() {
        return Err(Malformed("authenticator data (trailing bytes)"));
    }

    Ok(Credential { id: id.to_vec(), public_key: es256_public_key(&cose_key)?, sign_count })
}

/// Verifies navigator.credentials.get()'s answer made with `cred`; returns the new sign count to store.
///
/// `client_data_json`, `authenticator_data` and `signature` are the raw `response` fields.
pub fn verify_assertion(
    rp_id: &str,
    origin: &str,
    challenge: &[u8],
    cred: &Credential,
    client_data_json: &[u8],
    authenticator_data: &[u8],
    signature: &[u8],
) -> Result<u32, WebauthnError> {
    check_client_data("webauthn.get", origin, challenge, client_data_json)?;
    let (_flags, sign_count, _rest) = check_auth_data(rp_id, authenticator_data)?;

    if cred.public_key.len() != 65 || cred.public_key[0] != 0x04 {
        return Err(UnsupportedKey);
    }
    // The authenticator signs authenticatorData || SHA-256(clientDataJSON), which binds challenge and origin too.
    let mut signed = Vec::with_capacity(authenticator_data.len() + 32);
    signed.extend_from_slice(authenticator_data);
    signed.extend_from_slice(&Sha256::digest(client_data_json));
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &cred.public_key)
        .verify(&signed, signature)
        .map_err(|_| BadSignature)?;

    // §6.1.1, §7.2 step 21: a counter of 0 on both sides means "not supported" (synced passkeys, some
    // virtual authenticators) and is accepted. Once either side is nonzero the presented count must be
    // greater than the stored one: a 0 after a nonzero count is a count that went back (accepting it
    // would store 0 and turn the check off), and a count that does not increase suggests a cloned key.
    // The value returned is never below the stored one, so the stored counter never goes down.
    if (cred.sign_count != 0 || sign_count != 0) && sign_count <= cred.sign_count {
        return Err(CounterWentBack);
    }
    Ok(sign_count)
}

/// The client-data steps of §7.1 / §7.2: the client data binds the ceremony to our challenge and origin.
fn check_client_data(expected_type: &str, origin: &str, challenge: &[u8], json: &[u8]) -> Result<(), WebauthnError> {
    if challenge.len() < MIN_CHALLENGE {
        return Err(Malformed("challenge (server issued fewer than 16 bytes)"));
    }
    let data: serde_json::Value = serde_json::from_slice(json).map_err(|_| Malformed("clientDataJSON"))?;
    let data = data.as_object().ok_or(Malformed("clientDataJSON (not an object)"))?;
    let field = |name| data.get(name).and_then(serde_json::Value::as_str);

    if field("type").ok_or(Malformed("clientDataJSON.type"))? != expected_type {
        return Err(WrongType);
    }
    // Browsers send base64url without padding; some libraries add it, which is harmless to accept.
    let sent = field("challenge").ok_or(Malformed("clientDataJSON.challenge"))?;
    let sent = URL_SAFE_NO_PAD.decode(sent.trim_end_matches('=')).map_err(|_| WrongChallenge)?;
    if !ct_eq(&sent, challenge) {
        return Err(WrongChallenge);
    }
    if field("origin").ok_or(Malformed("clientDataJSON.origin"))? != origin {
        return Err(WrongOrigin);
    }
    match data.get("crossOrigin") {
        None | Some(serde_json::Value::Bool(false)) => Ok(()),
        Some(serde_json::Value::Bool(true)) => Err(CrossOrigin),
        Some(_) => Err(Malformed("clientDataJSON.crossOrigin")),
    }
}

/// Checks rpIdHash and the UP/UV flags; returns (flags, signCount, bytes after the fixed 37-byte header).
fn check_auth_data<'a>(rp_id: &str, data: &'a [u8]) -> Result<(u8, u32, &'a [u8]), WebauthnError> {
    let (head, rest) = match (data.get(..AUTH_DATA_MIN), data.get(AUTH_DATA_MIN..)) {
        (Some(head), Some(rest)) => (head, rest),
        _ => return Err(Malformed("authenticator data (too short)")),
    };
    if !ct_eq(&head[..32], &Sha256::digest(rp_id.as_bytes())) {
        return Err(WrongRp);
    }
    let flags = head[32];
    if flags & FLAG_UP == 0 {
        return Err(NotPresent);
    }
    if flags & FLAG_UV == 0 {
        return Err(NotVerified);
    }
    Ok((flags, u32::from_be_bytes([head[33], head[34], head[35], head[36]]), rest))
}

/// Turns a COSE_Key (RFC 9053) into an uncompressed SEC1 point, accepting only EC2 / ES256 / P-256.
fn es256_public_key(cose: &Value) -> Result<Vec<u8>, WebauthnError> {
    let map = cose.as_map().ok_or(Malformed("credential public key (not a map)"))?;
    let int = |label: i64| -> Result<Option<i128>, WebauthnError> {
        Ok(map_get(map, &Value::Integer(label.into()))?.and_then(Value::as_integer).map(i128::from))
    };
    let coord = |label: i64| -> Result<&[u8], WebauthnError> {
        let bytes = map_get(map, &Value::Integer(label.into()))?.and_then(Value::as_bytes).ok_or(UnsupportedKey)?;
        if bytes.len() == 32 {
            Ok(bytes)
        } else {
            Err(UnsupportedKey)
        }
    };
    // kty = EC2, alg = ES256, crv = P-256.
    if int(1)? != Some(2) || int(3)? != Some(-7) || int(-1)? != Some(1) {
        return Err(UnsupportedKey);
    }
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(coord(-2)?);
    point.extend_from_slice(coord(-3)?);
    check_on_curve(&point)?;
    Ok(point)
}

/// Rejects points that are not on P-256 at registration, so a broken key cannot be stored and then fail every
/// login with an unexplained BadSignature. ring has no direct point check, but ECDH validates the peer key.
fn check_on_curve(point: &[u8]) -> Result<(), WebauthnError> {
    use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
    let rng = ring::rand::SystemRandom::new();
    let ours = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| Malformed("key check (no randomness)"))?;
    agree_ephemeral(ours, &UnparsedPublicKey::new(&ECDH_P256, point), |_| ()).map_err(|_| UnsupportedKey)
}

/// Decodes the first CBOR item of `input` and returns it with the bytes that follow it.
fn decode_cbor_prefix<'a>(input: &'a [u8], what: &'static str) -> Result<(Value, &'a [u8]), WebauthnError> {
    let mut rest = input;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, CBOR_DEPTH).map_err(|_| Malformed(what))?;
    Ok((value, rest))
}

/// Looks `key` up in a CBOR map. Duplicate keys are refused: another parser might pick the other value.
fn map_get<'v>(map: &'v [(Value, Value)], key: &Value) -> Result<Option<&'v Value>, WebauthnError> {
    let mut found = None;
    for (k, v) in map {
        if k == key {
            if found.is_some() {
                return Err(Malformed("CBOR map (duplicate key)"));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Compares without an early exit. Challenges and RP id hashes are not secret; this is just cheap hygiene.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use serde_json::json;

    const RP: &str = "login.example.com";
    const ORIGIN: &str = "https://login.example.com";
    const CHALLENGE: &[u8] = b"0123456789abcdef-challenge";
    const UP_UV: u8 = FLAG_UP | FLAG_UV;

    fn cbor(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn int(i: i64) -> Value {
        Value::Integer(i.into())
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    /// A software platform authenticator: one P-256 key and its credential id.
    struct Authenticator {
        key: EcdsaKeyPair,
        rng: SystemRandom,
        id: Vec<u8>,
    }

    impl Authenticator {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            Self { key, rng, id: b"credential-id-0001".to_vec() }
        }

        fn public_key(&self) -> Vec<u8> {
            self.key.public_key().as_ref().to_vec()
        }

        fn cose_key_entries(&self) -> Vec<(Value, Value)> {
            let pk = self.public_key();
            vec![
                (int(1), int(2)),
                (int(3), int(-7)),
                (int(-1), int(1)),
                (int(-2), Value::Bytes(pk[1..33].to_vec())),
                (int(-3), Value::Bytes(pk[33..].to_vec())),
            ]
        }

        fn cose_key(&self) -> Vec<u8> {
            cbor(&Value::Map(self.cose_key_entries()))
        }

        /// The COSE key with `label` set to `value` (e.g. another alg).
        fn cose_key_with(&self, label: i64, value: Value) -> Vec<u8> {
            let mut entries = self.cose_key_entries();
            entries.iter_mut().filter(|(k, _)| *k == int(label)).for_each(|(_, v)| *v = value.clone());
            cbor(&Value::Map(entries))
        }

        fn credential(&self, sign_count: u32) -> Credential {
            Credential { id: self.id.clone(), public_key: self.public_key(), sign_count }
        }

        fn sign(&self, auth_data: &[u8], client_data_json: &[u8]) -> Vec<u8> {
            let mut msg = auth_data.to_vec();
            msg.extend_from_slice(&Sha256::digest(client_data_json));
            self.key.sign(&self.rng, &msg).unwrap().as_ref().to_vec()
        }
    }

    fn auth_data(rp_id: &str, flags: u8, count: u32, tail: &[u8]) -> Vec<u8> {
        let mut out = Sha256::digest(rp_id.as_bytes()).to_vec();
        out.push(flags);
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(tail);
        out
    }

    /// aaguid | credIdLen | credId | COSE key.
    fn attested(id: &[u8], cose_key: &[u8]) -> Vec<u8> {
        let mut out = vec![0xAA; 16];
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(cose_key);
        out
    }

    fn attestation_object(auth_data: &[u8]) -> Vec<u8> {
        cbor(&Value::Map(vec![
            (text("fmt"), text("none")),
            (text("attStmt"), Value::Map(vec![])),
            (text("authData"), Value::Bytes(auth_data.to_vec())),
        ]))
    }

    fn client_data(ty: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
        let challenge = URL_SAFE_NO_PAD.encode(challenge);
        serde_json::to_vec(&json!({"type": ty, "challenge": challenge, "origin": origin, "crossOrigin": false}))
            .unwrap()
    }

    fn create_data() -> Vec<u8> {
        client_data("webauthn.create", CHALLENGE, ORIGIN)
    }

    fn get_data() -> Vec<u8> {
        client_data("webauthn.get", CHALLENGE, ORIGIN)
    }

    /// Registration authenticator data as a phone would send it after a biometric check.
    fn reg_auth_data(a: &Authenticator) -> Vec<u8> {
        auth_data(RP, UP_UV | FLAG_AT, 0, &attested(&a.id, &a.cose_key()))
    }

    fn register_auth_data(auth_data: &[u8]) -> Result<Credential, WebauthnError> {
        verify_registration(RP, ORIGIN, CHALLENGE, &create_data(), &attestation_object(auth_data))
    }

    /// Signs `auth_data` with `a` over `client_data` and verifies it against `cred`.
    fn assert_with(
        a: &Authenticator,
        cred: &Credential,
        client_data: &[u8],
        auth_data: &[u8],
    ) -> Result<u32, WebauthnError> {
        verify_assertion(RP, ORIGIN, CHALLENGE, cred, client_data, auth_data, &a.sign(auth_data, client_data))
    }

    #[test]
    fn registration_round_trips() {
        let a = Authenticator::new();
        let cred = register_auth_data(&reg_auth_data(&a)).unwrap();
        assert_eq!(cred, a.credential(0));
        assert_eq!(cred.public_key.len(), 65);

        let with_count = auth_data(RP, UP_UV | FLAG_AT, 7, &attested(&a.id, &a.cose_key()));
        assert_eq!(register_auth_data(&with_count).unwrap().sign_count, 7);
    }

    #[test]
    fn registration_ignores_attestation_statement() {
        let a = Authenticator::new();
        let ao = cbor(&Value::Map(vec![
            (text("fmt"), text("packed")),
            (text("attStmt"), Value::Map(vec![(text("alg"), int(-7)), (text("sig"), Value::Bytes(vec![1, 2, 3]))])),
            (text("authData"), Value::Bytes(reg_auth_data(&a))),
        ]));
        assert_eq!(verify_registration(RP, ORIGIN, CHALLENGE, &create_data(), &ao), Ok(a.credential(0)));
    }

    #[test]
    fn registration_with_extensions_parses() {
        let a = Authenticator::new();
        let mut tail = attested(&a.id, &a.cose_key());
        tail.extend(cbor(&Value::Map(vec![(text("credProtect"), int(2))])));
        let data = auth_data(RP, UP_UV | FLAG_AT | FLAG_ED, 0, &tail);
        assert_eq!(register_auth_data(&data), Ok(a.credential(0)));

        // Extension bytes without the ED flag, or ED without a map, are malformed.
        let data = auth_data(RP, UP_UV | FLAG_AT, 0, &tail);
        assert_eq!(register_auth_data(&data), Err(Malformed("authenticator data (trailing bytes)")));
        let data = auth_data(RP, UP_UV | FLAG_AT | FLAG_ED, 0, &attested(&a.id, &a.cose_key()));
        assert_eq!(register_auth_data(&data), Err(Malformed("extensions")));
        let mut tail = attested(&a.id, &a.cose_key());
        tail.extend(cbor(&int(5)));
        assert_eq!(
            register_auth_data(&auth_data(RP, UP_UV | FLAG_AT | FLAG_ED, 0, &tail)),
            Err(Malformed("extensions"))
        );
    }

    #[test]
    fn registration_checks_client_data() {
        let a = Authenticator::new();
        let ao = attestation_object(&reg_auth_data(&a));
        let reg = |cdj: &[u8]| verify_registration(RP, ORIGIN, CHALLENGE, cdj, &ao);
        assert_eq!(reg(&get_data()), Err(WrongType));
        assert_eq!(reg(&client_data("webauthn.create", b"another challenge, 16+ bytes", ORIGIN)), Err(WrongChallenge));
        assert_eq!(reg(&client_data("webauthn.create", CHALLENGE, "https://evil.example.com")), Err(WrongOrigin));
        assert_eq!(reg(&client_data("webauthn.create", CHALLENGE, "https://login.example.com:443")), Err(WrongOrigin));
        assert_eq!(reg(b"not json"), Err(Malformed("clientDataJSON")));
        assert_eq!(reg(b"[]"), Err(Malformed("clientDataJSON (not an object)")));
        assert_eq!(reg(br#"{"challenge":"x","origin":"y"}"#), Err(Malformed("clientDataJSON.type")));
    }

    #[test]
    fn challenge_encoding() {
        let a = Authenticator::new();
        let ao = attestation_object(&reg_auth_data(&a));
        let reg = |challenge: String| {
            let cdj = json!({"type": "webauthn.create", "challenge": challenge, "origin": ORIGIN});
            verify_registration(RP, ORIGIN, CHALLENGE, &serde_json::to_vec(&cdj).unwrap(), &ao)
        };
        // Padding tolerated (26 bytes -> 35 chars + "="), no crossOrigin field is fine.
        let padded = base64::engine::general_purpose::URL_SAFE.encode(CHALLENGE);
        assert!(padded.ends_with('='));
        assert!(reg(padded).is_ok());
        assert_eq!(reg("!!!".into()), Err(WrongChallenge));
        assert_eq!(reg(URL_SAFE_NO_PAD.encode(&CHALLENGE[..25])), Err(WrongChallenge));
        // Standard base64 alphabet is not base64url.
        let challenge = [0xFB; 18];
        let std = base64::engine::general_purpose::STANDARD_NO_PAD.encode(challenge);
        let cdj = serde_json::to_vec(&json!({"type": "webauthn.create", "challenge": std, "origin": ORIGIN})).unwrap();
        assert_eq!(verify_registration(RP, ORIGIN, &challenge, &cdj, &ao), Err(WrongChallenge));
        // A too short server challenge is a caller bug.
        assert_eq!(
            verify_registration(RP, ORIGIN, b"short", &create_data(), &ao),
            Err(Malformed("challenge (server issued fewer than 16 bytes)"))
        );
    }

    #[test]
    fn cross_origin_rejected() {
        let a = Authenticator::new();
        let ao = attestation_object(&reg_auth_data(&a));
        let c = URL_SAFE_NO_PAD.encode(CHALLENGE);
        let cdj = |cross: serde_json::Value| {
            serde_json::to_vec(
                &json!({"type": "webauthn.create", "challenge": c, "origin": ORIGIN, "crossOrigin": cross}),
            )
            .unwrap()
        };
        assert_eq!(verify_registration(RP, ORIGIN, CHALLENGE, &cdj(json!(true)), &ao), Err(CrossOrigin));
        assert_eq!(
            verify_registration(RP, ORIGIN, CHALLENGE, &cdj(json!("yes")), &ao),
            Err(Malformed("clientDataJSON.crossOrigin"))
        );
        assert!(verify_registration(RP, ORIGIN, CHALLENGE, &cdj(json!(false)), &ao).is_ok());
    }

    #[test]
    fn registration_checks_auth_data() {
        let a = Authenticator::new();
        let tail = attested(&a.id, &a.cose_key());
        assert_eq!(register_auth_data(&auth_data("example.com", UP_UV | FLAG_AT, 0, &tail)), Err(WrongRp));
        assert_eq!(register_auth_data(&auth_data(RP, FLAG_UV | FLAG_AT, 0, &tail)), Err(NotPresent));
        assert_eq!(register_auth_data(&auth_data(RP, FLAG_UP | FLAG_AT, 0, &tail)), Err(NotVerified));
        assert_eq!(
            register_auth_data(&auth_data(RP, UP_UV, 0, &tail)),
            Err(Malformed("authenticator data (no attested credential data)"))
        );
        assert_eq!(register_auth_data(&[0; 36]), Err(Malformed("authenticator data (too short)")));
        assert_eq!(
            register_auth_data(&auth_data(RP, UP_UV | FLAG_AT, 0, &attested(b"", &a.cose_key()))),
            Err(Malformed("credential id length"))
        );
        assert_eq!(
            register_auth_data(&auth_data(RP, UP_UV | FLAG_AT, 0, &attested(&[1; 1024], &a.cose_key()))),
            Err(Malformed("credential id length"))
        );
        assert!(register_auth_data(&auth_data(RP, UP_UV | FLAG_AT, 0, &attested(&[1; 1023], &a.cose_key()))).is_ok());
    }

    #[test]
    fn registration_checks_key() {
        let a = Authenticator::new();
        let with_key = |key: &[u8]| register_auth_data(&auth_data(RP, UP_UV | FLAG_AT, 0, &attested(&a.id, key)));
        assert_eq!(with_key(&a.cose_key_with(3, int(-8))), Err(UnsupportedKey)); // EdDSA
        assert_eq!(with_key(&a.cose_key_with(3, int(-257))), Err(UnsupportedKey)); // RS256
        assert_eq!(with_key(&a.cose_key_with(1, int(1))), Err(UnsupportedKey)); // OKP
        assert_eq!(with_key(&a.cose_key_with(-1, int(2))), Err(UnsupportedKey)); // P-384
        assert_eq!(with_key(&a.cose_key_with(-2, Value::Bytes(vec![1; 31]))), Err(UnsupportedKey));
        assert_eq!(with_key(&a.cose_key_with(-3, text("y"))), Err(UnsupportedKey));
        // A point that is not on the curve.
        assert_eq!(with_key(&a.cose_key_with(-3, Value::Bytes(vec![7; 32]))), Err(UnsupportedKey));
        let no_alg: Vec<_> = a.cose_key_entries().into_iter().filter(|(k, _)| *k != int(3)).collect();
        assert_eq!(with_key(&cbor(&Value::Map(no_alg))), Err(UnsupportedKey));
        let mut dup = a.cose_key_entries();
        dup.push((int(3), int(-7)));
        assert_eq!(with_key(&cbor(&Value::Map(dup))), Err(Malformed("CBOR map (duplicate key)")));
        assert_eq!(with_key(&cbor(&int(2))), Err(Malformed("credential public key (not a map)")));
    }

    #[test]
    fn attestation_object_shape() {
        let a = Authenticator::new();
        let reg = |ao: &[u8]| verify_registration(RP, ORIGIN, CHALLENGE, &create_data(), ao);
        let mut ao = attestation_object(&reg_auth_data(&a));
        ao.push(0);
        assert_eq!(reg(&ao), Err(Malformed("attestation object (trailing bytes)")));
        assert_eq!(reg(&cbor(&Value::Array(vec![]))), Err(Malformed("attestation object (not a map)")));
        let without = |skip: &str| {
            let entries = [
                (text("fmt"), text("none")),
                (text("attStmt"), Value::Map(vec![])),
                (text("authData"), Value::Bytes(reg_auth_data(&a))),
            ];
            cbor(&Value::Map(entries.into_iter().filter(|(k, _)| *k != text(skip)).collect()))
        };
        assert_eq!(reg(&without("fmt")), Err(Malformed("attestation fmt")));
        assert_eq!(reg(&without("attStmt")), Err(Malformed("attestation attStmt")));
        assert_eq!(reg(&without("authData")), Err(Malformed("attestation authData")));
        // Huge declared lengths and deep nesting fail cleanly without allocating or overflowing the stack.
        assert_eq!(reg(&[0x5B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), Err(Malformed("attestation object")));
        assert_eq!(reg(&[0x9B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), Err(Malformed("attestation object")));
        assert_eq!(reg(&[0x81; 100_000]), Err(Malformed("attestation object")));
    }

    #[test]
    fn assertion_verifies_and_returns_count() {
        let a = Authenticator::new();
        let cred = register_auth_data(&reg_auth_data(&a)).unwrap();
        assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, 0, &[])), Ok(0));
        assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, 5, &[])), Ok(5));
        let cred = a.credential(5);
        assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, 6, &[])), Ok(6));
        // Once the stored counter is nonzero, 0 is a counter that went back, not one that stopped.
        assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, 0, &[])), Err(CounterWentBack));
        // Extensions in the assertion's authenticator data are covered by the signature and need no parsing.
        let ext = cbor(&Value::Map(vec![(text("x"), int(1))]));
        assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV | FLAG_ED, 9, &ext)), Ok(9));
    }

    /// Registered at 10, asserting 50 then 0 then 20: the 0 must not turn clone detection off.
    #[test]
    fn a_zero_after_a_nonzero_count_is_refused_and_detection_stays_on() {
        let a = Authenticator::new();
        let mut cred = a.credential(10);
        let mut assert_count = |n: u32| {
            let r = assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, n, &[]));
            if let Ok(n) = r {
                cred.sign_count = n;
            }
            r
        };
        assert_eq!(assert_count(50), Ok(50));
        assert_eq!(assert_count(0), Err(CounterWentBack));
        assert_eq!(assert_count(20), Err(CounterWentBack), "the stored 50 still stands");
        assert_eq!(assert_count(51), Ok(51));
        // A stored 0 with a presented nonzero count: the authenticator starts counting.
        let cred = a.credential(0);
        assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, 3, &[])), Ok(3));
        // Both 0, every time: an authenticator without a counter.
        for _ in 0..3 {
            assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, 0, &[])), Ok(0));
        }
    }

    #[test]
    fn counter_going_back_rejected() {
        let a = Authenticator::new();
        let cred = a.credential(5);
        assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, 5, &[])), Err(CounterWentBack));
        assert_eq!(assert_with(&a, &cred, &get_data(), &auth_data(RP, UP_UV, 4, &[])), Err(CounterWentBack));
    }

    #[test]
    fn assertion_checks_each_field() {
        let a = Authenticator::new();
        let cred = a.credential(0);
        let good = auth_data(RP, UP_UV, 1, &[]);
        let get = |cdj: &[u8]| assert_with(&a, &cred, cdj, &good);
        assert_eq!(get(&create_data()), Err(WrongType));
        assert_eq!(get(&client_data("webauthn.get", b"another challenge, 16+ bytes", ORIGIN)), Err(WrongChallenge));
        assert_eq!(get(&client_data("webauthn.get", CHALLENGE, "http://login.example.com")), Err(WrongOrigin));
        let c = URL_SAFE_NO_PAD.encode(CHALLENGE);
        let cross = json!({"type": "webauthn.get", "challenge": c, "origin": ORIGIN, "crossOrigin": true});
        assert_eq!(get(&serde_json::to_vec(&cross).unwrap()), Err(CrossOrigin));

        let with = |ad: &[u8]| assert_with(&a, &cred, &get_data(), ad);
        assert_eq!(with(&auth_data("other.example.com", UP_UV, 1, &[])), Err(WrongRp));
        assert_eq!(with(&auth_data(RP, FLAG_UV, 1, &[])), Err(NotPresent));
        assert_eq!(with(&auth_data(RP, FLAG_UP, 1, &[])), Err(NotVerified));
        assert_eq!(with(&good[..36]), Err(Malformed("authenticator data (too short)")));
        assert_eq!(with(&[]), Err(Malformed("authenticator data (too short)")));
    }

    #[test]
    fn bad_signatures_rejected() {
        let a = Authenticator::new();
        let cred = a.credential(0);
        let (cdj, ad) = (get_data(), auth_data(RP, UP_UV, 1, &[]));
        let sig = a.sign(&ad, &cdj);
        let verify = |cdj: &[u8], ad: &[u8], sig: &[u8]| verify_assertion(RP, ORIGIN, CHALLENGE, &cred, cdj, ad, sig);
        assert_eq!(verify(&cdj, &ad, &sig), Ok(1));

        let mut tampered = sig.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(verify(&cdj, &ad, &tampered), Err(BadSignature));
        assert_eq!(verify(&cdj, &ad, &[]), Err(BadSignature));
        // Signed data changed after signing: counter, or a client data field the checks ignore.
        assert_eq!(verify(&cdj, &auth_data(RP, UP_UV, 2, &[]), &sig), Err(BadSignature));
        let c = URL_SAFE_NO_PAD.encode(CHALLENGE);
        let other = serde_json::to_vec(&json!({"type": "webauthn.get", "challenge": c, "origin": ORIGIN})).unwrap();
        assert_eq!(verify(&other, &ad, &sig), Err(BadSignature));
        // Signed by another authenticator.
        assert_eq!(verify(&cdj, &ad, &Authenticator::new().sign(&ad, &cdj)), Err(BadSignature));
        // A stored key that is not a P-256 point.
        let broken = Credential { public_key: vec![4; 64], ..cred.clone() };
        assert_eq!(verify_assertion(RP, ORIGIN, CHALLENGE, &broken, &cdj, &ad, &sig), Err(UnsupportedKey));
    }

    #[test]
    fn display_is_short_and_specific() {
        let all = [
            Malformed("x"),
            WrongType,
            WrongChallenge,
            WrongOrigin,
            CrossOrigin,
            WrongRp,
            NotPresent,
            NotVerified,
            UnsupportedKey,
            BadSignature,
            CounterWentBack,
        ];
        let texts: std::collections::HashSet<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), all.len());
        assert!(texts.iter().all(|t| t.starts_with("webauthn: ") && t.len() < 60));
    }

    /// Every truncation and single-bit flip of good inputs: never a panic; for assertions never a success.
    #[test]
    fn truncated_and_mutated_inputs() {
        let a = Authenticator::new();
        let (cdj, ao) = (create_data(), attestation_object(&reg_auth_data(&a)));
        for i in 0..ao.len() {
            assert!(verify_registration(RP, ORIGIN, CHALLENGE, &cdj, &ao[..i]).is_err());
            for bit in 0..8 {
                let mut m = ao.clone();
                m[i] ^= 1 << bit;
                let _ = verify_registration(RP, ORIGIN, CHALLENGE, &cdj, &m);
            }
        }
        for i in 0..cdj.len() {
            assert!(verify_registration(RP, ORIGIN, CHALLENGE, &cdj[..i], &ao).is_err());
        }

        let cred = a.credential(0);
        let (cdj, ad) = (get_data(), auth_data(RP, UP_UV, 3, &[]));
        let sig = a.sign(&ad, &cdj);
        for (which, input) in [&cdj, &ad, &sig].into_iter().enumerate() {
            for i in 0..input.len() {
                let mut variants = vec![input[..i].to_vec()];
                variants.extend((0..8).map(|bit| {
                    let mut m = input.clone();
                    m[i] ^= 1 << bit;
                    m
                }));
                for m in variants {
                    let (c, d, s) = match which {
                        0 => (&m, &ad, &sig),
                        1 => (&cdj, &m, &sig),
                        _ => (&cdj, &ad, &m),
                    };
                    assert!(verify_assertion(RP, ORIGIN, CHALLENGE, &cred, c, d, s).is_err());
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_registration_never_panics(cdj in prop::collection::vec(any::<u8>(), 0..200),
                                               ao in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = verify_registration(RP, ORIGIN, CHALLENGE, &cdj, &ao);
            let _ = verify_registration(RP, ORIGIN, CHALLENGE, &create_data(), &ao);
        }

        #[test]
        fn arbitrary_auth_data_never_panics(tail in prop::collection::vec(any::<u8>(), 0..300), flags in any::<u8>()) {
            // Valid prefix, random attested data: exercises the credential-id and COSE paths.
            let _ = register_auth_data(&auth_data(RP, flags | UP_UV, 0, &tail));
            let _ = register_auth_data(&auth_data(RP, UP_UV | FLAG_AT | FLAG_ED, 0, &tail));
        }

        #[test]
        fn arbitrary_assertion_never_panics(cdj in prop::collection::vec(any::<u8>(), 0..200),
                                            ad in prop::collection::vec(any::<u8>(), 0..100),
                                            sig in prop::collection::vec(any::<u8>(), 0..80),
                                            key in prop::collection::vec(any::<u8>(), 0..70)) {
            let cred = Credential { id: vec![1], public_key: key, sign_count: 1 };
            prop_assert!(verify_assertion(RP, ORIGIN, CHALLENGE, &cred, &cdj, &ad, &sig).is_err());
            prop_assert!(verify_assertion(RP, ORIGIN, CHALLENGE, &cred, &get_data(), &ad, &sig).is_err());
        }
    }
}
