//! Composable HTTP client layers that keep a daemon's calls to protected APIs alive through
//! identity-provider trouble.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod credential;
mod error;
pub mod retry;
mod token;

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use credential::{
    authority::AuthorityHost, client_certificate::ClientCertificateCredential,
    client_secret::ClientSecretCredential,
};
pub use credential::{CredentialIdentity, TokenCredential, TokenRequest};
pub use error::{BoxError, Error, IdentityProviderError};
pub use token::{AccessToken, TokenResponse};
