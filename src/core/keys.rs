//! The OpenID Connect provider's signing keys.

/// The signing keys opened so far.
#[derive(Default)]
pub(crate) struct Signing {}
