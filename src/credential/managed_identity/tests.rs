use super::*;
use crate::credential::confidential::test_env as env;
use crate::TokenCredential;
use std::sync::atomic::{AtomicUsize, Ordering};

const HEADER: &str = "identity-header-s3cr3t";
const MSI_SECRET: &str = "msi-secret-s3cr3t";
const THUMBPRINT: &str = "A1B2C3D4E5F60718293A4B5C6D7E8F9011223344";

/// A fresh temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ra-mi-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A platform without the Arc agent (or with it, if `himds` is true).
fn platform(himds: bool) -> Platform {
    let dir = temp_dir("platform");
    let himds_path = dir.join("himds");
    if himds {
        std::fs::write(&himds_path, b"").unwrap();
    }
    Platform {
        himds: himds_path,
        tokens_dir: dir.join("tokens"),
    }
}

fn detect(pairs: &[(&str, &str)], himds: bool) -> ManagedIdentityCredential {
    ManagedIdentityCredential::detect(&env(pairs), &platform(himds))
        .build()
        .unwrap()
}

#[test]
fn c3_detection_follows_msal_order() {
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        bool,
        ManagedIdentitySource,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            vec![],
            false,
            ManagedIdentitySource::Imds,
            "http://169.254.169.254/metadata/identity/oauth2/token",
        ),
        (
            vec![
                (
                    "IDENTITY_ENDPOINT",
                    "https://10.0.0.4:2377/metadata/identity/oauth2/token",
                ),
                ("IDENTITY_HEADER", HEADER),
                ("IDENTITY_SERVER_THUMBPRINT", THUMBPRINT),
            ],
            false,
            ManagedIdentitySource::ServiceFabric,
            "https://10.0.0.4:2377/metadata/identity/oauth2/token",
        ),
        (
            vec![
                ("IDENTITY_ENDPOINT", "http://localhost:4141/msi/token"),
                ("IDENTITY_HEADER", HEADER),
            ],
            false,
            ManagedIdentitySource::AppService,
            "http://localhost:4141/msi/token",
        ),
        (
            vec![
                ("MSI_ENDPOINT", "http://127.0.0.1:46808/MSI/auth"),
                ("MSI_SECRET", MSI_SECRET),
                ("DEFAULT_IDENTITY_CLIENT_ID", "ml-client"),
            ],
            false,
            ManagedIdentitySource::AzureMl,
            "http://127.0.0.1:46808/MSI/auth",
        ),
        (
            vec![("MSI_ENDPOINT", "http://localhost:50342/oauth2/token")],
            false,
            ManagedIdentitySource::CloudShell,
            "http://localhost:50342/oauth2/token",
        ),
        (
            vec![
                (
                    "IDENTITY_ENDPOINT",
                    "http://localhost:40342/metadata/identity/oauth2/token",
                ),
                ("IMDS_ENDPOINT", "http://localhost:40342"),
            ],
            false,
            ManagedIdentitySource::AzureArc,
            "http://localhost:40342/metadata/identity/oauth2/token",
        ),
        (
            vec![],
            true,
            ManagedIdentitySource::AzureArc,
            ARC_DEFAULT_ENDPOINT,
        ),
        (
            vec![(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                "http://169.254.169.254:8080/",
            )],
            false,
            ManagedIdentitySource::Imds,
            "http://169.254.169.254:8080/metadata/identity/oauth2/token",
        ),
        // ambiguous combinations: the first source in MSAL's order wins
        (
            vec![
                ("IDENTITY_ENDPOINT", "http://localhost:4141/msi/token"),
                ("IDENTITY_HEADER", HEADER),
                ("IMDS_ENDPOINT", "http://localhost:40342"),
                ("MSI_ENDPOINT", "http://localhost:50342/oauth2/token"),
                ("MSI_SECRET", MSI_SECRET),
            ],
            true,
            ManagedIdentitySource::AppService,
            "http://localhost:4141/msi/token",
        ),
        (
            vec![
                (
                    "IDENTITY_ENDPOINT",
                    "http://localhost:40342/metadata/identity/oauth2/token",
                ),
                ("IMDS_ENDPOINT", "http://localhost:40342"),
                ("MSI_ENDPOINT", "http://localhost:50342/oauth2/token"),
            ],
            true,
            ManagedIdentitySource::CloudShell,
            "http://localhost:50342/oauth2/token",
        ),
        (
            // a thumbprint without a header is not Service Fabric; an endpoint alone is nothing
            vec![
                ("IDENTITY_ENDPOINT", "https://10.0.0.4:2377/x"),
                ("IDENTITY_SERVER_THUMBPRINT", THUMBPRINT),
            ],
            false,
            ManagedIdentitySource::Imds,
            "http://169.254.169.254/metadata/identity/oauth2/token",
        ),
        (
            // the agent binary with IDENTITY_ENDPOINT set uses that endpoint
            vec![(
                "IDENTITY_ENDPOINT",
                "http://127.0.0.1:40999/metadata/identity/oauth2/token",
            )],
            true,
            ManagedIdentitySource::AzureArc,
            "http://127.0.0.1:40999/metadata/identity/oauth2/token",
        ),
        (
            // empty values count as unset
            vec![("MSI_ENDPOINT", " "), ("IDENTITY_ENDPOINT", "")],
            false,
            ManagedIdentitySource::Imds,
            "http://169.254.169.254/metadata/identity/oauth2/token",
        ),
    ];
    for (pairs, himds, source, url) in cases {
        let c = detect(&pairs, himds);
        assert_eq!(c.source(), source, "{pairs:?} himds={himds}");
        assert_eq!(c.url.as_str(), url, "{pairs:?}");
        assert_eq!(c.identity().kind, source.kind());
    }
}

#[test]
fn c3_azure_ml_needs_a_client_id() {
    let pairs = [
        ("MSI_ENDPOINT", "http://127.0.0.1:46808/MSI/auth"),
        ("MSI_SECRET", MSI_SECRET),
    ];
    let b = ManagedIdentityCredential::detect(&env(&pairs), &platform(false));
    assert_eq!(b.source(), ManagedIdentitySource::AzureMl);
    let e = b.build().unwrap_err();
    assert!(e.to_string().contains("DEFAULT_IDENTITY_CLIENT_ID"), "{e}");
    let c = ManagedIdentityCredential::detect(&env(&pairs), &platform(false))
        .user_assigned(UserAssignedId::ClientId("uami".into()))
        .build()
        .unwrap();
    assert_eq!(c.identity().client_id.as_deref(), Some("uami"));
}

#[test]
fn c3_user_assigned_support_per_source() {
    let sources = || {
        vec![
            (ManagedIdentityCredential::imds(), [true, true, true]),
            (
                ManagedIdentityCredential::app_service("http://localhost:1/msi", HEADER),
                [true, true, true],
            ),
            (
                ManagedIdentityCredential::azure_ml("http://localhost:1/msi", MSI_SECRET, "d"),
                [true, false, false],
            ),
            (
                ManagedIdentityCredential::service_fabric(
                    "https://localhost:1/",
                    HEADER,
                    THUMBPRINT,
                ),
                [false, false, false],
            ),
            (
                ManagedIdentityCredential::cloud_shell("http://localhost:1/"),
                [false, false, false],
            ),
            (
                ManagedIdentityCredential::azure_arc("http://localhost:1/"),
                [false, false, false],
            ),
        ]
    };
    for i in 0..3 {
        for (builder, supported) in sources() {
            let source = builder.source();
            let id = match i {
                0 => UserAssignedId::ClientId("c".into()),
                1 => UserAssignedId::ObjectId("o".into()),
                _ => UserAssignedId::ResourceId("/subscriptions/x/r".into()),
            };
            match builder.user_assigned(id.clone()).build() {
                Ok(c) => {
                    assert!(supported[i], "{source} accepted {id:?}");
                    assert_eq!(c.user_assigned(), Some(&id));
                }
                Err(e) => {
                    assert!(!supported[i], "{source} refused {id:?}: {e}");
                    assert!(matches!(e, Error::Config(_)));
                    assert!(e.to_string().contains(source.name()), "{e}");
                }
            }
        }
    }
    let e = ManagedIdentityCredential::imds()
        .user_assigned(UserAssignedId::ClientId(" ".into()))
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)));
}

#[test]
fn c3_builder_validates_endpoints_and_secrets() {
    for bad in [
        ManagedIdentityCredential::imds().endpoint("http://10.0.0.1"),
        ManagedIdentityCredential::imds().endpoint("ftp://169.254.169.254"),
        ManagedIdentityCredential::app_service("http://example.com/msi", HEADER),
        ManagedIdentityCredential::app_service("not a url", HEADER),
        ManagedIdentityCredential::app_service("http://localhost:1/msi", " "),
        ManagedIdentityCredential::app_service("http://localhost:1/msi", "bad\nheader"),
        ManagedIdentityCredential::service_fabric("https://localhost:1/", HEADER, "abc"),
        ManagedIdentityCredential::service_fabric("https://localhost:1/", HEADER, THUMBPRINT)
            .http_client(reqwest::Client::new()),
        ManagedIdentityCredential::azure_ml("http://localhost:1/", "", "d"),
        ManagedIdentityCredential::cloud_shell("http://u:p@localhost:1/"),
        ManagedIdentityCredential::imds().timeout(Duration::ZERO),
    ] {
        let shown = format!("{bad:?}");
        let e = bad.build().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{shown}: {e:?}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
    for ok in [
        ManagedIdentityCredential::imds().endpoint("169.254.169.254"),
        ManagedIdentityCredential::imds().endpoint("http://[fe80::1]:80/"),
        ManagedIdentityCredential::imds().endpoint("https://imds.example"),
        ManagedIdentityCredential::app_service("http://127.0.0.1:41000/msi/token/", HEADER),
    ] {
        ok.build().unwrap();
    }
}

#[test]
fn c3_scope_becomes_resource() {
    let one = |s: &[&str]| resource_of(&TokenRequest::new(s.iter().copied()));
    assert_eq!(
        one(&["https://vault.azure.net/.default"]).unwrap(),
        "https://vault.azure.net"
    );
    assert_eq!(
        one(&["https://management.azure.com/"]).unwrap(),
        "https://management.azure.com/"
    );
    assert_eq!(one(&["api://app-id"]).unwrap(), "api://app-id");
    for bad in [
        &[][..],
        &["a/.default", "b/.default"][..],
        &["/.default"][..],
    ] {
        assert!(matches!(one(bad), Err(Error::Config(_))), "{bad:?}");
    }
}

#[test]
fn c3_request_carries_each_sources_parameters() {
    let req = |b: ManagedIdentityCredentialBuilder| {
        let c = b.build().unwrap();
        c.request("https://vault.azure.net", None).unwrap()
    };
    let r = req(ManagedIdentityCredential::imds()
        .user_assigned(UserAssignedId::ResourceId("/subscriptions/s/rg/x".into())));
    assert_eq!(r.method(), Method::GET);
    assert_eq!(
        r.url().as_str(),
        "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&msi_res_id=%2Fsubscriptions%2Fs%2Frg%2Fx"
    );
    assert_eq!(r.headers()["metadata"], "true");

    let r = req(ManagedIdentityCredential::cloud_shell(
        "http://localhost:50342/oauth2/token",
    ));
    assert_eq!(r.method(), Method::POST);
    assert_eq!(r.url().query(), None);
    assert_eq!(
        r.body().and_then(|b| b.as_bytes()).unwrap(),
        b"resource=https%3A%2F%2Fvault.azure.net"
    );

    let r = req(ManagedIdentityCredential::app_service(
        "http://localhost:4141/msi/token",
        HEADER,
    ));
    assert!(r.headers()["x-identity-header"].is_sensitive());
}

#[test]
fn c3_error_shapes_are_readable() {
    let e = mi_error(
        StatusCode::BAD_REQUEST,
        &HeaderMap::new(),
        br#"{"error":"invalid_request","error_description":"Identity not found"}"#,
    );
    assert_eq!(
        e.to_string(),
        "identity provider returned invalid_request: Identity not found"
    );
    let e = mi_error(
        StatusCode::BAD_REQUEST,
        &HeaderMap::new(),
        br#"{"statusCode":400,"message":"No managed identity found for specified ClientId/ResourceId/PrincipalId.","correlationId":"c-1"}"#,
    );
    assert_eq!(
        e.to_string(),
        "identity provider returned http_400: No managed identity found for specified ClientId/ResourceId/PrincipalId. correlation_id=c-1"
    );
    let e = mi_error(
        StatusCode::BAD_REQUEST,
        &HeaderMap::new(),
        br#"{"error":{"correlationId":"7f9a","code":"SecretHeaderNotFound","message":"Secret is not found in the request headers."}}"#,
    );
    let Error::IdentityProvider { details, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(details.error, "SecretHeaderNotFound");
    assert_eq!(
        details.error_description.as_deref(),
        Some("Secret is not found in the request headers.")
    );
    assert_eq!(details.correlation_id.as_deref(), Some("7f9a"));
    let e = mi_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &HeaderMap::new(),
        br#"{"Message":"An error has occurred."}"#,
    );
    assert_eq!(
        e.to_string(),
        "identity provider returned http_500: An error has occurred."
    );
}

#[test]
fn c3_arc_challenge_parsing() {
    let headers = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(http::header::WWW_AUTHENTICATE, v.parse().unwrap());
        h
    };
    assert_eq!(
        arc::challenge_path(&headers("Basic realm=/var/opt/azcmagent/tokens/a.key")).unwrap(),
        Path::new("/var/opt/azcmagent/tokens/a.key")
    );
    assert_eq!(
        arc::challenge_path(&headers(r#"basic REALM="/t/a.key""#)).unwrap(),
        Path::new("/t/a.key")
    );
    for bad in [
        "Basic",
        "Basic realm=",
        "Bearer realm=/t/a.key",
        "Basic x=/t/a.key",
    ] {
        let e = arc::challenge_path(&headers(bad)).unwrap_err();
        assert!(matches!(e, Error::InvalidResponse(_)), "{bad}: {e}");
    }
    let e = arc::challenge_path(&HeaderMap::new()).unwrap_err();
    assert!(e.to_string().contains("WWW-Authenticate"), "{e}");
    let e = arc::challenge_path(&headers("Basic")).unwrap_err();
    assert!(e.to_string().contains("realm"), "{e}");
}

#[test]
fn c3_arc_key_file_checks() {
    let tokens = temp_dir("tokens");
    let outside = temp_dir("outside");
    let key = "arc-key-s3cr3t-0123456789abcdef";
    std::fs::write(tokens.join("good.key"), format!("{key}\n")).unwrap();
    let header = arc::read_key(&tokens.join("good.key"), &tokens).unwrap();
    assert_eq!(header.to_str().unwrap(), format!("Basic {key}"));
    assert!(header.is_sensitive());

    std::fs::write(outside.join("evil.key"), key).unwrap();
    std::fs::write(tokens.join("wrong.txt"), key).unwrap();
    std::fs::write(tokens.join("big.key"), "k".repeat(4097)).unwrap();
    std::fs::write(tokens.join("max.key"), "k".repeat(4096)).unwrap();
    std::fs::write(tokens.join("empty.key"), "").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("evil.key"), tokens.join("link.key")).unwrap();

    assert!(arc::read_key(&tokens.join("max.key"), &tokens).is_ok());
    let cases = [
        (outside.join("evil.key"), "tokens directory"),
        (tokens.join("wrong.txt"), ".key"),
        (tokens.join("big.key"), "4096"),
        (tokens.join("empty.key"), "empty"),
        (tokens.join("missing.key"), "cannot open"),
        (tokens.join("../outside/evil.key"), "plain absolute path"),
        (PathBuf::from("relative.key"), "plain absolute path"),
        #[cfg(unix)]
        (tokens.join("link.key"), "resolves outside"),
    ];
    for (path, needle) in cases {
        let e = arc::read_key(&path, &tokens).unwrap_err();
        assert!(matches!(e, Error::InvalidResponse(_)), "{path:?}: {e:?}");
        let s = e.to_string();
        assert!(s.contains(needle), "{path:?}: {s}");
        assert!(!s.contains("s3cr3t"), "{s}");
    }
}

#[test]
fn x1_managed_identity_debug_and_display_hide_secrets() {
    let builders = vec![
        ManagedIdentityCredential::app_service("http://localhost:1/msi", HEADER),
        ManagedIdentityCredential::service_fabric("https://localhost:1/", HEADER, THUMBPRINT),
        ManagedIdentityCredential::azure_ml("http://localhost:1/", MSI_SECRET, "client"),
        ManagedIdentityCredential::imds(),
        ManagedIdentityCredential::cloud_shell("http://localhost:1/"),
        ManagedIdentityCredential::azure_arc("http://localhost:1/"),
    ];
    for b in builders {
        let shown = format!("{b:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let c = b.build().unwrap();
        let shown = format!("{c:?} {c} {:?}", c.identity());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let r = c.request("https://x", None).unwrap();
        assert!(!format!("{:?}", r.headers()).contains("s3cr3t"));
    }
}
