//! Text a person types that others will read or compare: logins, emails, names, device names.
//!
//! One rule, in [`clean`], for every entry point (each dialect, the pages, the command line):
//! no control characters (C0, DEL, C1), no bidirectional overrides, embeddings, isolates or marks
//! (which make a name read differently from what it is), no line or paragraph separators; and the
//! text is put in Unicode Normalization Form C, so that two spellings of one name (`é` precomposed,
//! or `e` and a combining acute accent) are one name, stored and compared alike. Look-ups clean
//! what was typed the same way, so the spelling a person types does not matter.
//!
//! What is shown rather than checked (the audit listing, every log line) goes through [`escape`]:
//! a control or bidirectional character becomes a visible escape, so no line can be forged and no
//! terminal driven by what a user typed.

use std::borrow::Cow;
use std::fmt::Write;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::Error;

/// Characters no typed name may hold: C0 and C1 controls and DEL; the bidirectional embeddings
/// and overrides (U+202A..U+202E), isolates (U+2066..U+2069) and marks (LRM, RLM, ALM); the line
/// and paragraph separators (U+2028, U+2029), which some viewers break lines on.
pub fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{2028}' | '\u{2029}'
        )
}

/// `value` in NFC, or `Invalid(field)` when it holds a forbidden character. Lengths and formats
/// are the caller's: this is only the character rule, the same everywhere.
pub fn clean(field: &str, value: &str) -> Result<String, Error> {
    if value.chars().any(is_forbidden) {
        return Err(Error::invalid(field, "must not hold control characters or bidirectional controls"));
    }
    Ok(nfc(value))
}

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

/// `text` with every forbidden character made visible: `\n`, `\r`, `\t`, and `\u{..}` for the
/// rest (ESC is `\u{1b}`, RIGHT-TO-LEFT OVERRIDE `\u{202e}`). Borrowed when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_forbidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_forbidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_controls_are_refused_and_named_by_field() {
        for bad in [
            "alice\nFAKE",
            "a\rb",
            "tab\there",
            "nul\0",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
            "c1\u{9b}",
            "evil\u{202e}gpj.exe",
            "\u{202a}x",
            "\u{2066}x\u{2069}",
            "mark\u{200e}",
            "mark\u{200f}",
            "alm\u{061c}",
            "line\u{2028}sep",
            "para\u{2029}sep",
        ] {
            match clean("login", bad) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, "login", "{bad:?}"),
                other => panic!("{bad:?} was let through: {other:?}"),
            }
        }
        // Letters of every script, spaces, emoji, and joiners that form words are fine.
        for good in ["alice", "Jean Dupont", "josé", "Müller", "李雷", "שלום", "مرحبا", "👩\u{200d}💻", "a.b+c@x.io"]
        {
            assert_eq!(clean("name", good).unwrap(), good);
        }
    }

    #[test]
    fn two_spellings_of_one_name_are_one_name() {
        let composed = "jos\u{e9}";
        let decomposed = "jose\u{301}";
        assert_ne!(composed, decomposed);
        assert_eq!(clean("login", decomposed).unwrap(), composed);
        assert_eq!(clean("login", composed).unwrap(), composed);
        assert_eq!(fold("JOSE\u{301}"), fold(composed));
        assert_eq!(fold("Jos\u{c9}"), composed);
    }

    #[test]
    fn escape_makes_every_forbidden_character_visible_and_leaves_the_rest() {
        assert_eq!(escape("alice\nFAKE LOG LINE"), "alice\\nFAKE LOG LINE");
        assert_eq!(escape("\u{1b}[2J\r\t"), "\\u{1b}[2J\\r\\t");
        assert_eq!(escape("evil\u{202e}gpj"), "evil\\u{202e}gpj");
        assert_eq!(escape("\u{85}\u{7f}"), "\\u{85}\\u{7f}");
        assert!(matches!(escape("plain josé 李雷"), Cow::Borrowed("plain josé 李雷")));
        for s in ["a\nb", "\u{2028}", "x\u{9b}y\u{2066}"] {
            assert!(!escape(s).chars().any(is_forbidden), "{s:?}");
        }
    }
}
