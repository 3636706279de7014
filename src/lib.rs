//! Composable HTTP client layers that keep a daemon's calls to protected APIs alive through
//! identity-provider trouble.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod credential;
mod error;
pub mod layer;
#[cfg(feature = "reqwest")]
mod reqwest;
pub mod retry;
mod token;

pub use credential::{CredentialIdentity, TokenCredential, TokenRequest};
pub use error::{BoxError, Error, IdentityProviderError};
pub use layer::{ExpBackoffLayer, RetryAfterLayer, TimeoutLayer};
pub use retry::{Attempts, Deadline};
pub use token::{AccessToken, TokenResponse};
