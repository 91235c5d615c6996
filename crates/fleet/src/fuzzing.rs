//! Fuzz targets for what reaches the fleet from the network or from
//! people: an SNS delivery's envelope, a CloudWatch alarm message, an
//! Alertmanager notification, a run request off the work queue, and the
//! triggers file. `fuzz/` drives them
//! with libFuzzer; `tests/fuzz_smoke.rs` runs them over their seeds and
//! mutations on the stable toolchain. Each returns (valid or an error),
//! never panics, never hangs.

use std::path::Path;

/// The targets, by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
pub const TARGETS: &[(&str, runbook_engine::fuzzing::Target)] = &[
    ("sns-envelope", sns_envelope),
    ("alarm-message", alarm_message),
    ("alertmanager", alertmanager),
    ("run-request", run_request),
    ("triggers", triggers),
];

/// An SNS delivery: parsed, and its string to sign built and its
/// timestamp read, as the intake does before any fetch.
pub fn sns_envelope(data: &[u8]) {
    if let Ok(m) = crate::sns::Envelope::parse(data) {
        let _ = m.string_to_sign();
        let _ = crate::sns::aws_sns_url(&m.signing_cert_url, "SigningCertURL");
    }
}

/// A CloudWatch alarm's JSON message (any text: SNS carries strings).
pub fn alarm_message(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::triggers::Alarm::from_message("arn:aws:sns:us-east-1:1:t", "id", &text);
}

/// An Alertmanager webhook body, and each of its alerts as triggers see
/// it.
pub fn alertmanager(data: &[u8]) {
    if let Ok(n) = crate::alertmanager::Notification::parse(data) {
        for alert in &n.alerts {
            let _ = crate::triggers::Alarm::from_alert(alert);
        }
    }
}

/// A run request as a worker takes it off the queue, and its file check
/// (its digests are foreign text).
pub fn run_request(data: &[u8]) {
    if let Ok(crate::request::Request::Run(r)) =
        serde_json::from_slice::<crate::request::Request>(data)
    {
        let _ = r.check_files();
    }
}

/// A triggers file's text.
pub fn triggers(data: &[u8]) {
    if let Ok(t) = std::str::from_utf8(data) {
        let _ = crate::triggers::Triggers::parse(t, Path::new("fuzz/triggers.toml"));
    }
}
