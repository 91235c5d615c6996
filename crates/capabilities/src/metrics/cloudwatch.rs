//! Metrics from CloudWatch `GetMetricData`: any namespace (including
//! `AWS/ElastiCache` for `CacheHits`, `CacheMisses`, `CurrConnections`),
//! dimensions, averages, sums and percentiles such as `p99`.

use super::{MetricsBackend, Statistic, parse_statistic};
use crate::aws::{aws_error, bounded};
use crate::bindings::Error;
use crate::bindings::runbook::host::metrics::{Datapoint, MetricQuery};
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use std::time::{Duration, Instant};

/// A query spanning more pages than this is cut off (1440 points fit in one).
const MAX_PAGES: usize = 20;

pub struct CloudWatch {
    client: Client,
    timeout: Duration,
}

impl CloudWatch {
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

/// CloudWatch's name for a statistic.
pub fn stat_name(s: &Statistic, raw: &str) -> String {
    match s {
        Statistic::Average => "Average".into(),
        Statistic::Sum => "Sum".into(),
        Statistic::Minimum => "Minimum".into(),
        Statistic::Maximum => "Maximum".into(),
        Statistic::SampleCount => "SampleCount".into(),
        Statistic::Percentile(_) => raw.to_ascii_lowercase(),
    }
}

#[async_trait::async_trait]
impl MetricsBackend for CloudWatch {
    async fn query(&self, q: &MetricQuery, deadline: Instant) -> Result<Vec<Datapoint>, Error> {
        let statistic = parse_statistic(&q.statistic).map_err(Error::Invalid)?;
        let metric = Metric::builder()
            .namespace(&q.namespace)
            .metric_name(&q.name)
            .set_dimensions(Some(
                q.dimensions
                    .iter()
                    .map(|d| Dimension::builder().name(&d.name).value(&d.value).build())
                    .collect(),
            ))
            .build();
        let query = MetricDataQuery::builder()
            .id("m0")
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(q.period_seconds as i32)
                    .stat(stat_name(&statistic, &q.statistic))
                    .build(),
            )
            .return_data(true)
            .build();
        let end = runbook_core::time::now_ms();
        let start = end.saturating_sub(u64::from(q.window_seconds) * 1000);
        let what = format!("cloudwatch `{}/{}`", q.namespace, q.name);
        bounded(&what, self.timeout, deadline, async {
            let mut points = Vec::new();
            let mut token = None;
            for _ in 0..MAX_PAGES {
                let out = self
                    .client
                    .get_metric_data()
                    .metric_data_queries(query.clone())
                    .start_time(DateTime::from_millis(start as i64))
                    .end_time(DateTime::from_millis(end as i64))
                    .scan_by(ScanBy::TimestampAscending)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| aws_error(&what, e))?;
                for r in out.metric_data_results() {
                    use aws_sdk_cloudwatch::types::StatusCode;
                    // An error inside a 200 answer must not read as "no data".
                    if let Some(code @ (StatusCode::Forbidden | StatusCode::InternalError)) =
                        r.status_code()
                    {
                        let why: Vec<&str> =
                            r.messages().iter().filter_map(|m| m.value()).collect();
                        return Err(Error::Unavailable(format!(
                            "{what}: {code}: {}",
                            why.join("; ")
                        )));
                    }
                    for (t, v) in r.timestamps().iter().zip(r.values()) {
                        points.push(Datapoint {
                            timestamp_ms: t.to_millis().unwrap_or(0).max(0) as u64,
                            value: *v,
                        });
                    }
                }
                token = out.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            points.sort_by_key(|p| p.timestamp_ms);
            Ok(points)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! AWS's own `aws-smithy-mocks`: moto cannot compute percentiles and the
    //! current SDK's protocol is not one moto answers.

    use super::*;
    use crate::bindings::runbook::host::metrics::Dimension as WitDimension;
    use aws_sdk_cloudwatch::operation::get_metric_data::{GetMetricDataError, GetMetricDataOutput};
    use aws_sdk_cloudwatch::types::MetricDataResult;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn query(stat: &str) -> MetricQuery {
        MetricQuery {
            namespace: "AuthService".into(),
            name: "auth-service.token.validation.duration".into(),
            dimensions: vec![WitDimension {
                name: "Service".into(),
                value: "auth-service".into(),
            }],
            statistic: stat.into(),
            period_seconds: 60,
            window_seconds: 300,
        }
    }

    fn page(values: &[(i64, f64)], next: Option<&str>) -> GetMetricDataOutput {
        GetMetricDataOutput::builder()
            .metric_data_results(
                MetricDataResult::builder()
                    .id("m0")
                    .set_timestamps(Some(
                        values
                            .iter()
                            .map(|(t, _)| DateTime::from_secs(*t))
                            .collect(),
                    ))
                    .set_values(Some(values.iter().map(|(_, v)| *v).collect()))
                    .build(),
            )
            .set_next_token(next.map(str::to_string))
            .build()
    }

    fn backend(client: Client) -> CloudWatch {
        CloudWatch::new(client, Duration::from_secs(5))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[tokio::test]
    async fn p99_query_carries_stat_dimensions_and_window() {
        let rule = mock!(Client::get_metric_data)
            .match_requests(|req| {
                let q = &req.metric_data_queries()[0];
                let stat = q.metric_stat().unwrap();
                let metric = stat.metric().unwrap();
                let dims = metric.dimensions();
                let window = req.end_time().unwrap().secs() - req.start_time().unwrap().secs();
                stat.stat() == Some("p99")
                    && stat.period() == Some(60)
                    && metric.namespace() == Some("AuthService")
                    && metric.metric_name() == Some("auth-service.token.validation.duration")
                    && dims.len() == 1
                    && dims[0].name() == Some("Service")
                    && dims[0].value() == Some("auth-service")
                    && window == 300
                    && req.scan_by() == Some(&ScanBy::TimestampAscending)
            })
            .then_output(|| page(&[(1_800_000_060, 1850.0), (1_800_000_000, 1700.0)], None));
        let client = mock_client!(aws_sdk_cloudwatch, [&rule]);
        let points = backend(client).query(&query("p99"), far()).await.unwrap();
        // Sorted oldest first whatever order the service used.
        assert_eq!(
            points.iter().map(|p| p.value).collect::<Vec<_>>(),
            [1700.0, 1850.0]
        );
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn pages_are_followed_and_averages_named_for_cloudwatch() {
        let first = mock!(Client::get_metric_data)
            .match_requests(|req| {
                req.next_token().is_none()
                    && req.metric_data_queries()[0].metric_stat().unwrap().stat() == Some("Average")
            })
            .then_output(|| page(&[(1_800_000_000, 1.0)], Some("page-2")));
        let second = mock!(Client::get_metric_data)
            .match_requests(|req| req.next_token() == Some("page-2"))
            .then_output(|| page(&[(1_800_000_060, 2.0)], None));
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&first, &second]);
        let points = backend(client)
            .query(&query("average"), far())
            .await
            .unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(second.num_calls(), 1);
    }

    #[tokio::test]
    async fn empty_results_are_no_data() {
        let rule =
            mock!(Client::get_metric_data).then_output(|| GetMetricDataOutput::builder().build());
        let client = mock_client!(aws_sdk_cloudwatch, [&rule]);
        assert!(
            backend(client)
                .query(&query("p99"), far())
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn throttling_is_unavailable() {
        let rule = mock!(Client::get_metric_data).then_error(|| {
            GetMetricDataError::generic(
                aws_sdk_cloudwatch::error::ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_cloudwatch, [&rule]);
        let err = backend(client)
            .query(&query("p99"), far())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Unavailable(m) if m.contains("Throttling: Rate exceeded")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn elasticache_connections_query() {
        let rule = mock!(Client::get_metric_data)
            .match_requests(|req| {
                let m = req.metric_data_queries()[0].metric_stat().unwrap();
                m.metric().unwrap().namespace() == Some("AWS/ElastiCache")
                    && m.metric().unwrap().metric_name() == Some("CurrConnections")
                    && m.stat() == Some("Maximum")
            })
            .then_output(|| page(&[(1_800_000_000, 812.0)], None));
        let client = mock_client!(aws_sdk_cloudwatch, [&rule]);
        let mut q = query("maximum");
        q.namespace = "AWS/ElastiCache".into();
        q.name = "CurrConnections".into();
        q.dimensions = vec![WitDimension {
            name: "CacheClusterId".into(),
            value: "sessions-001".into(),
        }];
        assert_eq!(
            backend(client).query(&q, far()).await.unwrap()[0].value,
            812.0
        );
    }

    #[tokio::test]
    async fn a_passed_deadline_is_a_timeout() {
        let rule =
            mock!(Client::get_metric_data).then_output(|| GetMetricDataOutput::builder().build());
        let client = mock_client!(aws_sdk_cloudwatch, [&rule]);
        let err = backend(client)
            .query(&query("p99"), Instant::now())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    }
}
