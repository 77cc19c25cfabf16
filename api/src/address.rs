//! Recipient address validation, shared by every path that takes an address.

use crate::error::ApiError;

/// A valid address (RFC 5321 syntax via lettre's parser; no CR/LF/NUL, ≤ 254 bytes),
/// returned with its domain lower-cased, and the lower-cased form for uniqueness.
pub fn normalize(field: &str, raw: &str) -> Result<(String, String), ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if raw.len() > 254 {
        return Err(ApiError::invalid(field, "longer than 254 bytes"));
    }
    if raw.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(field, "contains control characters"));
    }
    let addr: lettre::Address = raw
        .parse()
        .map_err(|e| ApiError::invalid(field, format!("not an email address: {e}")))?;
    let email = format!("{}@{}", addr.user(), addr.domain().to_ascii_lowercase());
    let lower = email.to_lowercase();
    Ok((email, lower))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_addresses() {
        assert_eq!(
            normalize("email", " Taro@Example.JP ").expect("valid"),
            ("Taro@example.jp".to_owned(), "taro@example.jp".to_owned())
        );
        for bad in [
            "",
            "x",
            "a@",
            "@b.jp",
            "a@b.jp\r\nBcc: c@d",
            "a b@c.jp",
            "a@b.jp\0",
        ] {
            let e = normalize("email", bad).expect_err(bad);
            assert!(
                matches!(e, ApiError::Invalid { ref field, .. } if field == "email"),
                "{bad:?}"
            );
        }
    }
}
