//! API keys: `hk_<prefix>_<secret>`, 8 hex characters of visible prefix and 32 random bytes of
//! secret from the OS's CSPRNG. Only the SHA-256 of the whole key is stored; a high-entropy key
//! needs no slow hash, and lookups stay one index probe.

use std::io::Read;

use sha2::{Digest, Sha256};

/// A freshly made key: the text to show once, its prefix and its hash.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The whole key, shown to the customer once.
    pub key: String,
    /// The visible prefix, kept for support.
    pub prefix: String,
    /// SHA-256 of `key`, what is stored.
    pub hash: Vec<u8>,
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes a new key.
pub fn generate() -> std::io::Result<NewKey> {
    let prefix = random_hex(4)?;
    let key = format!("hk_{prefix}_{}", random_hex(32)?);
    let hash = hash(&key);
    Ok(NewKey { key, prefix, hash })
}

/// The prefix of a key given as its prefix (8 lower-case hex characters) or whole
/// (`hk_<prefix>_<64 hex>`), as an operator pastes it; `None` for anything else.
pub fn prefix_of(given: &str) -> Option<&str> {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let prefix = match given.strip_prefix("hk_") {
        Some(rest) => {
            let (prefix, secret) = rest.split_once('_')?;
            hex(secret, 64).then_some(prefix)?
        }
        None => given,
    };
    hex(prefix, 8).then_some(prefix)
}

/// The stored form of a key.
pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_prefixed_and_hashed() {
        let a = generate().expect("urandom");
        let b = generate().expect("urandom");
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with(&format!("hk_{}_", a.prefix)));
        assert_eq!(a.key.len(), 3 + 8 + 1 + 64);
        assert_eq!(a.hash, hash(&a.key));
        assert_eq!(a.hash.len(), 32);
    }

    #[test]
    fn a_key_is_known_by_its_prefix_or_whole() {
        let k = generate().expect("urandom");
        assert_eq!(prefix_of(&k.key), Some(k.prefix.as_str()));
        assert_eq!(prefix_of(&k.prefix), Some(k.prefix.as_str()));
        let secret = &k.key[12..];
        for bad in [
            String::new(),
            format!("hk_{}", k.prefix),
            format!("hk_{}_", k.prefix),
            format!("hk_zz_{secret}"),
            format!("{}_{secret}", k.prefix),
            format!("hk_{}_{secret}_x", k.prefix),
            format!("hk_{}_{}", k.prefix, &secret[1..]),
            k.prefix.to_uppercase() + "G",
            format!("{}0", k.prefix),
        ] {
            assert_eq!(prefix_of(&bad), None, "{bad}");
        }
    }
}
