//! Syntax checks and normalisation of iSCSI names (RFC 3720 §3.2.6, RFC 7143 §4.2.7):
//! `iqn.yyyy-mm.reversed.domain[:anything]`, `eui.<16 hex>`, `naa.<16 or 32 hex>`.
//! iqn names are case-insensitive and normalised to lowercase; eui/naa hex digits are
//! normalised to uppercase. Only the ASCII subset (a-z 0-9 - . :) is accepted.

/// Longest iSCSI name in bytes.
pub const MAX_NAME_LEN: usize = 223;

/// Validates and normalises an iSCSI name, returning the reason when invalid.
pub fn normalize_iscsi_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty iSCSI name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{name}` is {} bytes long, the maximum is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let lower = name.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("iqn.") {
        check_iqn_body(rest).map_err(|why| format!("`{name}` is not a valid iqn name: {why}"))?;
        return Ok(lower);
    }
    for (prefix, lens) in [("eui.", &[16usize][..]), ("naa.", &[16, 32][..])] {
        if let Some(hex) = lower.strip_prefix(prefix) {
            if !lens.contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "`{name}`: `{prefix}` must be followed by {} hex digits",
                    if lens.len() == 1 { "16" } else { "16 or 32" }
                ));
            }
            return Ok(format!("{prefix}{}", hex.to_ascii_uppercase()));
        }
    }
    Err(format!(
        "`{name}` must start with `iqn.`, `eui.` or `naa.` (e.g. iqn.2024-01.org.example:storage)"
    ))
}

fn check_iqn_body(rest: &str) -> Result<(), String> {
    let (date, after) = rest
        .split_once('.')
        .ok_or("expected iqn.yyyy-mm.reversed.domain")?;
    let db = date.as_bytes();
    let date_ok = db.len() == 7
        && db.get(4) == Some(&b'-')
        && date
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 4 || b.is_ascii_digit());
    if !date_ok {
        return Err(format!("date `{date}` is not yyyy-mm"));
    }
    let month: u32 = date.get(5..).and_then(|m| m.parse().ok()).unwrap_or(0);
    if !(1..=12).contains(&month) {
        return Err(format!("month in `{date}` is not 01..12"));
    }
    let (domain, extra) = match after.split_once(':') {
        Some((d, e)) => (d, Some(e)),
        None => (after, None),
    };
    if domain.is_empty() {
        return Err("missing the reversed domain name after the date".into());
    }
    for label in domain.split('.') {
        if label.is_empty()
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "domain part `{domain}` must be dot-separated labels of a-z, 0-9 and -"
            ));
        }
    }
    if let Some(e) = extra {
        if e.is_empty() {
            return Err("nothing after `:`".into());
        }
        if let Some(c) = e
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':')))
        {
            return Err(format!(
                "character `{c}` is not allowed (use a-z 0-9 - . :)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        assert_eq!(
            normalize_iscsi_name("IQN.2024-01.Org.Example:Storage.Disk1").as_deref(),
            Ok("iqn.2024-01.org.example:storage.disk1")
        );
        assert!(normalize_iscsi_name("iqn.2001-04.com.example").is_ok());
        assert_eq!(
            normalize_iscsi_name("eui.02004567a425678d").as_deref(),
            Ok("eui.02004567A425678D")
        );
        assert!(normalize_iscsi_name("naa.52004567BA64678D").is_ok());
        assert!(normalize_iscsi_name("naa.6001405abcdef0123456789abcdef012").is_ok());
    }

    #[test]
    fn bad_names() {
        for bad in [
            "",
            "iqn.",
            "iqn.2024.org.example",
            "iqn.2024-13.org.example",
            "iqn.24-01.org.example",
            "iqn.2024-01.",
            "iqn.2024-01.org..example",
            "iqn.2024-01.org.example:",
            "iqn.2024-01.org.example:has space",
            "iqn.2024-01.org_x.example",
            "eui.0123",
            "naa.0123456789abcdeX",
            "foo.bar",
        ] {
            assert!(normalize_iscsi_name(bad).is_err(), "{bad} accepted");
        }
        let long = format!("iqn.2024-01.org.example:{}", "a".repeat(300));
        assert!(normalize_iscsi_name(&long).is_err());
    }
}
