//! Second factors: TOTP and recovery codes.
