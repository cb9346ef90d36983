//! oidc_clients, oidc_codes, oidc_grants, consents, device_codes
