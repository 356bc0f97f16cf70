//! `POST /v1/alertmanager`: Alertmanager's webhook (payload version 4). Firing alerts that match a
//! remediation rule (`[alertmanager] rules`) run the rule's action on the VM named by one of their
//! labels — through the same engine, checks, journal and one-action-per-VM rule as every other
//! caller — after the reply, at most once per alert fingerprint per rule cooldown. Unmatched and
//! resolved alerts are acknowledged and do nothing. The payload is parsed tolerantly: fields
//! Alertmanager 0.25 lacks may be missing, fields newer ones add are ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::api::rest::{self, ActionTable, Verb};
use crate::api::server::{json_error, json_response, Audit, Resp};
use crate::config::RemediationRule;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Payload {
    pub version: String,
    pub status: String,
    pub receiver: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Alert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub fingerprint: String,
}

/// What was decided for one alert (the reply lists them; the log says them).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    pub fingerprint: String,
    pub alertname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// queued, dry_run_queued, cooldown, resolved, unmatched, no_vm_label, bad_vm_name
    pub decision: &'static str,
}

/// Remembers when each (rule, fingerprint) last ran, bounded.
#[derive(Default)]
pub struct Cooldowns {
    last: Mutex<HashMap<(String, String), Instant>>,
}

const MAX_REMEMBERED: usize = 10_000;

impl Cooldowns {
    /// Whether `(rule, fp)` may run now; if so it is recorded as run.
    fn take(&self, rule: &str, fp: &str, cooldown: Duration, now: Instant) -> bool {
        let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let key = (rule.to_string(), fp.to_string());
        if let Some(t) = m.get(&key) {
            if now.duration_since(*t) < cooldown {
                return false;
            }
        }
        if m.len() >= MAX_REMEMBERED {
            // A week is the longest cooldown allowed.
            m.retain(|_, t| now.duration_since(*t) < Duration::from_secs(7 * 86400));
            if m.len() >= MAX_REMEMBERED {
                if let Some(k) = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    m.remove(&k);
                }
            }
        }
        m.insert(key, now);
        true
    }
}

/// An alert's fingerprint, or one made from its sorted labels when the sender sent none.
fn fingerprint(a: &Alert) -> String {
    if !a.fingerprint.is_empty() {
        return a.fingerprint.clone();
    }
    a.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The first rule an alert matches.
fn rule_for<'a>(rules: &'a [RemediationRule], a: &Alert) -> Option<&'a RemediationRule> {
    let name = a.labels.get("alertname")?;
    rules.iter().find(|r| {
        &r.alertname == name
            && r.matchers
                .iter()
                .all(|(k, v)| a.labels.get(k).is_some_and(|x| x == v))
    })
}

/// Decide every alert of `p` (pure but for the cooldown memory): what to run, and the decisions.
pub fn decide(
    rules: &[RemediationRule],
    cooldowns: &Cooldowns,
    p: &Payload,
    now: Instant,
) -> (Vec<(RemediationRule, String)>, Vec<Decision>) {
    let mut run = Vec::new();
    let mut out = Vec::new();
    for a in &p.alerts {
        let fp = fingerprint(a);
        let status = if a.status.is_empty() {
            p.status.as_str()
        } else {
            a.status.as_str()
        };
        let mut d = Decision {
            fingerprint: fp.clone(),
            alertname: a.labels.get("alertname").cloned().unwrap_or_default(),
            rule: None,
            vm: None,
            decision: "unmatched",
        };
        let Some(rule) = rule_for(rules, a) else {
            out.push(d);
            continue;
        };
        d.rule = Some(rule.name.clone());
        d.vm = a.labels.get(&rule.vm_label).cloned();
        d.decision = if status != "firing" {
            "resolved"
        } else if let Some(vm) = d.vm.clone() {
            if crate::lock::validate_name(crate::lock::NameKind::Vm, &vm).is_err() {
                "bad_vm_name"
            } else if !cooldowns.take(
                &rule.name,
                &fp,
                Duration::from_secs_f64(rule.cooldown_seconds),
                now,
            ) {
                "cooldown"
            } else {
                run.push((rule.clone(), vm));
                if rule.dry_run {
                    "dry_run_queued"
                } else {
                    "queued"
                }
            }
        } else {
            "no_vm_label"
        };
        out.push(d);
    }
    (run, out)
}

/// The route: parse, decide, answer, then run what was decided.
#[allow(clippy::too_many_arguments)]
pub(crate) fn handle(
    engine: &Arc<crate::actions::Engine>,
    table: &Arc<Mutex<ActionTable>>,
    watchdog: Option<&Arc<crate::watchdog::Watchdog>>,
    rules: &[RemediationRule],
    cooldowns: &Cooldowns,
    body: &[u8],
    audit: &mut Audit,
) -> Resp {
    let p: Payload = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("not an Alertmanager webhook payload: {e}"),
            )
        }
    };
    if !p.version.is_empty() && p.version != "4" {
        tracing::warn!(
            version = %p.version,
            "Alertmanager webhook payload version is not 4; reading it as 4"
        );
    }
    let (run, decisions) = decide(rules, cooldowns, &p, Instant::now());
    for d in &decisions {
        tracing::info!(
            receiver = %p.receiver,
            alertname = %d.alertname,
            fingerprint = %d.fingerprint,
            rule = d.rule.as_deref().unwrap_or("-"),
            vm = d.vm.as_deref().unwrap_or("-"),
            decision = d.decision,
            "alertmanager webhook"
        );
    }
    audit.result = Some(format!("{} queued", run.len()));
    let who = audit
        .who
        .as_ref()
        .map(|w| w.name.clone())
        .unwrap_or_default();
    for (rule, vm) in run {
        let (engine, table, wd) = (engine.clone(), table.clone(), watchdog.cloned());
        let who = who.clone();
        // After the reply: Alertmanager is answered at once and retries only on 5xx, so a
        // slow action never makes it send the alert again.
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let Some(verb) = Verb::parse(&rule.action) else {
                return;
            };
            let body = match verb {
                Verb::Migrate => serde_json::json!({"to": rule.to, "dry_run": rule.dry_run}),
                _ => serde_json::json!({"dry_run": rule.dry_run}),
            }
            .to_string();
            let mut a = Audit::default();
            let resp = rest::act(
                &engine,
                &table,
                wd.as_ref(),
                &vm,
                verb,
                body.as_bytes(),
                &mut a,
            )
            .await;
            tracing::info!(
                target: "vmwarden::audit",
                token = %who,
                role = "alertmanager",
                route = "/v1/alertmanager",
                rule = %rule.name,
                vm = %vm,
                action = %rule.action,
                action_id = a.action_id.as_deref().unwrap_or("-"),
                result = a.result.as_deref().unwrap_or("-"),
                code = resp.status().as_u16(),
                "webhook action"
            );
        });
    }
    let reply = serde_json::json!({ "alerts": decisions });
    json_response(StatusCode::OK, reply.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, alertname: &str, action: &str, cooldown: f64) -> RemediationRule {
        RemediationRule {
            name: name.into(),
            alertname: alertname.into(),
            matchers: [("severity".to_string(), "critical".to_string())].into(),
            action: action.into(),
            vm_label: "vm".into(),
            to: String::new(),
            cooldown_seconds: cooldown,
            dry_run: false,
        }
    }

    fn payload(json: &str) -> Payload {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rules_labels_cooldown_and_resolved() {
        let rules = [rule("down", "VmDown", "start", 60.0)];
        let c = Cooldowns::default();
        let t0 = Instant::now();
        // Debian 0.25's shape (no truncatedAlerts, no groupKey), plus a field from the future.
        let p = payload(
            r#"{"version":"4","status":"firing","receiver":"v","future":{"x":1},"alerts":[
              {"status":"firing","labels":{"alertname":"VmDown","severity":"critical","vm":"vm1"},"fingerprint":"f1"},
              {"status":"firing","labels":{"alertname":"VmDown","severity":"warning","vm":"vm2"},"fingerprint":"f2"},
              {"status":"firing","labels":{"alertname":"Other","vm":"vm3"},"fingerprint":"f3"},
              {"status":"firing","labels":{"alertname":"VmDown","severity":"critical"},"fingerprint":"f4"},
              {"status":"firing","labels":{"alertname":"VmDown","severity":"critical","vm":"../x"},"fingerprint":"f5"},
              {"status":"resolved","labels":{"alertname":"VmDown","severity":"critical","vm":"vm6"},"fingerprint":"f6"}
            ]}"#,
        );
        let (run, d) = decide(&rules, &c, &p, t0);
        let words: Vec<&str> = d.iter().map(|d| d.decision).collect();
        assert_eq!(
            words,
            [
                "queued",
                "unmatched",
                "unmatched",
                "no_vm_label",
                "bad_vm_name",
                "resolved"
            ]
        );
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].1, "vm1");
        // The same alert again within the cooldown: nothing; after it: again.
        let (run, d) = decide(&rules, &c, &p, t0 + Duration::from_secs(30));
        assert!(run.is_empty() && d[0].decision == "cooldown");
        let (run, _) = decide(&rules, &c, &p, t0 + Duration::from_secs(61));
        assert_eq!(run.len(), 1);
    }

    #[test]
    fn missing_fields_are_tolerated() {
        let p = payload(
            r#"{"alerts":[{"labels":{"alertname":"VmDown","severity":"critical","vm":"vm1"}}],"status":"firing"}"#,
        );
        let rules = [rule("down", "VmDown", "stop", 0.0)];
        let (run, d) = decide(&rules, &Cooldowns::default(), &p, Instant::now());
        assert_eq!(run.len(), 1);
        assert_eq!(
            d[0].fingerprint,
            "alertname=VmDown,severity=critical,vm=vm1"
        );
        let p = payload("{}");
        assert!(decide(&rules, &Cooldowns::default(), &p, Instant::now())
            .1
            .is_empty());
    }
}
