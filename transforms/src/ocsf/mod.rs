//! `type: ocsf` — maps the records of every supported input system to OCSF events (1.8.0 by
//! default, 1.3.0 for Amazon Security Lake), following `shared/ocsf/MAPPINGS.md`; the field
//! by field tables are in `docs/ocsf-mapping.md`.
//!
//! One module per input system owns its mapping (`windows`, `ssm_cloudtrail`, `ssm_stream`,
//! `ssm_transcript`, `wsb`, `parsec`); `detect` recognises the system by the record's shape
//! for `from: auto`; `common` holds the class tables, the base event, time parsing and the
//! clean-up. A mapping reads the fields it needs and records which it used: every other
//! source field is kept under `unmapped`, so nothing is lost in translation. A record that
//! cannot be mapped (unknown shape or event type, missing required field, wrong type,
//! unparseable timestamp) goes to `<name>.dropped` with that reason; the pipeline continues.

pub mod common;
pub mod detect;
pub mod parsec;
pub mod ssm_cloudtrail;
pub mod ssm_stream;
pub mod ssm_transcript;
pub mod windows;
pub mod wsb;

use std::sync::Arc;

use serde::Deserialize;

use std::hash::{Hash, Hasher};

use sessiontrail_core::component::{
    run_parallel_function_transform, ComponentTask, FunctionTransform, ParallelTransform,
    TransformContext, TransformOutput,
};
use sessiontrail_core::json_borrowed::BorrowedObject;
use sessiontrail_core::json_paths::PathSet;
use sessiontrail_core::json_write::JsonObjectWriter;
use sessiontrail_core::{
    BuildError, DeadLetter, DeliveryStatus, Event, JsonObjectText, Labels, Object, TransformConfig,
};

use common::{write_unmapped, MapContext, MapError, OcsfEvent, Taken};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcsfConfig {
    /// Which input system the records come from; `auto` (default) recognises each record by
    /// its shape, so one transform can take a mixed stream.
    #[serde(default)]
    pub from: InputSystem,
    /// OCSF version to emit: `1.8.0` (default) or `1.3.0` (Amazon Security Lake accepts 1.3
    /// and earlier for custom sources).
    #[serde(default)]
    pub version: OcsfVersion,
    /// Keep the original record, serialized, in `raw_data` (default false).
    #[serde(default = "default_keep_raw")]
    pub keep_raw: bool,
    /// Replaces parts of `metadata.product` per input system, e.g.
    /// `product: { parsec: { name: "Parsec", vendor_name: "Unity" } }`.
    #[serde(default)]
    pub product: ProductOverrides,
    /// Threads mapping records at the same time (default: the machine's cores, at most 8).
    /// Outputs keep the input order; one SSM session's records are always mapped by the same
    /// thread, in order (their prompt tracking needs it).
    #[serde(default)]
    pub threads: Option<usize>,
}

/// More threads than this rarely help: the source and the sinks need cores too. Fewer than
/// the cores (leaving one to the source and the sinks) measured slower: a copy waiting for its
/// next batch leaves its core to them (2 cores: 300,000 records in 1.25-1.85 s with 2 copies
/// against 1.55-2.13 s with 1, interleaved runs; Vector also runs one transform task per CPU).
const MAX_DEFAULT_THREADS: usize = 8;

impl OcsfConfig {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_DEFAULT_THREADS)
        })
    }
}

fn default_keep_raw() -> bool {
    false
}

/// The input systems (corpus README sections A-D).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputSystem {
    #[default]
    Auto,
    /// Windows logon/logoff agent: `session_notify`, `session_end_event`, `session_correction`.
    WindowsSession,
    /// CloudTrail records of SSM StartSession / ResumeSession / TerminateSession, bare or in an
    /// EventBridge envelope.
    SsmCloudtrail,
    /// SSM session data streamed to CloudWatch Logs (one record per pty read).
    SsmSessionStream,
    /// SSM session transcripts (S3 `<sessionId>.log`, agent-local files): `message` text.
    SsmTranscript,
    /// Amazon WorkSpaces Secure Browser session logger events.
    Wsb,
    /// Parsec for Teams audit events.
    Parsec,
}

impl InputSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            InputSystem::Auto => "auto",
            InputSystem::WindowsSession => "windows_session",
            InputSystem::SsmCloudtrail => "ssm_cloudtrail",
            InputSystem::SsmSessionStream => "ssm_session_stream",
            InputSystem::SsmTranscript => "ssm_transcript",
            InputSystem::Wsb => "wsb",
            InputSystem::Parsec => "parsec",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum OcsfVersion {
    #[default]
    #[serde(rename = "1.8.0")]
    V1_8_0,
    #[serde(rename = "1.3.0")]
    V1_3_0,
}

impl OcsfVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            OcsfVersion::V1_8_0 => "1.8.0",
            OcsfVersion::V1_3_0 => "1.3.0",
        }
    }
}

/// `metadata.product` replacements, per input system.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductOverrides {
    pub windows_session: Option<ProductOverride>,
    pub ssm_cloudtrail: Option<ProductOverride>,
    pub ssm_session_stream: Option<ProductOverride>,
    pub ssm_transcript: Option<ProductOverride>,
    pub wsb: Option<ProductOverride>,
    pub parsec: Option<ProductOverride>,
}

impl ProductOverrides {
    pub fn get(&self, system: InputSystem) -> Option<&ProductOverride> {
        match system {
            InputSystem::Auto => None,
            InputSystem::WindowsSession => self.windows_session.as_ref(),
            InputSystem::SsmCloudtrail => self.ssm_cloudtrail.as_ref(),
            InputSystem::SsmSessionStream => self.ssm_session_stream.as_ref(),
            InputSystem::SsmTranscript => self.ssm_transcript.as_ref(),
            InputSystem::Wsb => self.wsb.as_ref(),
            InputSystem::Parsec => self.parsec.as_ref(),
        }
    }

    fn all(&self) -> [(&'static str, Option<&ProductOverride>); 6] {
        [
            ("windows_session", self.windows_session.as_ref()),
            ("ssm_cloudtrail", self.ssm_cloudtrail.as_ref()),
            ("ssm_session_stream", self.ssm_session_stream.as_ref()),
            ("ssm_transcript", self.ssm_transcript.as_ref()),
            ("wsb", self.wsb.as_ref()),
            ("parsec", self.parsec.as_ref()),
        ]
    }
}

/// Any subset of the `metadata.product` fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductOverride {
    /// `metadata.product.name`.
    pub name: Option<String>,
    /// `metadata.product.vendor_name` (required by OCSF 1.3.0, so it can be replaced but not
    /// removed).
    pub vendor_name: Option<String>,
    /// `metadata.product.version`.
    pub version: Option<String>,
    /// `metadata.product.uid`.
    pub uid: Option<String>,
}

#[async_trait::async_trait]
impl TransformConfig for OcsfConfig {
    fn validate(&self) -> Result<(), String> {
        if self.threads == Some(0) {
            return Err("threads is 0; give at least 1 (or leave it out: one per core)".into());
        }
        for (system, over) in self.product.all() {
            let Some(o) = over else { continue };
            for (field, value) in [
                ("name", &o.name),
                ("vendor_name", &o.vendor_name),
                ("version", &o.version),
                ("uid", &o.uid),
            ] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(format!(
                        "product.{system}.{field} is empty; give a value or leave the option out"
                    ));
                }
            }
        }
        Ok(())
    }

    async fn build(&self, cx: TransformContext) -> Result<ComponentTask, BuildError> {
        self.validate()?;
        let transform = OcsfTransform::new(Arc::clone(&cx.name), self);
        Ok(run_parallel_function_transform(
            transform,
            self.threads(),
            cx,
        ))
    }
}

/// What a mapping produced from one record.
pub struct Mapped<'a> {
    /// The OCSF events, each with the `unmapped` members the mapping computed itself
    /// (`end_reason`, `reported_duration_s`, a command's `output`...).
    pub events: Vec<(OcsfEvent<'a>, Object)>,
    /// Source members the mapping took; everything else goes to `unmapped`.
    pub taken: Taken<'a>,
}

impl<'a> Mapped<'a> {
    pub fn one(event: OcsfEvent<'a>, extra_unmapped: Object, taken: Taken<'a>) -> Self {
        Mapped {
            events: vec![(event, extra_unmapped)],
            taken,
        }
    }
}

pub struct OcsfTransform {
    name: Arc<str>,
    from: InputSystem,
    keep_raw: bool,
    cx: MapContext,
    prompts: ssm_stream::PromptTracker,
    /// Reads a record's top-level `sessionId` (SSM session stream records) to partition by.
    session_id_path: PathSet,
}

impl OcsfTransform {
    pub fn new(name: Arc<str>, config: &OcsfConfig) -> Self {
        OcsfTransform {
            name,
            from: config.from,
            keep_raw: config.keep_raw,
            cx: MapContext::new(config.version, config.product.clone()),
            prompts: ssm_stream::PromptTracker::default(),
            session_id_path: PathSet::new(["sessionId"]),
        }
    }

    /// Maps one record: the OCSF events, or why it cannot be mapped.
    pub fn map_record<'a>(
        &'a mut self,
        fields: &'a BorrowedObject<'a>,
        labels: &'a Labels,
    ) -> Result<Mapped<'a>, MapError> {
        let system = match self.from {
            InputSystem::Auto => detect::detect(fields, labels)?,
            s => s,
        };
        let cx = &self.cx;
        match system {
            InputSystem::WindowsSession => windows::map(fields, cx),
            InputSystem::SsmCloudtrail => ssm_cloudtrail::map(fields, cx),
            InputSystem::SsmSessionStream => ssm_stream::map(fields, cx, &mut self.prompts),
            InputSystem::SsmTranscript => ssm_transcript::map(fields, labels, cx),
            InputSystem::Wsb => wsb::map(fields, cx),
            InputSystem::Parsec => parsec::map(fields, cx),
            InputSystem::Auto => Err(MapError::missing("(input system)")),
        }
    }

    /// Turns a record into its OCSF events (the leftover source fields under `unmapped`), or
    /// into a dead letter saying why it cannot be mapped.
    // Events travel by value everywhere (in batches); boxing this one would only add an
    // allocation per dead letter.
    #[allow(clippy::result_large_err)]
    pub fn convert(&mut self, event: Event) -> Result<Vec<Event>, Event> {
        self.cx.received_at_ms = event.meta.received_at.timestamp_millis();
        let name = Arc::clone(&self.name);
        // The record is read from its JSON text without building a tree: the mapped members
        // are written from borrowed strings, the leftovers copied as they were written.
        let serialized;
        let text = match event.json_text() {
            Some(text) => text,
            None => {
                serialized = event.to_json_string();
                &serialized
            }
        };
        let texts = match BorrowedObject::parse(text) {
            Ok(record) => self.write_events(&record, &event.meta.labels, text),
            // Unreachable for validated event text; a dead letter rather than a panic.
            Err(e) => Err(MapError {
                reason: "invalid_json",
                message: format!("the record is not a JSON object: {e}"),
            }),
        };
        let texts = match texts {
            Ok(texts) => texts,
            Err(e) => return Err(DeadLetter::from_event(&name, e.reason, e.message, event)),
        };
        if texts.is_empty() {
            // Nothing to map (a blank transcript line, a transcript of only its header): the
            // record is handled, not failed, or its source would re-read it forever.
            event.ack(DeliveryStatus::Filtered);
            return Ok(Vec::new());
        }
        // Every event but the last takes a copy of the metadata, the last the original: every
        // ack token made here must travel on, since a token dropped unresolved counts as a
        // failed delivery for the source.
        let mut meta = Some(event.meta);
        let count = texts.len();
        let mut out = Vec::with_capacity(count);
        for (i, text) in texts.into_iter().enumerate() {
            let m = if i + 1 == count {
                meta.take()
            } else {
                meta.clone()
            };
            if let Some(m) = m {
                out.push(Event::from_json_parts(text, m));
            }
        }
        Ok(out)
    }

    /// The OCSF events of one record as JSON text: the mapped members, then `unmapped` (what
    /// is left of the record once the used fields are taken out) and `raw_data`.
    fn write_events(
        &mut self,
        record: &BorrowedObject<'_>,
        labels: &Labels,
        text: &str,
    ) -> Result<Vec<JsonObjectText>, MapError> {
        let keep_raw = self.keep_raw;
        let mapped = self.map_record(record, labels)?;
        let mut texts = Vec::with_capacity(mapped.events.len());
        for (ocsf, extra) in mapped.events {
            let mut w = JsonObjectWriter::with_capacity(2048);
            ocsf.write(&mut w);
            write_unmapped(&mut w, record, &mapped.taken, &extra);
            if keep_raw {
                w.string("raw_data", text);
            }
            texts.push(w.finish());
        }
        Ok(texts)
    }
}

impl ParallelTransform for OcsfTransform {
    /// SSM session stream records carry state between the reads of one session (whether the
    /// last read ended with a prompt): the session id keeps them together. Every other record
    /// is mapped on its own.
    fn partition_key(&self, event: &Event) -> Option<u64> {
        if !matches!(self.from, InputSystem::Auto | InputSystem::SsmSessionStream) {
            return None;
        }
        let extracted;
        let session = match event.unparsed_json_text() {
            Some(text) => {
                // Most records have no such key at all: a substring test settles them.
                memchr::memmem::find(text.as_bytes(), b"\"sessionId\"")?;
                extracted = self.session_id_path.extract(text);
                extracted.get("sessionId")
            }
            None => event.fields().get("sessionId"),
        };
        let mut h = std::hash::DefaultHasher::new();
        session?.as_str()?.hash(&mut h);
        Some(h.finish())
    }

    fn fork(&self) -> Self {
        OcsfTransform {
            name: Arc::clone(&self.name),
            from: self.from,
            keep_raw: self.keep_raw,
            cx: self.cx.clone(),
            prompts: ssm_stream::PromptTracker::default(),
            session_id_path: self.session_id_path.clone(),
        }
    }
}

impl FunctionTransform for OcsfTransform {
    fn transform(&mut self, event: Event, output: &mut TransformOutput) {
        match self.convert(event) {
            Ok(events) if events.is_empty() => output.count_discarded(),
            Ok(events) => {
                for e in events {
                    output.emit(e);
                }
            }
            Err(dead_letter) => output.dead_letter(dead_letter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiontrail_core::Value;

    fn config(v: serde_json::Value) -> OcsfConfig {
        sessiontrail_core::component::parse_options(v).unwrap()
    }

    fn notify() -> Object {
        serde_json::from_str(
            r#"{"schema_version":"1.2","event_type":"session_notify","event_id":"e1",
            "timestamp":"2025-03-10T09:30:12.2973809+09:00","event_trigger":"logon",
            "session_id":"s1","resource_id":"res-1","user_id":"CORP\\ann","channel_type":"RDP",
            "client":{"ip":null,"host":"PC-1"},"site":"waw"}"#,
        )
        .unwrap()
    }

    /// Runs the default transform on one event that carries the ack token of its own batch.
    fn transform_with_ack(
        fields: Object,
    ) -> (TransformOutput, sessiontrail_core::ack::BatchReceiver) {
        let (notifier, rx) = sessiontrail_core::BatchNotifier::new();
        let mut event = Event::new(fields, Arc::from("in"), 0);
        event.meta.ack = Some(notifier.token());
        drop(notifier);
        let mut t = OcsfTransform::new(Arc::from("norm"), &config(serde_json::json!({})));
        let mut output = TransformOutput::default();
        t.transform(event, &mut output);
        (output, rx)
    }

    /// A blank line of a transcript tailed line by line maps to nothing, and its source
    /// learns it was handled (an unresolved token would count as failed and be re-read).
    #[test]
    fn a_blank_transcript_line_maps_to_no_event_and_is_acknowledged_as_handled() {
        let fields: Object = serde_json::from_value(serde_json::json!({
            "message": "",
            "file": "/var/lib/amazon/ssm/i-0123456789abcdef0/session/orchestration/s-1/Standard_Stream/s-1.log"
        }))
        .unwrap();
        let (output, mut rx) = transform_with_ack(fields);
        assert!(output.out.is_empty() && output.dropped.is_empty());
        let status = rx.try_recv().expect("the batch is resolved");
        assert!(status.is_handled(), "{status:?}");
    }

    /// An input mapped to one or several OCSF events: once the sinks deliver every one of
    /// them, the source's batch is delivered (no token is lost on the way).
    #[test]
    fn delivered_outputs_acknowledge_the_input_as_delivered() {
        let transcript = serde_json::json!({
            "message": "$ whoami\nops\n$ uptime\n 10:00 up 1 day\n",
            "file": "/var/lib/amazon/ssm/i-0123456789abcdef0/session/orchestration/s-1/Standard_Stream/s-1.log"
        });
        for (fields, expected_events) in [
            (notify(), 1),
            (serde_json::from_value(transcript).unwrap(), 2),
        ] {
            let (output, mut rx) = transform_with_ack(fields);
            assert_eq!(output.out.len(), expected_events);
            assert!(rx.try_recv().is_err(), "resolved before delivery");
            for e in output.out {
                e.ack(DeliveryStatus::Delivered);
            }
            let status = rx
                .try_recv()
                .expect("resolved once every output is delivered");
            assert_eq!(status.worst, DeliveryStatus::Delivered, "{status:?}");
        }
    }

    fn run(config: &OcsfConfig, fields: Object) -> Result<Vec<Object>, Object> {
        let mut t = OcsfTransform::new(Arc::from("norm"), config);
        t.convert(Event::new(fields, Arc::from("in"), 0))
            .map(|es| es.into_iter().map(Event::into_fields).collect())
            .map_err(Event::into_fields)
    }

    #[test]
    fn unknown_source_fields_are_kept_under_unmapped_and_nulls_dropped() {
        let out = run(&config(serde_json::json!({})), notify()).unwrap();
        let e = &out[0];
        assert_eq!(e["unmapped"]["site"], "waw");
        assert!(e.get("src_endpoint").is_some_and(|s| s.get("ip").is_none()));
        assert_eq!(e["session"]["uid"], "s1");
        assert_eq!(e["time"], 1_741_566_612_297_i64);
    }

    #[test]
    fn product_override_replaces_only_the_given_fields() {
        let c = config(serde_json::json!({
            "product": {"windows_session": {"name": "Acme logon agent", "version": "2.1"}}
        }));
        let e = &run(&c, notify()).unwrap()[0];
        assert_eq!(
            e["metadata"]["product"],
            serde_json::json!({"name": "Acme logon agent", "vendor_name": "Microsoft", "version": "2.1"})
        );
    }

    #[test]
    fn keep_raw_puts_the_original_record_in_raw_data() {
        let c = config(serde_json::json!({"keep_raw": true, "version": "1.3.0"}));
        let e = &run(&c, notify()).unwrap()[0];
        let raw: Object = serde_json::from_str(e["raw_data"].as_str().unwrap()).unwrap();
        assert_eq!(raw, notify());
        assert_eq!(e["metadata"]["version"], "1.3.0");
    }

    #[test]
    fn a_forced_input_system_refuses_other_shapes() {
        let c = config(serde_json::json!({"from": "parsec"}));
        let dl = run(&c, notify()).unwrap_err();
        assert_eq!(dl["reason"], "missing_field");
        assert_eq!(dl["event"], Value::Object(notify()));
    }

    #[test]
    fn bad_options_are_rejected() {
        let parse = |v| sessiontrail_core::component::parse_options::<OcsfConfig>(v);
        assert!(parse(serde_json::json!({"version": "1.4.0"})).is_err());
        assert!(parse(serde_json::json!({"from": "syslog"})).is_err());
        assert!(parse(serde_json::json!({"product": {"windows": {"name": "x"}}})).is_err());
        let empty = config(serde_json::json!({"product": {"wsb": {"name": " "}}}));
        assert!(empty.validate().is_err());
        let no_threads = config(serde_json::json!({"threads": 0}));
        assert!(no_threads.validate().is_err());
        assert!(parse(serde_json::json!({"threads": -1})).is_err());
        assert_eq!(config(serde_json::json!({"threads": 3})).threads(), 3);
        assert!(config(serde_json::json!({})).threads() >= 1);
    }

    /// Only records that carry state between them (an SSM session's stream reads) are tied
    /// to one copy, by their session id; the others may go anywhere.
    #[test]
    fn stream_records_of_one_session_share_a_partition_key() {
        use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};
        let t = OcsfTransform::new(Arc::from("norm"), &config(serde_json::json!({})));
        let key = |text: &str| match decode_record(text.as_bytes(), DEFAULT_MAX_RECORD_BYTES) {
            Ok(Decoded::Record(r)) => t.partition_key(&Event::from_json(r, Arc::from("in"), 0)),
            _ => panic!("valid test record"),
        };
        let a1 = key(r#"{"sessionId":"s-a","sessionData":["$ ls"],"eventTime":"x"}"#);
        let a2 = key(r#"{"eventTime":"y","sessionData":[],"sessionId":"s-a"}"#);
        let b = key(r#"{"sessionId":"s-b","sessionData":["$ ls"]}"#);
        assert!(a1.is_some());
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        // A session id nested deeper (CloudTrail's responseElements) ties nothing.
        assert_eq!(
            key(r#"{"detail":{"responseElements":{"sessionId":"s-a"}}}"#),
            None
        );
        assert_eq!(
            key(r#"{"event_type":"session_notify","session_id":"s-a"}"#),
            None
        );
        // Parsed events are keyed the same way.
        let parsed = t.partition_key(&Event::new(
            serde_json::from_str(r#"{"sessionId":"s-a"}"#).unwrap(),
            Arc::from("in"),
            0,
        ));
        assert_eq!(parsed, a1);
        let windows_only = OcsfTransform::new(
            Arc::from("n"),
            &config(serde_json::json!({"from": "windows_session"})),
        );
        assert_eq!(
            windows_only.partition_key(&Event::new(
                serde_json::from_str(r#"{"sessionId":"s-a"}"#).unwrap(),
                Arc::from("in"),
                0,
            )),
            None
        );
    }
}
