//! What free text (names, memos, descriptions) may hold: no control characters (a NUL is
//! refused by PostgreSQL's TEXT and would fail a whole write batch), and no bidirectional
//! formatting characters, which make text display as something else (`refund <U+202E>RUE
//! 00.001` reads as an amount it is not) on statements, receipts and confirmation pages.

/// True for a character free text must not hold: a control character other than `allowed`,
/// or a bidirectional formatting character (ALM, LRM, RLM, LRE…RLO, LRI…PDI) or a BOM.
pub fn refused_char(c: char, allowed: &[char]) -> bool {
    if allowed.contains(&c) {
        return false;
    }
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// True when `s` holds no refused character (newlines allowed when `multiline`).
pub fn plain(s: &str, multiline: bool) -> bool {
    // Printable ASCII (and a newline where allowed) is plain, read a byte at a time: most text
    // is, and the merchant agent asks this of every purchase's item.
    if s.bytes()
        .all(|b| (0x20..0x7F).contains(&b) || (multiline && b == b'\n'))
    {
        return true;
    }
    let allowed: &[char] = if multiline { &['\n'] } else { &[] };
    !s.chars().any(|c| refused_char(c, allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_and_controls_are_refused_text_is_not() {
        for bad in [
            "a\u{0}b",
            "refund \u{202E}RUE 00.001",
            "\u{2066}x",
            "x\u{FEFF}",
            "\u{200F}",
        ] {
            assert!(!plain(bad, true), "{bad:?}");
        }
        for good in ["Grüße, café", "日本語", "rent share", "emoji 🎉", "עברית"] {
            assert!(plain(good, false), "{good:?}");
        }
        assert!(plain("two\nlines", true));
        assert!(!plain("two\nlines", false));
        // Every ASCII byte: printable ones are plain, controls (DEL included) are not, as on
        // the character-by-character path.
        for b in 0u8..0x80 {
            let text = format!("a{}b", b as char);
            let expected = !(b as char).is_control();
            assert_eq!(plain(&text, false), expected, "{b:#04x}");
            assert_eq!(plain(&text, true), expected || b == b'\n', "{b:#04x}");
        }
    }
}
