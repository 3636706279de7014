//! Serves the testkit's fake identity provider (Entra token endpoint, IMDS, protected API) on
//! loopback until Ctrl-C, so the real-daemon mode can be tried without Azure:
//!
//! ```text
//! cargo run --example fake_idp            # prints its URL
//! cargo run --example daemon -- --mode mi --idp http://127.0.0.1:PORT \
//!     --scope https://api.example/.default --duration 5 --out report.jsonl
//! ```

use resilient_auth::testkit::FakeIdentityProvider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let idp = FakeIdentityProvider::builder().start().await?;
    println!("{}", idp.uri());
    println!("token endpoint: {}", idp.token_url("TENANT"));
    println!("IMDS base:      {}", idp.uri());
    println!("API:            {}", idp.api_url());
    tokio::signal::ctrl_c().await?;
    println!("{} requests served", idp.log().len());
    Ok(())
}
