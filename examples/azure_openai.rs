//! A second SDK (rule U2): `async-openai` against Azure OpenAI with an Entra ID token instead of
//! an API key, through the four layers — offline, against the testkit's Azure OpenAI surface
//! over HTTPS on loopback.
//!
//! ```sh
//! cargo run --example azure_openai  # feature testkit-tls (on for examples via the dev-dependency)
//! ```
//!
//! The hook: async-openai's `Client::with_http_service` takes any tower service of its
//! replayable `HttpRequestFactory`. A `service_fn` builds the request, drops the empty
//! `api-key` header `AzureConfig` adds, and sends it through a reqwest-middleware client with
//! the four layers. That service **replaces** async-openai's own executor, retry layer
//! included, so each call is retried by our layers only (no retries multiplied), and every
//! attempt gets the current token from the `AuthLayer`.
//!
//! The run: a chat completion at once; one during an identity-provider outage (the cached
//! token serves); one against a `429 Retry-After: 1` (waited out exactly); one against a 503
//! (retried no sooner than the back-off floor); one against a 503 that does not end (1 + 3
//! requests, then the error). The floor is 2 s in this run to keep it short (the layer's
//! default is 5 s). It exits 0 when every check holds (about 20 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_openai::config::AzureConfig;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use resilient_auth::retry::Backoff;
use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, Target};
use resilient_auth::{
    AuthLayer, BoxError, ClientSecretCredential, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer,
    TokenCache,
};

/// An async-openai client for Azure OpenAI whose requests go through `stack` (which holds the
/// `AuthLayer`): the API key is not used.
fn azure_openai_client(
    stack: ClientWithMiddleware,
    api_base: &str,
    deployment: &str,
) -> Client<AzureConfig> {
    let config = AzureConfig::new()
        .with_api_base(api_base)
        .with_deployment_id(deployment)
        .with_api_version("2024-10-21");
    // --- the lines a user adds ---
    let service = tower::service_fn(move |factory: HttpRequestFactory| {
        let stack = stack.clone();
        async move {
            let mut request = factory.build().await?;
            request.headers_mut().remove("api-key"); // Entra ID instead of a key
            stack.execute(request).await.map_err(BoxError::from)
        }
    });
    Client::with_config(config).with_http_service(service)
    // ---
}

async fn ask(client: &Client<AzureConfig>) -> Result<String, BoxError> {
    let request = CreateChatCompletionRequestArgs::default()
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("ping")
            .build()?
            .into()])
        .build()?;
    let response = client.chat().create(request).await?;
    Ok(response
        .choices
        .first()
        .and_then(|c| c.message.content.clone())
        .unwrap_or_default())
}

/// One check of the run.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

/// Runs the offline script; `floor` is the back-off's first delay (2 s in `main`, compressed in
/// tests).
pub(crate) async fn run_offline(floor: Duration) -> Result<Vec<Check>, BoxError> {
    const TENANT: &str = "contoso";
    let secs = Duration::from_secs_f64;
    let idp = FakeIdentityProvider::builder().start().await?;
    let https = idp.start_https().await?;
    let credential = ClientSecretCredential::builder(TENANT, "chat-app", "secret")
        .token_url(idp.token_url(TENANT))
        .timeout(secs(1.0))
        .build()?;
    let tokens = TokenCache::new(credential, ["https://cognitiveservices.azure.com/.default"]);
    let backoff = ExpBackoffLayer::builder()
        .backoff(Backoff::builder().initial(floor).max(floor * 12).build()?)
        .build()?;
    let stack = ClientBuilder::new(https.reqwest_builder()?.build()?)
        .with(RetryAfterLayer::default())
        .with(backoff)
        .with(AuthLayer::new(tokens.clone()).allow_origins([https.uri()])?)
        .with(TimeoutLayer::new(secs(10.0)))
        .build();
    let client = azure_openai_client(stack, &https.uri(), "gpt-4o");
    let api = |idp: &FakeIdentityProvider, from: usize| -> Vec<_> {
        idp.log()
            .into_iter()
            .skip(from)
            .filter(|r| r.target == Target::Api)
            .collect()
    };
    let mut checks = Vec::new();

    // 1. a plain call: a bearer token, no key
    let answer = ask(&client).await;
    checks.push(Check {
        name: "chat completion with an Entra ID token",
        ok: matches!(&answer, Ok(a) if a == "ok") && idp.requests(Target::Token) == 1,
        detail: format!(
            "{answer:?}, {} token request(s)",
            idp.requests(Target::Token)
        ),
    });

    // 2. the identity provider is down: the cached token serves
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Token,
        now..now + secs(3600.0),
        FaultKind::Unavailable { retry_after: None },
    ));
    let answer = ask(&client).await;
    checks.push(Check {
        name: "identity provider down: the call still works",
        ok: answer.is_ok(),
        detail: format!("{answer:?}"),
    });
    idp.clear_faults();

    // 3. 429 Retry-After: 1 — waited out, exactly
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Api,
        now..now + secs(0.5),
        FaultKind::TooManyRequests {
            retry_after: secs(1.0),
        },
    ));
    let from = idp.log().len();
    let answer = ask(&client).await;
    let seen = api(&idp, from);
    let gap = (seen.len() == 2).then(|| seen[1].at - seen[0].at);
    checks.push(Check {
        name: "429 Retry-After: 1: one retry, 1 s later",
        ok: answer.is_ok() && gap.is_some_and(|g| g >= secs(1.0) && g < secs(1.5)),
        detail: format!(
            "{answer:?}; API saw {:?}, gap {gap:.2?}",
            seen.iter().map(|r| r.status).collect::<Vec<_>>()
        ),
    });

    // 4. 503 without Retry-After — retried no sooner than the floor, by our layers only
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Api,
        now..now + floor / 2,
        FaultKind::Unavailable { retry_after: None },
    ));
    let from = idp.log().len();
    let answer = ask(&client).await;
    let seen = api(&idp, from);
    let gap = (seen.len() == 2).then(|| seen[1].at - seen[0].at);
    checks.push(Check {
        name: "503: one retry, no sooner than the back-off floor",
        ok: answer.is_ok() && gap.is_some_and(|g| g >= floor),
        detail: format!(
            "{answer:?}; API saw {:?}, gap {gap:.2?} (floor {floor:?})",
            seen.iter().map(|r| r.status).collect::<Vec<_>>()
        ),
    });

    // 5. a 503 that does not end: 1 + 3 retries at the API, then the error — no async-openai
    // retries on top
    let now = idp.elapsed();
    idp.add_fault(Fault::new(
        Target::Api,
        now..now + secs(3600.0),
        FaultKind::Unavailable { retry_after: None },
    ));
    let from = idp.log().len();
    let answer = ask(&client).await;
    let seen = api(&idp, from).len();
    checks.push(Check {
        name: "503 for good: 1 + 3 requests, then the error",
        ok: answer.is_err() && seen == 4,
        detail: format!(
            "{seen} requests, {}",
            answer.err().map(|e| e.to_string()).unwrap_or_default()
        ),
    });
    Ok(checks)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    println!("async-openai (AzureConfig) -> testkit's Azure OpenAI surface, Entra ID token via the four layers");
    // a 2 s floor keeps the never-ending-503 check under 15 s; the layer's default is 5 s
    let checks = run_offline(Duration::from_secs(2)).await?;
    let mut all = true;
    for c in &checks {
        all &= c.ok;
        println!(
            "[{}] {}: {}",
            if c.ok { "ok" } else { "FAILED" },
            c.name,
            c.detail
        );
    }
    if all {
        println!("every check holds");
        Ok(())
    } else {
        Err("a check failed".into())
    }
}
