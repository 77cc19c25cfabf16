//! Recipient address validation, shared by every path that takes an address.

use crate::error::ApiError;

/// A valid address (RFC 5321 syntax via lettre's parser; no control characters or invisible
/// formatting ([`crate::text::is_invisible_format`]), ≤ 254 bytes), returned with its domain in ASCII — an internationalized domain becomes its
/// punycode A-label form (UTS 46), so MX lookups, sharding and site rules see one spelling —
/// and lower-cased, and the lower-cased form for uniqueness. The domain must be a host name
/// after conversion (UTS 46 strict: letters, digits and inner hyphens, labels ≤ 63, ≤ 253 in
/// all): lettre takes Unicode domains whose A-label form would carry `*` or `]`, which the
/// lenient conversion let through and the address then failed its own check again (found by
/// the import fuzzer); address literals such as `[192.0.2.1]` are refused too — a newsletter
/// goes to a domain's MX. What this returns is valid input to it again, unchanged. A non-ASCII local part is kept:
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
    if let Some(c) = crate::text::invisible_format_in(raw) {
        return Err(ApiError::invalid(
            field,
            format!("contains the invisible formatting character {c}"),
        ));
    }
    let addr: lettre::Address = raw
        .parse()
        .map_err(|e| ApiError::invalid(field, format!("not an email address: {e}")))?;
    let domain = idna::domain_to_ascii_strict(addr.domain())
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

/// Once per database (recorded in `data_fixes` as `ascii-domains`): addresses stored before
/// [`normalize`] turned internationalized domains into A-labels get the A-label form too. Each
/// such suppression gains an A-label twin (both forms stay suppressed: an address imported
/// again now arrives in A-label form and must still match); each such subscriber is rewritten
/// unless its list already holds the A-label form (then the old row stays as it was).
pub async fn backfill_ascii_domains(db: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO data_fixes (name) VALUES ('ascii-domains') ON CONFLICT (name) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 0 {
        return Ok(());
    }
    let ascii = |email: &str| normalize("email", email).ok();
    let sups: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT tenant_id, email_lower, reason, source FROM suppressions \
         WHERE email_lower ~ '@[^@]*[^[:ascii:]]'",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (tenant, email, reason, source) in sups {
        if let Some((_, lower)) = ascii(&email).filter(|(_, l)| *l != email) {
            sqlx::query(
                "INSERT INTO suppressions (tenant_id, email_lower, reason, source) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(lower)
            .bind(reason)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        }
    }
    let subs: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, email FROM subscribers WHERE email ~ '@[^@]*[^[:ascii:]]'")
            .fetch_all(&mut *tx)
            .await?;
    for (id, email) in subs {
        if let Some((new, lower)) = ascii(&email).filter(|(e, _)| *e != email) {
            sqlx::query(
                "UPDATE subscribers s SET email = $2, email_lower = $3 WHERE s.id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM subscribers o \
                                 WHERE o.list_id = s.list_id AND o.email_lower = $3)",
            )
            .bind(id)
            .bind(new)
            .bind(lower)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_normalize_returns_it_takes_again_unchanged() {
        for raw in [
            "Taro@Example.JP",
            "taro@例え.テスト",
            "太郎@Bücher.example",
            "a.b+c@sub-domain.example.co.jp",
            "x@xn--bcher-kva.example",
        ] {
            let (email, lower) = normalize("email", raw).expect(raw);
            assert_eq!(
                normalize("email", &email).expect(raw),
                (email.clone(), lower)
            );
        }
    }

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
            // Invisible formatting (a reversed display of the address).
            "ab\u{202e}c@b.jp",
            "a\u{200b}@b.jp",
            // Host names only: no address literal, no `_`, `*` or `]`, no edge hyphen.
            "a@[192.0.2.1]",
            "a@ex_ample.jp",
            "a@-b.jp",
            "a@b-.jp",
            // Unicode whose A-label form is no host name (the fuzzer's find).
            "x@y\u{494}tGGGG\u{cb2c}*****]\u{494}t",
        ] {
            let e = normalize("email", bad).expect_err(bad);
            assert!(
                matches!(e, ApiError::Invalid { ref field, .. } if field == "email"),
                "{bad:?}"
            );
        }
    }
}
