//! The triggers file's tests: matching alarms and alerts, incident keys,
//! templates, and what a request carries from an alert.

use super::*;

fn alarm(name: &str, state: &str) -> Alarm {
    Alarm::from_message(
        "arn:aws:sns:us-east-1:123456789012:alarms",
        "m-1",
        &serde_json::json!({
            "AlarmName": name,
            "NewStateValue": state,
            "StateChangeTime": "2026-11-27T15:04:05.000+0000",
            "Region": "US East (N. Virginia)",
            "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}"),
        })
        .to_string(),
    )
}

fn trigger(alarm: Option<&str>, topic: Option<&str>) -> Trigger {
    Trigger {
        name: "t".into(),
        alertname: None,
        labels: Default::default(),
        alarm: alarm.map(Into::into),
        state: None,
        topic: topic.map(Into::into),
        runbook: "rb.md".into(),
        env: None,
        sim: Some("s.toml".into()),
        incident: None,
        yes: false,
        approve: vec![],
        approval_timeout: None,
    }
}

#[test]
fn an_alarm_matches_by_name_and_state_and_keys_its_transition() {
    let t = trigger(Some("auth-5xx"), None);
    assert!(t.matches(&alarm("auth-5xx", "ALARM")));
    assert!(
        !t.matches(&alarm("auth-5xx", "OK")),
        "recovery is not a fire"
    );
    assert!(!t.matches(&alarm("billing-5xx", "ALARM")));
    let a = alarm("auth-5xx", "ALARM");
    assert_eq!(a.region.as_deref(), Some("us-east-1"));
    assert_eq!(
        t.incident(&a),
        "us-east-1:auth-5xx:2026-11-27T15:04:05.000+0000"
    );
    let mut hourly = trigger(Some("auth-5xx"), None);
    hourly.incident = Some("{account}/{alarm}@{state_change_hour}".into());
    assert_eq!(hourly.incident(&a), "123456789012/auth-5xx@2026-11-27T15");
    let other_topic = trigger(Some("auth-5xx"), Some("arn:aws:sns:us-east-1:1:other"));
    assert!(!other_topic.matches(&a));
    // Not an alarm's message: only topic triggers match it.
    let plain = Alarm::from_message("arn:aws:sns:us-east-1:1:x", "m-2", "deploy finished");
    assert!(!t.matches(&plain));
    assert!(trigger(None, Some("arn:aws:sns:us-east-1:1:x")).matches(&plain));
}

fn alert(name: &str, service: &str, starts_at: &str) -> Alarm {
    Alarm::from_alert(
        &serde_json::from_value(serde_json::json!({
            "status": "firing",
            "labels": {"alertname": name, "service": service},
            "startsAt": starts_at,
            "fingerprint": "5e1b7c0d9a2f3e41",
        }))
        .unwrap(),
    )
}

#[test]
fn an_alert_matches_by_name_and_labels_and_keys_its_firing() {
    let mut t = trigger(None, None);
    t.alertname = Some("AuthSlow".into());
    t.labels.insert("service".into(), "auth-service".into());
    let a = alert("AuthSlow", "auth-service", "2026-12-03T23:10:01.123Z");
    assert!(t.matches(&a));
    assert!(!t.matches(&alert("AuthSlow", "billing", "2026-12-03T23:10:01.123Z")));
    assert!(!t.matches(&alert("Other", "auth-service", "2026-12-03T23:10:01.123Z")));
    assert_eq!(
        t.incident(&a),
        "alert:AuthSlow:5e1b7c0d9a2f3e41:2026-12-03T23:10:01.123Z"
    );
    // SNS triggers never take alerts, alert triggers never SNS messages.
    assert!(!trigger(Some("AuthSlow"), None).matches(&a));
    assert!(!t.matches(&alarm("AuthSlow", "ALARM")));
}

#[test]
fn an_alerts_severity_label_reaches_the_policies() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let mut t = trigger(None, None);
    t.runbook = repo.join("RB-0031-auth-service-degradation.md");
    t.sim = Some(repo.join("scenarios/bad-deploy.toml"));
    let mut a = alert("AuthSlow", "auth-service", "2026-12-03T23:10:01.123Z");
    let r = t.request("serve", &a).unwrap();
    assert_eq!(r.severity, None);
    if let Some(alert) = a.alert.as_mut() {
        alert.labels.insert("severity".into(), "critical".into());
    }
    let r = t.request("serve", &a).unwrap();
    assert_eq!(r.severity.as_deref(), Some("CRITICAL"));
}

#[test]
fn alert_triggers_need_credentials_and_their_own_fields() {
    let parse = |text: &str| Triggers::parse(text, Path::new("t.toml")).map(|_| ());
    let alert = "[[trigger]]\nname = \"a\"\nalertname = \"AuthSlow\"\nrunbook = \"rb.md\"\nsim = \"s.toml\"\n";
    let auth = "[alertmanager]\nbearer_token_file = \"token\"\n";
    parse(&format!("{auth}{alert}")).unwrap();
    let e = parse(alert).unwrap_err().to_string();
    assert!(
        e.contains("`topics` is empty") || e.contains("no `[alertmanager]`"),
        "{e}"
    );
    let e = parse(&format!(
        "topics = [\"arn:aws:sns:us-east-1:1:t\"]\n{alert}"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("no `[alertmanager]`"), "{e}");
    let e = parse(&format!("{auth}{alert}alarm = \"x\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not go together"), "{e}");
    let e = parse(&format!(
        "{auth}{alert}incident = \"{{alertname}}:{{fingerprint}}\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("{starts_at}"), "{e}");
    let e = parse(&format!(
        "{auth}{alert}incident = \"{{alarm}}:{{starts_at}}\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("`{alarm}` is not known"), "{e}");
    let e = parse(&format!("[alertmanager]\n{alert}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("names no credentials"), "{e}");
    let sns = "topics = [\"arn:aws:sns:us-east-1:1:t\"]\n[[trigger]]\nname = \"s\"\nalarm = \"x\"\nrunbook = \"rb.md\"\nsim = \"s.toml\"\n";
    let e = parse(&format!("{sns}{auth}")).unwrap_err().to_string();
    assert!(e.contains("no trigger names an `alertname`"), "{e}");
    let e = parse(&format!("{sns}labels = {{ a = \"b\" }}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`labels` needs `alertname`"), "{e}");
}

#[test]
fn a_state_change_time_becomes_the_incident_start() {
    assert_eq!(
        rfc3339_utc("2026-11-27T15:04:05.000+0000").as_deref(),
        Some("2026-11-27T15:04:05.000Z")
    );
    assert_eq!(rfc3339_utc("2026-11-27T15:04:05.000+0100"), None);
    assert_eq!(rfc3339_utc("yesterday+0000"), None);
}

#[test]
fn templates_name_known_fields_only() {
    assert!(check_template(DEFAULT_INCIDENT, false).is_ok());
    let e = check_template("{alarm}-{colour}", false).unwrap_err();
    assert!(e.contains("`{colour}` is not known"), "{e}");
    for same in ["always-the-same", "{alarm}", "{region}:{alarm}:{trigger}"] {
        let e = check_template(same, false).unwrap_err();
        assert!(e.contains("every later alarm"), "{same}: {e}");
    }
    assert!(check_template("{topic}:{message_id}", false).is_ok());
    assert!(
        check_template("{alarm", false)
            .unwrap_err()
            .contains("without")
    );
    // An alert's key names its firing; SNS fields are not an alert's.
    assert!(check_template(DEFAULT_ALERT_INCIDENT, true).is_ok());
    for bad in [
        "{alertname}:{fingerprint}",
        "{alarm}:{fingerprint}:{starts_at}",
        "{alertname}:{starts_at}",
    ] {
        assert!(check_template(bad, true).is_err(), "{bad}");
    }
}
