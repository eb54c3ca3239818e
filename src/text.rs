//! Text a container controls (probe output, database error text, log lines, exit
//! messages) is untrusted (`docs/design.md` §12): before it reaches the notify socket, a
//! terminal, the journal or a status line it becomes [`one_line`]: control characters
//! escaped, so a newline cannot start a second `KEY=` assignment in an sd_notify datagram
//! and an escape sequence cannot repaint a terminal, and a bounded length, so a container
//! cannot fill a status line or the store with megabytes.

/// How many characters of container text a reason keeps by default.
pub const REASON_CHARS: usize = 240;

/// The escape written for `c` when it is a control character (newlines, tabs, escape,
/// DEL, the C1 controls, the Unicode line and paragraph separators); None for any other.
fn escape(c: char) -> Option<std::borrow::Cow<'static, str>> {
    Some(match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
            format!("\\u{{{:x}}}", c as u32).into()
        }
        _ => return None,
    })
}

/// `text` as one line of at most `max_chars` characters (plus `…` when cut): every
/// control character is written as its [`escape`] (`\n`, `\u{1b}`), and runs of
/// whitespace at the ends are trimmed. Cuts fall on character boundaries, never inside
/// an escape.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    let mut kept = 0usize;
    for c in text.trim().chars() {
        let piece = escape(c).unwrap_or_else(|| c.to_string().into());
        let n = piece.chars().count();
        if kept + n > max_chars {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        kept += n;
    }
    out
}

/// `text` with every control character escaped as [`one_line`] does, but neither
/// trimmed nor cut: for a line berth composes around a container's words, whose
/// indentation is its own.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match escape(c) {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

/// The last `max_bytes` of `bytes` as text (lossy UTF-8, starting at a character
/// boundary): what berth keeps of a stream a container writes, such as a job's log.
pub fn tail_lossy(bytes: &[u8], max_bytes: usize) -> String {
    let start = bytes.len().saturating_sub(max_bytes);
    let text = String::from_utf8_lossy(&bytes[start..]);
    // A cut inside a multi-byte character shows as U+FFFD at the start: drop it.
    text.trim_start_matches('\u{fffd}').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_cannot_start_a_second_notify_assignment() {
        let s = one_line("x\nWATCHDOG=trigger\nMAINPID=1", 100);
        assert_eq!(s, "x\\nWATCHDOG=trigger\\nMAINPID=1");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            one_line("a\u{1b}[2Jb\u{7f}\u{85}c", 100),
            "a\\u{1b}[2Jb\\u{7f}\\u{85}c"
        );
        assert_eq!(one_line("a\u{2028}b\rc\td", 100), "a\\u{2028}b\\rc\\td");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let s = one_line(&"é".repeat(1000), 10);
        assert_eq!(s, format!("{}…", "é".repeat(10)));
        // An escape is never cut in half.
        let s = one_line("abcdefgh\n", 9);
        assert_eq!(s, "abcdefgh");
        let s = one_line("abcdefg\nh", 8);
        assert_eq!(s, "abcdefg…");
    }

    #[test]
    fn escaped_keeps_indentation_and_length() {
        assert_eq!(escaped("  a\u{1b}[1m b  "), "  a\\u{1b}[1m b  ");
    }

    #[test]
    fn a_tail_starts_at_a_character_boundary() {
        let bytes = "aé".repeat(10).into_bytes();
        let t = tail_lossy(&bytes, 4);
        assert!(!t.contains('\u{fffd}'));
        assert!(t.ends_with('é'));
        assert_eq!(tail_lossy(b"short", 100), "short");
    }
}
