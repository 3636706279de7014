//! Rule U3: the axum gateway example, run against the testkit by its own self-test (the same
//! code as `cargo run --example axum_gateway -- --self-test`), with the back-off floor
//! compressed from 5 s to 300 ms because real sockets mean real time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[allow(dead_code)]
#[path = "../examples/axum_gateway.rs"]
mod gateway;

#[tokio::test]
async fn u3_axum_gateway_self_test_checks_hold() {
    let checks = gateway::self_test(Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(checks.len(), 4);
    for c in &checks {
        assert!(c.ok, "{}: {}", c.name, c.detail);
    }
}
