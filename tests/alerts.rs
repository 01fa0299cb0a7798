//! evaluate-alerts and notify against real PostgreSQL, a real MQTT broker
//! and local HTTP servers standing in for Homebridge plugins.

mod common;
use common::http::{Request, Server};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NOW: i64 = 1_790_000_000;
const DEVICE: &str = "shelly3em63g3-e4b063a1b2c3";

/// Readings every 10 s ending at NOW: `n` of them with power `f(i)`.
fn readings(db: &TestDb, n: i64, f: impl Fn(i64) -> i64) {
    readings_until(db, NOW, n, f)
}

fn readings_until(db: &TestDb, end: i64, n: i64, f: impl Fn(i64) -> i64) {
    let mut c = db.client();
    c.execute("INSERT INTO devices (device_id, model) VALUES ($1, 'S3EM-003CXCEU63') ON CONFLICT DO NOTHING", &[&DEVICE]).unwrap();
    for i in 0..n {
        let ts = end - (n - 1 - i) * 10;
        let p = rust_decimal::Decimal::from(f(i));
        c.execute(
            "INSERT INTO power_readings (ts, device_id, total_power_w, phase_a_current_a) VALUES (to_timestamp($1), $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&(ts as f64), &DEVICE, &p, &(p / rust_decimal::Decimal::from(230))],
        )
        .unwrap();
    }
}

/// An http-webhooks lookalike: `state=true|false` sets, no `state` reads.
struct Webhook {
    server: Server,
    state: Arc<Mutex<bool>>,
    down: Arc<AtomicBool>,
}

impl Webhook {
    fn start(initial: bool) -> Webhook {
        let state = Arc::new(Mutex::new(initial));
        let down = Arc::new(AtomicBool::new(false));
        let (s, d) = (state.clone(), down.clone());
        let server = Server::start(move |r: &Request| {
            if d.load(Ordering::SeqCst) {
                return (500, "down".into());
            }
            if r.query("accessoryId").as_deref() != Some("power_alarm") {
                return (
                    404,
                    "[ERROR Http WebHook Server] AccessoryId not found.".into(),
                );
            }
            match r.query("state").as_deref() {
                Some(v) => {
                    *s.lock().unwrap() = v == "true";
                    (200, r#"{"success":true}"#.into())
                }
                None => (
                    200,
                    format!(r#"{{"success":true,"state":{}}}"#, s.lock().unwrap()),
                ),
            }
        });
        Webhook {
            server,
            state,
            down,
        }
    }

    fn url(&self) -> String {
        self.server.url("/?accessoryId=power_alarm&state=true")
    }

    /// The `state` values sent, in order (None for state reads).
    fn calls(&self) -> Vec<Option<String>> {
        self.server
            .requests()
            .iter()
            .map(|r| r.query("state"))
            .collect()
    }
}

fn base_env(db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("ALERT_POWER_W", "4500".into()),
        ("ALERT_SUSTAIN_SECONDS", "120".into()),
        ("ALERT_COOLDOWN_SECONDS", "900".into()),
        ("NOTIFY_HOLD", "50ms".into()),
        ("TZ", "UTC".into()),
    ]
}

fn run(args: &[&str], env: &[(&'static str, String)]) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    shellyctl(args, &env)
}

fn evaluate(env: &[(&'static str, String)], now: i64) -> Run {
    run(
        &[
            "evaluate-alerts",
            "--format",
            "json",
            "--now",
            &now.to_string(),
        ],
        env,
    )
}

fn events(db: &TestDb) -> Vec<(i64, String, String, i32)> {
    db.client()
        .query(
            "SELECT id, rule_key, delivery_status, attempts FROM alert_events ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn sustained_high_power_fires_once_and_the_webhook_sensor_goes_on_then_off() {
    let db = TestDb::migrated();
    readings(&db, 19, |_| 5000);
    let hook = Webhook::start(false);
    let mut env = base_env(&db);
    env.push(("TRIGGER_HTTP_URL", hook.url()));
    let out = evaluate(&env, NOW);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let j = out.json();
    assert_eq!(j["rules"][0]["rule_key"], format!("{DEVICE}/total_power"));
    assert_eq!(j["rules"][0]["decision"]["action"], "fire");
    assert_eq!(j["rules"][0]["decision"]["value"], "5000");
    assert_eq!(j["rules"][0]["decision"]["threshold"], "4500");
    assert_eq!(j["delivery"]["delivered"].as_array().unwrap().len(), 1);
    // Read the state (off), then ON, then OFF: one fresh edge.
    assert_eq!(hook.calls(), vec![None, some("true"), some("false")]);
    assert!(!*hook.state.lock().unwrap());
    let ev = db.client().query_one(
        "SELECT kind, value_w, threshold_w, EXTRACT(EPOCH FROM window_start)::bigint, EXTRACT(EPOCH FROM window_end)::bigint,
                delivery_status, details->'episode'->>'readings' FROM alert_events", &[]).unwrap();
    assert_eq!(ev.get::<_, String>(0), "fired");
    assert_eq!(
        ev.get::<_, rust_decimal::Decimal>(1),
        rust_decimal::Decimal::from(5000)
    );
    assert_eq!(
        ev.get::<_, rust_decimal::Decimal>(2),
        rust_decimal::Decimal::from(4500)
    );
    assert_eq!((ev.get::<_, i64>(3), ev.get::<_, i64>(4)), (NOW - 120, NOW));
    assert_eq!(ev.get::<_, String>(5), "delivered");
    assert_eq!(ev.get::<_, Option<String>>(6).as_deref(), Some("13"));
    let state: String = db
        .client()
        .query_one("SELECT state FROM alert_state", &[])
        .unwrap()
        .get(0);
    assert_eq!(state, "firing");

    // Still high 30 s later: the same episode, no new event or pulse.
    readings_until(&db, NOW + 30, 3, |_| 5000);
    let again = evaluate(&env, NOW + 30);
    assert_eq!(again.code, 0);
    assert_eq!(events(&db).len(), 1);
    assert_eq!(hook.calls().len(), 3);
}

#[test]
fn a_sensor_stuck_on_is_reset_before_the_pulse() {
    let db = TestDb::migrated();
    readings(&db, 19, |_| 5000);
    let hook = Webhook::start(true);
    let mut env = base_env(&db);
    env.push(("TRIGGER_HTTP_URL", hook.url()));
    let out = evaluate(&env, NOW);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        hook.calls(),
        vec![None, some("false"), some("true"), some("false")]
    );
    assert_eq!(out.log_events("sensor_stuck_on_reset").len(), 1);
}

#[test]
fn below_threshold_or_too_short_fires_nothing() {
    let db = TestDb::migrated();
    readings(&db, 19, |i| if i < 8 { 3000 } else { 5000 }); // only 100 s above
    let mut env = base_env(&db);
    env.push(("ALERT_SUSTAIN_SECONDS", "120".into()));
    let out = evaluate(&env, NOW);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["rules"][0]["decision"]["action"], "nothing");
    assert!(events(&db).is_empty());
}

#[test]
fn concurrent_evaluate_alerts_runs_fire_exactly_once() {
    let db = TestDb::migrated();
    readings(&db, 19, |_| 5000);
    let hook = Webhook::start(false);
    let mut env = base_env(&db);
    env.push(("TRIGGER_HTTP_URL", hook.url()));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let now = NOW.to_string();
    let children: Vec<_> = (0..4)
        .map(|_| spawn(&["evaluate-alerts", "--now", &now], &env_ref))
        .collect();
    for c in children {
        let out = c.wait_with_output();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(events(&db).len(), 1);
    assert_eq!(
        hook.calls()
            .iter()
            .filter(|c| c.as_deref() == Some("true"))
            .count(),
        1
    );
}

#[test]
fn a_backend_that_is_down_for_a_while_gets_the_event_exactly_once_after_it_returns() {
    let db = TestDb::migrated();
    readings(&db, 19, |_| 5000);
    let hook = Webhook::start(false);
    hook.down.store(true, Ordering::SeqCst);
    let mut env = base_env(&db);
    env.push(("TRIGGER_HTTP_URL", hook.url()));
    let out = evaluate(&env, NOW);
    assert_eq!(out.code, 75, "{}", out.stderr);
    let ev = events(&db);
    assert_eq!((ev.len(), ev[0].2.as_str(), ev[0].3), (1, "failed", 1));
    let failed = out.log_events("notification_failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("answered HTTP 500"),
        "{}",
        failed[0]
    );

    // Before the backoff (30 s) nothing is retried.
    let early = run(
        &[
            "notify",
            "--format",
            "json",
            "--now",
            &(NOW + 10).to_string(),
        ],
        &env,
    );
    assert_eq!(early.code, 0, "{}", early.stderr);
    assert_eq!(early.json()["delivered"].as_array().unwrap().len(), 0);
    // Still down at the first retry: attempt 2, backoff doubles.
    let second = run(&["notify", "--now", &(NOW + 31).to_string()], &env);
    assert_eq!(second.code, 75);
    assert_eq!(events(&db)[0].3, 2);

    hook.down.store(false, Ordering::SeqCst);
    let calls_before = hook.calls().len();
    let back = run(
        &[
            "notify",
            "--format",
            "json",
            "--now",
            &(NOW + 120).to_string(),
        ],
        &env,
    );
    assert_eq!(back.code, 0, "{}", back.stderr);
    assert_eq!(back.json()["delivered"].as_array().unwrap().len(), 1);
    assert_eq!(events(&db)[0].2, "delivered");
    // Later runs (notify and evaluate-alerts) never pulse it again.
    for t in [NOW + 200, NOW + 4000] {
        assert_eq!(run(&["notify", "--now", &t.to_string()], &env).code, 0);
    }
    let ons = hook.calls()[calls_before..]
        .iter()
        .filter(|c| c.as_deref() == Some("true"))
        .count();
    assert_eq!(ons, 1, "{:?}", hook.calls());
}

#[test]
fn an_event_that_cannot_be_delivered_is_given_up_after_the_maximum_age() {
    let db = TestDb::migrated();
    readings(&db, 19, |_| 5000);
    let hook = Webhook::start(false);
    hook.down.store(true, Ordering::SeqCst);
    let mut env = base_env(&db);
    env.push(("TRIGGER_HTTP_URL", hook.url()));
    env.push(("NOTIFY_MAX_AGE", "1h".into()));
    assert_eq!(evaluate(&env, NOW).code, 75);
    let out = run(
        &[
            "notify",
            "--format",
            "json",
            "--now",
            &(NOW + 3601).to_string(),
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["given_up"].as_array().unwrap().len(), 1);
    assert_eq!(events(&db)[0].2, "given_up");
    let logged = out.log_events("notification_given_up");
    assert_eq!(
        (logged.len(), logged[0]["level"].as_str()),
        (1, Some("error"))
    );
}

fn mqtt_broker() -> (String, u16) {
    let url = std::env::var("TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let hp = url.trim_start_matches("mqtt://").trim_end_matches('/');
    let (h, p) = hp.rsplit_once(':').unwrap_or((hp, "1883"));
    (h.to_string(), p.parse().unwrap())
}

/// Subscribes to `topic` and collects (payload, qos, retain) of each publish.
fn mqtt_subscriber(topic: &str) -> Arc<Mutex<Vec<(String, rumqttc::QoS, bool)>>> {
    let (host, port) = mqtt_broker();
    let mut opts =
        rumqttc::MqttOptions::new(format!("test-sub-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut conn) = rumqttc::Client::new(opts, 10);
    client.subscribe(topic, rumqttc::QoS::AtLeastOnce).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (g, ready) = (got.clone(), Arc::new(AtomicBool::new(false)));
    let r = ready.clone();
    std::thread::spawn(move || {
        let _keep = client;
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    r.store(true, Ordering::SeqCst)
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    g.lock().unwrap().push((
                        String::from_utf8_lossy(&p.payload).into_owned(),
                        p.qos,
                        p.retain,
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    panic!("test MQTT subscriber: {e} (is a broker running? use scripts/test)")
                }
            }
        }
    });
    for _ in 0..100 {
        if ready.load(Ordering::SeqCst) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no SUBACK from the test MQTT broker");
}

#[test]
fn mqtt_pulses_on_then_off_with_qos_1_never_retained() {
    let db = TestDb::migrated();
    readings(&db, 19, |_| 5000);
    let topic = format!("shellyctl-test/{}/power_alarm", db.name);
    let got = mqtt_subscriber(&topic);
    let (host, port) = mqtt_broker();
    let mut env = base_env(&db);
    env.push(("MQTT_URL", format!("mqtt://{host}:{port}")));
    env.push(("MQTT_TOPIC", topic.clone()));
    env.push(("MQTT_ON_PAYLOAD", "ON".into()));
    env.push(("MQTT_OFF_PAYLOAD", "OFF".into()));
    let out = evaluate(&env, NOW);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::thread::sleep(Duration::from_millis(300));
    let msgs = got.lock().unwrap().clone();
    let payloads: Vec<&str> = msgs.iter().map(|m| m.0.as_str()).collect();
    // The state of an MQTT sensor cannot be read, so it is reset first.
    assert_eq!(payloads, ["OFF", "ON", "OFF"]);
    assert!(
        msgs.iter()
            .all(|m| m.1 == rumqttc::QoS::AtLeastOnce && !m.2),
        "{msgs:?}"
    );
    assert_eq!(events(&db)[0].2, "delivered");
}

#[test]
fn mqtt_broker_down_is_a_temporary_failure_and_the_event_waits() {
    let db = TestDb::migrated();
    readings(&db, 19, |_| 5000);
    let mut env = base_env(&db);
    env.push(("MQTT_URL", format!("mqtt://127.0.0.1:{}", dead_port())));
    env.push(("MQTT_TOPIC", "x/y".into()));
    env.push(("NOTIFY_TIMEOUT_MS", "1000".into()));
    let out = evaluate(&env, NOW);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert_eq!(events(&db)[0].2, "failed");
}

#[test]
fn notify_test_sends_one_pulse_and_reports_success() {
    let hook = Webhook::start(false);
    let env = vec![
        ("TRIGGER_HTTP_URL", hook.url()),
        ("NOTIFY_HOLD", "10ms".into()),
    ];
    let out = run(&["notify", "--test", "--format", "json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["ok"], true);
    assert_eq!(out.json()["backend"], "webhook");
    assert_eq!(hook.calls(), vec![None, some("true"), some("false")]);
}

#[test]
fn webhook_basic_auth_is_sent_and_the_password_never_logged() {
    let hook = Webhook::start(false);
    let env = vec![
        ("TRIGGER_HTTP_URL", hook.url()),
        ("TRIGGER_HTTP_USER", "collector".into()),
        ("TRIGGER_HTTP_PASSWORD", "s3cr3t-Hook".into()),
        ("NOTIFY_HOLD", "10ms".into()),
        ("SHELLYCTL_LOG", "debug".into()),
    ];
    let out = run(&["notify", "--test"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let auth = hook.server.requests()[0]
        .header("Authorization")
        .unwrap()
        .to_string();
    assert_eq!(auth, "Basic Y29sbGVjdG9yOnMzY3IzdC1Ib29r");
    assert!(!out.stderr.contains("s3cr3t-Hook") && !out.stdout.contains("s3cr3t-Hook"));
}

#[test]
fn the_homebridge_ui_api_backend_logs_in_finds_the_switch_and_pulses_it() {
    let puts = Arc::new(Mutex::new(Vec::<String>::new()));
    let p = puts.clone();
    let uid = "d8ad12eb3edac639687b0194631917cdf2b256c2a1491690a91c06cb5006a7f3";
    let on = Arc::new(Mutex::new(0));
    let server = Server::start(move |r: &Request| {
        let authed = r.header("Authorization") == Some("Bearer jwt-1");
        match (r.method.as_str(), r.target.as_str()) {
            ("POST", "/api/auth/login") if r.body.contains("\"hb-pass\"") => (
                201,
                r#"{"access_token":"jwt-1","token_type":"Bearer","expires_in":28800}"#.into(),
            ),
            ("POST", "/api/auth/login") => {
                (403, r#"{"message":"Forbidden","statusCode":403}"#.into())
            }
            _ if !authed => (401, r#"{"message":"Unauthorized","statusCode":401}"#.into()),
            ("GET", "/api/accessories") => (
                200,
                format!(
                    r#"[{{"aid":5,"iid":11,"type":"Switch","serviceName":"Power Trigger","uniqueId":"{uid}",
                "serviceCharacteristics":[{{"type":"On","format":"bool","canWrite":true,"value":0}}],"values":{{"On":0}}}}]"#
                ),
            ),
            ("GET", t) if t == format!("/api/accessories/{uid}") => (
                200,
                format!(r#"{{"values":{{"On":{}}}}}"#, on.lock().unwrap()),
            ),
            ("PUT", t) if t == format!("/api/accessories/{uid}") => {
                p.lock().unwrap().push(r.body.clone());
                *on.lock().unwrap() = if r.body.contains("true") { 1 } else { 0 };
                (200, "{}".into())
            }
            _ => (404, "{}".into()),
        }
    });
    let env = vec![
        ("HOMEBRIDGE_API_URL", server.url("")),
        ("HOMEBRIDGE_USER", "collector".into()),
        ("HOMEBRIDGE_PASSWORD", "hb-pass".into()),
        ("HOMEBRIDGE_ACCESSORY_ID", "Power Trigger".into()),
        ("NOTIFY_HOLD", "10ms".into()),
    ];
    let out = run(&["notify", "--test", "--format", "json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bodies: Vec<serde_json::Value> = puts
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(
        bodies,
        vec![
            serde_json::json!({"characteristicType": "On", "value": true}),
            serde_json::json!({"characteristicType": "On", "value": false})
        ]
    );
    assert!(!out.stderr.contains("hb-pass"));

    let wrong = run(
        &["notify", "--test"],
        &[
            ("HOMEBRIDGE_PASSWORD", "nope".into()),
            ("HOMEBRIDGE_API_URL", server.url("")),
            ("HOMEBRIDGE_USER", "collector".into()),
            ("HOMEBRIDGE_ACCESSORY_ID", uid.into()),
        ],
    );
    assert_eq!(wrong.code, 1);
    assert!(
        wrong
            .stderr
            .contains("Homebridge login failed: HTTP 403 Forbidden"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn per_phase_current_limits_fire_their_own_rule() {
    let db = TestDb::migrated();
    // 5750 W on phase A = 25 A; limit 20 A, total threshold far away.
    readings(&db, 19, |_| 5750);
    let mut env = base_env(&db);
    env.push(("ALERT_POWER_W", "20000".into()));
    env.push(("ALERT_PHASE_CURRENT_A", "20".into()));
    let out = run(
        &[
            "evaluate-alerts",
            "--no-deliver",
            "--format",
            "json",
            "--now",
            &NOW.to_string(),
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ev = events(&db);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1, format!("{DEVICE}/phase_a_current"));
    assert_eq!(ev[0].2, "pending", "--no-deliver leaves delivery to notify");
}

#[test]
fn invalid_alert_configuration_is_a_clear_configuration_error() {
    let db = TestDb::migrated();
    let cases: Vec<(Vec<(&'static str, String)>, &str)> = vec![
        (vec![("ALERT_POWER_W", "".into())], "ALERT_POWER_W is not set"),
        (vec![("ALERT_POWER_W", "lots".into())], "ALERT_POWER_W must be a positive number, not \"lots\""),
        (vec![("ALERT_CLEAR_POWER_W", "5000".into())], "ALERT_CLEAR_POWER_W (5000) must be below ALERT_POWER_W (4500)"),
        (vec![("ALERT_SCHEDULE", "22:00-06:00".into())], "ALERT_SCHEDULE: invalid schedule entry"),
        (vec![("ALERT_TZ", "Mars/Base".into())], "ALERT_TZ: unknown time zone"),
        (vec![("ALERT_SUSTAIN_SECONDS", "-1".into())], "ALERT_SUSTAIN_SECONDS must be a whole number"),
        (vec![("TRIGGER_HTTP_URL", "http://a/?state=true".into()), ("MQTT_URL", "mqtt://b".into()), ("MQTT_TOPIC", "t".into())],
         "several notification backends are configured (webhook, mqtt); choose one with NOTIFY_BACKEND"),
        (vec![("MQTT_URL", "mqtt://user:pw@b".into()), ("MQTT_TOPIC", "t".into())], "MQTT_URL must not contain credentials"),
        (vec![("MQTT_URL", "mqtts://b:8883".into()), ("MQTT_TOPIC", "t".into())], "MQTT_URL is mqtts:// but this shellyctl was built without MQTT TLS"),
        (vec![("NOTIFY_HOLD", "soon".into())], "NOTIFY_HOLD=\"soon\""),
    ];
    for (extra, message) in cases {
        let mut env = base_env(&db);
        env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        env.extend(extra);
        let out = evaluate(&env, NOW);
        assert_eq!(out.code, 78, "{message}: {}", out.stderr);
        assert!(
            out.stderr.starts_with(&format!("error: {message}")),
            "expected {message:?}, got {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn an_alert_can_watch_one_channel_of_a_meter_without_a_device_total() {
    // An EM Gen3 (em1): channel 0 draws 5000 W, channel 1 is PV; no total.
    let db = TestDb::migrated();
    let mut c = db.client();
    c.execute(
        "INSERT INTO devices (device_id, model) VALUES ($1, 'S3EM-002CXCEU')",
        &[&DEVICE],
    )
    .unwrap();
    for i in 0..19i64 {
        c.execute(
            "INSERT INTO power_readings (ts, device_id, meter, phase_a_power_w, phase_b_power_w)
             VALUES (to_timestamp($1), $2, 'em1', 5000, -3000)",
            &[&((NOW - (18 - i) * 10) as f64), &DEVICE],
        )
        .unwrap();
    }
    let mut env = base_env(&db);
    env.push(("ALERT_CHANNEL", "em1:0".into()));
    let out = evaluate(&env, NOW);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ev = events(&db);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1, format!("{DEVICE}/channel_a_power"));

    let mut env = base_env(&db);
    env.push(("ALERT_CHANNEL", "em1:9".into()));
    let out = evaluate(&env, NOW);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr.contains("ALERT_CHANNEL must be total"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_backlog_of_events_is_one_pulse_marked_together_and_no_transaction_waits_on_the_network() {
    let db = TestDb::migrated();
    // Twenty events left pending while Homebridge was down for hours.
    db.client()
        .batch_execute(
            "INSERT INTO alert_events (rule_key, created_at)
             SELECT 'power', now() - interval '10 minutes' + n * interval '10 seconds' FROM generate_series(1, 20) n",
        )
        .unwrap();
    let hook = Webhook::start(false);
    let mut env = base_env(&db);
    env.push(("TRIGGER_HTTP_URL", hook.url()));
    env.retain(|(k, _)| *k != "NOTIFY_HOLD");
    env.push(("NOTIFY_HOLD", "2s".into()));
    let envs: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let child = {
        let e: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        spawn(&["notify", "--format", "json"], &e)
    };
    // During the hold the sensor is ON, and the events are not locked: a
    // transaction waiting on the network would hold them.
    let start = Instant::now();
    while !*hook.state.lock().unwrap() {
        assert!(start.elapsed() < Duration::from_secs(5), "no pulse");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = db.client();
    let mut tx = c.transaction().unwrap();
    let locked = tx.query("SELECT id FROM alert_events FOR UPDATE NOWAIT", &[]);
    assert!(
        locked.is_ok(),
        "the events are locked during the pulse: {locked:?}"
    );
    tx.rollback().unwrap();
    let out = child.wait_with_output();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["delivered"].as_array().unwrap().len(), 20);
    // One pulse: one ON (and one OFF), all twenty marked with it.
    let ons = hook
        .calls()
        .iter()
        .filter(|c| c.as_deref() == Some("true"))
        .count();
    assert_eq!(ons, 1, "{:?}", hook.calls());
    assert_eq!(
        db.count("SELECT count(*) FROM alert_events WHERE delivery_status = 'delivered' AND (details->'delivery'->>'events_in_pulse')::int = 20"),
        20
    );
}

#[test]
fn a_run_starts_no_pulse_it_could_not_finish_in_its_time() {
    let db = TestDb::migrated();
    db.client()
        .batch_execute("INSERT INTO alert_events (rule_key) VALUES ('power')")
        .unwrap();
    let hook = Webhook::start(false);
    let mut env = base_env(&db);
    env.push(("TRIGGER_HTTP_URL", hook.url()));
    env.retain(|(k, _)| *k != "NOTIFY_HOLD");
    env.push(("NOTIFY_HOLD", "30s".into()));
    env.push(("NOTIFY_MAX_RUN_TIME", "20s".into()));
    let start = Instant::now();
    let out = run(&["notify"], &env);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("notification_deferred"),
        "{}",
        out.stderr
    );
    assert!(hook.calls().is_empty());
    assert_eq!(events(&db)[0].2, "pending");
}
