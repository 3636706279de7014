//! Rule X5: a token goes only to the origins it is for — the ones given to `allow_origins`, or
//! else the hosts its scope names — whichever request the layer sees (issue #11).
//!
//! The redirect tests run tower-http's `FollowRedirectLayer` around `AuthLayer` around a
//! hyper-util client against real servers on loopback. To let a loopback server be "the scope's
//! host" for an https scope (`https://api.contoso.com/.default`, a Key Vault scope), the client's
//! connector resolves host names to loopback ports itself: the request keeps its `https://` URI
//! (which is what the layer decides on) and travels as plain HTTP/1 over TCP to the mapped
//! port. A third case uses a loopback scope, `http://127.0.0.1:PORT/.default`, which rule X2's
//! loopback exception allows, with an ordinary connector.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use http::header::{AUTHORIZATION, LOCATION};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use resilient_auth::{
    AuthLayer, BoxError, CredentialIdentity, Error, TokenCache, TokenCredential, TokenRequest,
    TokenResponse,
};
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::FollowRedirectLayer;

const TOKEN: &str = "x5-secret-token";
const BEARER: &str = "Bearer x5-secret-token";

/// A source that always issues the same token, counting the requests.
#[derive(Debug, Clone, Default)]
struct Fixed(Arc<AtomicUsize>);

impl TokenCredential for Fixed {
    fn get_token<'a>(&'a self, _: &'a TokenRequest) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        async { Ok(TokenResponse::new(TOKEN, Duration::from_secs(3600))) }.boxed()
    }
    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity::new("fixed", "https://login.microsoftonline.com")
    }
}

fn tokens(scope: &str) -> TokenCache {
    TokenCache::new(Fixed::default(), [scope.to_string()])
}

// ---------- a recording tower service (no sockets) ----------

/// A request as an API saw it: its URI (or path) and its `Authorization` header.
type Sent = (String, Option<String>);

/// Records the `Authorization` header of each request it gets, answers 200.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Sent>>>);

impl Recorder {
    fn seen(&self) -> Vec<Sent> {
        self.0.lock().unwrap().clone()
    }
}

/// Sends a GET to `uri` through `layer`; the Authorization header the API saw (`Ok(None)`: no
/// token), or the error the layer returned.
async fn through(layer: &AuthLayer, uri: &str) -> Result<Option<String>, BoxError> {
    let rec = Recorder::default();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(tower::service_fn({
            let rec = rec.clone();
            move |req: Request<String>| {
                let auth = req
                    .headers()
                    .get(AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_string());
                rec.0.lock().unwrap().push((req.uri().to_string(), auth));
                async { Ok::<_, BoxError>(Response::new(String::new())) }
            }
        }));
    svc.oneshot(Request::get(uri).body(String::new()).unwrap())
        .await?;
    let seen = rec.seen();
    assert_eq!(seen.len(), 1, "the request was sent once: {seen:?}");
    Ok(seen.into_iter().next().and_then(|(_, auth)| auth))
}

/// Asserts that, with `AuthLayer::new` and `scope`, every URL in `yes` gets the token and
/// every URL in `no` is sent without it.
async fn derived(scope: &str, yes: &[&str], no: &[&str]) {
    let layer = AuthLayer::new(tokens(scope));
    for uri in yes {
        assert_eq!(
            through(&layer, uri).await.unwrap().as_deref(),
            Some(BEARER),
            "{scope}: {uri} should get the token"
        );
    }
    for uri in no
        .iter()
        .chain(&["https://evil.example/", "https://attacker.test/"])
    {
        assert_eq!(
            through(&layer, uri).await.unwrap(),
            None,
            "{scope}: {uri} must not get the token"
        );
    }
}

// ---------- real servers on loopback ----------

/// What one server saw: the path and Authorization header of each request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Sent>>>);

impl Seen {
    fn all(&self) -> Vec<Sent> {
        self.0.lock().unwrap().clone()
    }
}

/// A server on loopback that answers `302 Location: redirect_to`, or 200 without it.
async fn serve(redirect_to: Option<String>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (record, redirect_to) = (record.clone(), redirect_to.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let auth = req
                        .headers()
                        .get(AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_string());
                    record
                        .0
                        .lock()
                        .unwrap()
                        .push((req.uri().path().to_string(), auth));
                    let resp = match &redirect_to {
                        Some(to) => Response::builder()
                            .status(302)
                            .header(LOCATION, to)
                            .body(Full::<Bytes>::default()),
                        None => Response::builder().status(200).body(Full::from("landed")),
                    };
                    async move { Ok::<_, Infallible>(resp.unwrap()) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

/// A connector that resolves host names through `hosts` (name → loopback address) and speaks
/// plain HTTP/1 to them, whatever the URI's scheme.
fn mapped_connector(
    hosts: HashMap<String, SocketAddr>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<TcpStream>,
    Error = std::io::Error,
    Future = ConnectFuture,
> + Clone
       + Send
       + Sync
       + 'static {
    let hosts = Arc::new(hosts);
    tower::service_fn(move |uri: Uri| -> ConnectFuture {
        let addr = uri.host().and_then(|h| hosts.get(h).copied());
        Box::pin(async move {
            let addr =
                addr.ok_or_else(|| std::io::Error::other(format!("unmapped host in {uri}")))?;
            Ok(TokioIo::new(TcpStream::connect(addr).await?))
        })
    })
}

/// `FollowRedirectLayer` around `auth` around a hyper-util client whose connector maps
/// `a_host` to server A and `b_host` to server B; A redirects `https://a_host/start` to
/// `https://b_host/landing`. Returns what A and B saw.
async fn redirect_via_names(auth: AuthLayer, a_host: &str, b_host: &str) -> (Seen, Seen) {
    let (b_addr, b_seen) = serve(None).await;
    let (a_addr, a_seen) = serve(Some(format!("https://{b_host}/landing"))).await;
    let connector = mapped_connector(HashMap::from([
        (a_host.to_string(), a_addr),
        (b_host.to_string(), b_addr),
    ]));
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let svc = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(auth)
        .service(client);
    let resp = svc
        .oneshot(
            Request::get(format!("https://{a_host}/start"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the redirect was followed to B");
    (a_seen, b_seen)
}

/// Asserts A got the token, B got the redirected request without it.
fn assert_token_stayed_home(a: &Seen, b: &Seen) {
    assert_eq!(
        a.all(),
        [("/start".to_string(), Some(BEARER.to_string()))],
        "A, the scope's host, gets the token"
    );
    assert_eq!(
        b.all(),
        [("/landing".to_string(), None)],
        "B, another origin, gets the redirected request without the token"
    );
}

#[tokio::test]
async fn x5_redirect_to_another_origin_never_carries_the_token_default_settings() {
    // Default settings: `AuthLayer::new(tokens)` for a custom API's scope; A is that API.
    let auth = AuthLayer::new(tokens("https://api.contoso.com/.default"));
    let (a, b) = redirect_via_names(auth, "api.contoso.com", "evil.example").await;
    assert_token_stayed_home(&a, &b);
}

#[tokio::test]
async fn x5_redirect_to_another_origin_never_carries_the_token_key_vault_scope() {
    let auth = AuthLayer::new(tokens("https://vault.azure.net/.default"));
    let (a, b) = redirect_via_names(auth, "myvault.vault.azure.net", "evil.example").await;
    assert_token_stayed_home(&a, &b);
    // A look-alike host that merely contains the vault suffix is another origin too.
    let auth = AuthLayer::new(tokens("https://vault.azure.net/.default"));
    let (a, b) = redirect_via_names(
        auth,
        "myvault.vault.azure.net",
        "myvault.vault.azure.net.evil.example",
    )
    .await;
    assert_token_stayed_home(&a, &b);
}

#[tokio::test]
async fn x5_redirect_to_another_loopback_port_never_carries_the_token_loopback_scope() {
    // A loopback scope (X2's exception) names exactly that origin; B is another port.
    let (b_addr, b_seen) = serve(None).await;
    let (a_addr, a_seen) = serve(Some(format!("http://{b_addr}/landing"))).await;
    let auth = AuthLayer::new(tokens(&format!("http://{a_addr}/.default")));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(auth)
        .service(client);
    let resp = svc
        .oneshot(
            Request::get(format!("http://{a_addr}/start"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_token_stayed_home(&a_seen, &b_seen);
}

#[tokio::test]
async fn x5_allow_any_origin_is_the_explicit_opt_out() {
    // The same composition with the opt-out: B gets the token, which is what X5 prevents by
    // default.
    let auth = AuthLayer::new(tokens("https://api.contoso.com/.default")).allow_any_origin();
    assert!(!auth.is_restricted());
    let (a, b) = redirect_via_names(auth, "api.contoso.com", "evil.example").await;
    assert_eq!(a.all(), [("/start".to_string(), Some(BEARER.to_string()))]);
    assert_eq!(
        b.all(),
        [("/landing".to_string(), Some(BEARER.to_string()))]
    );
    // It also makes a scope without a host usable, and X2 still holds.
    let any = AuthLayer::new(tokens("api://my-api/.default")).allow_any_origin();
    assert_eq!(
        through(&any, "https://anything.example/")
            .await
            .unwrap()
            .as_deref(),
        Some(BEARER)
    );
    assert_eq!(
        through(&any, "http://127.0.0.1:9/")
            .await
            .unwrap()
            .as_deref(),
        Some(BEARER)
    );
    let err = through(&any, "http://plain.example/").await.unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::Config(_))),
        "{err}"
    );
}

// ---------- derived hosts ----------

#[tokio::test]
async fn x5_key_vault_and_managed_hsm_hosts_in_every_cloud() {
    derived(
        "https://vault.azure.net/.default",
        &[
            "https://myvault.vault.azure.net/secrets/s",
            "https://MyVault.Vault.Azure.Net:443/keys/k",
            "https://vault.azure.net/",
        ],
        &[
            "https://myvault.vault.usgovcloudapi.net/secrets/s",
            "https://myvault.vault.azure.cn/secrets/s",
            "https://myvault.vault.azure.net:8443/secrets/s",
            "http://myvault.vault.azure.net/secrets/s",
            "https://myvault.vault.azure.net.evil.example/",
            "https://evilvault.azure.net/",
            "https://myvault.managedhsm.azure.net/",
        ],
    )
    .await;
    derived(
        "https://vault.usgovcloudapi.net/.default",
        &["https://myvault.vault.usgovcloudapi.net/secrets/s"],
        &["https://myvault.vault.azure.net/secrets/s"],
    )
    .await;
    derived(
        "https://vault.azure.cn/.default",
        &["https://myvault.vault.azure.cn/secrets/s"],
        &["https://myvault.vault.azure.net/secrets/s"],
    )
    .await;
    derived(
        "https://managedhsm.azure.net/.default",
        &["https://myhsm.managedhsm.azure.net/keys/k"],
        &["https://myvault.vault.azure.net/"],
    )
    .await;
    derived(
        "https://managedhsm.usgovcloudapi.net/.default",
        &["https://myhsm.managedhsm.usgovcloudapi.net/keys/k"],
        &["https://myhsm.managedhsm.azure.net/keys/k"],
    )
    .await;
    derived(
        "https://managedhsm.azure.cn/.default",
        &["https://myhsm.managedhsm.azure.cn/keys/k"],
        &["https://myhsm.managedhsm.azure.net/keys/k"],
    )
    .await;
}

#[tokio::test]
async fn x5_storage_hosts_in_every_cloud() {
    let mut yes = Vec::new();
    for suffix in [
        "core.windows.net",
        "core.usgovcloudapi.net",
        "core.chinacloudapi.cn",
    ] {
        for service in ["blob", "queue", "file", "dfs", "table"] {
            yes.push(format!("https://acct.{service}.{suffix}/c/b"));
        }
    }
    let yes: Vec<&str> = yes.iter().map(String::as_str).collect();
    derived(
        "https://storage.azure.com/.default",
        &yes,
        &[
            "https://acct.web.core.windows.net/",
            "https://core.windows.net/",
            "https://blob.core.windows.net/",
            "https://acct.blob.core.windows.net.evil.example/",
            "https://acct.blob.core.usgovcloudapi.net:8443/",
        ],
    )
    .await;
    // A per-account scope names exactly that account's host.
    derived(
        "https://acct.blob.core.windows.net/.default",
        &["https://acct.blob.core.windows.net/c/b"],
        &[
            "https://other.blob.core.windows.net/c/b",
            "https://acct.queue.core.windows.net/q",
        ],
    )
    .await;
}

#[tokio::test]
async fn x5_graph_and_resource_manager_hosts_in_every_cloud() {
    derived(
        "https://graph.microsoft.com/.default",
        &["https://graph.microsoft.com/v1.0/users"],
        &[
            "https://graph.microsoft.us/v1.0/users",
            "https://x.graph.microsoft.com/",
            "https://graph.microsoft.com.evil.example/",
        ],
    )
    .await;
    derived(
        "https://graph.microsoft.com/User.Read",
        &["https://graph.microsoft.com/v1.0/me"],
        &[],
    )
    .await;
    derived(
        "https://graph.microsoft.us/.default",
        &["https://graph.microsoft.us/v1.0/users"],
        &["https://graph.microsoft.com/v1.0/users"],
    )
    .await;
    derived(
        "https://dod-graph.microsoft.us/.default",
        &["https://dod-graph.microsoft.us/v1.0/users"],
        &["https://graph.microsoft.us/v1.0/users"],
    )
    .await;
    derived(
        "https://microsoftgraph.chinacloudapi.cn/.default",
        &["https://microsoftgraph.chinacloudapi.cn/v1.0/users"],
        &["https://graph.microsoft.com/v1.0/users"],
    )
    .await;
    derived(
        "https://management.azure.com/.default",
        &["https://management.azure.com/subscriptions"],
        &["https://management.usgovcloudapi.net/subscriptions"],
    )
    .await;
    // The classic audience used by Azure CLI / PowerShell.
    derived(
        "https://management.core.windows.net//.default",
        &["https://management.azure.com/subscriptions"],
        &["https://management.chinacloudapi.cn/subscriptions"],
    )
    .await;
    derived(
        "https://management.usgovcloudapi.net/.default",
        &["https://management.usgovcloudapi.net/subscriptions"],
        &["https://management.azure.com/subscriptions"],
    )
    .await;
    derived(
        "https://management.core.usgovcloudapi.net/.default",
        &["https://management.usgovcloudapi.net/subscriptions"],
        &["https://management.azure.com/subscriptions"],
    )
    .await;
    derived(
        "https://management.chinacloudapi.cn/.default",
        &["https://management.chinacloudapi.cn/subscriptions"],
        &["https://management.azure.com/subscriptions"],
    )
    .await;
    derived(
        "https://management.core.chinacloudapi.cn/.default",
        &["https://management.chinacloudapi.cn/subscriptions"],
        &["https://management.azure.com/subscriptions"],
    )
    .await;
}

#[tokio::test]
async fn x5_cosmos_service_bus_and_event_hubs_hosts_in_every_cloud() {
    derived(
        "https://cosmos.azure.com/.default",
        &[
            "https://acct.documents.azure.com/dbs",
            "https://acct.documents.azure.us/dbs",
            "https://acct.documents.azure.cn/dbs",
        ],
        &[
            "https://acct.documents.azure.com.evil.example/",
            "https://acct.table.cosmos.azure.com.evil.example/",
        ],
    )
    .await;
    for scope in [
        "https://servicebus.azure.net/.default",
        "https://eventhubs.azure.net/.default",
    ] {
        derived(
            scope,
            &[
                "https://ns.servicebus.windows.net/queue/messages",
                "https://ns.servicebus.usgovcloudapi.net/queue/messages",
                "https://ns.servicebus.chinacloudapi.cn/queue/messages",
            ],
            &[
                "https://servicebus.windows.net/",
                "https://ns.servicebus.windows.net.evil.example/",
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn x5_cognitive_services_openai_and_sql_hosts_in_every_cloud() {
    derived(
        "https://cognitiveservices.azure.com/.default",
        &[
            "https://res.cognitiveservices.azure.com/vision",
            "https://res.openai.azure.com/openai/deployments/d/chat/completions",
            "https://res.services.ai.azure.com/models",
        ],
        &[
            "https://res.openai.azure.us/openai",
            "https://res.openai.azure.cn/openai",
            "https://api.openai.com/v1/chat/completions",
        ],
    )
    .await;
    derived(
        "https://cognitiveservices.azure.us/.default",
        &[
            "https://res.cognitiveservices.azure.us/vision",
            "https://res.openai.azure.us/openai",
        ],
        &["https://res.openai.azure.com/openai"],
    )
    .await;
    derived(
        "https://cognitiveservices.azure.cn/.default",
        &[
            "https://res.cognitiveservices.azure.cn/vision",
            "https://res.openai.azure.cn/openai",
        ],
        &["https://res.openai.azure.com/openai"],
    )
    .await;
    derived(
        "https://ai.azure.com/.default",
        &["https://res.services.ai.azure.com/api/projects/p"],
        &["https://res.openai.azure.com/openai"],
    )
    .await;
    derived(
        "https://database.windows.net//.default",
        &["https://srv.database.windows.net/"],
        &["https://srv.database.usgovcloudapi.net/"],
    )
    .await;
    derived(
        "https://database.usgovcloudapi.net/.default",
        &["https://srv.database.usgovcloudapi.net/"],
        &["https://srv.database.windows.net/"],
    )
    .await;
    derived(
        "https://database.chinacloudapi.cn/.default",
        &["https://srv.database.chinacloudapi.cn/"],
        &["https://srv.database.windows.net/"],
    )
    .await;
}

// ---------- custom https resources, named origins ----------

#[tokio::test]
async fn x5_custom_https_resource_scope_names_its_own_host_only() {
    derived(
        "https://api.contoso.com/.default",
        &[
            "https://api.contoso.com/orders",
            "https://API.Contoso.com:443/orders?page=2",
            "https://api.contoso.com./orders",
        ],
        &[
            "https://api.contoso.com:8443/orders",
            "http://api.contoso.com/orders",
            "https://contoso.com/orders",
            "https://x.api.contoso.com/orders",
            "https://api.contoso.com.evil.example/orders",
        ],
    )
    .await;
    // A port in the scope is part of the origin; a well-known host on another port is not
    // the well-known resource.
    derived(
        "https://api.contoso.com:8443/access_as_app",
        &["https://api.contoso.com:8443/orders"],
        &["https://api.contoso.com/orders"],
    )
    .await;
    derived(
        "https://vault.azure.net:8443/.default",
        &["https://vault.azure.net:8443/"],
        &["https://myvault.vault.azure.net/"],
    )
    .await;
}

#[tokio::test]
async fn x5_allow_origins_replaces_the_derived_origins_and_takes_wildcards() {
    let layer = AuthLayer::new(tokens("https://vault.azure.net/.default"))
        .allow_origins(["https://*.contoso.com", "https://api.fabrikam.com:8443"])
        .unwrap();
    for yes in [
        "https://a.contoso.com/",
        "https://a.b.contoso.com/",
        "https://api.fabrikam.com:8443/",
    ] {
        assert_eq!(
            through(&layer, yes).await.unwrap().as_deref(),
            Some(BEARER),
            "{yes}"
        );
    }
    for no in [
        "https://contoso.com/",
        "https://evilcontoso.com/",
        "https://api.fabrikam.com/",
        "https://myvault.vault.azure.net/",
    ] {
        assert_eq!(through(&layer, no).await.unwrap(), None, "{no}");
    }
    for bad in [
        "http://api.contoso.com",
        "https://*.com",
        "https://api.contoso.com/path",
    ] {
        let err = AuthLayer::new(tokens("https://vault.azure.net/.default"))
            .allow_origins([bad])
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
    }
}

// ---------- scopes that name no host ----------

#[tokio::test(flavor = "current_thread")]
async fn x5_scope_without_a_host_is_a_configuration_error_naming_the_fix() {
    let capture = common::Capture::default();
    let _guard = capture.install();
    for scope in [
        "api://my-api/.default",
        "api://0b1c9a3e-5f6d-4e7a-8b9c-0d1e2f3a4b5c/access_as_app",
        "0b1c9a3e-5f6d-4e7a-8b9c-0d1e2f3a4b5c/.default",
        "0b1c9a3e-5f6d-4e7a-8b9c-0d1e2f3a4b5c",
        "User.Read",
        "http://api.contoso.com/.default",
    ] {
        let source = Fixed::default();
        let layer = AuthLayer::new(TokenCache::new(source.clone(), [scope]));
        for _ in 0..2 {
            let rec = Recorder::default();
            let svc = ServiceBuilder::new()
                .layer(layer.clone())
                .service(tower::service_fn({
                    let rec = rec.clone();
                    move |req: Request<String>| {
                        rec.0.lock().unwrap().push((req.uri().to_string(), None));
                        async { Ok::<_, BoxError>(Response::new(String::new())) }
                    }
                }));
            let err = svc
                .oneshot(
                    Request::get("https://api.contoso.com/orders")
                        .body(String::new())
                        .unwrap(),
                )
                .await
                .unwrap_err();
            let Some(Error::Config(_)) = err.downcast_ref::<Error>() else {
                panic!("{scope}: not a configuration error: {err}");
            };
            let text = err.to_string();
            assert!(
                text.starts_with("invalid configuration: no origin to send the token to")
                    && text.contains(scope)
                    && text.contains("AuthLayer::allow_origins([\"https://api.example.com\"])")
                    && text.contains("AuthLayer::allow_any_origin()"),
                "{text}"
            );
            assert!(rec.seen().is_empty(), "{scope}: nothing was sent");
        }
        assert_eq!(
            source.0.load(Ordering::SeqCst),
            0,
            "{scope}: no token fetched"
        );
        assert!(AuthLayer::new(TokenCache::new(source.clone(), [scope])).is_restricted());
        // Naming the origins fixes it.
        let fixed = AuthLayer::new(TokenCache::new(source, [scope]))
            .allow_origins(["https://api.contoso.com"])
            .unwrap();
        assert_eq!(
            through(&fixed, "https://api.contoso.com/orders")
                .await
                .unwrap()
                .as_deref(),
            Some(BEARER)
        );
    }
    // Said clearly, once per layer, in the log.
    let log = capture.text();
    assert_eq!(
        log.matches("no origin to send the token to: the scopes (api://my-api/.default)")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("ERROR"), "{log}");
    assert!(!log.contains(TOKEN), "{log}");
    // OpenID Connect scopes name no resource: alone they are no origin either.
    let err = resilient_auth::origin::scope_origins(["openid", "offline_access"]).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert_eq!(
        resilient_auth::origin::scope_origins([
            "https://graph.microsoft.com/Mail.Read",
            "offline_access"
        ])
        .unwrap(),
        ["https://graph.microsoft.com"]
    );
}

// ---------- reqwest-middleware: the same decision ----------

#[tokio::test]
async fn x5_reqwest_middleware_sends_the_token_only_to_the_scope_origin() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    for server in [&a, &b] {
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(server)
            .await;
    }
    let scope = format!("{}/.default", a.uri());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthLayer::new(tokens(&scope)))
        .build();
    client.get(format!("{}/x", a.uri())).send().await.unwrap();
    client.get(format!("{}/x", b.uri())).send().await.unwrap();
    let auth_of = |reqs: Vec<wiremock::Request>| -> Vec<Option<String>> {
        reqs.iter()
            .map(|r| {
                r.headers
                    .get(AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_string())
            })
            .collect()
    };
    assert_eq!(
        auth_of(a.received_requests().await.unwrap()),
        [Some(BEARER.to_string())]
    );
    assert_eq!(auth_of(b.received_requests().await.unwrap()), [None]);

    // A scope without a host: the configuration error, as a middleware error.
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthLayer::new(tokens("api://my-api/.default")))
        .build();
    let err = client
        .get(format!("{}/x", b.uri()))
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &err else {
        panic!("{err}");
    };
    assert!(
        matches!(inner.downcast_ref::<Error>(), Some(Error::Config(m)) if m.contains("allow_origins")),
        "{err}"
    );
    assert_eq!(b.received_requests().await.unwrap().len(), 1, "not sent");
}

/// A request's URL and its `Authorization` header, if any.
type UrlAndAuth = (String, Option<String>);

/// Records the `Authorization` header of each request, answering 200 without the network.
#[derive(Clone, Default)]
struct AuthSeen(Arc<Mutex<Vec<UrlAndAuth>>>);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for AuthSeen {
    async fn handle(
        &self,
        req: reqwest::Request,
        _: &mut http::Extensions,
        _: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let auth = req
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_string());
        self.0.lock().unwrap().push((req.url().to_string(), auth));
        Ok(reqwest::Response::from(Response::new("ok")))
    }
}

/// On reqwest-middleware the layer remembers the origin it attached the token for first and
/// decides the next request to it without parsing the URL again. The shortcut holds for that
/// scheme, host and port only: another port, plain http, another host, a request with its own
/// `Authorization` — and a copy of the layer given other origins — are decided in full.
#[tokio::test]
async fn x5_reqwest_the_remembered_origin_is_exactly_the_one_the_token_went_to() {
    let layer = AuthLayer::new(tokens("https://api.contoso.com/.default"));
    let seen = AuthSeen::default();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(layer.clone())
        .with(seen.clone())
        .build();
    for url in [
        "https://api.contoso.com/a",
        "https://api.contoso.com/b",
        "https://api.contoso.com:8443/a",
        "https://API.contoso.com/c",
        "https://evil.contoso.com/a",
        "https://api.contoso.com.evil.net/a",
    ] {
        client.get(url).send().await.unwrap();
    }
    // Plain http to a host that is not loopback: left without the token.
    client.get("http://api.contoso.com/a").send().await.unwrap();
    client
        .get("https://api.contoso.com/own")
        .header(AUTHORIZATION, "Basic b3du")
        .send()
        .await
        .unwrap();
    // A copy of the layer, given other origins, starts with nothing remembered.
    let other = layer
        .clone()
        .allow_origins(["https://other.contoso.com"])
        .unwrap();
    let other_client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(other)
        .with(seen.clone())
        .build();
    other_client
        .get("https://api.contoso.com/a")
        .send()
        .await
        .unwrap();
    other_client
        .get("https://other.contoso.com/a")
        .send()
        .await
        .unwrap();
    let bearer = Some(BEARER.to_string());
    let expected: Vec<UrlAndAuth> = vec![
        ("https://api.contoso.com/a".into(), bearer.clone()),
        ("https://api.contoso.com/b".into(), bearer.clone()),
        ("https://api.contoso.com:8443/a".into(), None),
        ("https://api.contoso.com/c".into(), bearer.clone()),
        ("https://evil.contoso.com/a".into(), None),
        ("https://api.contoso.com.evil.net/a".into(), None),
        ("http://api.contoso.com/a".into(), None),
        (
            "https://api.contoso.com/own".into(),
            Some("Basic b3du".into()),
        ),
        ("https://api.contoso.com/a".into(), None),
        ("https://other.contoso.com/a".into(), bearer.clone()),
    ];
    assert_eq!(*seen.0.lock().unwrap(), expected);
}
