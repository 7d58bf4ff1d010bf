//! Text shared by every layer: how input is echoed into error messages (quoted, escaped, cut
//! short) and the kernel's own idea of whitespace in a name. Below everything else, so the
//! protocol, kernel and BPF layers can all use it without importing each other.

use std::borrow::Cow;

use serde_json::Value;

/// Renders a JSON value for an error message: quoted like in the input so `"l4"` and `4` stay
/// distinguishable, and cut short so a huge object cannot flood the runtime's event log.
pub fn render_value(value: &Value) -> String {
    const MAX: usize = 80;
    let s = value.to_string();
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Longest piece of input echoed into an error message.
const ECHO_MAX: usize = 80;

/// Renders a string from the input (an environment variable, a key) for an error message:
/// quoted with Rust's escapes so whitespace and control characters show, and cut short like
/// [`render_value`] so a hostile megabyte-long value cannot flood the runtime's event log. The
/// limit applies to the escaped text: one control byte escapes to up to 8 (`\u{18}`), so a limit
/// on the input would let 80 of them through as 480 (a fuzzing find).
pub fn render_str(s: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.char_indices() {
        // Debug of the one-character slice: exactly what `{s:?}` writes for that character.
        let quoted = format!("{:?}", &s[i..i + c.len_utf8()]);
        let escaped = &quoted[1..quoted.len() - 1];
        if out.len() - 1 + escaped.len() > ECHO_MAX {
            out.push_str("\"...");
            return out;
        }
        out.push_str(escaped);
    }
    out.push('"');
    out
}

/// `s` unquoted, cut short with "..." like [`render_str`]: for input that ends up inside a
/// field path (a user-chosen key), where quotes would read wrong.
pub fn clip(s: &str) -> Cow<'_, str> {
    if s.len() <= ECHO_MAX {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{}...", cut(s)))
    }
}

fn cut(s: &str) -> &str {
    let mut end = ECHO_MAX.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The kernel's `isspace()` on one byte of a name (lib/ctype.c: `\t \n \v \f \r`, space and
/// 0xa0), which `dev_valid_name()` (net/core/dev.c) applies byte by byte: a UTF-8 name with a
/// 0xa0 byte anywhere (U+00A0, "à" = c3 a0, …) is refused by the kernel, so it is refused here,
/// as a bad CNI_IFNAME (code 4) rather than a failed kernel call.
pub fn kernel_isspace(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn render_str_quotes_escapes_and_truncates() {
        assert_eq!(render_str("eth0"), "\"eth0\"");
        assert_eq!(render_str("a\tb\u{1}"), "\"a\\tb\\u{1}\"");
        let long = render_str(&"é".repeat(1000));
        assert!(long.ends_with("\"..."), "{long}");
        assert!(long.len() <= 90, "{}", long.len());
        assert_eq!(render_str(&"x".repeat(80)), format!("{:?}", "x".repeat(80)));
        assert_eq!(
            render_str(&"x".repeat(81)),
            format!("{:?}...", "x".repeat(80))
        );
        // Short strings render exactly as Debug does, escapes included.
        for s in ["a'b\"c", "tab\there", "\u{301}e\u{301}", "nul\0", ""] {
            assert_eq!(render_str(s), format!("{s:?}"));
        }
        // The limit is on the escaped text (fuzz target cni_args).
        let ctl = render_str(&"\u{18}".repeat(1000));
        assert!(ctl.len() <= 90 && ctl.starts_with("\"\\u{18}"), "{ctl}");
    }

    #[test]
    fn render_value_quotes_strings_and_truncates() {
        assert_eq!(render_value(&json!("l4")), "\"l4\"");
        assert_eq!(render_value(&json!(4)), "4");
        let long = render_value(&json!("é".repeat(100)));
        assert!(long.ends_with("..."), "{long}");
        assert!(long.len() <= 84, "{}", long.len());
    }
}
