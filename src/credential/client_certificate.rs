//! [`ClientCertificateCredential`]: the OAuth 2.0 client credentials grant with a certificate,
//! proven by a signed client assertion (rule C2).
//!
//! ```no_run
//! use resilient_auth::{ClientCertificateCredential, TokenCredential, TokenRequest};
//!
//! # async fn run() -> Result<(), resilient_auth::Error> {
//! // the certificate and its RSA private key, in one PEM file (or a password-protected
//! // .pfx with the `pkcs12` feature and .password(..))
//! let credential = ClientCertificateCredential::builder_from_file(
//!     "contoso.onmicrosoft.com",
//!     "client-id",
//!     "/etc/app/cert.pem",
//! )?
//! .send_certificate_chain(true) // x5c, for subject name / issuer authentication
//! .build()?;
//! let token = credential
//!     .get_token(&TokenRequest::new(["https://vault.azure.net/.default"]))
//!     .await?;
//! # Ok(()) }
//! ```
#![cfg(feature = "reqwest")]
#![cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::RsaKeyPair;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::certificate;
use futures_util::future::BoxFuture;

use super::confidential::{
    optional_env, process_env, required_env, sealed, ClientOptions, ConfidentialCredential,
    CredentialBuilder, Env, Grant, RegionalGrant,
};
use super::{CredentialKind, TokenRequest};
use crate::{Error, TokenResponse};

const KIND: &str = "client_certificate";

/// How long a client assertion is valid.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// A cached assertion is re-signed once less than this much of its life is left.
const RESIGN_MARGIN: Duration = Duration::from_secs(120);

/// A confidential client that authenticates with a certificate (rule C2).
///
/// Each [`get_token`](crate::TokenCredential::get_token) sends one POST to
/// `{authority}/{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`, `client_id`,
/// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
/// `client_assertion` and `scope` (and `claims` after a CAE challenge).
///
/// The client assertion is a JWT signed with the certificate's RSA key: header `alg` `PS256`
/// (or `RS256`, see [`rs256`](ClientCertificateCredentialBuilder::rs256)), `typ` `JWT` and
/// `x5t#S256` (the base64url SHA-256 thumbprint of the certificate), and with
/// [`send_certificate_chain`](ClientCertificateCredentialBuilder::send_certificate_chain) `x5c`
/// (the certificate and the rest of the file's chain, base64 DER, for subject name / issuer
/// authentication); claims `aud` = the token endpoint, `iss` = `sub` = the client id, a random
/// `jti`, `nbf` = `iat` = now and `exp` = now + 10 minutes. It is cached and re-signed once less
/// than 2 minutes of its life are left.
///
/// The key is an RSA key: in PEM, PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), or, with
/// the `pkcs12` feature and a [`password`](ClientCertificateCredentialBuilder::password), an
/// encrypted PKCS#8 key (`ENCRYPTED PRIVATE KEY`) or a PKCS#12 (`.pfx` / `.p12`) file. Neither
/// the key, its password nor the assertion is ever shown by `Debug`, `Display`, errors or logs.
pub type ClientCertificateCredential = ConfidentialCredential<CertificateGrant>;

impl ClientCertificateCredential {
    /// A builder for the application `client_id` of `tenant_id`. `certificate` is PEM — the
    /// certificate (the one the key belongs to; other `CERTIFICATE` blocks are its chain) and,
    /// unless it is given with
    /// [`private_key_pem`](ClientCertificateCredentialBuilder::private_key_pem), its private key
    /// — or, with the `pkcs12` feature, a PKCS#12 file (DER).
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        certificate: impl Into<Vec<u8>>,
    ) -> ClientCertificateCredentialBuilder {
        CredentialBuilder::new(
            ClientOptions::new(tenant_id, client_id),
            CertificateGrant {
                certificate_pem: SecretSlice::from(certificate.into()),
                key_pem: None,
                password: None,
                rs256: false,
                x5c: false,
            },
        )
    }

    /// [`builder`](Self::builder) with the PEM or PKCS#12 file read from `path` (at most 1 MiB).
    ///
    /// # Errors
    /// [`Error::Config`] if the file cannot be read or is larger than 1 MiB.
    pub fn builder_from_file(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<ClientCertificateCredentialBuilder, Error> {
        Ok(Self::builder(
            tenant_id,
            client_id,
            certificate::read_file(path.as_ref())?,
        ))
    }

    /// Reads `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH` (a PEM file
    /// with the certificate and its private key, or a PKCS#12 file), and (optional)
    /// `AZURE_CLIENT_CERTIFICATE_PASSWORD` (of the PKCS#12 file or the encrypted PEM key),
    /// `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` (`true` or `1`: send `x5c`), `AZURE_AUTHORITY_HOST`
    /// and `AZURE_REGIONAL_AUTHORITY_NAME`, as the Azure SDKs do.
    ///
    /// # Errors
    /// [`Error::Config`] if a required variable is missing, the file cannot be read or parsed,
    /// the password is wrong, or a password is set for an unencrypted PEM key.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_with(&process_env)
    }

    /// [`from_env`](Self::from_env) over any variable lookup (tests pass a map).
    pub(crate) fn from_env_with(env: Env<'_>) -> Result<Self, Error> {
        let options = ClientOptions::from_env(env, true)?;
        let path = required_env(env, "AZURE_CLIENT_CERTIFICATE_PATH")?;
        let mut builder = Self::builder_from_file("", "", path)?;
        builder.options = options;
        if let Some(password) = optional_env(env, "AZURE_CLIENT_CERTIFICATE_PASSWORD") {
            builder = builder.password(password);
        }
        if let Some(chain) = optional_env(env, "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN") {
            let chain = chain.trim();
            builder =
                builder.send_certificate_chain(chain == "1" || chain.eq_ignore_ascii_case("true"));
        }
        builder.build()
    }
}

/// Builds a [`ClientCertificateCredential`]; see [`ClientCertificateCredential::builder`].
/// The shared setters (authority, token URL, region, timeout, HTTP client) are
/// [`CredentialBuilder`]'s.
pub type ClientCertificateCredentialBuilder = CredentialBuilder<CertificateGrant>;

/// The client certificate grant's own settings (see [`ClientCertificateCredentialBuilder`]).
#[derive(Debug)]
pub struct CertificateGrant {
    certificate_pem: SecretSlice<u8>,
    key_pem: Option<SecretSlice<u8>>,
    password: Option<SecretString>,
    rs256: bool,
    x5c: bool,
}

impl sealed::Sealed for CertificateGrant {}

impl RegionalGrant for CertificateGrant {}

impl Grant for CertificateGrant {
    type Built = AssertionSigner;

    const NAME: &'static str = "ClientCertificateCredential";

    fn fetch<'a>(
        credential: &'a ClientCertificateCredential,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        let (core, signer) = (&credential.core, &credential.grant);
        Box::pin(core.call(move |url| {
            let assertion = signer.assertion(url.as_str())?;
            core.assertion_post(url, assertion.expose_secret(), request)
        }))
    }

    fn debug_fields(signer: &AssertionSigner, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("x5t#S256", &signer.x5t_s256)
            .field("algorithm", &signer.algorithm.name())
            .field("private_key", &"<redacted>");
    }

    fn what(signer: &AssertionSigner) -> Cow<'_, str> {
        Cow::Owned(format!(
            "client certificate credential (x5t#S256 {})",
            signer.x5t_s256
        ))
    }
}

impl CredentialBuilder<CertificateGrant> {
    /// The private key, when it is not in the certificate's PEM: an unencrypted RSA key,
    /// `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1).
    pub fn private_key_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.grant.key_pem = Some(SecretSlice::from(pem.into()));
        self
    }

    /// The password of a PKCS#12 file or of an encrypted PEM private key (needs the `pkcs12`
    /// feature). Giving one for an unencrypted PEM key is an error, as in the Azure SDKs.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.grant.password = Some(SecretString::from(password.into()));
        self
    }

    /// Sends the certificate chain in the assertion's `x5c` header (MSAL's `WithSendX5C`, the
    /// Azure SDKs' `send_certificate_chain`): needed for subject name / issuer authentication,
    /// where Entra ID trusts the certificate by its subject and issuer instead of its
    /// thumbprint. Default `false`.
    pub fn send_certificate_chain(mut self, send: bool) -> Self {
        self.grant.x5c = send;
        self
    }

    /// Signs the client assertion with `RS256` (RSASSA-PKCS1-v1_5) instead of the default
    /// `PS256` (RSASSA-PSS), for servers that do not accept PSS.
    pub fn rs256(mut self, rs256: bool) -> Self {
        self.grant.rs256 = rs256;
        self
    }

    /// Parses the certificate and key, checks that they belong together, and builds the
    /// credential.
    ///
    /// # Errors
    /// [`Error::Config`] for a PEM without a certificate or an RSA private key, an encrypted key
    /// without its password, a wrong password, a password for an unencrypted PEM key, a
    /// non-RSA key, a key that does not match the certificate, an empty client id, an invalid
    /// tenant, token URL or region, plain http to a non-loopback host, a zero timeout, or an
    /// HTTP client that cannot be built.
    pub fn build(self) -> Result<ClientCertificateCredential, Error> {
        let core = self
            .options
            .resolve(KIND, CredentialKind::ClientCertificate)?;
        let loaded = certificate::load(
            self.grant.certificate_pem.expose_secret(),
            self.grant.key_pem.as_ref().map(ExposeSecret::expose_secret),
            self.grant
                .password
                .as_ref()
                .map(ExposeSecret::expose_secret),
        )?;
        let x5c = self.grant.x5c.then(|| {
            loaded
                .chain
                .iter()
                .map(|der| STANDARD.encode(der))
                .collect()
        });
        let algorithm = if self.grant.rs256 {
            Algorithm::Rs256
        } else {
            Algorithm::Ps256
        };
        let leaf = loaded.leaf().to_vec();
        let signer = AssertionSigner::new(
            loaded.key,
            &leaf,
            x5c,
            algorithm,
            core.client_id.clone(),
            SystemTime::now,
        );
        // Sign once now, so that a key the signer rejects fails here and not at the first
        // token request.
        signer.assertion(core.endpoint.global.as_str())?;
        Ok(ConfidentialCredential {
            core,
            grant: signer,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Ps256,
    Rs256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Ps256 => "PS256",
            Algorithm::Rs256 => "RS256",
        }
    }

    fn padding(self) -> &'static dyn aws_lc_rs::signature::RsaEncoding {
        match self {
            Algorithm::Ps256 => &aws_lc_rs::signature::RSA_PSS_SHA256,
            Algorithm::Rs256 => &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        }
    }
}

/// Signs client assertions and keeps the last one while it has life left: a built client
/// certificate credential's own part.
pub(crate) struct AssertionSigner {
    key: RsaKeyPair,
    x5t_s256: String,
    /// The chain sent as `x5c`, if asked for.
    x5c: Option<Vec<String>>,
    algorithm: Algorithm,
    client_id: String,
    now: fn() -> SystemTime,
    cached: Mutex<Option<CachedAssertion>>,
}

struct CachedAssertion {
    aud: String,
    exp: u64,
    jwt: SecretString,
}

#[derive(serde::Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(rename = "x5t#S256")]
    x5t_s256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<&'a [String]>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: &'a str,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl AssertionSigner {
    fn new(
        key: RsaKeyPair,
        certificate_der: &[u8],
        x5c: Option<Vec<String>>,
        algorithm: Algorithm,
        client_id: String,
        now: fn() -> SystemTime,
    ) -> Self {
        let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certificate_der);
        AssertionSigner {
            key,
            x5t_s256: URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
            x5c,
            algorithm,
            client_id,
            now,
            cached: Mutex::new(None),
        }
    }

    /// An assertion for `aud`: the cached one while more than [`RESIGN_MARGIN`] of its life is
    /// left, else a newly signed one.
    fn assertion(&self, aud: &str) -> Result<SecretString, Error> {
        let now = (self.now)()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::config("the system clock is before 1970"))?
            .as_secs();
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_ref() {
            if c.aud == aud && c.exp.saturating_sub(now) > RESIGN_MARGIN.as_secs() {
                return Ok(c.jwt.clone());
            }
        }
        let exp = now + ASSERTION_LIFETIME.as_secs();
        let jwt = self.sign(aud, now, exp)?;
        *cached = Some(CachedAssertion {
            aud: aud.to_owned(),
            exp,
            jwt: jwt.clone(),
        });
        Ok(jwt)
    }

    fn sign(&self, aud: &str, now: u64, exp: u64) -> Result<SecretString, Error> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::SecureRandom::fill(&rng, &mut jti)
            .map_err(|_| Error::config("no random numbers for the assertion's jti"))?;
        let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
        let header = serde_json::to_vec(&Header {
            alg: self.algorithm.name(),
            typ: "JWT",
            x5t_s256: &self.x5t_s256,
            x5c: self.x5c.as_deref(),
        })
        .map_err(|_| Error::config("could not encode the assertion header"))?;
        let claims = serde_json::to_vec(&Claims {
            aud,
            iss: &self.client_id,
            sub: &self.client_id,
            jti: &jti,
            nbf: now,
            iat: now,
            exp,
        })
        .map_err(|_| Error::config("could not encode the assertion claims"))?;
        let mut jwt = Zeroizing::new(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        ));
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                self.algorithm.padding(),
                &rng,
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| {
                Error::config("could not sign the client assertion with the private key")
            })?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(SecretString::from(jwt.as_str()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::TokenCredential;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    const CERT: &[u8] = include_bytes!("../../tests/fixtures/cert.pem");
    const KEY: &[u8] = include_bytes!("../../tests/fixtures/key.pem");
    const KEY_PKCS1: &[u8] = include_bytes!("../../tests/fixtures/key_pkcs1.pem");
    const OTHER_KEY: &[u8] = include_bytes!("../../tests/fixtures/other_key.pem");
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    static NOW: AtomicU64 = AtomicU64::new(1_700_000_000);

    fn test_now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW.load(Ordering::SeqCst))
    }

    fn claims(jwt: &SecretString) -> serde_json::Value {
        let payload = jwt.expose_secret().split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn c2_assertion_is_cached_and_resigned_near_expiry() {
        let loaded = certificate::load(&[CERT, KEY].concat(), None, None).unwrap();
        let der = loaded.leaf().to_vec();
        let signer = AssertionSigner::new(
            loaded.key,
            &der,
            None,
            Algorithm::Ps256,
            "cid".into(),
            test_now,
        );
        let start = NOW.load(Ordering::SeqCst);
        let a = signer.assertion("https://idp/token").unwrap();
        let ca = claims(&a);
        assert_eq!(ca["iat"], start);
        assert_eq!(ca["nbf"], start);
        assert_eq!(ca["exp"], start + 600);

        // 7 min 59 s later: 2 min 1 s of life left, the same assertion is reused
        NOW.store(start + 479, Ordering::SeqCst);
        let b = signer.assertion("https://idp/token").unwrap();
        assert_eq!(a.expose_secret(), b.expose_secret());

        // 8 min later: only 2 min left, re-signed with a new jti and a new lifetime
        NOW.store(start + 480, Ordering::SeqCst);
        let c = signer.assertion("https://idp/token").unwrap();
        let cc = claims(&c);
        assert_ne!(ca["jti"], cc["jti"]);
        assert_eq!(cc["iat"], start + 480);
        assert_eq!(cc["exp"], start + 480 + 600);

        // another audience (the global endpoint after a regional failure) gets its own
        let d = signer.assertion("https://other/token").unwrap();
        assert_eq!(claims(&d)["aud"], "https://other/token");
        assert_ne!(claims(&d)["jti"], cc["jti"]);
    }

    #[test]
    fn c2_pem_forms_pkcs8_pkcs1_combined_and_separate() {
        for (pem, key) in [
            ([CERT, KEY].concat(), None),
            ([KEY, CERT].concat(), None),
            ([CERT, KEY_PKCS1].concat(), None),
            (CERT.to_vec(), Some(KEY)),
            (CERT.to_vec(), Some(KEY_PKCS1)),
            // a separate key wins over one in the certificate PEM
            ([CERT, OTHER_KEY].concat(), Some(KEY)),
        ] {
            let mut b = ClientCertificateCredential::builder("t", "c", pem);
            if let Some(key) = key {
                b = b.private_key_pem(key);
            }
            b.build().unwrap();
        }
    }

    #[test]
    fn c2_bad_pem_is_a_config_error_without_key_material() {
        let encrypted = ::pem::encode(&::pem::Pem::new("ENCRYPTED PRIVATE KEY", vec![1, 2, 3]));
        let ec = ::pem::encode(&::pem::Pem::new("EC PRIVATE KEY", vec![1, 2, 3]));
        let key_text = String::from_utf8(KEY.to_vec()).unwrap();
        let key_body = key_text.lines().nth(1).unwrap().to_owned();
        for (pem, needle) in [
            (CERT.to_vec(), "no PRIVATE KEY"),
            (KEY.to_vec(), "no CERTIFICATE"),
            ([CERT, OTHER_KEY].concat(), "does not belong"),
            ([CERT, encrypted.as_bytes()].concat(), "encrypted"),
            ([CERT, ec.as_bytes()].concat(), "only RSA"),
            (b"not pem".to_vec(), "no CERTIFICATE"),
            (
                [
                    CERT,
                    b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                ]
                .concat(),
                "not a usable RSA key",
            ),
            ([&KEY[..KEY.len() - 10], CERT].concat(), "not valid PEM"),
        ] {
            let e = ClientCertificateCredential::builder("t", "c", pem)
                .build()
                .unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{e}");
            let s = format!("{e} {e:?}");
            assert!(s.contains(needle), "{s}");
            assert!(!s.contains(&key_body[..20]), "{s}");
        }
    }

    #[test]
    fn c2_from_env_reads_azure_variables() {
        let env = |pairs: Vec<(&str, String)>| {
            let map: HashMap<String, String> =
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            move |k: &str| map.get(k).cloned()
        };
        let path = format!("{FIXTURES}/cert_and_key.pem");
        let c = ClientCertificateCredential::from_env_with(&env(vec![
            ("AZURE_TENANT_ID", "tenant-1".into()),
            ("AZURE_CLIENT_ID", "client-1".into()),
            ("AZURE_CLIENT_CERTIFICATE_PATH", path.clone()),
            (
                "AZURE_AUTHORITY_HOST",
                "https://login.chinacloudapi.cn".into(),
            ),
        ]))
        .unwrap();
        let id = c.identity();
        assert_eq!(id.kind, "client_certificate");
        assert_eq!(id.authority, "https://login.chinacloudapi.cn");
        assert_eq!(id.tenant.as_deref(), Some("tenant-1"));
        assert_eq!(id.client_id.as_deref(), Some("client-1"));

        let e = ClientCertificateCredential::from_env_with(&env(vec![
            ("AZURE_TENANT_ID", "tenant-1".into()),
            ("AZURE_CLIENT_ID", "client-1".into()),
            ("AZURE_CLIENT_CERTIFICATE_PATH", path.clone()),
            ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "pw-value".into()),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{e}"
        );
        assert!(!e.to_string().contains("pw-value"));

        for (pairs, needle) in [
            (
                vec![
                    ("AZURE_TENANT_ID", "t".to_owned()),
                    ("AZURE_CLIENT_ID", "c".to_owned()),
                ],
                "AZURE_CLIENT_CERTIFICATE_PATH",
            ),
            (
                vec![
                    ("AZURE_TENANT_ID", "t".to_owned()),
                    ("AZURE_CLIENT_ID", "c".to_owned()),
                    (
                        "AZURE_CLIENT_CERTIFICATE_PATH",
                        format!("{FIXTURES}/missing.pem"),
                    ),
                ],
                "cannot read",
            ),
        ] {
            let e = ClientCertificateCredential::from_env_with(&env(pairs)).unwrap_err();
            assert!(
                matches!(e, Error::Config(_)) && e.to_string().contains(needle),
                "{e}"
            );
        }
    }

    #[cfg(feature = "pkcs12")]
    #[test]
    fn c2_from_env_reads_a_pfx_with_its_password_and_the_chain_option() {
        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let chain = p12_keystore::PrivateKeyChain::new(
            b"k".to_vec(),
            p12_keystore::PrivateKey::from_der(&key.serialize_der()).unwrap(),
            [p12_keystore::Certificate::from_der(cert.der()).unwrap()],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("app", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let pfx = store.writer("env-pa55word").write().unwrap();
        let dir = std::env::temp_dir().join(format!("ra-pfx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.pfx");
        std::fs::write(&path, pfx).unwrap();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let base = |password: &str| {
            vec![
                ("AZURE_TENANT_ID", "tenant-1".to_owned()),
                ("AZURE_CLIENT_ID", "client-1".to_owned()),
                ("AZURE_CLIENT_CERTIFICATE_PATH", path.display().to_string()),
                ("AZURE_CLIENT_CERTIFICATE_PASSWORD", password.to_owned()),
            ]
        };
        let mut pairs = base("env-pa55word");
        pairs.push(("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "true".to_owned()));
        let c = ClientCertificateCredential::from_env_with(&env(pairs)).unwrap();
        assert_eq!(c.identity().kind, "client_certificate");
        let a = c.grant.assertion("https://idp/token").unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(a.expose_secret().split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header["x5c"],
            serde_json::json!([STANDARD.encode(cert.der())])
        );

        let e = ClientCertificateCredential::from_env_with(&env(base("wrong"))).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(e.to_string().contains("wrong password"), "{e}");
    }
}
