//! What the store and the core both need, below both: randomness and the other primitives
//! (`crypto`), the key logins compare under (`text::fold`), and the correlation id an unexpected
//! failure is logged with (`incident`). It imports neither.

pub mod crypto;
pub mod text;

/// Logs an unexpected failure with a fresh correlation id and returns the id: the detail goes to
/// the log once, here, and only the id travels on (to the client, in a 5xx body).
pub fn incident(e: impl std::fmt::Display) -> String {
    let id = crypto::hex(&crypto::random_bytes::<6>());
    log::error!("internal error {id}: {e}");
    id
}
