//! The daemon example (`examples/daemon.rs`, included as a module): its timeline SVG is
//! well-formed and holds exactly one mark per API call of each run, checked against the run's
//! own counts, both for the scripted demo (a short script) and for a real-mode run drawn from
//! its `--out` report; a failed token acquisition is told in one line, with a hint for setup
//! mistakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../examples/daemon.rs"]
mod daemon;

use std::sync::Arc;
use std::time::Duration;

use daemon::{Scenario, Summary};
use resilient_auth::testkit::{FakeIdentityProvider, Fault, FaultKind, Target};
use resilient_auth::{Error, IdentityProviderError};
use roxmltree::{Document, Node};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn classes<'a>(n: &Node<'a, 'a>) -> Vec<&'a str> {
    n.attribute("class")
        .map(|c| c.split_whitespace().collect())
        .unwrap_or_default()
}

/// The lane `<g class="lane" data-run=NAME>` of the picture.
fn lane<'a>(doc: &'a Document<'a>, name: &str) -> Node<'a, 'a> {
    let lanes: Vec<_> = doc
        .descendants()
        .filter(|n| classes(n).contains(&"lane") && n.attribute("data-run") == Some(name))
        .collect();
    assert_eq!(lanes.len(), 1, "one lane named {name:?}");
    lanes[0]
}

/// Marks in `node` whose class list holds all of `want`.
fn marks(node: Node<'_, '_>, want: &[&str]) -> usize {
    node.descendants()
        .filter(|n| {
            let c = classes(n);
            want.iter().all(|w| c.contains(w))
        })
        .count()
}

/// Nothing the picture needs comes from elsewhere, and nothing in it runs.
fn assert_self_contained(doc: &Document<'_>) {
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert_eq!(
        doc.root_element().tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    for n in doc.descendants().filter(Node::is_element) {
        let name = n.tag_name().name();
        assert!(
            !matches!(name, "script" | "image" | "use" | "foreignObject" | "style"),
            "<{name}> in a self-contained picture"
        );
        for a in n.attributes() {
            assert!(
                !a.name().starts_with("on") && !a.name().contains("href"),
                "attribute {} on <{name}>",
                a.name()
            );
        }
    }
}

fn assert_lane_matches(doc: &Document<'_>, name: &str, run: &Summary) {
    let lane = lane(doc, name);
    assert_eq!(
        marks(lane, &["call"]) as u64,
        run.api_ok + run.api_failed,
        "{name}: one mark per API call"
    );
    assert_eq!(marks(lane, &["call", "ok"]) as u64, run.api_ok, "{name}");
    assert_eq!(
        marks(lane, &["call", "failed"]) as u64,
        run.api_failed,
        "{name}"
    );
    assert_eq!(
        marks(lane, &["token"]) as u64,
        run.token_requests,
        "{name}: one mark per token request"
    );
    assert_eq!(
        marks(lane, &["token", "failed"]) as u64,
        run.token_failures,
        "{name}"
    );
}

/// A short version of the demo's script (both runs take ~3 s of real time): a 429 with
/// `Retry-After: 1` early on, then the identity provider down over the token's refresh point.
fn short_script() -> Scenario {
    Scenario {
        run_for: ms(1500),
        interval: ms(50),
        token_lifetime: Duration::from_secs(2),
        faults: vec![
            (
                "API throttles",
                "API 429 <Retry-After: 1> & co",
                Fault::new(
                    Target::Api,
                    ms(300)..ms(500),
                    FaultKind::TooManyRequests {
                        retry_after: Duration::from_secs(1),
                    },
                ),
            ),
            (
                "identity provider down",
                "IdP down",
                Fault::new(
                    Target::Token,
                    ms(900)..ms(1400),
                    FaultKind::Unavailable { retry_after: None },
                ),
            ),
        ],
    }
}

#[tokio::test]
async fn demo_timeline_has_one_mark_per_api_call_of_each_run() {
    let script = short_script();
    let with = daemon::run(&script, true).await.unwrap();
    let without = daemon::run(&script, false).await.unwrap();
    let svg = daemon::demo_timeline(&script, &with, &without).to_svg();
    let doc = Document::parse(&svg).expect("well-formed SVG");
    assert_self_contained(&doc);

    assert!(with.api_ok + with.api_failed > 10, "{with:?}");
    assert_lane_matches(&doc, "with layers", &with);
    assert_lane_matches(&doc, "without", &without);
    // The 429 was waited out with the layers (a bar), and failed the call without them.
    assert!(marks(lane(&doc, "with layers"), &["call", "waited"]) >= 1);
    assert!(without.api_failed >= 1);

    let windows: Vec<_> = doc
        .descendants()
        .filter(|n| classes(n).contains(&"window"))
        .collect();
    assert_eq!(windows.len(), 2, "one shaded window per fault");
    // Labels are text, escaped: the parser gives back what the script said.
    assert!(doc
        .descendants()
        .any(|n| n.text() == Some("API 429 <Retry-After: 1> & co")));
    // The summary figures are in the corner.
    let summary = doc
        .descendants()
        .find(|n| classes(n).contains(&"summary"))
        .expect("summary table");
    let cells: Vec<_> = summary.descendants().filter_map(|n| n.text()).collect();
    assert!(cells.contains(&"API calls failed"), "{cells:?}");
    assert!(cells.contains(&without.api_failed.to_string().as_str()));
}

#[tokio::test]
async fn real_mode_svg_draws_its_own_report() {
    let idp = FakeIdentityProvider::builder().start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("ra-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (out, svg) = (dir.join("report.jsonl"), dir.join("run.svg"));
    let args: Vec<String> = [
        "--mode",
        "mi",
        "--idp",
        &idp.uri(),
        "--scope",
        "https://api.example/.default",
        "--interval",
        "0.1",
        "--duration",
        "0.75",
        "--out",
        out.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    daemon::real(&args).await.unwrap();

    let report = std::fs::read_to_string(&out).unwrap();
    let end: serde_json::Value = report
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "end")
        .unwrap();
    let run = Summary {
        api_ok: end["api_ok"].as_u64().unwrap(),
        api_failed: end["api_failed"].as_u64().unwrap(),
        token_requests: end["token_requests"].as_u64().unwrap(),
        token_failures: end["token_failures"].as_u64().unwrap(),
        ..Summary::default()
    };
    assert_eq!(
        end["iterations"].as_u64(),
        Some(run.api_ok + run.api_failed)
    );
    assert!(run.api_ok >= 3, "{report}");
    assert_eq!(run.token_requests, 1, "{report}");

    let drawn = std::fs::read_to_string(&svg).unwrap();
    let doc = Document::parse(&drawn).expect("well-formed SVG");
    assert_self_contained(&doc);
    assert_lane_matches(&doc, "--mode mi", &run);
    // `--from` draws the saved report the same way.
    let again = daemon::timeline::from_report(&report).unwrap().to_svg();
    assert_eq!(again, drawn);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn real_mode_report_failures_are_shaded_and_labelled() {
    let report = r#"{"event":"start","ts":100.0,"mode":"cca","scope":"api://x/.default","api":"https://api.example/x","source":"client_secret","interval_s":1.0}
{"ts":101.0,"i":1,"acquire":"ok","acquire_s":0.05,"api":"ok","api_s":0.1,"token_requests":1,"token_failures":0}
{"ts":102.0,"i":2,"acquire":"error","acquire_s":0.1,"acquire_err":"identity provider returned http_403","api":"skipped","token_requests":2,"token_failures":1}
{"ts":103.0,"i":3,"acquire":"error","acquire_s":0.1,"acquire_err":"identity provider returned http_403","api":"skipped","token_requests":2,"token_failures":1}
{"ts":104.0,"i":4,"acquire":"ok","acquire_s":0.0,"api":"http_503","api_status":503,"api_s":0.6,"token_requests":3,"token_failures":1}
{"event":"end","ts":105.0,"iterations":4,"api_ok":1,"api_failed":3,"token_requests":3,"token_failures":1}
"#;
    let t = daemon::timeline::from_report(report).unwrap();
    assert_eq!(t.lanes.len(), 1);
    assert_eq!(t.lanes[0].calls.len(), 4);
    assert_eq!(
        t.windows
            .iter()
            .map(|w| (w.start, w.label.as_str()))
            .collect::<Vec<_>>(),
        [(2.0, "token: identity provider returned http_403")]
    );
    let tokens: Vec<_> = t.lanes[0].tokens.iter().map(|t| (t.at, t.ok)).collect();
    assert_eq!(tokens, [(1.0, true), (2.0, false), (4.0, true)]);
    let svg = t.to_svg();
    let doc = Document::parse(&svg).unwrap();
    let lane = lane(&doc, "--mode cca");
    assert_eq!(marks(lane, &["call", "failed"]), 3);
    assert_eq!(marks(lane, &["call", "waited"]), 1);
    assert!(daemon::timeline::from_report("not json").is_err());
    assert!(daemon::timeline::from_report("").is_err());
}

fn idp_error(status: u16, error: &str, codes: &[i64], description: &str) -> Error {
    let mut details = IdentityProviderError::default();
    details.error = error.into();
    details.error_codes = codes.to_vec();
    details.error_description = Some(description.into());
    details.trace_id = Some("trace-1".into());
    Error::IdentityProvider {
        status: http::StatusCode::from_u16(status).unwrap(),
        details: Box::new(details),
    }
}

#[test]
fn acquire_error_is_told_in_one_line_with_a_hint() {
    let bad_secret = idp_error(
        401,
        "invalid_client",
        &[7000215],
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent is the value.\r\nTrace ID: abc Correlation ID: def",
    );
    assert_eq!(
        daemon::cause(&bad_secret, "client_secret"),
        "identity provider returned http_401 invalid_client: AADSTS7000215: Invalid client secret provided."
    );
    assert!(daemon::hint(&bad_secret, "client_secret", None)
        .unwrap()
        .contains("AZURE_CLIENT_SECRET"));

    let bare = idp_error(403, "http_403", &[], "");
    assert_eq!(
        daemon::cause(&bare, "client_secret"),
        "identity provider returned http_403"
    );
    assert_eq!(daemon::hint(&bare, "client_secret", None), None);

    let refused = Error::Unavailable {
        what: "identity provider",
        source: Some(Arc::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))),
    };
    assert_eq!(
        daemon::cause(&refused, "managed_identity/imds"),
        "IMDS unreachable: connection refused"
    );
    assert!(daemon::hint(&refused, "managed_identity/imds", None)
        .unwrap()
        .contains("only on an Azure host"));
    assert!(daemon::hint(
        &refused,
        "managed_identity/imds",
        Some("http://127.0.0.1:1")
    )
    .unwrap()
    .contains("--idp http://127.0.0.1:1"));
    assert_eq!(
        daemon::cause(&refused, "client_secret"),
        "identity provider unreachable: connection refused"
    );
}

/// `docs/demo.svg` (shown in the README) is a real run's picture: well-formed, self-contained,
/// and its marks agree with its own summary figures.
#[test]
fn committed_demo_svg_agrees_with_its_own_summary() {
    let svg = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/demo.svg"))
        .expect("docs/demo.svg (README shows it)");
    let doc = Document::parse(&svg).expect("well-formed SVG");
    assert_self_contained(&doc);
    let cells: Vec<&str> = doc
        .descendants()
        .find(|n| classes(n).contains(&"summary"))
        .expect("summary table")
        .descendants()
        .filter(|n| n.tag_name().name() == "text")
        .filter_map(|n| n.text())
        .collect();
    let figure = |row: &str, col: usize| -> u64 {
        let at = cells.iter().position(|c| *c == row).expect(row);
        cells[at + col].parse().expect(row)
    };
    for (col, name) in [(1, "with layers"), (2, "without")] {
        let run = Summary {
            api_ok: figure("API calls ok", col),
            api_failed: figure("API calls failed", col),
            token_requests: figure("token requests sent", col),
            token_failures: figure("token requests failed", col),
            ..Summary::default()
        };
        assert!(run.api_ok > 0);
        assert_lane_matches(&doc, name, &run);
    }
}
