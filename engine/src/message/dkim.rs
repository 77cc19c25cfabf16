//! DKIM signing (RFC 6376 RSA-SHA256, RFC 8463 Ed25519-SHA256) with mail-auth.
//!
//! Keys come from the `[[dkim]]` entries of the engine config, are read once at start and
//! shared by every campaign. A campaign is signed with every key of its header-From domain, or
//! of the nearest parent domain that has keys (dual signing: one `DKIM-Signature` per key,
//! e.g. RSA for everyone plus Ed25519 for receivers that check it). Relaxed/relaxed
//! canonicalization; the signed header set is [`SIGNED_HEADERS`], which covers the RFC 8058
//! one-click headers and `Feedback-ID` as the providers require.
//!
//! RSA signatures are made by the system's OpenSSL (through mail-auth's `SigningKey` trait):
//! measured on the development machine, ring — mail-auth's own backend — signs RSA-2048 at 1,463
//! signatures/s per core against OpenSSL's 2,593 (`openssl speed rsa2048`), and with RSA
//! signing on, that rate is the engine's whole throughput. Each thread keeps one signing
//! context per key (set up once, as `openssl speed` does): 4,029 signatures/s per core through
//! mail-auth against `openssl speed`'s 4,160 on a later machine (3,886 with a context per
//! signature). Ed25519 stays on ring (fast either way).
//!
//! Body hash: when a campaign's body is the same for every recipient (no merge field in it), the
//! body hash (`bh=`, SHA-256 of the relaxed-canonical body) is computed for its first message
//! and reused for the others ([`BodyHash`]): every key here is wrapped so that mail-auth asks
//! it for the hash (`SigningKey::hash`), and it answers from the campaign when it can. A 20 KB
//! body is ~40 µs of SHA-256 — more than an Ed25519 signature.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use std::cell::Cell;
use std::sync::OnceLock;

use mail_auth::common::crypto::{Ed25519Key, HashOutput, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde::Deserialize;

/// Headers every signature covers (when present). `From` is required by RFC 6376.
pub const SIGNED_HEADERS: [&str; 14] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
    "Precedence",
];

/// The signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    /// RSA with SHA-256 (`a=rsa-sha256`); the key is PKCS#1 or PKCS#8 PEM, ≥ 1024 bits (2048
    /// recommended).
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 with SHA-256 (`a=ed25519-sha256`, RFC 8463); the key is PKCS#8 PEM.
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

/// One `[[dkim]]` entry of the engine config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// Signing domain (`d=`): messages whose header From is this domain or a subdomain of it
    /// are signed with this key.
    pub domain: String,
    /// Selector (`s=`): the public key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// Signature algorithm.
    pub algorithm: Algorithm,
    /// PEM file holding the private key.
    pub key_file: PathBuf,
}

/// Why a key could not be loaded or a message not signed.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// The key file could not be read.
    #[error("dkim key {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// The key file holds no usable key of the configured algorithm.
    #[error("dkim key {path}: {error}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        error: String,
    },
    /// Domain or selector is not a DNS name.
    #[error("dkim entry for {domain:?}/{selector:?}: not a valid domain and selector")]
    Name {
        /// Configured domain.
        domain: String,
        /// Configured selector.
        selector: String,
    },
    /// Signing failed.
    #[error("dkim signing: {0}")]
    Sign(String),
}

/// An RSA private key signing with OpenSSL (PKCS#1 v1.5, SHA-256).
struct OpensslRsa {
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    /// Tells this key's contexts apart in [`RSA_CONTEXTS`].
    id: u64,
}

thread_local! {
    /// Signing contexts set up once per thread and key (OpenSSL 3 looks the algorithm up on
    /// every context set-up; `openssl speed` reuses one too).
    static RSA_CONTEXTS: std::cell::RefCell<Vec<(u64, openssl::pkey_ctx::PkeyCtx<openssl::pkey::Private>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl OpensslRsa {
    fn new(key: openssl::pkey::PKey<openssl::pkey::Private>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        OpensslRsa {
            key,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn context(
        &self,
    ) -> Result<openssl::pkey_ctx::PkeyCtx<openssl::pkey::Private>, openssl::error::ErrorStack>
    {
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&self.key)?;
        ctx.sign_init()?;
        ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
        ctx.set_signature_md(openssl::md::Md::sha256())?;
        Ok(ctx)
    }
}

impl SigningKey for OpensslRsa {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let digest = digest_of(input);
        let crypto = |e: openssl::error::ErrorStack| mail_auth::Error::CryptoError(e.to_string());
        RSA_CONTEXTS.with_borrow_mut(|contexts| {
            let at = match contexts.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    contexts.push((self.id, self.context().map_err(crypto)?));
                    contexts.len() - 1
                }
            };
            let mut sig = Vec::with_capacity(256);
            contexts[at]
                .1
                .sign_to_vec(digest.as_ref(), &mut sig)
                .map_err(crypto)?;
            Ok(sig)
        })
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        mail_auth::common::crypto::Algorithm::RsaSha256
    }
}

/// A campaign's body hash, kept after its first signature when every recipient gets the same
/// body. All keys here hash bodies alike (SHA-256, relaxed), so one serves every key.
#[derive(Debug, Default)]
pub struct BodyHash(pub(crate) OnceLock<ring::digest::Digest>);

/// What the signing in progress on this thread does about the body hash.
#[derive(Clone, Copy)]
enum BodyHint {
    /// Compute it (and remember it here, for the caller to keep).
    Compute,
    /// It was computed: this one.
    Computed(ring::digest::Digest),
    /// Use this one.
    Reuse(ring::digest::Digest),
}

thread_local! {
    static BODY_HINT: Cell<BodyHint> = const { Cell::new(BodyHint::Compute) };
}

thread_local! {
    /// Canonical text being hashed, reused across messages of a thread.
    static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// SHA-256 of canonical text. mail-auth writes canonical text a few bytes at a time; hashing
/// each piece as it comes cost ~4% of the engine's signing CPU in calls alone, so the text
/// is gathered first and hashed in one call.
fn digest_of(data: impl Writable) -> ring::digest::Digest {
    CANONICAL.with_borrow_mut(|buf| {
        buf.clear();
        data.write(buf);
        ring::digest::digest(&ring::digest::SHA256, buf)
    })
}

/// A key whose body hash can come from [`BodyHash`]; signing is the wrapped key's.
struct Reusing<K>(K);

impl<K: SigningKey<Hasher = Sha256>> SigningKey for Reusing<K> {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    // mail-auth asks the key for exactly one hash per signature: the canonical body's.
    fn hash(&self, data: impl Writable) -> HashOutput {
        if let BodyHint::Reuse(d) = BODY_HINT.get() {
            return HashOutput::Digest(d);
        }
        let d = digest_of(data);
        BODY_HINT.set(BodyHint::Computed(d));
        HashOutput::Digest(d)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

enum Signer {
    Rsa(DkimSigner<Reusing<OpensslRsa>, Done>),
    Ed25519(DkimSigner<Reusing<Ed25519Key>, Done>),
}

/// One loaded key, ready to sign.
pub struct DkimKey {
    domain: String,
    selector: String,
    signer: Signer,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

fn valid_label_list(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl DkimKey {
    /// A key from PEM text.
    pub fn from_pem(
        domain: &str,
        selector: &str,
        algorithm: Algorithm,
        pem: &[u8],
        origin: &str,
    ) -> Result<Self, DkimError> {
        if !valid_label_list(domain) || !valid_label_list(selector) {
            return Err(DkimError::Name {
                domain: domain.into(),
                selector: selector.into(),
            });
        }
        let bad = |error: String| DkimError::Key {
            path: origin.into(),
            error,
        };
        let domain = domain.to_ascii_lowercase();
        let signer = match algorithm {
            Algorithm::RsaSha256 => {
                let key = openssl::pkey::PKey::private_key_from_pem(pem)
                    .map_err(|e| bad(format!("not an RSA private key in PEM: {e}")))?;
                let bits = key.rsa().map_err(|_| bad("not an RSA key".into()))?.size() * 8;
                if bits < 1024 {
                    return Err(bad(format!(
                        "{bits}-bit RSA is too short (2048 recommended)"
                    )));
                }
                Signer::Rsa(
                    DkimSigner::from_key(Reusing(OpensslRsa::new(key)))
                        .domain(domain.clone())
                        .selector(selector)
                        .headers(SIGNED_HEADERS)
                        .header_canonicalization(Canonicalization::Relaxed)
                        .body_canonicalization(Canonicalization::Relaxed),
                )
            }
            Algorithm::Ed25519Sha256 => {
                let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(e.to_string()))?;
                let PrivateKeyDer::Pkcs8(p8) = der else {
                    return Err(bad("an Ed25519 key must be PKCS#8".into()));
                };
                let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                    .map_err(|e| bad(e.to_string()))?;
                Signer::Ed25519(
                    DkimSigner::from_key(Reusing(key))
                        .domain(domain.clone())
                        .selector(selector)
                        .headers(SIGNED_HEADERS)
                        .header_canonicalization(Canonicalization::Relaxed)
                        .body_canonicalization(Canonicalization::Relaxed),
                )
            }
        };
        Ok(DkimKey {
            domain,
            selector: selector.into(),
            signer,
        })
    }

    /// Appends this key's `DKIM-Signature: …\r\n` header for `message` (CRLF lines, not
    /// dot-stuffed) to `out`.
    pub fn sign_into(&self, message: &[u8], out: &mut Vec<u8>) -> Result<(), DkimError> {
        self.sign_reusing(message, None, out)
    }

    /// [`DkimKey::sign_into`], taking the body hash from `body` when it holds one and keeping
    /// it there when it does not. Only for a body every message of `body`'s owner shares.
    pub fn sign_reusing(
        &self,
        message: &[u8],
        body: Option<&BodyHash>,
        out: &mut Vec<u8>,
    ) -> Result<(), DkimError> {
        let known = body.and_then(|b| b.0.get().copied());
        BODY_HINT.set(known.map_or(BodyHint::Compute, BodyHint::Reuse));
        let sig = match &self.signer {
            Signer::Rsa(s) => s.sign(message),
            Signer::Ed25519(s) => s.sign(message),
        };
        if let (Some(b), BodyHint::Computed(d)) = (body, BODY_HINT.replace(BodyHint::Compute)) {
            let _ = b.0.set(d);
        }
        let sig = sig.map_err(|e| DkimError::Sign(e.to_string()))?;
        out.extend_from_slice(sig.to_header().as_bytes());
        Ok(())
    }

    /// The signing domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }
}

/// Every configured key, by signing domain; loaded once at start.
#[derive(Debug, Default)]
pub struct DkimKeys {
    by_domain: HashMap<String, Vec<Arc<DkimKey>>>,
}

impl DkimKeys {
    /// Reads every configured key file.
    pub fn load(entries: &[DkimKeyConfig]) -> Result<Self, DkimError> {
        let mut keys = Vec::with_capacity(entries.len());
        for e in entries {
            let origin = e.key_file.display().to_string();
            let pem = std::fs::read(&e.key_file).map_err(|error| DkimError::Read {
                path: origin.clone(),
                error,
            })?;
            keys.push(DkimKey::from_pem(
                &e.domain,
                &e.selector,
                e.algorithm,
                &pem,
                &origin,
            )?);
        }
        Ok(Self::from_keys(keys))
    }

    /// A set of already loaded keys.
    pub fn from_keys(keys: Vec<DkimKey>) -> Self {
        let mut by_domain: HashMap<String, Vec<Arc<DkimKey>>> = HashMap::new();
        for k in keys {
            by_domain
                .entry(k.domain.clone())
                .or_default()
                .push(Arc::new(k));
        }
        DkimKeys { by_domain }
    }

    /// The keys for a header-From domain: its own, else the nearest parent's; none if no
    /// configured domain covers it.
    pub fn for_domain(&self, from_domain: &str) -> Vec<Arc<DkimKey>> {
        let d = from_domain.to_ascii_lowercase();
        let mut rest = d.as_str();
        loop {
            if let Some(k) = self.by_domain.get(rest) {
                return k.clone();
            }
            match rest.split_once('.') {
                Some((_, parent)) if parent.contains('.') => rest = parent,
                _ => return Vec::new(),
            }
        }
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

#[cfg(test)]
mod tests;
