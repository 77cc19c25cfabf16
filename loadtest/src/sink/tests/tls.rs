//! STARTTLS with the sink's self-signed certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::client::{body, Client};
use super::start_with;
use crate::sink::Profile;

/// Accepts any certificate, as opportunistic SMTP TLS does (signatures are still checked).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn starttls_upgrades_and_resets_the_session() {
    let (sink, addr) = start_with(Profile::plain("plain"), true).await;
    let (mut c, ehlo) = Client::ready(addr).await;
    assert!(ehlo.contains("250-STARTTLS\r\n"));
    c.send("STARTTLS\r\n").await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS\r\n");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("sink.test").unwrap(), c.stream)
        .await
        .unwrap();
    let mut c = Client::over(tls);

    // The session forgot the EHLO: MAIL needs a new one.
    c.send("MAIL FROM:<a@s.test>\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Bad sequence of commands\r\n");
    c.send("EHLO client.test\r\n").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.ends_with("250 HELP\r\n") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    c.send("STARTTLS\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Bad sequence of commands\r\n");
    c.send(format!(
        "MAIL FROM:<a@s.test>\r\nRCPT TO:<tls@x.test>\r\nDATA\r\n{}",
        body("tls")
    ))
    .await;
    let r = c.replies(4).await;
    assert!(r[3].starts_with("250 2.0.0 Ok: queued"), "{r:?}");
    assert_eq!(sink.stats().count_of("tls@x.test"), 1);
    sink.stop().await;
}

#[tokio::test]
async fn starttls_not_offered_is_refused() {
    let (sink, addr) = start_with(Profile::plain("plain"), false).await;
    let (mut c, _) = Client::ready(addr).await;
    c.send("STARTTLS\r\n").await;
    assert_eq!(c.reply().await, "454 4.7.0 TLS not available\r\n");
    sink.stop().await;
}
