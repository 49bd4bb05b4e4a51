//! Byte sizes as written in config files and flags: a plain integer (bytes) or a number
//! with a binary suffix K, M, G, T (optionally followed by `iB` or `B`), e.g. `"1G"`,
//! `"512MiB"`, `1073741824`.

use serde::Deserialize;

/// A size as it appears in TOML: integer or string.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl RawSize {
    /// The size in bytes, or why it is not one.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(b) => Ok(*b),
            RawSize::Text(t) => parse_size(t),
        }
    }
}

/// Parses `"1G"`, `"512MiB"`, `"4096"` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "`{s}` is not a size (expected e.g. 1G, 512M, 4096)"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: number too large"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("`{s}`: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}`: size too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(n in 0u64..(1 << 20), unit in 0usize..5) {
            let (suffix, shift) = [("", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)][unit];
            prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n << shift));
        }
    }
}
