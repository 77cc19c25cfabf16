//! Recipient address validation, shared by every path that takes an address.

use crate::error::ApiError;

/// A valid address (RFC 5321 syntax via lettre's parser; no control characters, ≤ 254
/// bytes), returned with its domain in ASCII — an internationalized domain becomes its
/// punycode A-label form (UTS 46), so MX lookups, sharding and site rules see one spelling —
/// and lower-cased, and the lower-cased form for uniqueness. A non-ASCII local part is kept:
/// such a message goes only to servers that offer SMTPUTF8 (the engine refuses it elsewhere).
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
    let domain = idna::domain_to_ascii(addr.domain())
        .ok()
        .filter(|d| !d.is_empty() && d.len() <= 253 && d.is_ascii())
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                "the domain is not a valid (international) domain name",
            )
        })?;
    let email = format!("{}@{}", addr.user(), domain.to_ascii_lowercase());
    if email.len() > 254 {
        return Err(ApiError::invalid(field, "longer than 254 bytes"));
    }
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
        // Internationalized domains become A-labels; Unicode local parts stay.
        assert_eq!(
            normalize("email", "taro@例え.テスト").expect("idn").0,
            "taro@xn--r8jz45g.xn--zckzah"
        );
        assert_eq!(
            normalize("email", "太郎@Bücher.example")
                .expect("utf8 local")
                .0,
            "太郎@xn--bcher-kva.example"
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
