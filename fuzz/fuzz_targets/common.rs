//! Checks shared by the targets.

/// docs/format.md 1.4: "Error messages quote at most 64 bytes of the
/// offending text, escaped." A rejection's text goes to the operator's log
/// and terminal, so it must carry no control character (no forged lines, no
/// terminal escapes) and stay short whatever the line was.
pub fn check_error_text(input: &[u8], text: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "error text carries a control character: {text:?}\ninput: {:?}",
        String::from_utf8_lossy(input)
    );
    // 64 quoted bytes, each escaped to at most 10 bytes (`\u{10ffff}`), the
    // `...` of a cut excerpt, and the fixed words around it.
    assert!(
        text.len() <= 64 * 10 + 200,
        "error text is {} bytes long: {text:?}",
        text.len()
    );
}
