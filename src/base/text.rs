//! The normal forms names are stored and compared in: NFC ([`nfc`]), and the key logins are
//! unique under ([`fold`]). The rules on what a person may type are the core's (`core::text`).

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// `value` in NFC.
pub fn nfc(value: &str) -> String {
    match is_nfc_quick(value.chars()) {
        IsNormalized::Yes => value.to_string(),
        _ => value.nfc().collect(),
    }
}

/// The key a login (or any account name) is compared under: NFC, lower case, NFC again (lowering
/// can undo a composition). Two spellings of one name, in any case, have one key.
pub fn fold(value: &str) -> String {
    nfc(&nfc(value).to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_in_any_case_or_spelling_has_one_key() {
        let composed = "jos\u{e9}";
        assert_eq!(nfc("jose\u{301}"), composed);
        assert_eq!(fold("JOSE\u{301}"), fold(composed));
        assert_eq!(fold("Jos\u{c9}"), composed);
    }
}
