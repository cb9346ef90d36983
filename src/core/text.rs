//! Text a person types that others will read or compare: logins, emails, names, device names.
//!
//! One rule, in [`clean`], for every entry point (each dialect, the pages, the command line):
//! no control characters (C0, DEL, C1), no bidirectional overrides, embeddings, isolates or marks
//! (which make a name read differently from what it is), no line or paragraph separators, no
//! invisible characters (default-ignorable code points and format characters: `victim\u{200b}`
//! would be a second account that prints as `victim`); and the text is put in Unicode
//! Normalization Form C, so that two spellings of one name (`é` precomposed, or `e` and a
//! combining acute accent) are one name, stored and compared alike. Look-ups clean what was typed
//! the same way, so the spelling a person types does not matter. Compatibility forms (full-width
//! letters, ligatures) are not folded: `ｖｉｃｔｉｍ` is a name of its own.
//!
//! What is shown rather than checked (the audit listing, every log line) goes through [`escape`]:
//! a control, bidirectional or invisible character becomes a visible escape, so no line can be
//! forged and no terminal driven by what a user typed.

use std::borrow::Cow;
use std::fmt::Write;

use unicode_normalization::UnicodeNormalization;

use super::Error;
/// NFC, and the key logins compare under: below the core, for the store keys logins by it too.
pub use crate::base::text::{fold, nfc};

/// Characters no typed name may hold: C0 and C1 controls and DEL; the bidirectional embeddings
/// and overrides (U+202A..U+202E), isolates (U+2066..U+2069) and marks (LRM, RLM, ALM); the line
/// and paragraph separators (U+2028, U+2029), which some viewers break lines on; and every
/// invisible character ([`is_invisible`]), which makes a second spelling of a name that prints
/// like the first.
pub fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{2028}' | '\u{2029}'
        )
        || is_invisible(c)
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt: characters a renderer
/// draws as nothing, such as ZERO WIDTH SPACE, SOFT HYPHEN, WORD JOINER, the variation
/// selectors, the tag characters, the Hangul fillers) and the format characters (general
/// category Cf: the Arabic number signs, U+FFF9..U+FFFB, the Egyptian hieroglyph format
/// controls, ...), as of Unicode 16. Joiners and variation selectors are refused too, though an
/// emoji sequence or a Persian word may use them: in a login they print as nothing.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        // Default_Ignorable_Code_Point.
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
            // General category Cf, beyond the above.
            | '\u{0600}'..='\u{0605}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
    )
}

/// `value` in NFC, or `Invalid(field)` when it holds a forbidden character. Lengths and formats
/// are the caller's: this is only the character rule, the same everywhere.
pub fn clean(field: &str, value: &str) -> Result<String, Error> {
    if value.chars().any(is_forbidden) {
        return Err(Error::invalid(
            field,
            "must not hold control characters, bidirectional controls or invisible characters",
        ));
    }
    Ok(nfc(value))
}

/// True when NFKC would change `value` (after NFC): full-width or half-width forms, ligatures,
/// superscripts, circled letters and the like, each of which prints like another text without
/// being it. Logins compare under NFC and case (`fold`), not NFKC: a new login or email in such a
/// form is refused instead (`users::new_login`), so no second spelling of a login can be made,
/// and none already stored changes its key.
pub fn is_compatibility_form(value: &str) -> bool {
    let value = nfc(value);
    value.nfkc().ne(value.chars())
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
        // Letters of every script, spaces, emoji and combining marks are fine.
        for good in [
            "alice",
            "Jean Dupont",
            "josé",
            "Müller",
            "李雷",
            "שלום",
            "مرحبا",
            "👩💻",
            "a.b+c@x.io",
            "한글",
            "e\u{301}",
        ] {
            assert_eq!(clean("name", good).unwrap(), nfc(good));
        }
    }

    #[test]
    fn invisible_characters_are_refused_escaped_and_named_by_field() {
        // Default_Ignorable_Code_Point, every range's ends, and general category Cf.
        let invisible = [
            0xAD, 0x34F, 0x61C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180E, 0x180F, 0x200B, 0x200C, 0x200D, 0x200F,
            0x202A, 0x202E, 0x2060, 0x2064, 0x2065, 0x206F, 0x3164, 0xFE00, 0xFE0F, 0xFEFF, 0xFFA0, 0xFFF0, 0xFFF8,
            0x1BCA0, 0x1BCA3, 0x1D173, 0x1D17A, 0xE0000, 0xE0001, 0xE0041, 0xE007F, 0xE0100, 0xE0FFF, 0x600, 0x605,
            0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0xFFF9, 0xFFFB, 0x110BD, 0x110CD, 0x13430, 0x1343F,
        ];
        for cp in invisible {
            let c = char::from_u32(cp).unwrap();
            assert!(is_invisible(c) && is_forbidden(c), "U+{cp:04X}");
            for bad in [format!("victim{c}@x.io"), format!("{c}"), format!("{c}victim")] {
                match clean("login", &bad) {
                    Err(Error::Invalid { field, .. }) => assert_eq!(field, "login", "U+{cp:04X}"),
                    other => panic!("U+{cp:04X} was let through: {other:?}"),
                }
            }
            assert_eq!(escape(&format!("a{c}b")), format!("a\\u{{{cp:x}}}b"), "printed visibly");
        }
        // Their neighbours are letters, marks or symbols, and stay.
        for cp in [
            0xAC, 0xAE, 0x34E, 0x350, 0x115E, 0x1161, 0x17B3, 0x17B6, 0x200A, 0x2010, 0x2070, 0x3163, 0x3165, 0xFDFF,
            0xFE10, 0xFFA1, 0xFFFC, 0x1BC9F, 0x1D172, 0x1D17B, 0xDFFFF, 0xE1000, 0x6DE, 0x8E3,
        ] {
            let c = char::from_u32(cp).unwrap();
            assert!(!is_invisible(c), "U+{cp:04X}");
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
