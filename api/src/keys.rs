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
}
