//! Text key=value parsing and encoding (RFC 7143 §6.1), used by Login and Text PDUs.
//!
//! A text data segment is a sequence of `key=value` entries, each terminated by a NUL byte.
//! Sizes are bounded: keys up to 63 bytes, values up to [`MAX_VALUE_LEN`] (standard keys are
//! further limited to 255 bytes by the negotiator), and the whole text up to the caller's cap.

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::{tag, take_till, take_while1};
use nom::sequence::{separated_pair, terminated};
use nom::IResult;
use thiserror::Error;

/// Longest key name accepted.
pub const MAX_KEY_LEN: usize = 63;
/// Longest value accepted by the parser (binary CHAP values may be this long).
pub const MAX_VALUE_LEN: usize = 8192;
/// Longest value accepted for standard (non-binary) keys.
pub const MAX_STD_VALUE_LEN: usize = 255;
/// Largest total text we accumulate across continued (C bit) PDUs.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Most entries accepted in one text exchange.
pub const MAX_PAIRS: usize = 256;

/// Problems with a text data segment. All of them fail the login / Text exchange.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TextError {
    #[error("entry without '=' or with an invalid key")]
    Malformed,
    #[error("key longer than 63 bytes")]
    KeyTooLong,
    #[error("value of key {0} too long")]
    ValueTooLong(String),
    #[error("text is not valid UTF-8")]
    BadUtf8,
    #[error("text too long or too many entries")]
    TooLong,
    #[error("key {0} sent twice")]
    Duplicate(String),
}

/// One `key=value` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: String,
    pub value: String,
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_')
}

fn entry(input: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    terminated(
        separated_pair(take_while1(is_key_char), tag("="), take_till(|c| c == 0)),
        tag("\0"),
    )(input)
}

/// Longest value for `key`: RFC 7143 §6.1 caps standard values at 255 bytes; CHAP's binary
/// values and vendor-specific (X-, X#) keys may be longer.
fn value_limit(key: &str) -> usize {
    if key.starts_with("CHAP_") || key.starts_with("X-") || key.starts_with("X#") {
        MAX_VALUE_LEN
    } else {
        MAX_STD_VALUE_LEN
    }
}

/// Parses a complete text data segment into entries, in order. Empty entries (stray NULs,
/// e.g. padding) are skipped. Duplicate keys are an error.
pub fn parse(data: &[u8]) -> Result<Vec<Pair>, TextError> {
    parse_inner(data, false)
}

/// Like [`parse`] but allows repeated keys (SendTargets answers repeat TargetName).
pub fn parse_multi(data: &[u8]) -> Result<Vec<Pair>, TextError> {
    parse_inner(data, true)
}

fn parse_inner(data: &[u8], allow_duplicates: bool) -> Result<Vec<Pair>, TextError> {
    if data.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong);
    }
    let mut out: Vec<Pair> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(b"\0") {
            rest = r;
            continue;
        }
        let (r, (k, v)) = entry(rest).map_err(|_| TextError::Malformed)?;
        rest = r;
        if k.len() > MAX_KEY_LEN {
            return Err(TextError::KeyTooLong);
        }
        let key = std::str::from_utf8(k)
            .map_err(|_| TextError::BadUtf8)?
            .to_string();
        if v.len() > value_limit(&key) {
            return Err(TextError::ValueTooLong(key));
        }
        let value = std::str::from_utf8(v)
            .map_err(|_| TextError::BadUtf8)?
            .to_string();
        if !allow_duplicates && out.iter().any(|p| p.key == key) {
            return Err(TextError::Duplicate(key));
        }
        if !allow_duplicates && out.len() >= MAX_PAIRS {
            return Err(TextError::TooLong);
        }
        out.push(Pair { key, value });
    }
    Ok(out)
}

/// Encodes entries as `key=value\0...`.
pub fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Bytes {
    let mut b = BytesMut::new();
    for (k, v) in pairs {
        b.put_slice(k.as_ref().as_bytes());
        b.put_u8(b'=');
        b.put_slice(v.as_ref().as_bytes());
        b.put_u8(0);
    }
    b.freeze()
}

/// Parses a numeric value: decimal, or hexadecimal with a `0x`/`0X` prefix.
pub fn parse_number(v: &str) -> Option<u64> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if h.is_empty() || h.len() > 16 {
            return None;
        }
        u64::from_str_radix(h, 16).ok()
    } else {
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }
}

/// Parses `Yes` / `No`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// Formats a boolean value.
pub fn bool_str(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// Splits a list value on commas.
pub fn parse_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic() {
        let p = parse(b"InitiatorName=iqn.x:y\0SessionType=Normal\0\0\0").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].key, "InitiatorName");
        assert_eq!(p[1].value, "Normal");
        // every pair is NUL-terminated (RFC 7143 §6.1); a missing final NUL is malformed
        assert_eq!(parse(b"A=b"), Err(TextError::Malformed));
        // empty value is allowed
        assert_eq!(parse(b"SendTargets=\0").unwrap()[0].value, "");
    }

    #[test]
    fn errors() {
        assert_eq!(parse(b"novalue\0"), Err(TextError::Malformed));
        assert_eq!(parse(b"=x\0"), Err(TextError::Malformed));
        let long = format!("{}=1\0", "K".repeat(64));
        assert_eq!(parse(long.as_bytes()), Err(TextError::KeyTooLong));
        let longv = format!("K={}\0", "v".repeat(MAX_VALUE_LEN + 1));
        assert!(matches!(
            parse(longv.as_bytes()),
            Err(TextError::ValueTooLong(_))
        ));
        assert!(matches!(parse(b"A=1\0A=2\0"), Err(TextError::Duplicate(_))));
        // standard keys stop at 255 bytes; CHAP values may be longer
        let alias = format!("TargetAlias={}\0", "v".repeat(256));
        assert!(matches!(
            parse(alias.as_bytes()),
            Err(TextError::ValueTooLong(_))
        ));
        let chap = format!("CHAP_R=0x{}\0", "a".repeat(1000));
        assert!(parse(chap.as_bytes()).is_ok());
        assert_eq!(parse(b"A=\xff\0"), Err(TextError::BadUtf8));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("262144"), Some(262144));
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("12a"), None);
        assert_eq!(parse_number("99999999999999999999999"), None);
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }

    proptest! {
        #[test]
        fn roundtrip(pairs in proptest::collection::btree_map("[A-Za-z][A-Za-z0-9.]{0,20}", "[ -~&&[^\\x00]]{0,40}", 0..10)) {
            let v: Vec<(String, String)> = pairs.into_iter().collect();
            let enc = encode(&v);
            let dec = parse(&enc).unwrap();
            let back: Vec<(String, String)> = dec.into_iter().map(|p| (p.key, p.value)).collect();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }
    }
}
