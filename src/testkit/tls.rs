//! The testkit over HTTPS on loopback (feature `testkit-tls`).
//!
//! SDK clients refuse to send a bearer token over plain http (the Azure SDK's bearer-token
//! policy rejects any non-`https` URL), so their tests need TLS. [`FakeIdentityProvider::start_https`]
//! generates a throw-away certificate authority and a server certificate for `localhost` and
//! `127.0.0.1` signed by it, and serves the **same** provider (faults, log, issued tokens) on a
//! second loopback port over TLS. Trust [`HttpsEndpoint::ca_certificate_pem`] in the client
//! under test (reqwest: `ClientBuilder::tls_certs_merge`).
//!
//! Besides the testkit's own paths, the HTTPS port answers SDK-shaped API surfaces (see
//! [`sdk_api`](super::sdk_api)): Key Vault `GET /secrets/{name}` and Azure OpenAI
//! `POST /openai/deployments/{deployment}/chat/completions`. They are the testkit's protected
//! API ([`Target::Api`](super::Target::Api)) underneath: the same token check, the same faults,
//! the same log.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

use super::handler::{lock, State};
use super::sdk_api::{HttpsLog, HttpsRequest};
use super::FakeIdentityProvider;
use crate::Error;

/// The HTTPS port of a [`FakeIdentityProvider`]. Stops serving when dropped.
pub struct HttpsEndpoint {
    addr: SocketAddr,
    ca_der: Vec<u8>,
    ca_pem: String,
    log: HttpsLog,
    task: JoinHandle<()>,
}

impl fmt::Debug for HttpsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for HttpsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpsEndpoint {
    /// `https://localhost:<port>` (the certificate is also valid for `127.0.0.1`).
    pub fn uri(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The loopback address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token endpoint for `tenant`, over HTTPS.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.uri())
    }

    /// The protected API, over HTTPS.
    pub fn api_url(&self) -> String {
        format!("{}/api/data", self.uri())
    }

    /// Every request this port answered, with its path.
    pub fn requests(&self) -> Vec<HttpsRequest> {
        lock(&self.log).clone()
    }

    /// The generated certificate authority, DER-encoded.
    pub fn ca_certificate_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The generated certificate authority, PEM-encoded.
    pub fn ca_certificate_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A reqwest client builder that trusts the generated authority (and the platform's).
    ///
    /// # Errors
    /// [`Error::Config`] if reqwest rejects the certificate (it does not).
    #[cfg(feature = "reqwest")]
    pub fn reqwest_builder(&self) -> Result<reqwest::ClientBuilder, Error> {
        let ca = reqwest::Certificate::from_der(&self.ca_der)
            .map_err(|e| Error::Config(format!("testkit CA rejected: {e}")))?;
        Ok(reqwest::Client::builder().tls_certs_merge([ca]))
    }
}

fn cert_error(e: impl fmt::Display) -> Error {
    Error::Config(format!("testkit certificate: {e}"))
}

impl FakeIdentityProvider {
    /// Serves this provider over HTTPS too, on another `127.0.0.1` port, with a certificate
    /// signed by a certificate authority generated for this call.
    ///
    /// # Errors
    /// [`Error::Config`] if the certificates cannot be generated, [`Error::Unavailable`] if
    /// the port cannot be bound.
    pub async fn start_https(&self) -> Result<HttpsEndpoint, Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().map_err(cert_error)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "resilient-auth testkit CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_error)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().map_err(cert_error)?;
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(cert_error)?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(cert_error)?;

        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(cert_error)?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone()], key)
        .map_err(cert_error)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let (listener, addr) = super::server::bind_loopback().await?;
        let log = HttpsLog::default();
        let task = tokio::spawn(serve_tls(
            listener,
            acceptor,
            self.state.clone(),
            log.clone(),
        ));
        Ok(HttpsEndpoint {
            addr,
            log,
            ca_der: ca_cert.der().to_vec(),
            ca_pem: pem_certificate(ca_cert.der()),
            task,
        })
    }
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    log: HttpsLog,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // e.g. out of file descriptors: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let (state, log) = (state.clone(), log.clone());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                super::sdk_api::handle_https(state.clone(), log.clone(), req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
