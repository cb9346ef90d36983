//! totp, recovery_codes
