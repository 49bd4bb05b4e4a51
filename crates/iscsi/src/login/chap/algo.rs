//! CHAP building blocks (RFC 1994, RFC 7143 §12.1): the digest algorithms (CHAP_A 5 = MD5,
//! 7 = SHA-256), the response computation `H(identifier || secret || challenge)`, a secret
//! type that never prints itself, and the binary encodings of CHAP_C/CHAP_R (RFC 7143 §6.1:
//! `0x` hex or `0b` base64) and of CHAP_I (a number, decimal or hex).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest binary value (challenge or response) we decode, in bytes.
pub const MAX_BINARY_LEN: usize = 1024;

/// A CHAP digest algorithm the target can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChapAlgorithm {
    /// CHAP_A=5.
    Md5,
    /// CHAP_A=7 (the IANA PPP authentication algorithm number open-iscsi and LIO use).
    Sha256,
}

impl ChapAlgorithm {
    /// Every supported algorithm, weakest first (the order used to pick the strongest).
    pub const ALL: [ChapAlgorithm; 2] = [ChapAlgorithm::Md5, ChapAlgorithm::Sha256];

    /// The CHAP_A value.
    pub fn code(self) -> u8 {
        match self {
            ChapAlgorithm::Md5 => 5,
            ChapAlgorithm::Sha256 => 7,
        }
    }

    /// The algorithm with this CHAP_A value, if supported.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            5 => Some(ChapAlgorithm::Md5),
            7 => Some(ChapAlgorithm::Sha256),
            _ => None,
        }
    }

    /// The name used in configuration files and logs ("MD5", "SHA-256").
    pub fn name(self) -> &'static str {
        match self {
            ChapAlgorithm::Md5 => "MD5",
            ChapAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses a configuration name: "MD5", "SHA-256" or "SHA256" (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "MD5" => Some(ChapAlgorithm::Md5),
            "SHA-256" | "SHA256" => Some(ChapAlgorithm::Sha256),
            _ => None,
        }
    }

    /// Digest (and so CHAP_R) length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ChapAlgorithm::Md5 => 16,
            ChapAlgorithm::Sha256 => 32,
        }
    }

    /// Length of the challenge the target sends: the digest length, as LIO does.
    pub fn challenge_len(self) -> usize {
        self.digest_len()
    }

    /// The CHAP response: H(identifier || secret || challenge).
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        match self {
            ChapAlgorithm::Md5 => Md5::new()
                .chain_update([id])
                .chain_update(secret)
                .chain_update(challenge)
                .finalize()
                .to_vec(),
            ChapAlgorithm::Sha256 => Sha256::new()
                .chain_update([id])
                .chain_update(secret)
                .chain_update(challenge)
                .finalize()
                .to_vec(),
        }
    }
}

/// A CHAP secret. `Debug` prints `<redacted>`; there is no `Display`.
#[derive(Clone)]
pub struct ChapSecret(Vec<u8>);

impl ChapSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        ChapSecret(bytes.into())
    }

    /// The secret bytes, for computing a response.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality (for the "mutual secret equals initiator secret" check).
    pub fn same_as(&self, other: &ChapSecret) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl std::fmt::Debug for ChapSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChapSecret(<redacted>)")
    }
}

/// Constant-time comparison of a received response with the expected one.
pub fn responses_match(received: &[u8], expected: &[u8]) -> bool {
    bool::from(received.ct_eq(expected))
}

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a binary value: `0x`/`0X` + hex digits (an odd count gets an implied leading zero)
/// or `0b`/`0B` + base64. `None` when malformed, empty or longer than [`MAX_BINARY_LEN`].
pub fn decode_binary(v: &str) -> Option<Vec<u8>> {
    let (prefix, body) = (v.get(..2)?, v.get(2..)?);
    if body.is_empty() || body.len() > MAX_BINARY_LEN * 2 {
        return None;
    }
    let out = match prefix {
        "0x" | "0X" => decode_hex(body)?,
        "0b" | "0B" => BASE64.decode(body).ok()?,
        _ => return None,
    };
    (!out.is_empty() && out.len() <= MAX_BINARY_LEN).then_some(out)
}

fn decode_hex(body: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len().div_ceil(2));
    let rest = if bytes.len() % 2 == 1 {
        out.push(digit(bytes[0])?);
        &bytes[1..]
    } else {
        bytes
    };
    for pair in rest.chunks_exact(2) {
        out.push(digit(pair[0])? << 4 | digit(pair[1])?);
    }
    Some(out)
}

/// `0x` + lowercase hex: the encoding every initiator accepts (libiscsi only this one).
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses CHAP_I: a number 0..=255, decimal or `0x` hex.
pub fn decode_identifier(v: &str) -> Option<u8> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if h.is_empty() || h.len() > 8 {
            return None;
        }
        let t = h.trim_start_matches('0');
        return match decode_hex(if t.is_empty() { "0" } else { t })?.as_slice() {
            [x] => Some(*x),
            _ => None,
        };
    }
    if v.is_empty() || v.len() > 3 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse::<u16>().ok().and_then(|n| u8::try_from(n).ok())
}
