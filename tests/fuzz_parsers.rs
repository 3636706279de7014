//! Rule X4 without a nightly toolchain: the inputs of the cargo-fuzz targets under `fuzz/`, as
//! proptests in an ordinary test binary (`cargo test --all-features` runs it).
//!
//! For every target: arbitrary bytes, structured near-valid inputs (JSON with huge numbers,
//! dates out of range, base64 garbage, traversing paths), and a replay of the seed corpus in
//! `fuzz/corpus/<target>/`. Each calls the same `resilient_auth::__fuzz` entry point as the fuzz
//! target, which panics if the parser panics or breaks one of its invariants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use proptest::prelude::*;
use resilient_auth::__fuzz;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `mode` followed by `rest`: the layout every entry point reads.
fn with_mode(mode: u8, rest: impl AsRef<[u8]>) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(rest.as_ref());
    v
}

/// Two status bytes (see `__fuzz::idp_error`) then `rest`.
fn with_status(code: u16, rest: impl AsRef<[u8]>) -> Vec<u8> {
    let mut v = (code - 100).to_be_bytes().to_vec();
    v.extend_from_slice(rest.as_ref());
    v
}

/// Every file of `fuzz/corpus/<target>/` through `run`; the corpus must not be empty.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..512)
}

/// Numbers as a hostile server writes them: huge, negative, fractional, exponents, bare signs.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "-?[0-9]{1,40}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,4})?",
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("1e308".to_owned()),
        Just("-0".to_owned()),
        Just("0.0000001".to_owned()),
        Just("604800.999".to_owned()),
        Just("9007199254740992".to_owned()),
    ]
}

/// App Service style dates with every field in or out of range.
fn app_service_date() -> impl Strategy<Value = String> {
    (
        0u32..40,
        0u32..40,
        prop_oneof![Just(2019i64), Just(2026), 0i64..100_000, Just(-1)],
        0u32..30,
        0u32..70,
        0u32..70,
        prop_oneof![Just(""), Just(" AM"), Just(" PM"), Just(" pm"), Just(" XM")],
        prop_oneof![Just("+"), Just("-"), Just("")],
        0u32..30,
        0u32..70,
        any::<bool>(),
    )
        .prop_map(|(mo, d, y, h, mi, s, period, sign, oh, om, pad)| {
            if pad {
                format!("{mo:02}/{d:02}/{y} {h:02}:{mi:02}:{s:02}{period} {sign}{oh:02}:{om:02}")
            } else {
                format!("{mo}/{d}/{y} {h}:{mi:02}:{s:02}{period} {sign}{oh:02}:{om:02}")
            }
        })
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        app_service_date().prop_map(Value::String),
        number().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An HTTP-date of a random instant in any of the three formats, or with fields out of range.
fn http_date() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..=253_402_300_799)
            .prop_map(|s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s))),
        (
            prop_oneof![Just("Mon"), Just("Sun"), Just("Xyz")],
            0u32..40,
            prop_oneof![Just("Jan"), Just("Feb"), Just("Dec"), Just("Foo")],
            0u32..100_000,
            0u32..30,
            0u32..70,
            0u32..70,
        )
            .prop_map(|(wd, d, mo, y, h, mi, s)| format!(
                "{wd}, {d:02} {mo} {y} {h:02}:{mi:02}:{s:02} GMT"
            )),
        (0u32..40, 0u32..100, 0u32..30)
            .prop_map(|(d, y, h)| format!("Sunday, {d:02}-Nov-{y:02} {h:02}:49:37 GMT")),
        (0u32..40, 0u32..100_000).prop_map(|(d, y)| format!("Sun Nov {d:2} 08:49:37 {y}")),
    ]
}

fn retry_after_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,30}",
        number(),
        http_date(),
        " *[0-9]{1,5} *",
        "[ -~]{0,30}",
    ]
}

/// base64 in any flavour of any bytes or JSON-ish text, or garbage.
fn claims_value() -> impl Strategy<Value = String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    prop_oneof![
        json_value().prop_map(|v| STANDARD.encode(v.to_string())),
        json_value().prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
        bytes().prop_map(|b| STANDARD.encode(b)),
        "[A-Za-z0-9+/=_-]{0,80}",
        "[ -~]{0,40}",
    ]
}

fn challenge_header() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("error".to_owned()),
        Just("claims".to_owned()),
        Just("realm".to_owned()),
        Just("ERROR".to_owned()),
        "[a-z_]{0,8}",
    ];
    let value = prop_oneof![
        Just("invalid_token".to_owned()),
        Just("insufficient_claims".to_owned()),
        claims_value(),
    ];
    let param = (key, value, 0u8..4).prop_map(|(k, v, q)| match q {
        0 => format!("{k}={v}"),
        1 => format!("{k}=\"{v}\""),
        2 => format!("{k} = \"{}\\", v.replace('"', "\\\"")),
        _ => format!("{k}=\"{v}"),
    });
    (
        prop_oneof![
            Just("Bearer"),
            Just("bearer"),
            Just("Basic"),
            Just("xBearer"),
            Just("")
        ],
        prop::collection::vec(param, 0..5),
        prop_oneof![Just(", "), Just(","), Just(" "), Just("\t")],
    )
        .prop_map(|(scheme, params, sep)| format!("{scheme} {}", params.join(sep)))
}

fn status_code() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            200u16, 201, 204, 400, 401, 403, 404, 408, 410, 429, 500, 502, 503, 504
        ]),
        100u16..600,
    ]
}

fn header_lines() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "Retry-After",
                "retry-after-ms",
                "x-ms-retry-after-ms",
                "WWW-Authenticate",
                "content-type",
                "bad header",
            ]),
            retry_after_value(),
        )
            .prop_map(|(n, v)| format!("{n}: {v}")),
        0..4,
    )
    .prop_map(|lines| lines.join("\n"))
}

/// An error body in one of the shapes Entra ID and the managed-identity sources use.
fn error_body() -> impl Strategy<Value = String> {
    let v = json_value;
    prop_oneof![
        (v(), v(), v(), v(), v()).prop_map(|(e, d, c, t, k)| serde_json::json!({
            "error": e, "error_description": d, "error_codes": c, "trace_id": t, "correlation_id": k
        })
        .to_string()),
        (v(), v(), v()).prop_map(|(c, m, k)| serde_json::json!({
            "error": {"code": c, "message": m, "correlationId": k}
        })
        .to_string()),
        (v(), v())
            .prop_map(|(s, m)| serde_json::json!({"statusCode": s, "Message": m}).to_string()),
        prop::collection::vec(number(), 0..40)
            .prop_map(|n| format!(r#"{{"error":"x","error_codes":[{}]}}"#, n.join(","))),
        "[ -~]{0,100}",
    ]
}

/// A stored entry whose fields are the raw JSON lines `__fuzz::file_entry` mode 1 reads.
fn entry_fields() -> impl Strategy<Value = String> {
    (
        number(),
        number(),
        number(),
        prop_oneof![
            Just("\"fuzz-access-token-0123456789abcdef\"".to_owned()),
            Just("\"\"".to_owned()),
            Just("\"a\\u0000b\"".to_owned()),
            number(),
            json_value().prop_map(|v| v.to_string()),
        ],
        prop_oneof![
            Just("null".to_owned()),
            Just("\"rt\"".to_owned()),
            json_value().prop_map(|v| v.to_string())
        ],
    )
        .prop_map(|(i, r, e, t, rt)| format!("{i}\n{r}\n{e}\n{t}\n{rt}"))
}

/// An Azure Arc challenge naming files in and around the fuzz tokens directory.
fn arc_challenge() -> impl Strategy<Value = String> {
    let tokens = std::env::temp_dir().join("resilient-auth-fuzz-arc/tokens");
    let tokens = tokens.display().to_string();
    let name = prop::sample::select(vec![
        "good.key",
        "crlf.key",
        "empty.key",
        "big.key",
        "bin.key",
        "ctl.key",
        "dir.key",
        "wrong.txt",
        "link.key",
        "missing.key",
        "../outside.key",
        "./good.key",
        "sub/../good.key",
        "",
        ".key",
        "good.KEY",
    ]);
    (
        prop_oneof![Just("Basic"), Just("basic"), Just("Bearer"), Just("")],
        prop_oneof![Just("realm="), Just("REALM="), Just("realm ="), Just("")],
        prop_oneof![Just(""), Just("\"")],
        prop_oneof![
            Just(tokens),
            Just("relative".to_owned()),
            Just("/".to_owned()),
            Just("/tmp".to_owned())
        ],
        name,
        prop_oneof![Just("/"), Just("//"), Just("\\")],
    )
        .prop_map(|(scheme, realm, q, dir, name, sep)| {
            format!("{scheme} {realm}{q}{dir}{sep}{name}{q}")
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn x4_token_response_never_panics(data in bytes()) {
        __fuzz::token_response(&data);
    }

    #[test]
    fn x4_token_response_never_panics_on_near_valid_bodies(
        fields in prop::collection::vec((prop::sample::select(vec![
            "access_token", "token_type", "expires_in", "expires_on", "refresh_in", "refresh_token", "ext_expires_in",
        ]), json_value()), 0..8),
        date in app_service_date(),
        num in number(),
        mode in 0u8..50,
    ) {
        let body: serde_json::Map<_, _> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        __fuzz::token_response(&with_mode(0, serde_json::Value::Object(body).to_string()));
        __fuzz::token_response(&with_mode(1 + 5 * (mode / 5), &date));
        __fuzz::token_response(&with_mode(2 + 5 * (mode / 5), &num));
        __fuzz::token_response(&with_mode(3, &num));
        __fuzz::token_response(&with_mode(4, &num));
    }

    #[test]
    fn x4_retry_after_never_panics(data in bytes()) {
        __fuzz::retry_after(&data);
    }

    #[test]
    fn x4_retry_after_never_panics_on_near_valid_values(
        values in prop::collection::vec(retry_after_value(), 0..6),
        mode in any::<u8>(),
    ) {
        __fuzz::retry_after(&with_mode(mode, values.join("\n")));
    }

    #[test]
    fn x4_www_authenticate_never_panics(data in bytes()) {
        __fuzz::www_authenticate(&data);
    }

    #[test]
    fn x4_www_authenticate_never_panics_on_near_valid_challenges(
        headers in prop::collection::vec(challenge_header(), 0..4),
        claims in claims_value(),
        raw in bytes(),
        flavour in 0u8..4,
    ) {
        __fuzz::www_authenticate(&with_mode(0, headers.join("\n")));
        __fuzz::www_authenticate(&with_mode(1, &claims));
        __fuzz::www_authenticate(&with_mode(2, &claims));
        __fuzz::www_authenticate(&with_mode(3 + 5 * flavour, &raw));
        __fuzz::www_authenticate(&with_mode(3 + 5 * flavour, &claims));
        if let Some(h) = headers.first() {
            __fuzz::www_authenticate(&with_mode(4, h));
        }
    }

    #[test]
    fn x4_idp_error_never_panics(data in bytes()) {
        __fuzz::idp_error(&data);
    }

    #[test]
    fn x4_idp_error_never_panics_on_near_valid_errors(
        code in status_code(),
        headers in header_lines(),
        body in error_body(),
    ) {
        __fuzz::idp_error(&with_status(code, format!("{headers}\n\n{body}")));
    }

    #[test]
    fn x4_managed_identity_never_panics(data in bytes()) {
        __fuzz::managed_identity(&data);
    }

    #[test]
    fn x4_managed_identity_never_panics_on_near_valid_responses(
        code in status_code(),
        headers in header_lines(),
        body in prop_oneof![error_body(), json_value().prop_map(|v| v.to_string())],
        date in app_service_date(),
        challenge in arc_challenge(),
    ) {
        let response = with_status(code, format!("{headers}\n\n{body}"));
        __fuzz::managed_identity(&with_mode(0, &response));
        __fuzz::managed_identity(&with_mode(1, &date));
        __fuzz::managed_identity(&with_mode(2, &response));
        __fuzz::managed_identity(&with_mode(3, &challenge));
    }

    #[test]
    fn x4_file_entry_never_panics(data in bytes()) {
        __fuzz::file_entry(&data);
    }

    #[test]
    fn x4_file_entry_never_panics_on_near_valid_entries(
        fields in entry_fields(),
        record in prop_oneof![
            (number(), prop::sample::select(vec!["held", "taken-over", ""])).prop_map(|(n, h)| format!("0123abcd {n} {h}")),
            "[ -~\n]{0,60}",
        ],
        mode in 0u8..85,
    ) {
        __fuzz::file_entry(&with_mode(1 + 3 * mode, &fields));
        __fuzz::file_entry(&with_mode(2, &record));
    }

    #[test]
    fn x4_redis_entry_never_panics(data in bytes()) {
        __fuzz::redis_entry(&data);
    }

    #[test]
    fn x4_redis_entry_never_panics_on_near_valid_entries(
        fields in entry_fields(),
        mode in 0u8..64,
    ) {
        __fuzz::redis_entry(&with_mode(2 + 4 * mode, &fields));
        __fuzz::redis_entry(&with_mode(4 * mode, &fields));
    }
}

#[test]
fn x4_token_response_corpus_replays() {
    replay("token_response", __fuzz::token_response);
}

#[test]
fn x4_retry_after_corpus_replays() {
    replay("retry_after", __fuzz::retry_after);
}

#[test]
fn x4_www_authenticate_corpus_replays() {
    replay("www_authenticate", __fuzz::www_authenticate);
}

#[test]
fn x4_idp_error_corpus_replays() {
    replay("idp_error", __fuzz::idp_error);
}

#[test]
fn x4_managed_identity_corpus_replays() {
    replay("managed_identity", __fuzz::managed_identity);
}

#[test]
fn x4_file_entry_corpus_replays() {
    replay("file_entry", __fuzz::file_entry);
}

#[test]
fn x4_redis_entry_corpus_replays() {
    replay("redis_entry", __fuzz::redis_entry);
}
