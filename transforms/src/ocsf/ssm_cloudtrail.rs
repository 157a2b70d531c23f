//! CloudTrail records of SSM Session Manager calls (StartSession / ResumeSession /
//! TerminateSession), bare or inside an EventBridge "AWS API Call via CloudTrail" envelope
//! -> API Activity (6003) with the `cloud` profile.
//!
//! Start is 1 Create (a session is created), Resume 3 Update, Terminate 4 Delete; any other
//! API name gets the activity its verb implies (Get/Describe/List: Read...), so CloudTrail
//! records of other SSM calls map too. A call CloudTrail reports as failed (`errorCode`) has
//! `status_id` 2 Failure. API Activity has no top-level `session`: the session id is
//! `actor.session.uid` (and a `resources` entry).

use sessiontrail_core::json_borrowed::{BorrowedObject, BorrowedValue};
use sessiontrail_core::{Object, Value};

use super::common::{
    is_ip, put, put_opt, put_user_name, set_status, Activity, Class, MapContext, MapError, Reader,
    ACTOR_USER, STATUS_FAILURE, STATUS_SUCCESS,
};
use super::{InputSystem, Mapped};

const SYSTEM: InputSystem = InputSystem::SsmCloudtrail;

pub fn map<'a>(src: &'a BorrowedObject<'a>, cx: &'a MapContext) -> Result<Mapped<'a>, MapError> {
    // EventBridge envelope (`detail` holds the CloudTrail record) or a bare record.
    let enveloped = src.contains_key("detail-type") || src.contains_key("detail");
    let mut r = if enveloped {
        match src.get("detail") {
            None | Some(BorrowedValue::Null) => return Err(MapError::missing("detail")),
            Some(detail) => Reader::nested(detail, "detail")
                .ok_or_else(|| MapError::wrong_type("detail", "an object", detail))?,
        }
    } else {
        Reader::new(src)
    };
    let event_name = r.req_str("eventName")?;
    let (time_ms, original_time) = r.req_time("eventTime", false)?;
    let source_ip = r.req_str("sourceIPAddress")?;
    r.req_obj("userIdentity")?;

    let activity = activity_of(event_name);
    let mut e = cx.event(SYSTEM, Class::ApiActivity, activity, time_ms);
    super::common::add_profile(&mut e, "cloud");
    put(&mut e, "metadata.original_time", original_time);
    put_opt(&mut e, "metadata.uid", r.str("eventID"));
    put(&mut e, "metadata.event_code", event_name);
    put(&mut e, "metadata.log_provider", "AWS CloudTrail");
    put_opt(&mut e, "metadata.log_version", r.str("eventVersion"));

    put(&mut e, "api.operation", event_name);
    put_opt(&mut e, "api.service.name", r.str("eventSource"));
    put_opt(&mut e, "api.request.uid", r.str("requestID"));

    put(&mut e, "cloud.provider", "AWS");
    put_opt(&mut e, "cloud.region", r.str("awsRegion"));
    put_opt(&mut e, "cloud.account.uid", r.str("recipientAccountId"));

    // The caller: CloudTrail's userIdentity.
    let arn = r.str("userIdentity.arn");
    let user_name = r
        .str("userIdentity.userName")
        .or_else(|| arn.and_then(principal_name));
    let principal = r.str("userIdentity.principalId");
    let user_type = r.str("userIdentity.type");
    let key_id = r.str("userIdentity.accessKeyId");
    let account = r.str("userIdentity.accountId");
    let no_user = user_name.is_none()
        && arn.is_none()
        && principal.is_none()
        && user_type.is_none()
        && key_id.is_none();
    if no_user && account.is_none() {
        return Err(MapError::missing(if enveloped {
            "detail.userIdentity.arn"
        } else {
            "userIdentity.arn"
        }));
    }
    if let Some(n) = user_name {
        put_user_name(&mut e, ACTOR_USER, n);
    }
    put_opt(&mut e, ACTOR_USER.uid, arn);
    put_opt(&mut e, "actor.user.uid_alt", principal);
    put_opt(&mut e, "actor.user.type", user_type);
    put_opt(&mut e, "actor.user.credential_uid", key_id);
    if let Some(acct) = account {
        put(&mut e, "actor.user.account.uid", acct);
        put(&mut e, "actor.user.account.type_id", 10);
        put(&mut e, "actor.user.account.type", "AWS Account");
    }
    put_opt(
        &mut e,
        "actor.session.issuer",
        r.str("userIdentity.sessionContext.sessionIssuer.arn"),
    );

    if is_ip(source_ip) {
        put(&mut e, "src_endpoint.ip", source_ip);
    } else {
        // An AWS service or "AWS Internal" acting on the caller's behalf.
        put(&mut e, "src_endpoint.svc_name", source_ip);
    }
    put_opt(&mut e, "http_request.user_agent", r.str("userAgent"));

    // The session and its target.
    let session_id = r
        .str("responseElements.sessionId")
        .or_else(|| r.str("requestParameters.sessionId"));
    let target = r.str("requestParameters.target");
    let mut resources = Vec::new();
    if let Some(t) = target {
        put(&mut e, "dst_endpoint.instance_uid", t);
        resources.push(serde_json::json!({"uid": t, "type": instance_type(t)}));
    }
    if let Some(sid) = session_id {
        put(&mut e, "actor.session.uid", sid);
        resources.push(serde_json::json!({"uid": sid, "type": "AWS::SSM::Session"}));
    }
    if let Some(doc) = r.str("requestParameters.documentName") {
        resources.push(serde_json::json!({"name": doc, "type": "AWS::SSM::Document"}));
    }
    if !resources.is_empty() {
        put(&mut e, "resources", Value::Array(resources));
    }

    match r.str("errorCode") {
        Some(code) => {
            set_status(&mut e, STATUS_FAILURE);
            put(&mut e, "status_code", code);
            put(&mut e, "api.response.error", code);
            if let Some(m) = r.str("errorMessage") {
                put(&mut e, "status_detail", m);
                put(&mut e, "api.response.error_message", m);
            }
        }
        None => set_status(&mut e, STATUS_SUCCESS),
    }
    let message = match (event_name, session_id, target) {
        ("StartSession", Some(s), Some(t)) => format!("Session {s} started on {t}"),
        ("StartSession", None, Some(t)) => format!("Session start on {t} failed"),
        ("ResumeSession", Some(s), _) => format!("Session {s} resumed"),
        ("TerminateSession", Some(s), _) => format!("Session {s} terminated"),
        (name, _, _) => format!("{name} called"),
    };
    put(&mut e, "message", message);
    Ok(Mapped::one(e, Object::new(), r.taken()))
}

fn activity_of(event_name: &str) -> Activity<'static> {
    match event_name {
        "StartSession" => Activity::Id(1),
        "ResumeSession" => Activity::Id(3),
        "TerminateSession" => Activity::Id(4),
        n if ["Create", "Start", "Put", "Register", "Add", "Send"]
            .iter()
            .any(|p| n.starts_with(p)) =>
        {
            Activity::Id(1)
        }
        n if ["Get", "Describe", "List"].iter().any(|p| n.starts_with(p)) => Activity::Id(2),
        n if ["Update", "Modify", "Resume", "Label"]
            .iter()
            .any(|p| n.starts_with(p)) =>
        {
            Activity::Id(3)
        }
        n if ["Delete", "Terminate", "Remove", "Deregister", "Cancel"]
            .iter()
            .any(|p| n.starts_with(p)) =>
        {
            Activity::Id(4)
        }
        _ => Activity::Other("Other"),
    }
}

/// SSM targets: EC2 instances (`i-`) and hybrid managed nodes (`mi-`).
fn instance_type(target: &str) -> &'static str {
    if target.starts_with("mi-") {
        "AWS::SSM::ManagedInstance"
    } else if target.starts_with("i-") {
        "AWS::EC2::Instance"
    } else {
        "AWS::SSM::Target"
    }
}

/// The person behind an ARN: the session name of an assumed role
/// (`arn:aws:sts::1:assumed-role/Role/piotr.nowak@example.com`) or the IAM user name.
pub fn principal_name(arn: &str) -> Option<&str> {
    if !arn.starts_with("arn:") {
        return None;
    }
    let resource = arn.splitn(6, ':').nth(5)?;
    resource.rsplit('/').next().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_names_come_from_the_arn_tail() {
        assert_eq!(
            principal_name(
                "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_X/piotr.nowak@example.com"
            ),
            Some("piotr.nowak@example.com")
        );
        assert_eq!(
            principal_name("arn:aws:iam::111122223333:user/ops-anna"),
            Some("ops-anna")
        );
        assert_eq!(principal_name("not-an-arn"), None);
    }

    #[test]
    fn session_calls_get_create_update_delete() {
        assert!(matches!(activity_of("StartSession"), Activity::Id(1)));
        assert!(matches!(activity_of("ResumeSession"), Activity::Id(3)));
        assert!(matches!(activity_of("TerminateSession"), Activity::Id(4)));
        assert!(matches!(activity_of("DescribeSessions"), Activity::Id(2)));
    }
}
