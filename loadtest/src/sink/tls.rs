//! STARTTLS support: a self-signed certificate made once per sink.

use std::io;
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Makes a TLS acceptor with a fresh self-signed certificate for `hostname`.
///
/// Senders do opportunistic TLS and do not verify the certificate, so self-signed is enough
/// to exercise the STARTTLS path and the encryption cost.
pub fn self_signed_acceptor(hostname: &str) -> io::Result<TlsAcceptor> {
    let certified = rcgen::generate_simple_self_signed(vec![hostname.to_owned()])
        .map_err(|e| io::Error::other(format!("self-signed certificate for {hostname}: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let chain = vec![certified.cert.der().clone()];
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| io::Error::other(format!("TLS protocol versions: {e}")))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| io::Error::other(format!("TLS server certificate: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
