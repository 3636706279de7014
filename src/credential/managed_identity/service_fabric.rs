//! Service Fabric: detected by `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` +
//! `IDENTITY_SERVER_THUMBPRINT`. GET `{IDENTITY_ENDPOINT}?api-version=2019-07-01-preview&resource=..`
//! with the header `secret`; no user-assigned identities.
//!
//! The endpoint presents a self-signed certificate. It is trusted
//! only if its SHA-1 thumbprint equals `IDENTITY_SERVER_THUMBPRINT` (hex, compared
//! case-insensitively, as MSAL's `X509Certificate.GetCertHashString()` comparison does); no
//! other certificate, not even a publicly trusted one, is accepted. The TLS handshake
//! signatures are still verified, so the server must hold the certificate's key.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use secrecy::SecretString;

use super::{
    optional_env, secret_header, Build, Call, Env, ManagedIdentityCredentialBuilder,
    ManagedIdentitySource, Source, SECRET,
};
use crate::Error;

const API_VERSION: &str = "2019-07-01-preview";

pub(super) struct ServiceFabric {
    header: SecretString,
    thumbprint: String,
}

pub(super) fn detect(env: Env<'_>) -> Option<ManagedIdentityCredentialBuilder> {
    let endpoint = optional_env(env, "IDENTITY_ENDPOINT")?;
    let header = optional_env(env, "IDENTITY_HEADER")?;
    let thumbprint = optional_env(env, "IDENTITY_SERVER_THUMBPRINT")?;
    Some(builder(endpoint, header, thumbprint))
}

pub(super) fn builder(
    endpoint: String,
    header: String,
    thumbprint: String,
) -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredentialBuilder::new(
        ManagedIdentitySource::ServiceFabric,
        ServiceFabric {
            header: SecretString::from(header),
            thumbprint,
        },
        endpoint,
    )
}

impl Source for ServiceFabric {
    fn validate(&mut self, build: Build<'_>) -> Result<(), Error> {
        build.no_user_assigned()?;
        if build.client.is_some() {
            return Err(Error::config(
                "Service Fabric builds its own HTTP client (it trusts only the pinned certificate)",
            ));
        }
        secret_header(&self.header, "IDENTITY_HEADER")?;
        *build.client = Some(client(&self.thumbprint)?);
        Ok(())
    }

    fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, Error> {
        let secret = secret_header(&self.header, "IDENTITY_HEADER")?;
        Ok(call.get(API_VERSION, &[]).header(SECRET, secret))
    }

    fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("identity_header", &"<redacted>")
            .field("server_thumbprint", &self.thumbprint);
    }
}

/// Parses a hex SHA-1 thumbprint (40 hex digits; `:` and spaces between them are ignored).
pub(super) fn parse_thumbprint(thumbprint: &str) -> Result<[u8; 20], Error> {
    let hex: Vec<u8> = thumbprint
        .bytes()
        .filter(|b| !matches!(b, b':' | b' '))
        .collect();
    let bad =
        || Error::config("IDENTITY_SERVER_THUMBPRINT must be a SHA-1 thumbprint of 40 hex digits");
    if hex.len() != 40 {
        return Err(bad());
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A client that trusts only the certificate with `thumbprint`.
pub(super) fn client(thumbprint: &str) -> Result<reqwest::Client, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = ThumbprintVerifier {
        thumbprint: parse_thumbprint(thumbprint)?,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| Error::config("could not configure TLS for Service Fabric"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|_| Error::config("could not build the Service Fabric HTTP client"))
}

/// Accepts exactly the certificate whose SHA-1 digest is `thumbprint`.
#[derive(Debug)]
struct ThumbprintVerifier {
    thumbprint: [u8; 20],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ThumbprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = digest(&SHA1_FOR_LEGACY_USE_ONLY, end_entity.as_ref());
        if actual.as_ref() == self.thumbprint.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::warn!(
                source = "service_fabric",
                "managed identity endpoint certificate does not match IDENTITY_SERVER_THUMBPRINT"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn c3_service_fabric_thumbprint_parsing() {
        let t = parse_thumbprint("A1b2C3d4E5f60718293a4B5c6D7e8F9011223344").unwrap();
        assert_eq!(t[0], 0xa1);
        assert_eq!(t[19], 0x44);
        assert_eq!(
            parse_thumbprint("a1:b2:c3:d4:e5:f6:07:18:29:3a:4b:5c:6d:7e:8f:90:11:22:33:44")
                .unwrap(),
            t
        );
        for bad in ["", "a1b2", "zz".repeat(20).as_str(), &"a".repeat(41)] {
            assert!(
                matches!(parse_thumbprint(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }
}
