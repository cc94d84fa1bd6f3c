//! Splitting text on an ASCII byte.
//!
//! std's `split(char)` and `split_once(&str)` go through the general
//! pattern searchers, whose setup costs more than the search itself on the
//! short words of a record: they were a seventh of the time to parse one.
//! These are plain loops. Slicing at the position of an ASCII byte always
//! falls on a character boundary, since no byte of a multi-byte UTF-8
//! character is below 0x80.

/// `text` before and after the first `sep` (an ASCII byte).
pub fn split_once(text: &str, sep: u8) -> Option<(&str, &str)> {
    debug_assert!(sep.is_ascii());
    let at = text.bytes().position(|b| b == sep)?;
    Some((&text[..at], &text[at + 1..]))
}

/// `text` before and after the first `first` immediately followed by
/// `second` (both ASCII bytes).
pub fn split_once_pair(text: &str, first: u8, second: u8) -> Option<(&str, &str)> {
    debug_assert!(first.is_ascii() && second.is_ascii());
    let at = text
        .as_bytes()
        .windows(2)
        .position(|pair| pair[0] == first && pair[1] == second)?;
    Some((&text[..at], &text[at + 2..]))
}

/// The pieces of `text` between `sep` bytes, as `str::split` gives them
/// (empty pieces included).
pub fn split(text: &str, sep: u8) -> Split<'_> {
    debug_assert!(sep.is_ascii());
    Split {
        rest: Some(text),
        sep,
    }
}

pub struct Split<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match split_once(rest, self.sep) {
            Some((piece, after)) => {
                self.rest = Some(after);
                Some(piece)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn splits_as_std_does(text in "[a-c =:é]{0,12}") {
            prop_assert_eq!(split(&text, b' ').collect::<Vec<_>>(), text.split(' ').collect::<Vec<_>>());
            prop_assert_eq!(split_once(&text, b'='), text.split_once('='));
            prop_assert_eq!(split_once_pair(&text, b':', b' '), text.split_once(": "));
        }
    }
}
