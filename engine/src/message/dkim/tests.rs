use super::*;

const RFC8463_KEY: &[u8] = include_bytes!("testdata/rfc8463-ed25519.pem");
const RSA_KEY: &[u8] = include_bytes!("testdata/rsa2048.pem");

/// The message of RFC 8463 Appendix A (CRLF lines).
const RFC8463_MESSAGE: &[u8] = include_bytes!("testdata/rfc8463-message.eml");

fn tag<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let unfolded: String = header.split_once(':')?.1.to_owned();
    let pos = unfolded.split(';').position(|t| {
        t.trim()
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == name)
    })?;
    let start = header.split_once(':')?.0.len() + 1;
    let rest = &header[start..];
    rest.split(';')
        .nth(pos)
        .and_then(|t| t.split_once('='))
        .map(|(_, v)| v)
}

fn strip_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn rfc8463_vector_body_hash_and_tags() {
    let key = DkimKey::from_pem(
        "football.example.com",
        "brisbane",
        Algorithm::Ed25519Sha256,
        RFC8463_KEY,
        "rfc8463",
    )
    .expect("RFC 8463 key loads");
    let mut out = Vec::new();
    key.sign_into(RFC8463_MESSAGE, &mut out).expect("signs");
    let header = String::from_utf8(out).expect("ascii");
    assert!(header.starts_with("DKIM-Signature:"), "{header}");
    assert!(header.ends_with("\r\n"));
    // The body hash of the RFC's signatures (relaxed body of the same message).
    assert_eq!(
        tag(&header, "bh").map(strip_ws).as_deref(),
        Some("2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=")
    );
    assert_eq!(
        tag(&header, "a").map(strip_ws).as_deref(),
        Some("ed25519-sha256")
    );
    assert_eq!(
        tag(&header, "c").map(strip_ws).as_deref(),
        Some("relaxed/relaxed")
    );
    assert_eq!(
        tag(&header, "d").map(strip_ws).as_deref(),
        Some("football.example.com")
    );
    assert_eq!(tag(&header, "s").map(strip_ws).as_deref(), Some("brisbane"));
    let h = strip_ws(tag(&header, "h").expect("h="));
    // Every header of the set is listed, present or not: one added later in transit (a
    // List-Unsubscribe, say) breaks the signature instead of riding on it.
    for name in SIGNED_HEADERS {
        assert!(
            h.split(':').any(|x| x.eq_ignore_ascii_case(name)),
            "{name} signed: {h}"
        );
    }
}

#[test]
fn rsa_key_signs_and_bad_keys_are_errors() {
    let rsa = DkimKey::from_pem("acme.test", "s1", Algorithm::RsaSha256, RSA_KEY, "rsa")
        .expect("RSA key loads");
    let mut out = Vec::new();
    rsa.sign_into(RFC8463_MESSAGE, &mut out).expect("signs");
    let header = String::from_utf8(out).expect("ascii");
    assert_eq!(
        tag(&header, "a").map(strip_ws).as_deref(),
        Some("rsa-sha256")
    );
    // 2048-bit RSA: a 256-byte signature, 344 base64 characters.
    assert_eq!(tag(&header, "b").map(strip_ws).map(|b| b.len()), Some(344));

    assert!(matches!(
        DkimKey::from_pem("acme.test", "s1", Algorithm::Ed25519Sha256, RSA_KEY, "x"),
        Err(DkimError::Key { .. })
    ));
    assert!(matches!(
        DkimKey::from_pem("acme.test", "s1", Algorithm::RsaSha256, b"not a pem", "x"),
        Err(DkimError::Key { .. })
    ));
    assert!(matches!(
        DkimKey::from_pem("acme test", "s1", Algorithm::RsaSha256, RSA_KEY, "x"),
        Err(DkimError::Name { .. })
    ));
    assert!(matches!(
        DkimKeys::load(&[DkimKeyConfig {
            domain: "acme.test".into(),
            selector: "s1".into(),
            algorithm: Algorithm::RsaSha256,
            key_file: "/nonexistent/key.pem".into(),
        }]),
        Err(DkimError::Read { .. })
    ));
}

#[test]
fn keys_are_chosen_by_from_domain_or_nearest_parent() {
    let rsa =
        DkimKey::from_pem("acme.test", "r", Algorithm::RsaSha256, RSA_KEY, "rsa").expect("loads");
    let ed = DkimKey::from_pem(
        "Acme.Test",
        "e",
        Algorithm::Ed25519Sha256,
        RFC8463_KEY,
        "ed",
    )
    .expect("loads");
    let other = DkimKey::from_pem("news.other.test", "o", Algorithm::RsaSha256, RSA_KEY, "o")
        .expect("loads");
    let keys = DkimKeys::from_keys(vec![rsa, ed, other]);
    assert_eq!(keys.for_domain("acme.test").len(), 2, "dual signing");
    assert_eq!(keys.for_domain("mail.ACME.test").len(), 2, "parent domain");
    assert_eq!(keys.for_domain("news.other.test").len(), 1);
    assert!(
        keys.for_domain("other.test").is_empty(),
        "never a child's key"
    );
    assert!(keys.for_domain("test").is_empty());
    assert!(keys.for_domain("unknown.example").is_empty());
    assert!(DkimKeys::default().is_empty());
}

/// Not a test of speed (those live in the bench): prints the sign rate for a quick look.
#[test]
#[ignore = "manual: cargo test -p hikyaku-engine --release --lib sign_rate -- --ignored --nocapture"]
fn sign_rate() {
    let rsa = DkimKey::from_pem("acme.test", "s1", Algorithm::RsaSha256, RSA_KEY, "rsa")
        .expect("RSA key loads");
    let mut out = Vec::new();
    let n = 2000;
    let t = crate::clock::now();
    for _ in 0..n {
        out.clear();
        rsa.sign_into(RFC8463_MESSAGE, &mut out).expect("signs");
    }
    println!(
        "{:.0} RSA-2048 signatures/s on one core",
        n as f64 / t.elapsed().as_secs_f64()
    );
}
