//! The PromQL each query becomes, what is refused before a request, and the
//! backend against a real HTTP server on 127.0.0.1 (wiremock) playing
//! Prometheus's answers, the bad ones among them. RB-0031 against a real
//! Prometheus is `tests/prometheus.rs`.

use super::*;
use crate::bindings::runbook::host::metrics::Dimension;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// RB-0031's four metrics, as `runbooks/environments/prometheus.example.toml`
/// maps them.
const RB0031: &str = r#"
source = "prometheus"
url = "http://127.0.0.1:9090"

[series."AuthService/auth-service.token.validation.duration"]
metric = "auth_token_validation_duration_seconds"
kind = "histogram"
scale = 1000.0
labels = { Service = "service" }

[series."AuthService/auth-service.token.validation.success_rate"]
metric = "auth_token_validation_success_ratio"
kind = "gauge"
scale = 100.0
labels = { Service = "service" }

[series."AuthService/auth-service.token.signature_failures"]
metric = "auth_token_signature_failures_total"
kind = "counter"
labels = { Service = "service" }

[series."Platform/Edge/http.auth_rejections"]
metric = "http_auth_rejections_total"
kind = "counter"
labels = { Service = "service" }
matchers = { job = "edge" }
"#;

fn config(text: &str) -> Config {
    match toml::from_str::<super::super::Source>(text).unwrap() {
        super::super::Source::Prometheus(c) => *c,
        other => panic!("{other:?}"),
    }
}

fn q(ns: &str, name: &str, dims: &[(&str, &str)], stat: &str) -> MetricQuery {
    MetricQuery {
        namespace: ns.into(),
        name: name.into(),
        dimensions: dims
            .iter()
            .map(|(n, v)| Dimension {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        statistic: stat.into(),
        period_seconds: 60,
        window_seconds: 300,
    }
}

fn expr(c: &Config, q: &MetricQuery) -> Result<String, Error> {
    let key = format!("{}/{}", q.namespace, q.name);
    promql(&key, &c.series[&key], q)
}

#[test]
fn rb0031_metrics_become_this_promql() {
    let c = config(RB0031);
    c.check().unwrap();
    let auth = [("Service", "auth-service")];
    assert_eq!(
        expr(
            &c,
            &q(
                "AuthService",
                "auth-service.token.validation.duration",
                &auth,
                "p99"
            )
        )
        .unwrap(),
        r#"histogram_quantile(0.99, sum by (le) (rate(auth_token_validation_duration_seconds_bucket{service="auth-service"}[60s])))"#
    );
    assert_eq!(
        expr(
            &c,
            &q(
                "AuthService",
                "auth-service.token.validation.success_rate",
                &auth,
                "average"
            )
        )
        .unwrap(),
        r#"avg(avg_over_time(auth_token_validation_success_ratio{service="auth-service"}[60s]))"#
    );
    assert_eq!(
        expr(
            &c,
            &q(
                "AuthService",
                "auth-service.token.signature_failures",
                &auth,
                "sum"
            )
        )
        .unwrap(),
        r#"sum(increase(auth_token_signature_failures_total{service="auth-service"}[60s]))"#
    );
    assert_eq!(
        expr(
            &c,
            &q(
                "Platform/Edge",
                "http.auth_rejections",
                &[("Service", "orders")],
                "sum"
            )
        )
        .unwrap(),
        r#"sum(increase(http_auth_rejections_total{job="edge",service="orders"}[60s]))"#
    );
}

#[test]
fn every_statistic_of_every_kind() {
    let c = config(RB0031);
    let h = |stat: &str| {
        expr(
            &c,
            &q(
                "AuthService",
                "auth-service.token.validation.duration",
                &[],
                stat,
            ),
        )
    };
    assert_eq!(
        h("p99.9").unwrap(),
        "histogram_quantile(0.999, sum by (le) (rate(auth_token_validation_duration_seconds_bucket{}[60s])))"
    );
    assert_eq!(
        h("average").unwrap(),
        "sum(rate(auth_token_validation_duration_seconds_sum{}[60s])) / sum(rate(auth_token_validation_duration_seconds_count{}[60s]))"
    );
    assert_eq!(
        h("sample-count").unwrap(),
        "sum(increase(auth_token_validation_duration_seconds_count{}[60s]))"
    );
    assert_eq!(
        h("sum").unwrap(),
        "sum(increase(auth_token_validation_duration_seconds_sum{}[60s]))"
    );
    assert!(matches!(h("maximum"), Err(Error::Invalid(m)) if m.contains("histogram")));
    let g = |stat: &str| {
        expr(
            &c,
            &q(
                "AuthService",
                "auth-service.token.validation.success_rate",
                &[],
                stat,
            ),
        )
    };
    assert_eq!(
        g("minimum").unwrap(),
        "min(min_over_time(auth_token_validation_success_ratio{}[60s]))"
    );
    assert_eq!(
        g("maximum").unwrap(),
        "max(max_over_time(auth_token_validation_success_ratio{}[60s]))"
    );
    assert_eq!(
        g("sum").unwrap(),
        "sum(sum_over_time(auth_token_validation_success_ratio{}[60s]))"
    );
    assert_eq!(
        g("sample-count").unwrap(),
        "sum(count_over_time(auth_token_validation_success_ratio{}[60s]))"
    );
    assert_eq!(
        g("p50").unwrap(),
        "max(quantile_over_time(0.5, auth_token_validation_success_ratio{}[60s]))"
    );
    let k = |stat: &str| {
        expr(
            &c,
            &q(
                "AuthService",
                "auth-service.token.signature_failures",
                &[],
                stat,
            ),
        )
    };
    assert_eq!(
        k("average").unwrap(),
        "sum(rate(auth_token_signature_failures_total{}[60s]))"
    );
    for stat in ["p99", "minimum", "maximum", "sample-count"] {
        assert!(
            matches!(k(stat), Err(Error::Invalid(m)) if m.contains("counter")),
            "{stat}"
        );
    }
}

#[test]
fn a_dimension_value_cannot_become_promql() {
    let c = config(RB0031);
    let key = "AuthService/auth-service.token.validation.duration";
    let hostile = q(
        "AuthService",
        "auth-service.token.validation.duration",
        &[("Service", r#"x"} or vector(1) or up{a="\"#)],
        "p99",
    );
    assert_eq!(
        promql(key, &c.series[key], &hostile).unwrap(),
        r#"histogram_quantile(0.99, sum by (le) (rate(auth_token_validation_duration_seconds_bucket{service="x\"} or vector(1) or up{a=\"\\"}[60s])))"#
    );
    let empty = q(
        "AuthService",
        "auth-service.token.validation.duration",
        &[("Service", "")],
        "p99",
    );
    assert!(
        matches!(promql(key, &c.series[key], &empty), Err(Error::Invalid(m)) if m.contains("empty"))
    );
    for fine in ["p99.999", "p0.000001"] {
        let query = q(
            "AuthService",
            "auth-service.token.validation.duration",
            &[],
            fine,
        );
        assert!(promql(key, &c.series[key], &query).is_ok(), "{fine}");
    }
    for too_fine in ["p99.9999999", "p0.0000001"] {
        let query = q(
            "AuthService",
            "auth-service.token.validation.duration",
            &[],
            too_fine,
        );
        assert!(
            matches!(promql(key, &c.series[key], &query), Err(Error::Invalid(m)) if m.contains("finer")),
            "{too_fine}"
        );
    }
    let control = q(
        "AuthService",
        "auth-service.token.validation.duration",
        &[("Service", "a\nb")],
        "p99",
    );
    assert!(
        matches!(promql(key, &c.series[key], &control), Err(Error::Invalid(m)) if m.contains("control"))
    );
    // A dimension the environment does not map is refused, never dropped
    // (dropping it would widen the query to every service).
    let unmapped = q(
        "AuthService",
        "auth-service.token.validation.duration",
        &[("Region", "eu")],
        "p99",
    );
    let err = promql(key, &c.series[key], &unmapped).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("no label for dimension `Region`") && m.contains("maps Service")),
        "{err:?}"
    );
}

#[test]
fn a_bad_section_is_refused_at_load() {
    let base = "source = \"prometheus\"\n";
    let cases = [
        ("url = \"ftp://x\"", "must be `http://` or `https://`"),
        (
            "url = \"http://u:p@127.0.0.1:9090\"",
            "must not carry credentials",
        ),
        ("url = \"http://127.0.0.1:9090/?a=b\"", "without `?`"),
        (
            "url = \"http://127.0.0.1:9090\"\ntimeout_ms = 0",
            "timeout_ms",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\nmax_attempts = 11",
            "max_attempts",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\nbearer_token_env = \"s3cr3t-token-value\"",
            "must name an environment variable",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\nbearer_token_env = \"ghp_s3cr3tTokenValue123\"",
            "must name an environment variable",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\nbearer_token_env = \"RUNBOOK_TEST_NEVER_SET_PROM\"",
            "`RUNBOOK_TEST_NEVER_SET_PROM`, which is not set",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\nbasic_user = \"u\"",
            "go together",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\nbearer_token_env = \"PATH\"\nbasic_user = \"u\"\nbasic_password_env = \"PATH\"",
            "use one",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\n[series.\"nons\"]\nmetric = \"m\"\nkind = \"gauge\"",
            "`Namespace/Name`",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"m-x\"\nkind = \"gauge\"",
            "not a Prometheus metric name",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"m\"\nkind = \"gauge\"\nscale = 0.0",
            "`scale`",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"offset\"\nkind = \"gauge\"",
            "not a Prometheus metric name",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"m\"\nkind = \"histogram\"\nlabels = { Bucket = \"le\" }",
            "bucket label",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"m\"\nkind = \"gauge\"\nlabels = { X = \"__name__\" }",
            "not a label name",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"m\"\nkind = \"gauge\"\nlabels = { X = \"s\", Y = \"s\" }",
            "selected twice",
        ),
        (
            "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"m\"\nkind = \"gauge\"\nlabels = { X = \"job\" }\nmatchers = { job = \"a\" }",
            "selected twice",
        ),
    ];
    for (section, want) in cases {
        let err = config(&format!("{base}{section}")).check().unwrap_err();
        assert!(err.contains(want), "{section}: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
    for unknown in [
        "url = \"http://127.0.0.1:9090\"\nquery = \"up\"",
        "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"m\"\nkind = \"gauge\"\npromql = \"up\"",
        "url = \"http://127.0.0.1:9090\"\n[series.\"A/b\"]\nmetric = \"m\"\nkind = \"summary\"",
    ] {
        assert!(
            toml::from_str::<super::super::Source>(&format!("{base}{unknown}")).is_err(),
            "{unknown}"
        );
    }
}

fn answer(result_type: &str, result: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "status": "success",
        "data": { "resultType": result_type, "result": result }
    }))
    .unwrap()
}

/// Points of an instant answer (a period of 0: timestamps as answered).
fn points_of(w: &str, body: &[u8], scale: f64) -> Result<Vec<Datapoint>, Error> {
    datapoints(w, body, scale, 0)
}

#[test]
fn what_is_not_a_number_is_never_passed_on() {
    let w = "prometheus `A/b`";
    let range = answer(
        "matrix",
        serde_json::json!([{ "metric": {}, "values": [[1800000120.0, "0.2"], [1800000000.0, "NaN"], [1800000060.0, "1.5"]] }]),
    );
    // Stamped at the start of each 60 s period, as CloudWatch's are.
    let points = datapoints(w, &range, 1000.0, 60_000).unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| (p.timestamp_ms, p.value))
            .collect::<Vec<_>>(),
        [(1_800_000_000_000, 1500.0), (1_800_000_060_000, 200.0)]
    );
    let all_nan = answer(
        "vector",
        serde_json::json!([{ "metric": {}, "value": [1800000000.0, "NaN"] }]),
    );
    assert!(points_of(w, &all_nan, 1.0).unwrap().is_empty());
    assert!(
        points_of(w, &answer("vector", serde_json::json!([])), 1.0)
            .unwrap()
            .is_empty()
    );
    assert!(
        points_of(w, &answer("matrix", serde_json::json!([])), 1.0)
            .unwrap()
            .is_empty()
    );
    for inf in ["+Inf", "-Inf"] {
        let body = answer(
            "vector",
            serde_json::json!([{ "metric": {}, "value": [1800000000.0, inf] }]),
        );
        let err = points_of(w, &body, 1.0).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains(inf) && m.contains("highest bucket")),
            "{err:?}"
        );
    }
    let big = answer(
        "vector",
        serde_json::json!([{ "metric": {}, "value": [1800000000.0, "1e308"] }]),
    );
    assert!(matches!(points_of(w, &big, 1000.0), Err(Error::Invalid(_))));
    let two = answer(
        "vector",
        serde_json::json!([{ "metric": {"a": "1"}, "value": [1.0, "1"] }, { "metric": {"a": "2"}, "value": [1.0, "2"] }]),
    );
    assert!(matches!(points_of(w, &two, 1.0), Err(Error::Invalid(m)) if m.contains("2 series")));
    let native = answer(
        "vector",
        serde_json::json!([{ "metric": {}, "histogram": [1.0, { "count": "3", "sum": "1", "buckets": [] }] }]),
    );
    assert!(
        matches!(points_of(w, &native, 1.0), Err(Error::Invalid(m)) if m.contains("native histogram"))
    );
    let scalar = answer("scalar", serde_json::json!([1800000000.0, "3"]));
    assert_eq!(points_of(w, &scalar, 1.0).unwrap()[0].value, 3.0);
    let failed = br#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
    assert!(
        matches!(points_of(w, failed, 1.0), Err(Error::Unavailable(m)) if m.contains("query timed out"))
    );
    assert!(matches!(
        points_of(w, b"<html>", 1.0),
        Err(Error::Invalid(_))
    ));
    let word = answer(
        "vector",
        serde_json::json!([{ "metric": {}, "value": [1.0, "lots"] }]),
    );
    assert!(matches!(points_of(w, &word, 1.0), Err(Error::Invalid(m)) if m.contains("`lots`")));
}

/// A wiremock server playing Prometheus, and the backend pointed at it.
async fn server(extra: &str) -> (MockServer, Prometheus) {
    server_with(extra, &crate::secrets::Secrets::default()).await
}

/// The same, its credentials read from `secrets`.
async fn server_with(extra: &str, secrets: &crate::secrets::Secrets) -> (MockServer, Prometheus) {
    let server = MockServer::start().await;
    let text = format!(
        "source = \"prometheus\"\nurl = \"{}\"\ntimeout_ms = 500\nmax_attempts = 3\n{extra}\n[series.\"AuthService/latency\"]\nmetric = \"latency_seconds\"\nkind = \"histogram\"\nscale = 1000.0\nlabels = {{ Service = \"service\" }}\n",
        server.uri()
    );
    let c = config(&text);
    c.check().unwrap();
    (server, Prometheus::new(c, secrets).unwrap())
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn ok(body: Vec<u8>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "application/json")
}

const P99: &str =
    r#"histogram_quantile(0.99, sum by (le) (rate(latency_seconds_bucket{service="auth"}[60s])))"#;

#[tokio::test]
async fn a_window_of_periods_is_a_range_query_and_one_period_an_instant_one() {
    let (server, prom) = server("").await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query_range"))
        .and(query_param("query", P99))
        .and(query_param("step", "60s"))
        .respond_with(ok(answer(
            "matrix",
            serde_json::json!([{ "metric": {}, "values": [[1800000000.0, "1.85"], [1800000060.0, "0.164"]] }]),
        )))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .and(query_param("query", P99))
        .respond_with(ok(answer(
            "vector",
            serde_json::json!([{ "metric": {}, "value": [1800000000.0, "0.5"] }]),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let mut query = q("AuthService", "latency", &[("Service", "auth")], "p99");
    let points = prom.query(&query, far()).await.unwrap();
    assert_eq!(
        points.iter().map(|p| p.value).collect::<Vec<_>>(),
        [1850.0, 164.0]
    );
    query.window_seconds = 60;
    assert_eq!(prom.query(&query, far()).await.unwrap()[0].value, 500.0);
    // The range covers the window: five points of 60 s end now.
    let range = &server.received_requests().await.unwrap()[0];
    let param = |k: &str| -> f64 {
        range
            .url
            .query_pairs()
            .find(|(n, _)| n == k)
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    assert_eq!((param("end") - param("start")).round(), 240.0);
}

#[tokio::test]
async fn a_window_holds_whole_periods_the_last_ending_now() {
    let (server, prom) = server("").await;
    Mock::given(method("GET"))
        .respond_with(ok(answer("vector", serde_json::json!([]))))
        .mount(&server)
        .await;
    let mut query = q("AuthService", "latency", &[], "p99");
    // 300 s of 61 s periods: four whole ones, the last ending now.
    query.period_seconds = 61;
    prom.query(&query, far()).await.unwrap();
    // 90 s of 60 s periods: one, an instant query.
    query.period_seconds = 60;
    query.window_seconds = 90;
    prom.query(&query, far()).await.unwrap();
    let seen = server.received_requests().await.unwrap();
    let param = |i: usize, k: &str| -> Option<f64> {
        seen[i]
            .url
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.parse().unwrap())
    };
    assert_eq!(seen[0].url.path(), "/api/v1/query_range");
    assert_eq!(
        (param(0, "end").unwrap() - param(0, "start").unwrap()).round(),
        183.0
    );
    assert_eq!(seen[1].url.path(), "/api/v1/query");
    assert!(param(1, "time").is_some());
}

#[tokio::test]
async fn a_password_from_secrets_manager_is_sent_as_basic_auth() {
    let secrets = crate::secrets::Secrets::default()
        .with_fetched("prod/prometheus", r#"{"password":"s3cr3t-pw"}"#);
    let (server, prom) = server_with(
        "basic_user = \"prom\"\nbasic_password_secret = \"prod/prometheus#password\"",
        &secrets,
    )
    .await;
    // `prom:s3cr3t-pw`, base64: only this header is answered.
    Mock::given(header("authorization", "Basic cHJvbTpzM2NyM3QtcHc="))
        .respond_with(ok(answer("vector", serde_json::json!([]))))
        .expect(1)
        .mount(&server)
        .await;
    let query = q("AuthService", "latency", &[], "p99");
    assert!(prom.query(&query, far()).await.unwrap().is_empty());
    // Named both ways: refused at load.
    let both = config(
        "source = \"prometheus\"\nurl = \"http://127.0.0.1:9090\"\nbearer_token_env = \"PATH\"\nbearer_token_secret = \"prod/prometheus\"\n",
    );
    assert!(
        both.check()
            .unwrap_err()
            .contains("both name the bearer token")
    );
}

#[tokio::test]
async fn credentials_are_sent_and_a_refusal_is_unavailable() {
    // A variable cargo sets for every test process (setting one here would
    // race with the other tests reading the environment).
    let token = std::env::var("CARGO_PKG_NAME").unwrap();
    let (server, prom) = server("bearer_token_env = \"CARGO_PKG_NAME\"").await;
    Mock::given(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ok(answer("vector", serde_json::json!([]))))
        .expect(1)
        .mount(&server)
        .await;
    let query = q("AuthService", "latency", &[], "p99");
    assert!(prom.query(&query, far()).await.unwrap().is_empty());
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let err = prom.query(&query, far()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(m) if m.contains("refused the credentials")),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains(&token));
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "a refusal is not retried"
    );
}

#[tokio::test]
async fn busy_answers_are_retried_a_bounded_number_of_times() {
    let (server, prom) = server("").await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ok(answer(
            "vector",
            serde_json::json!([{ "metric": {}, "value": [1.0, "0.1"] }]),
        )))
        .with_priority(2)
        .mount(&server)
        .await;
    let query = q("AuthService", "latency", &[], "p99");
    assert_eq!(prom.query(&query, far()).await.unwrap()[0].value, 100.0);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = prom.query(&query, far()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(m) if m.contains("after 3 attempts")),
        "{err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_refused_query_an_oversized_answer_and_a_passed_deadline() {
    let (server, prom) = server("").await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query_range"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            br#"{"status":"error","errorType":"bad_data","error":"1:1: parse error: unexpected"}"#.to_vec(),
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .respond_with(ok(vec![b' '; MAX_BODY + 1]))
        .mount(&server)
        .await;
    let mut query = q("AuthService", "latency", &[], "p99");
    let err = prom.query(&query, far()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("parse error")),
        "{err:?}"
    );
    query.window_seconds = 60;
    let err = prom.query(&query, far()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("larger than")),
        "{err:?}"
    );
    let err = prom.query(&query, Instant::now()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    let unmapped = q("AuthService", "other", &[], "p99");
    let err = prom.query(&unmapped, far()).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("AuthService/other")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout_of_bounded_attempts() {
    let (server, prom) = server("").await;
    Mock::given(method("GET"))
        .respond_with(ok(answer("vector", serde_json::json!([]))).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    // Had it waited for the answer, the query would have succeeded.
    let err = prom
        .query(&q("AuthService", "latency", &[], "p99"), far())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Timeout(m) if m.contains("no answer in time after 3 attempts")),
        "{err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}
