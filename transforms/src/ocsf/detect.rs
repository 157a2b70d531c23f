//! `from: auto`: recognises a record's input system by its shape (the fields each system
//! always writes), so one `ocsf` transform can take a mixed stream.

use sessiontrail_core::json_borrowed::{BorrowedObject, BorrowedValue};
use sessiontrail_core::Labels;

use super::common::MapError;
use super::InputSystem;

/// The system a record comes from; a record no system claims is `missing_field` (it lacks the
/// fields that would identify it).
pub fn detect(record: &BorrowedObject<'_>, labels: &Labels) -> Result<InputSystem, MapError> {
    let has = |k: &str| record.contains_key(k);
    // Windows agent: every record type has `event_type` (session_notify, ...).
    if has("event_type") {
        return Ok(InputSystem::WindowsSession);
    }
    // CloudTrail: an EventBridge envelope, or a bare CloudTrail record.
    if has("detail-type")
        || (has("detail") && has("source"))
        || (has("eventName") && has("eventSource"))
    {
        return Ok(InputSystem::SsmCloudtrail);
    }
    // SSM agent streaming record.
    if has("sessionData") || (has("eventVersion") && has("sessionId") && has("target")) {
        return Ok(InputSystem::SsmSessionStream);
    }
    // WorkSpaces Secure Browser: `session_detail`, or the logger's category / product name.
    if has("session_detail")
        || record.get("category_name").and_then(BorrowedValue::as_str) == Some(WSB_CATEGORY)
        || record
            .get("metadata")
            .and_then(|m| m.get("product"))
            .and_then(|p| p.get("name"))
            .and_then(BorrowedValue::as_str)
            == Some(WSB_CATEGORY)
    {
        return Ok(InputSystem::Wsb);
    }
    // Parsec audit event: `team_id`, or the `id` + `timestamp` + `data` trio.
    if has("team_id") || (has("id") && has("timestamp") && has("data")) {
        return Ok(InputSystem::Parsec);
    }
    // Transcript text with something that names its session.
    if record.get("message").is_some_and(BorrowedValue::is_string)
        && (has("sessionId")
            || has("session_id")
            || super::ssm_transcript::session_from_location(record, labels).is_some())
    {
        return Ok(InputSystem::SsmTranscript);
    }
    Err(MapError {
        reason: "missing_field",
        message: "no field identifies the input system (expected event_type, detail-type, \
                  sessionData, session_detail, team_id, or a transcript message with its session)"
            .into(),
    })
}

/// The category and product name the WSB session logger writes.
const WSB_CATEGORY: &str = "WorkSpacesSecureBrowser";

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> BorrowedObject<'_> {
        BorrowedObject::parse(s).unwrap()
    }

    #[test]
    fn each_system_is_recognised_by_its_shape() {
        let cases = [
            (
                r#"{"event_type":"session_notify"}"#,
                InputSystem::WindowsSession,
            ),
            (
                r#"{"detail-type":"AWS API Call via CloudTrail","detail":{}}"#,
                InputSystem::SsmCloudtrail,
            ),
            (
                r#"{"eventName":"StartSession","eventSource":"ssm.amazonaws.com"}"#,
                InputSystem::SsmCloudtrail,
            ),
            (
                r#"{"eventVersion":"1.0","sessionId":"s","sessionData":[]}"#,
                InputSystem::SsmSessionStream,
            ),
            (
                r#"{"session_detail":{},"activity_name":"TabOpen"}"#,
                InputSystem::Wsb,
            ),
            (
                r#"{"category_name":"WorkSpacesSecureBrowser"}"#,
                InputSystem::Wsb,
            ),
            (
                r#"{"id":"x","timestamp":"t","data":{}}"#,
                InputSystem::Parsec,
            ),
            (
                r#"{"message":"$ ls","sessionId":"s"}"#,
                InputSystem::SsmTranscript,
            ),
        ];
        for (rec, want) in cases {
            assert_eq!(
                detect(&obj(rec), &Labels::default()).unwrap(),
                want,
                "{rec}"
            );
        }
    }

    #[test]
    fn transcript_lines_are_recognised_by_their_file_label() {
        let labels = Labels::shared(std::sync::Arc::new(serde_json::from_str(
            r#"{"file":"/var/lib/amazon/ssm/i-0a1b2c3d4e5f60718/session/orchestration/s-1/Standard_Stream/s-1.log"}"#,
        ).unwrap()));
        assert_eq!(
            detect(&obj(r#"{"message":"$ ls"}"#), &labels).unwrap(),
            InputSystem::SsmTranscript
        );
    }

    #[test]
    fn an_unrecognisable_record_is_missing_field() {
        assert_eq!(
            detect(&obj("{}"), &Labels::default()).unwrap_err().reason,
            "missing_field"
        );
        assert_eq!(
            detect(&obj(r#"{"message":"hello"}"#), &Labels::default())
                .unwrap_err()
                .reason,
            "missing_field"
        );
    }
}
