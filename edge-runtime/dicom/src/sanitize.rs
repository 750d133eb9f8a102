//! Attribute values that reach file paths (UIDs, Patient Name, Series Description): made
//! into one safe path component, never a traversal, separator or control character.

/// The longest component produced (file systems allow 255 bytes; leave room for suffixes).
pub const MAX_COMPONENT_CHARS: usize = 96;

/// `value` as one file-name component: ASCII letters, digits, `.`, `-` and `_` are kept,
/// every other character (separators, control characters, spaces, non-ASCII) becomes `_`;
/// leading dots and runs of dots are replaced (no `.`, `..` or hidden files); the result is at most
/// [`MAX_COMPONENT_CHARS`] characters and never empty (`_`).
pub fn path_component(value: &str) -> String {
    let mut out: String = value
        .trim_matches(|c: char| c == '\0' || c == ' ')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_COMPONENT_CHARS)
        .collect();
    while out.contains("..") {
        out = out.replace("..", "__");
    }
    let dots = out.len() - out.trim_start_matches('.').len();
    if dots > 0 {
        out.replace_range(..dots, &"_".repeat(dots));
    }
    if out.is_empty() { "_".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_escapes_its_folder() {
        assert_eq!(path_component("../../etc/passwd"), "______etc_passwd");
        assert_eq!(path_component(".."), "__");
        assert_eq!(path_component(""), "_");
        assert_eq!(path_component("a\u{0}b\nc\u{1b}"), "a_b_c_");
        assert_eq!(path_component("Doe^John"), "Doe_John");
        assert_eq!(path_component("1.2.840.10008"), "1.2.840.10008");
        assert_eq!(path_component("C:\\x"), "C__x");
        assert_eq!(path_component("Müller"), "M_ller");
        assert_eq!(path_component(&"x".repeat(500)).len(), MAX_COMPONENT_CHARS);
        for s in ["/", "a/b", "..\\..", "\u{202e}", " . "] {
            let c = path_component(s);
            assert!(
                !c.contains('/') && !c.contains('\\') && c != "." && c != "..",
                "{s}"
            );
        }
    }
}
