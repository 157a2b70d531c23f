//! `type: demo` — synthetic remote-session events in the wire formats of every system in
//! `shared/corpus` (Windows logon script, AWS SSM, WorkSpaces Secure Browser, Parsec), for the
//! quickstart and as a load generator.
//!
//! The generator keeps `sessions` sessions open at a time. Each step picks one of them at
//! random and emits its next event (start, activity..., end); a session that ended is replaced
//! by a fresh one. So starts and ends pair up by session id the way the real systems pair
//! them, sessions interleave, and the same seed always gives the same events. Timestamps come
//! from a simulated clock starting at 2025-03-10T08:00:00Z that advances a few seconds per
//! event, so output is reproducible and time-ordered.
//!
//! Events are built as JSON maps directly (no text templates, no regexes): the generator must
//! outrun the pipeline it loads.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Timelike};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Deserialize;

use sessiontrail_core::component::{ComponentError, ComponentTask, SourceContext};
use sessiontrail_core::{BuildError, Event, Object, SourceConfig, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Which system's events to generate: `windows`, `ssm`, `wsb`, `parsec` or `mixed`
    /// (default: every session is of a randomly chosen system).
    #[serde(default)]
    pub format: DemoFormat,
    /// Events to generate, then stop (the pipeline drains and exits). Unset: run until stopped.
    #[serde(default)]
    pub count: Option<u64>,
    /// Events per second; unset or 0: as fast as the pipeline takes them.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Seed of the random generator: the same seed gives the same events.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Sessions open at the same time (their events interleave).
    #[serde(default = "default_sessions")]
    pub sessions: usize,
}

fn default_seed() -> u64 {
    1
}

fn default_sessions() -> usize {
    100
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoFormat {
    Windows,
    Ssm,
    Wsb,
    Parsec,
    #[default]
    Mixed,
}

/// Events per channel message when running unthrottled.
const BATCH_EVENTS: usize = 512;
/// Upper bound of `sessions`: each open session is a few hundred bytes of state.
const MAX_SESSIONS: usize = 1_000_000;
/// 2025-03-10T08:00:00Z, the day the corpus fixtures describe.
const CLOCK_START_MS: i64 = 1_741_593_600_000;
/// The simulated clock advances by up to this much per event (uniformly, so ~5 s on average):
/// with the default 100 open sessions a two-event Windows session lasts minutes and a chatty
/// SSM session about an hour.
const MAX_STEP_MS: i64 = 10_000;

#[async_trait::async_trait]
impl SourceConfig for DemoConfig {
    fn validate(&self) -> Result<(), String> {
        if self.sessions == 0 || self.sessions > MAX_SESSIONS {
            return Err(format!(
                "sessions must be between 1 and {MAX_SESSIONS}, got {}",
                self.sessions
            ));
        }
        if let Some(rate) = self.rate {
            if !rate.is_finite() || rate < 0.0 {
                return Err(format!(
                    "rate must be a positive number of events per second, got {rate}"
                ));
            }
        }
        Ok(())
    }

    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError> {
        self.validate()?;
        let config = self.clone();
        Ok(Box::pin(run(config, cx)))
    }
}

async fn run(config: DemoConfig, cx: SourceContext) -> Result<(), ComponentError> {
    let mut generator = DemoGenerator::new(config.format, config.seed, config.sessions);
    let rate = config.rate.filter(|r| *r > 0.0);
    let started = Instant::now();
    let mut emitted: u64 = 0;
    loop {
        if cx.shared.shutdown.is_cancelled() || config.count.is_some_and(|c| emitted >= c) {
            break;
        }
        let mut room = config.count.map_or(BATCH_EVENTS as u64, |c| {
            (c - emitted).min(BATCH_EVENTS as u64)
        });
        if let Some(rate) = rate {
            // Emit what is due by now; if nothing is, sleep until the next event is due.
            let due = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
            if due <= emitted {
                let next = started + Duration::from_secs_f64(emitted as f64 / rate);
                tokio::select! {
                    _ = cx.shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(next.into()) => {}
                }
                continue;
            }
            room = room.min(due - emitted);
        }
        let batch: Vec<Event> = (0..room)
            .map(|_| Event::new(generator.next_event(), Arc::clone(&cx.name), 0))
            .collect();
        emitted += room;
        cx.metrics.add_received(room, 0);
        cx.out
            .send(batch)
            .await
            .map_err(|e| ComponentError(format!("source {}: {e}", cx.name)))?;
        // Unthrottled, a pipeline that keeps up never makes `send` wait: yield so the
        // shutdown signal and the other tasks on this thread get their turn.
        tokio::task::yield_now().await;
    }
    tracing::info!(source = %cx.name, events = emitted, "source stopped");
    Ok(())
}

/// The deterministic event generator behind `type: demo` (public for tests and benchmarks).
pub struct DemoGenerator {
    rng: StdRng,
    format: DemoFormat,
    clock_ms: i64,
    open: Vec<Session>,
    /// Windows event-log record ids, increasing like a real log.
    record_id: u64,
}

impl DemoGenerator {
    pub fn new(format: DemoFormat, seed: u64, sessions: usize) -> Self {
        let mut g = DemoGenerator {
            rng: StdRng::seed_from_u64(seed),
            format,
            clock_ms: CLOCK_START_MS,
            open: Vec::with_capacity(sessions.max(1)),
            record_id: 1_935_000,
        };
        for _ in 0..sessions.max(1) {
            let s = g.new_session();
            g.open.push(s);
        }
        g
    }

    /// The next event of a randomly chosen open session.
    pub fn next_event(&mut self) -> Object {
        self.clock_ms += self.rng.random_range(0..=MAX_STEP_MS);
        let i = self.rng.random_range(0..self.open.len());
        let mut session = std::mem::replace(&mut self.open[i], Session::Done);
        let event = self.step(&mut session);
        self.open[i] = match session {
            Session::Done => self.new_session(),
            s => s,
        };
        event
    }

    fn new_session(&mut self) -> Session {
        let format = match self.format {
            DemoFormat::Mixed => [
                DemoFormat::Windows,
                DemoFormat::Ssm,
                DemoFormat::Wsb,
                DemoFormat::Parsec,
            ][self.rng.random_range(0..4)],
            f => f,
        };
        match format {
            DemoFormat::Windows => Session::Windows(self.new_windows()),
            DemoFormat::Ssm => Session::Ssm(self.new_ssm()),
            DemoFormat::Wsb => Session::Wsb(self.new_wsb()),
            _ => Session::Parsec(self.new_parsec()),
        }
    }

    /// Emits the session's next event; sets it to `Done` after its last one.
    fn step(&mut self, session: &mut Session) -> Object {
        match session {
            Session::Windows(s) => {
                let (event, done) = self.windows_event(s);
                if done {
                    *session = Session::Done;
                }
                event
            }
            Session::Ssm(s) => {
                let (event, done) = self.ssm_event(s);
                if done {
                    *session = Session::Done;
                }
                event
            }
            Session::Wsb(s) => {
                let (event, done) = self.wsb_event(s);
                if done {
                    *session = Session::Done;
                }
                event
            }
            Session::Parsec(s) => {
                let (event, done) = self.parsec_event(s);
                if done {
                    *session = Session::Done;
                }
                event
            }
            // A finished session is replaced right away, so it is never picked.
            Session::Done => Object::new(),
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn uuid(&mut self) -> String {
        let v: u128 = self.rng.random();
        let h = format!("{v:032x}");
        let variant = ['8', '9', 'a', 'b'][(v & 3) as usize];
        format!(
            "{}-{}-4{}-{variant}{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..]
        )
    }

    fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        for _ in 0..digits {
            s.push(HEX[self.rng.random_range(0..16)] as char);
        }
        s
    }

    fn random_chars(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[self.rng.random_range(0..alphabet.len())] as char)
            .collect()
    }

    /// A 27-character, time-sortable id in the style of Parsec's KSUIDs: the simulated second
    /// in base 62 (fixed width), then random base-62 characters.
    fn ksuid(&mut self) -> String {
        let mut secs = (self.clock_ms / 1000 - KSUID_EPOCH_S).max(0) as u64;
        let mut prefix = [b'0'; 7];
        for slot in prefix.iter_mut().rev() {
            *slot = BASE62[(secs % 62) as usize];
            secs /= 62;
        }
        let mut s = String::with_capacity(27);
        s.extend(prefix.iter().map(|&b| b as char));
        s.push_str(&self.random_chars(BASE62, 20));
        s
    }

    // ---------------------------------------------------------------- Windows (corpus A)

    fn new_windows(&mut self) -> WindowsSession {
        let user = self.rng.random_range(0..WINDOWS_USERS.len());
        let host = self.rng.random_range(0..WINDOWS_HOSTS.len());
        let console = self.rng.random_bool(0.1);
        WindowsSession {
            session_id: self.uuid(),
            user,
            host,
            client: if console {
                None
            } else {
                Some(self.rng.random_range(0..WINDOWS_CLIENTS.len()))
            },
            logon_id: format!("0x{:X}", self.rng.random_range(0x100_0000u32..0xFFF_FFFF)),
            windows_session_id: self.rng.random_range(1..40),
            remote_reconnect: !console && self.rng.random_bool(0.15),
            started_ms: 0,
            step: 0,
        }
    }

    fn windows_time(&mut self, host: usize) -> String {
        // `Get-Date -Format o`: 100 ns precision and the host's local offset.
        let ticks = self.clock_ms * 10_000 + self.rng.random_range(0..10_000);
        format_time(ticks, 7, WINDOWS_HOSTS[host].2)
    }

    fn source_event(&mut self, log: &str, event_id: u32) -> Value {
        self.record_id += self.rng.random_range(1..40);
        let mut o = Object::new();
        o.insert("log".into(), log.into());
        o.insert("event_id".into(), event_id.into());
        o.insert("record_id".into(), self.record_id.into());
        Value::Object(o)
    }

    fn windows_event(&mut self, s: &mut WindowsSession) -> (Object, bool) {
        let (user_id, user_name, user_rid) = WINDOWS_USERS[s.user];
        let (resource_id, host_name, _) = WINDOWS_HOSTS[s.host];
        let mut o = Object::new();
        o.insert("schema_version".into(), "1.2".into());
        o.insert("event_id".into(), self.uuid().into());
        o.insert("timestamp".into(), self.windows_time(s.host).into());
        o.insert("session_id".into(), s.session_id.clone().into());
        o.insert("resource_id".into(), resource_id.into());
        o.insert("host_name".into(), host_name.into());
        o.insert("logon_id".into(), s.logon_id.clone().into());
        o.insert("user_id".into(), user_id.into());
        if s.step == 0 {
            s.started_ms = self.clock_ms;
            s.step = 1;
            o.insert("event_type".into(), "session_notify".into());
            let trigger = if s.remote_reconnect {
                "remote-session"
            } else {
                "logon"
            };
            o.insert("event_trigger".into(), trigger.into());
            o.insert("windows_session_id".into(), s.windows_session_id.into());
            o.insert(
                "user_sid".into(),
                format!("S-1-5-21-1111111111-2222222222-3333333333-{user_rid}").into(),
            );
            o.insert("user_name".into(), user_name.into());
            let mut sources = Vec::with_capacity(3);
            match s.client {
                None => {
                    o.insert("channel_type".into(), "Console".into());
                    let mut client = Object::new();
                    client.insert("host".into(), host_name.into());
                    client.insert("ip".into(), Value::Null);
                    o.insert("client".into(), Value::Object(client));
                    let mut logon = self.source_event("Security", 4624);
                    if let Value::Object(m) = &mut logon {
                        m.insert("logon_type".into(), 2.into());
                    }
                    sources.push(logon);
                    sources.push(self.source_event(LSM_LOG, 21));
                }
                Some(c) => {
                    let (host, ip, os, os_version, app, app_version) = WINDOWS_CLIENTS[c];
                    o.insert("channel_type".into(), "RDP".into());
                    let mut client = Object::new();
                    client.insert("host".into(), host.into());
                    client.insert("ip".into(), ip.into());
                    o.insert("client".into(), Value::Object(client));
                    let mut env = Object::new();
                    env.insert("os".into(), os.into());
                    env.insert("os_version".into(), os_version.into());
                    env.insert("app".into(), app.into());
                    env.insert("app_version".into(), app_version.into());
                    o.insert("client_env".into(), Value::Object(env));
                    sources.push(self.source_event(RCM_LOG, 1149));
                    if s.remote_reconnect {
                        sources.push(self.source_event("Security", 4778));
                        sources.push(self.source_event(LSM_LOG, 25));
                    } else {
                        let mut logon = self.source_event("Security", 4624);
                        if let Value::Object(m) = &mut logon {
                            m.insert("logon_type".into(), 10.into());
                        }
                        sources.push(logon);
                        sources.push(self.source_event(LSM_LOG, 21));
                    }
                }
            }
            o.insert("source_events".into(), Value::Array(sources));
            (o, false)
        } else {
            o.insert("event_type".into(), "session_end_event".into());
            let disconnect = s.client.is_some() && self.rng.random_bool(0.25);
            let reason = match self.rng.random_range(0..20) {
                0..=15 => "user",
                16..=18 => "timeout",
                _ => "failure",
            };
            let mut sources = Vec::with_capacity(3);
            if disconnect {
                o.insert("end_trigger".into(), "disconnect".into());
                sources.push(self.source_event(LSM_LOG, 24));
                let mut lsm40 = self.source_event(LSM_LOG, 40);
                if let Value::Object(m) = &mut lsm40 {
                    let code = if reason == "user" { 11 } else { 0 };
                    m.insert("reason_code".into(), code.into());
                }
                sources.push(lsm40);
                sources.push(self.source_event("Security", 4779));
            } else {
                o.insert("end_trigger".into(), "logoff".into());
                let id = if reason == "user" { 4647 } else { 4634 };
                sources.push(self.source_event("Security", id));
                sources.push(self.source_event(LSM_LOG, 23));
            }
            o.insert("reason".into(), reason.into());
            o.insert(
                "duration_s".into(),
                ((self.clock_ms - s.started_ms) / 1000).into(),
            );
            o.insert("source_events".into(), Value::Array(sources));
            if self.rng.random_bool(0.3) {
                let mut usage = Object::new();
                usage.insert(
                    "cpu_time_s".into(),
                    self.rng.random_range(1..5000u32).into(),
                );
                usage.insert(
                    "peak_working_set_mb".into(),
                    self.rng.random_range(120..4096u32).into(),
                );
                o.insert("resource_usage".into(), Value::Object(usage));
            }
            (o, true)
        }
    }

    // ---------------------------------------------------------------- SSM (corpus B)

    fn new_ssm(&mut self) -> SsmSession {
        let principal = self.rng.random_range(0..SSM_PRINCIPALS.len());
        let owner = SSM_PRINCIPALS[principal].1;
        let access_key = if SSM_PRINCIPALS[principal].2 == "IAMUser" {
            format!("AKIA{}", self.random_chars(KEY_ALPHABET, 16))
        } else {
            format!("ASIA{}", self.random_chars(KEY_ALPHABET, 16))
        };
        SsmSession {
            session_id: format!("{owner}-{}", self.hex(17)),
            principal,
            instance: self.pick(SSM_INSTANCES),
            document: self.pick(SSM_DOCUMENTS),
            access_key,
            records: self.rng.random_range(1..8),
            resume_at: if self.rng.random_bool(0.15) {
                Some(self.rng.random_range(0..3))
            } else {
                None
            },
            step: 0,
        }
    }

    fn cloudtrail(&mut self, s: &SsmSession, event_name: &str) -> Object {
        let (arn, user_name, identity_type) = SSM_PRINCIPALS[s.principal];
        let time = format_time(self.clock_ms / 1000, 0, 0);
        let mut identity = Object::new();
        identity.insert("type".into(), identity_type.into());
        identity.insert("arn".into(), arn.into());
        identity.insert("accountId".into(), ACCOUNT.into());
        identity.insert("accessKeyId".into(), s.access_key.clone().into());
        if identity_type == "IAMUser" {
            identity.insert("principalId".into(), "AIDAXTLCS2SQZJVKRLTXD".into());
            identity.insert("userName".into(), user_name.into());
        } else {
            identity.insert(
                "principalId".into(),
                format!("AROAHQ2BB3OOE5NFYWCXP:{user_name}").into(),
            );
            let role = arn.split('/').nth(1).unwrap_or("role");
            let mut issuer = Object::new();
            issuer.insert("type".into(), "Role".into());
            issuer.insert("principalId".into(), "AROAHQ2BB3OOE5NFYWCXP".into());
            issuer.insert(
                "arn".into(),
                format!("arn:aws:iam::{ACCOUNT}:role/{role}").into(),
            );
            issuer.insert("accountId".into(), ACCOUNT.into());
            issuer.insert("userName".into(), role.into());
            let mut context = Object::new();
            context.insert("sessionIssuer".into(), Value::Object(issuer));
            identity.insert("sessionContext".into(), Value::Object(context));
        }
        let mut request = Object::new();
        let mut response = Object::new();
        response.insert("sessionId".into(), s.session_id.clone().into());
        if event_name == "StartSession" {
            request.insert("target".into(), s.instance.into());
            if s.document != "SSM-SessionManagerRunShell" {
                request.insert("documentName".into(), s.document.into());
            }
        } else {
            request.insert("sessionId".into(), s.session_id.clone().into());
        }
        if event_name != "TerminateSession" {
            response.insert("tokenValue".into(), TOKEN_HIDDEN.into());
            response.insert(
                "streamUrl".into(),
                format!(
                    "wss://ssmmessages.{REGION}.amazonaws.com/v1/data-channel/{}?role=publish_subscribe",
                    s.session_id
                )
                .into(),
            );
        }
        let mut detail = Object::new();
        detail.insert("eventVersion".into(), "1.09".into());
        detail.insert("userIdentity".into(), Value::Object(identity));
        detail.insert("eventTime".into(), time.clone().into());
        detail.insert("eventSource".into(), "ssm.amazonaws.com".into());
        detail.insert("eventName".into(), event_name.into());
        detail.insert("awsRegion".into(), REGION.into());
        detail.insert(
            "sourceIPAddress".into(),
            self.pick(CLIENT_IPS).to_string().into(),
        );
        detail.insert("userAgent".into(), self.pick(SSM_USER_AGENTS).into());
        detail.insert("requestParameters".into(), Value::Object(request));
        detail.insert("responseElements".into(), Value::Object(response));
        detail.insert("requestID".into(), self.uuid().into());
        detail.insert("eventID".into(), self.uuid().into());
        detail.insert("readOnly".into(), false.into());
        detail.insert("eventType".into(), "AwsApiCall".into());
        detail.insert("managementEvent".into(), true.into());
        detail.insert("recipientAccountId".into(), ACCOUNT.into());
        detail.insert("eventCategory".into(), "Management".into());
        let mut o = Object::new();
        o.insert("version".into(), "0".into());
        o.insert("id".into(), self.uuid().into());
        o.insert("detail-type".into(), "AWS API Call via CloudTrail".into());
        o.insert("source".into(), "aws.ssm".into());
        o.insert("account".into(), ACCOUNT.into());
        o.insert("time".into(), time.into());
        o.insert("region".into(), REGION.into());
        o.insert("resources".into(), Value::Array(Vec::new()));
        o.insert("detail".into(), Value::Object(detail));
        o
    }

    fn stream_record(&mut self, s: &SsmSession) -> Object {
        let mut target = Object::new();
        target.insert("id".into(), s.instance.into());
        let mut identity = Object::new();
        identity.insert("arn".into(), SSM_PRINCIPALS[s.principal].0.into());
        // One read of the pty: a command, its output, and the prompt again.
        let first = self.rng.random_range(0..SSM_OUTPUT.len());
        let lines = self.rng.random_range(1..5).min(SSM_OUTPUT.len() - first);
        let mut data: Vec<Value> = SSM_OUTPUT[first..first + lines]
            .iter()
            .map(|l| Value::from(*l))
            .collect();
        data.push(SSM_PROMPT.into());
        let mut o = Object::new();
        o.insert("eventVersion".into(), "1.0".into());
        o.insert(
            "eventTime".into(),
            format_time(self.clock_ms / 1000, 0, 0).into(),
        );
        o.insert("awsRegion".into(), REGION.into());
        o.insert("target".into(), Value::Object(target));
        o.insert("userIdentity".into(), Value::Object(identity));
        o.insert("runAsUser".into(), "ssm-user".into());
        o.insert("sessionId".into(), s.session_id.clone().into());
        o.insert("sessionData".into(), Value::Array(data));
        o
    }

    fn ssm_event(&mut self, s: &mut SsmSession) -> (Object, bool) {
        let step = s.step;
        s.step += 1;
        if step == 0 {
            return (self.cloudtrail(s, "StartSession"), false);
        }
        if step > s.records {
            return (self.cloudtrail(s, "TerminateSession"), true);
        }
        if s.resume_at == Some(step - 1) {
            s.resume_at = None;
            s.step -= 1; // the resume does not use up a stream record
            return (self.cloudtrail(s, "ResumeSession"), false);
        }
        (self.stream_record(s), false)
    }

    // ---------------------------------------------------------------- WSB (corpus C)

    fn new_wsb(&mut self) -> WsbSession {
        WsbSession {
            session_id: self.uuid(),
            user: self.pick(WSB_USERS),
            client_ip: self.pick(CLIENT_IPS),
            activities: self.rng.random_range(2..14),
            reconnect_at: if self.rng.random_bool(0.2) {
                Some(self.rng.random_range(1..3))
            } else {
                None
            },
            disconnected: false,
            step: 0,
        }
    }

    fn observable(name: &str, type_name: &str, type_id: u32, value: &str) -> Value {
        let mut o = Object::new();
        o.insert("name".into(), name.into());
        o.insert("type".into(), type_name.into());
        o.insert("type_id".into(), type_id.into());
        o.insert("value".into(), value.into());
        Value::Object(o)
    }

    fn wsb_base(&mut self, s: &WsbSession, activity: &str) -> (Object, Vec<Value>) {
        let mut product = Object::new();
        product.insert("name".into(), "WorkSpacesSecureBrowser".into());
        product.insert("vendor_name".into(), "wsb".into());
        let mut metadata = Object::new();
        metadata.insert("product".into(), Value::Object(product));
        let mut detail = Object::new();
        detail.insert("client_ip".into(), s.client_ip.into());
        detail.insert("portal_id".into(), WSB_PORTAL.into());
        detail.insert("portal_ip".into(), "203.0.113.10".into());
        detail.insert("session_id".into(), s.session_id.clone().into());
        detail.insert("username".into(), s.user.into());
        let mut o = Object::new();
        o.insert("activity_id".into(), 99.into());
        o.insert("activity_name".into(), activity.into());
        o.insert("category_id".into(), 2.into());
        o.insert("category_name".into(), "WorkSpacesSecureBrowser".into());
        o.insert("metadata".into(), Value::Object(metadata));
        o.insert("session_detail".into(), Value::Object(detail));
        o.insert("time".into(), self.clock_ms.into());
        let observables = vec![
            Self::observable("session_detail.username", "User Name", 4, s.user),
            Self::observable("session_detail.client_ip", "IP Address", 2, s.client_ip),
        ];
        (o, observables)
    }

    fn wsb_event(&mut self, s: &mut WsbSession) -> (Object, bool) {
        let step = s.step;
        s.step += 1;
        let (activity, done) = if step == 0 {
            ("SessionStart", false)
        } else if step == 1 || s.disconnected {
            s.disconnected = false;
            ("SessionConnect", false)
        } else if step >= s.activities + 2 {
            ("SessionEnd", true)
        } else if s.reconnect_at == Some(step - 2) {
            s.reconnect_at = None;
            s.disconnected = true;
            ("SessionDisconnect", false)
        } else {
            (self.pick(WSB_ACTIVITIES), false)
        };
        let (mut o, mut observables) = self.wsb_base(s, activity);
        if activity.starts_with("Url")
            || activity.starts_with("Tab")
            || activity == "WebsiteInteract"
        {
            let (host, path, url) = self.pick(WSB_URLS);
            observables.push(Self::observable("url.url_string", "URL String", 6, url));
            observables.push(Self::observable("url.hostname", "Hostname", 1, host));
            let mut u = Object::new();
            u.insert("hostname".into(), host.into());
            u.insert("path".into(), path.into());
            u.insert("url_string".into(), url.into());
            o.insert("url".into(), Value::Object(u));
        } else if activity.starts_with("File") {
            let (name, ext) = self.pick(WSB_FILES);
            observables.push(Self::observable("file.name", "File Name", 7, name));
            let mut f = Object::new();
            f.insert("ext".into(), ext.into());
            f.insert("name".into(), name.into());
            f.insert(
                "size".into(),
                self.rng.random_range(200..50_000_000u64).into(),
            );
            f.insert("type_id".into(), 1.into());
            o.insert("file".into(), Value::Object(f));
        }
        o.insert("observables".into(), Value::Array(observables));
        (o, done)
    }

    // ---------------------------------------------------------------- Parsec (corpus D)

    fn new_parsec(&mut self) -> ParsecSession {
        let client = self.rng.random_range(0..PARSEC_CLIENTS.len());
        let host = self.rng.random_range(0..PARSEC_HOSTS.len());
        ParsecSession {
            attempt_id: self.uuid(),
            client,
            host,
            client_peer_id: self.random_chars(BASE62, 27),
            host_peer_id: self.random_chars(BASE62, 27),
            failed: self.rng.random_bool(0.08),
            connected_ms: 0,
            step: 0,
        }
    }

    fn parsec_event(&mut self, s: &mut ParsecSession) -> (Object, bool) {
        // Client perspective, relayed offer (host), client/host completion, then a disconnect
        // reported by both sides. A failed attempt stops after completion with exit code -6023.
        const STEPS: [(&str, bool); 6] = [
            ("conn_client_offer", false),
            ("conn_signal_offer_relayed", true),
            ("p2p_client_complete", false),
            ("p2p_host_complete", true),
            ("client_disconnect", false),
            ("client_disconnect", true),
        ];
        let (name, host_side) = STEPS[s.step.min(STEPS.len() - 1)];
        s.step += 1;
        let done = s.step >= STEPS.len() || (s.failed && s.step >= 4);
        if name == "p2p_client_complete" {
            s.connected_ms = self.clock_ms;
        }
        let (client_email, client_user_id, client_ip, os, os_version, platform) =
            PARSEC_CLIENTS[s.client];
        let (host_name, host_ip, host_os_version) = PARSEC_HOSTS[s.host];
        let mut data = Object::new();
        data.insert("app_version".into(), "150-95c".into());
        data.insert("attempt_id".into(), s.attempt_id.clone().into());
        data.insert("client_peer_id".into(), s.client_peer_id.clone().into());
        data.insert("client_type".into(), "".into());
        data.insert("client_user_id".into(), client_user_id.into());
        data.insert("connecting_to_self".into(), false.into());
        let duration = if name == "client_disconnect" {
            (self.clock_ms - s.connected_ms) / 1000
        } else {
            0
        };
        data.insert("duration".into(), duration.into());
        let exit_code: i64 = if s.failed { -6023 } else { 0 };
        data.insert("exit_code".into(), exit_code.into());
        data.insert("host_computer_name".into(), host_name.into());
        data.insert("host_is_team_computer".into(), true.into());
        data.insert("host_peer_id".into(), s.host_peer_id.clone().into());
        data.insert("host_user_id".into(), PARSEC_HOST_USER.1.into());
        if host_side {
            data.insert("ip".into(), host_ip.into());
            data.insert("os".into(), "Windows".into());
            data.insert("os_version".into(), host_os_version.into());
            data.insert("platform".into(), "win".into());
        } else {
            data.insert("ip".into(), client_ip.into());
            data.insert("os".into(), os.into());
            data.insert("os_version".into(), os_version.into());
            data.insert("platform".into(), platform.into());
        }
        let (email, user_id) = if host_side {
            PARSEC_HOST_USER
        } else {
            (client_email, client_user_id)
        };
        let mut o = Object::new();
        o.insert("id".into(), self.ksuid().into());
        o.insert("name".into(), name.into());
        o.insert(
            "timestamp".into(),
            format_time(self.clock_ms * 10_000, 3, 0).into(),
        );
        o.insert("user_id".into(), user_id.into());
        o.insert("team_id".into(), PARSEC_TEAM.into());
        o.insert("user_email".into(), email.into());
        o.insert("data".into(), Value::Object(data));
        (o, done)
    }
}

/// Formats `ticks` (100 ns units since the epoch) as RFC 3339 with `frac` fractional digits
/// (0, 3 or 7) at a UTC offset of `offset_min` minutes (`Z` when 0 and `frac` is not 7, the
/// way AWS and Parsec write UTC; PowerShell writes `+00:00`). `frac == 0` takes seconds.
fn format_time(ticks_or_secs: i64, frac: u32, offset_min: i32) -> String {
    let (secs, sub_ticks) = if frac == 0 {
        (ticks_or_secs, 0)
    } else {
        (
            ticks_or_secs.div_euclid(10_000_000),
            ticks_or_secs.rem_euclid(10_000_000),
        )
    };
    let local = secs + i64::from(offset_min) * 60;
    let Some(t) = DateTime::from_timestamp(local, 0) else {
        return String::new();
    };
    let mut s = String::with_capacity(33);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match frac {
        0 => {}
        3 => {
            let _ = write!(s, ".{:03}", sub_ticks / 10_000);
        }
        _ => {
            let _ = write!(s, ".{sub_ticks:07}");
        }
    }
    if offset_min == 0 && frac != 7 {
        s.push('Z');
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let m = offset_min.abs();
        let _ = write!(s, "{sign}{:02}:{:02}", m / 60, m % 60);
    }
    s
}

enum Session {
    Windows(WindowsSession),
    Ssm(SsmSession),
    Wsb(WsbSession),
    Parsec(ParsecSession),
    Done,
}

struct WindowsSession {
    session_id: String,
    user: usize,
    host: usize,
    /// `None`: a console logon.
    client: Option<usize>,
    logon_id: String,
    windows_session_id: u32,
    /// A reconnect to an existing logon (`event_trigger: remote-session`).
    remote_reconnect: bool,
    started_ms: i64,
    step: u8,
}

struct SsmSession {
    session_id: String,
    principal: usize,
    instance: &'static str,
    document: &'static str,
    access_key: String,
    /// Streaming records between StartSession and TerminateSession.
    records: u32,
    /// Before which stream record a ResumeSession (reconnect) happens.
    resume_at: Option<u32>,
    step: u32,
}

struct WsbSession {
    session_id: String,
    user: &'static str,
    client_ip: &'static str,
    /// Events between SessionConnect and SessionEnd.
    activities: u32,
    reconnect_at: Option<u32>,
    disconnected: bool,
    step: u32,
}

struct ParsecSession {
    attempt_id: String,
    client: usize,
    host: usize,
    client_peer_id: String,
    host_peer_id: String,
    /// The attempt fails (exit code -6023): no disconnect follows.
    failed: bool,
    connected_ms: i64,
    step: usize,
}

// Invented people, hosts and ids in the style of the corpus; IPs from documentation ranges.
const HEX: &[u8; 16] = b"0123456789abcdef";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// KSUID epoch (2014-05-13T16:53:20Z).
const KSUID_EPOCH_S: i64 = 1_400_000_000;
const LSM_LOG: &str = "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational";
const RCM_LOG: &str = "Microsoft-Windows-TerminalServices-RemoteConnectionManager/Operational";
/// (user_id, display name, RID of the SID).
const WINDOWS_USERS: &[(&str, &str, u32)] = &[
    ("CORP\\akowalczyk", "Anna Kowalczyk", 1104),
    ("CORP\\pnowak", "Piotr Nowak", 1107),
    ("CORP\\adm_pnowak", "Piotr Nowak (admin)", 1500),
    ("CORP\\mwisniewska", "Maria Wiśniewska", 1121),
    ("CORP\\jsmith", "John Smith", 1130),
    ("CORP\\edubois", "Émilie Dubois", 1133),
    ("CORP\\obondarenko", "Олег Бондаренко", 1152),
    ("CORP\\kzielinski", "Krzysztof Zieliński", 1160),
    ("CORP\\lmartin", "Lucas Martin", 1171),
    ("JMP-TYO-01\\山田太郎", "山田太郎", 1001),
];
/// (resource_id, host name, UTC offset in minutes).
const WINDOWS_HOSTS: &[(&str, &str, i32)] = &[
    ("res-rds-waw-01", "RDS-WAW-01", 60),
    ("res-rds-waw-02", "RDS-WAW-02", 60),
    ("res-wks-krk-0147", "WKS-KRK-0147", 60),
    ("res-jmp-tyo-01", "JMP-TYO-01", 540),
    ("res-rds-dub-01", "RDS-DUB-01", 0),
];
/// (host, ip, os, os_version, app, app_version).
const WINDOWS_CLIENTS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "LAPTOP-4KQ2M9",
        "198.51.100.23",
        "Windows",
        "10.0.22631",
        "mstsc.exe",
        "10.0.22621.3235",
    ),
    (
        "Marias-MacBook-Pro",
        "198.51.100.77",
        "macOS",
        "14.3.1",
        "Microsoft Remote Desktop",
        "10.9.5",
    ),
    (
        "WYSE-3040-12",
        "192.0.2.140",
        "ThinOS",
        "9.4.2103",
        "RDP Client",
        "9.4.2103",
    ),
    (
        "TYO-NB-0231",
        "203.0.113.88",
        "Windows",
        "10.0.22631",
        "mstsc.exe",
        "10.0.22621.2506",
    ),
];
const ACCOUNT: &str = "111122223333";
const REGION: &str = "eu-central-1";
const TOKEN_HIDDEN: &str = "Value hidden due to security reasons.";
/// (ARN, session-id owner / user name, identity type).
const SSM_PRINCIPALS: &[(&str, &str, &str)] = &[
    ("arn:aws:iam::111122223333:user/ops-anna", "ops-anna", "IAMUser"),
    (
        "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_PlatformOps_8c1d2e3f4a5b6c7d/piotr.nowak@example.com",
        "piotr.nowak@example.com",
        "AssumedRole",
    ),
    (
        "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_PlatformOps_8c1d2e3f4a5b6c7d/maria.wisniewska@example.com",
        "maria.wisniewska@example.com",
        "AssumedRole",
    ),
    (
        "arn:aws:sts::111122223333:assumed-role/ci-deploy/GitHubActions",
        "GitHubActions",
        "AssumedRole",
    ),
];
const SSM_INSTANCES: &[&str] = &[
    "i-0a1b2c3d4e5f60718",
    "i-0f9e8d7c6b5a40312",
    "i-07c3e5a9b1d2f4608",
    "mi-0123456789abcdef0",
];
const SSM_DOCUMENTS: &[&str] = &[
    "SSM-SessionManagerRunShell",
    "SSM-SessionManagerRunShell",
    "SSM-SessionManagerRunShell",
    "AWS-StartPortForwardingSession",
    "AWS-StartInteractiveCommand",
];
const SSM_USER_AGENTS: &[&str] = &[
    "aws-cli/2.15.30 Python/3.11.8 Darwin/23.3.0 exe/x86_64 prompt/off command/ssm.start-session",
    "aws-cli/2.15.17 Python/3.11.6 Linux/6.5.0-21-generic exe/x86_64.ubuntu.22 prompt/off command/ssm.start-session",
    "aws-internal/3 aws-sdk-java/1.12.661 Linux/5.10.210-178.855.amzn2int.x86_64 OpenJDK_64-Bit_Server_VM/25.402-b08 java/1.8.0_402 vendor/Oracle_Corporation cfg/retry-mode/standard",
];
const SSM_PROMPT: &str = "sh-5.2$ ";
/// Shell output as the agent streams it (ANSI stripped, tabs as spaces, split on LF).
const SSM_OUTPUT: &[&str] = &[
    "uptime",
    " 10:02:28 up 41 days,  3:17,  0 users,  load average: 0.41, 0.38, 0.33",
    "df -h /",
    "Filesystem      Size  Used Avail Use% Mounted on",
    "/dev/nvme0n1p1   30G   21G  9.1G  70% /",
    "sudo systemctl is-active nginx",
    "active",
    "tail -n 1 /var/log/app/app.log",
    "2025-03-10T10:02:31Z INFO  worker[1187] processed batch id=88213 items=512 latency_ms=41",
    "free -m | head -2",
    "               total        used        free      shared  buff/cache   available",
    "Mem:            3834        1411         212           2        2210        2167",
    "ls /srv/share/報告書",
    "報告書_2025年3月.xlsx  議事録_山田太郎.docx",
    "journalctl -u app --since '10 min ago' | grep -c ERROR",
    "0",
];
const CLIENT_IPS: &[&str] = &[
    "198.51.100.23",
    "198.51.100.77",
    "203.0.113.57",
    "203.0.113.41",
    "192.0.2.140",
];
const WSB_PORTAL: &str = "7b0e9c2a-41d3-4f6e-9a85-3c1d2e4f5a6b";
const WSB_USERS: &[&str] = &[
    "anna.kowalczyk@example.com",
    "piotr.nowak@example.com",
    "maria.wisniewska@example.com",
    "john.smith@example.com",
    "emilie.dubois@example.com",
    "oleh.bondarenko@example.com",
    "山田太郎",
];
const WSB_ACTIVITIES: &[&str] = &[
    "UrlVisit",
    "UrlVisit",
    "UrlVisit",
    "WebsiteInteract",
    "TabOpen",
    "TabClose",
    "ContentCopyFromWebsite",
    "ContentPasteToWebsite",
    "ContentTransferFromLocalToRemoteClipboard",
    "PrintJobSubmit",
    "FileDownloadFromSecureBrowserToRemoteDisk",
    "FileTransferFromRemoteToLocalDisk",
    "FileUploadFromRemoteDiskToSecureBrowser",
    "FileTransferFromLocalToRemoteDisk",
];
/// (hostname, path, url).
const WSB_URLS: &[(&str, &str, &str)] = &[
    (
        "intranet.example.com",
        "/wiki/Onboarding",
        "https://intranet.example.com/wiki/Onboarding",
    ),
    (
        "crm.example.com",
        "/accounts",
        "https://crm.example.com/accounts?owner=me",
    ),
    (
        "grafana.example.com",
        "/d/ops/overview",
        "https://grafana.example.com/d/ops/overview?orgId=1&refresh=30s",
    ),
    (
        "tickets.example.com",
        "/browse/OPS-4412",
        "https://tickets.example.com/browse/OPS-4412",
    ),
    ("mail.example.com", "/", "https://mail.example.com/#inbox"),
];
/// (name, extension).
const WSB_FILES: &[(&str, &str)] = &[
    ("accounts-export-2025-03-10.csv", "csv"),
    ("Q1-forecast.xlsx", "xlsx"),
    ("contract-draft-v3.pdf", "pdf"),
    ("screenshot.png", "png"),
];
const PARSEC_TEAM: &str = "2dT8kQw1HtN4mB7xZc3VpLs9YfR";
/// The team account the host machines run under: (email, user id).
const PARSEC_HOST_USER: (&str, i64) = ("studio-machines@example.com", 7_340_100);
/// (email, user id, ip, os, os_version, platform).
const PARSEC_CLIENTS: &[(&str, i64, &str, &str, &str, &str)] = &[
    (
        "anna.kowalczyk@example.com",
        7_340_021,
        "198.51.100.23",
        "Windows",
        "10.0.22631",
        "win",
    ),
    (
        "piotr.nowak@example.com",
        7_340_022,
        "203.0.113.57",
        "macOS",
        "14.3.1",
        "macos",
    ),
    (
        "maria.wisniewska@example.com",
        7_340_023,
        "198.51.100.77",
        "Windows",
        "10.0.22631",
        "win",
    ),
    (
        "john.smith@example.com",
        7_340_024,
        "203.0.113.15",
        "Windows",
        "10.0.19045",
        "win",
    ),
    (
        "emilie.dubois@example.com",
        7_340_025,
        "203.0.113.41",
        "macOS",
        "14.3.1",
        "macos",
    ),
];
/// (computer name, ip, os_version).
const PARSEC_HOSTS: &[(&str, &str, &str)] = &[
    ("STUDIO-WS-07", "203.0.113.70", "10.0.19045"),
    ("RENDER-NODE-3", "203.0.113.71", "10.0.20348"),
    ("EDIT-BAY-2", "203.0.113.72", "10.0.19045"),
    ("山田のPC", "203.0.113.73", "10.0.22631"),
];

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use sessiontrail_core::json::get_path;

    /// (system, correlation key, start/end/other) of a generated event, by the rules of the
    /// corpus README's "Correlation" paragraphs.
    fn classify(e: &Object) -> (&'static str, String, &'static str) {
        let s = |p: &str| {
            get_path(e, p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if let Some(t) = e.get("event_type").and_then(Value::as_str) {
            let kind = match t {
                "session_notify" => "start",
                "session_end_event" => "end",
                _ => "other",
            };
            return ("windows", s("session_id"), kind);
        }
        if e.get("detail-type").is_some() {
            return match s("detail.eventName").as_str() {
                "StartSession" => ("ssm", s("detail.responseElements.sessionId"), "start"),
                "TerminateSession" => ("ssm", s("detail.requestParameters.sessionId"), "end"),
                _ => ("ssm", s("detail.requestParameters.sessionId"), "other"),
            };
        }
        if e.get("sessionData").is_some() {
            return ("ssm", s("sessionId"), "other");
        }
        if e.get("session_detail").is_some() {
            let kind = match s("activity_name").as_str() {
                "SessionStart" => "start",
                "SessionEnd" => "end",
                _ => "other",
            };
            return ("wsb", s("session_detail.session_id"), kind);
        }
        let failed = get_path(e, "data.exit_code").and_then(Value::as_i64) != Some(0);
        let kind = match s("name").as_str() {
            "conn_client_offer" => "start",
            "p2p_host_complete" if failed => "end",
            "client_disconnect" => "end",
            _ => "other",
        };
        ("parsec", s("data.attempt_id"), kind)
    }

    fn generate(format: DemoFormat, seed: u64, sessions: usize, n: usize) -> Vec<Object> {
        let mut g = DemoGenerator::new(format, seed, sessions);
        (0..n).map(|_| g.next_event()).collect()
    }

    #[test]
    fn every_end_matches_an_earlier_start_of_the_same_session() {
        for format in [
            DemoFormat::Windows,
            DemoFormat::Ssm,
            DemoFormat::Wsb,
            DemoFormat::Parsec,
            DemoFormat::Mixed,
        ] {
            let events = generate(format, 7, 50, 20_000);
            // key -> (starts, ends, events after the end)
            let mut seen: HashMap<(&str, String), (u32, u32)> = HashMap::new();
            let mut systems = std::collections::BTreeSet::new();
            let mut completed = 0;
            for e in &events {
                let (system, key, kind) = classify(e);
                systems.insert(system);
                assert!(
                    !key.is_empty(),
                    "{format:?}: event without session id: {e:?}"
                );
                let entry = seen.entry((system, key.clone())).or_default();
                match kind {
                    "start" => {
                        assert_eq!(entry, &(0, 0), "{format:?}: second start for {key}");
                        entry.0 += 1;
                    }
                    "end" => {
                        assert_eq!(entry.0, 1, "{format:?}: end without start for {key}");
                        if system != "parsec" {
                            assert_eq!(entry.1, 0, "{format:?}: second end for {key}");
                        }
                        entry.1 += 1;
                        if entry.1 == 1 {
                            completed += 1;
                        }
                    }
                    _ => assert_eq!(
                        (entry.0, entry.1),
                        (1, 0),
                        "{format:?}: activity outside an open session {key}"
                    ),
                }
            }
            assert!(
                completed > 1000,
                "{format:?}: only {completed} sessions ended"
            );
            let expected = if format == DemoFormat::Mixed { 4 } else { 1 };
            assert_eq!(systems.len(), expected, "{format:?}: {systems:?}");
        }
    }

    #[test]
    fn windows_start_and_end_agree_on_user_and_resource() {
        let events = generate(DemoFormat::Windows, 3, 20, 5_000);
        let mut starts: HashMap<String, &Object> = HashMap::new();
        let mut ends = 0;
        for e in &events {
            let sid = e["session_id"].as_str().unwrap().to_string();
            match e["event_type"].as_str().unwrap() {
                "session_notify" => {
                    starts.insert(sid, e);
                }
                _ => {
                    let start = starts[&sid];
                    for f in ["user_id", "resource_id", "logon_id", "host_name"] {
                        assert_eq!(start[f], e[f], "{f} differs for {sid}");
                    }
                    assert!(e["duration_s"].as_i64().unwrap() >= 0);
                    ends += 1;
                }
            }
        }
        assert!(ends > 1000);
    }

    #[test]
    fn timestamps_are_valid_rfc3339_in_the_corpus_precisions() {
        for e in generate(DemoFormat::Mixed, 11, 10, 2_000) {
            for path in ["timestamp", "detail.eventTime", "eventTime"] {
                if let Some(Value::String(t)) = get_path(&e, path) {
                    assert!(
                        sessiontrail_core::json::parse_rfc3339(t).is_some(),
                        "{path} = {t:?}"
                    );
                }
            }
        }
        assert_eq!(
            format_time(17_415_978_122_973_809, 7, 540),
            "2025-03-10T18:10:12.2973809+09:00"
        );
        assert_eq!(
            format_time(17_415_978_122_973_809, 3, 0),
            "2025-03-10T09:10:12.297Z"
        );
        assert_eq!(format_time(1_741_597_812, 0, 0), "2025-03-10T09:10:12Z");
    }

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        let a = generate(DemoFormat::Mixed, 42, 100, 3_000);
        let b = generate(DemoFormat::Mixed, 42, 100, 3_000);
        let c = generate(DemoFormat::Mixed, 43, 100, 3_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[tokio::test]
    async fn count_is_respected_and_the_source_ends() {
        use sessiontrail_core::component::{ApiRoutes, Shared};
        use sessiontrail_core::metrics::MetricsRegistry;
        use sessiontrail_core::store::StateStore;
        use sessiontrail_core::Output;

        let dir = tempfile::tempdir().unwrap();
        let registry = MetricsRegistry::new();
        let metrics = registry.component("demo", "demo");
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let cx = SourceContext {
            name: "demo".into(),
            out: Output::new("demo".into(), vec![tx], Arc::clone(&metrics)),
            dropped: Output::unwired("demo.dropped", Arc::clone(&metrics)),
            metrics,
            shared: Shared {
                data_dir: dir.path().into(),
                store: StateStore::new(dir.path()),
                registry,
                api: ApiRoutes::default(),
                shutdown: Default::default(),
            },
        };
        let config: DemoConfig =
            serde_json::from_value(serde_json::json!({"count": 1234, "sessions": 7})).unwrap();
        let task = config.build(cx).await.unwrap();
        let source = tokio::spawn(task);
        let mut received = 0;
        while let Some(batch) = rx.recv().await {
            received += batch.len();
        }
        source.await.unwrap().unwrap();
        assert_eq!(received, 1234);
    }

    #[test]
    fn invalid_options_are_rejected() {
        let bad: DemoConfig = serde_json::from_value(serde_json::json!({"sessions": 0})).unwrap();
        assert!(bad.validate().unwrap_err().contains("sessions"));
        let bad: DemoConfig = serde_json::from_value(serde_json::json!({"rate": -1.0})).unwrap();
        assert!(bad.validate().unwrap_err().contains("rate"));
        assert!(
            serde_json::from_value::<DemoConfig>(serde_json::json!({"format": "vms"})).is_err()
        );
    }
}
