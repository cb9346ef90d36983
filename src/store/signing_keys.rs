//! signing_keys
