//! Rule U2: async-openai (Azure OpenAI with an Entra ID token) through the four layers, by the
//! `azure_openai` example's own offline run against the testkit, with the back-off floor
//! compressed to 150 ms because real sockets mean real time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[allow(dead_code)]
#[path = "../examples/azure_openai.rs"]
mod azure_openai;

#[tokio::test]
async fn u2_async_openai_entra_token_retry_after_backoff_no_double_retries() {
    let checks = azure_openai::run_offline(Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(checks.len(), 5);
    for c in &checks {
        assert!(c.ok, "{}: {}", c.name, c.detail);
    }
}
