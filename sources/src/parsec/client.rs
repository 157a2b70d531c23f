//! One page request to `GET /v1/teams/{team}/events`, with the retry rules: 429 and 5xx wait
//! (honouring `Retry-After`) and try the same cursor again; network errors and timeouts too;
//! a body that does not parse is fetched again a bounded number of times; 401 / 403 stop the
//! source. The API key only ever goes into the `Authorization` header, never into a message.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use sessiontrail_core::Value;

use crate::pull::{sleep_or_shutdown, Backoff};

/// A page body is fetched again this many times in total before it is dead-lettered
/// (corpus `parsec/api_mock/malformed`: a truncated body is served twice).
pub const MAX_BODY_ATTEMPTS: u32 = 2;
/// Retries of one page on 429 / 5xx / network errors before the pass is given up until the
/// next poll (the cursor stays, nothing is skipped).
pub const MAX_TRANSIENT_ATTEMPTS: u32 = 10;
/// Longest wait honoured from a `Retry-After` header; longer values are capped so a broken
/// header cannot park the source for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Bytes of an undecodable body kept in its dead letter.
const BODY_PREFIX: usize = 1024;

/// Where a page request starts.
#[derive(Debug, Clone, PartialEq)]
pub enum PagePosition {
    /// No cursor yet: from `start_at` (or the API's beginning).
    Start,
    /// The API's inclusive `cursor` (a `next_cursor` it returned).
    Cursor(String),
    /// Exclusive `after`: resume behind the last event already handled.
    After(String),
}

pub struct PageRequest<'a> {
    pub url: &'a str,
    pub api_key: &'a str,
    pub base_query: &'a [(String, String)],
    pub position: &'a PagePosition,
    pub timeout: Duration,
}

/// A decoded page.
pub struct Page {
    pub data: Vec<Value>,
    pub next_cursor: Option<String>,
    /// Size of the body as received.
    pub bytes: usize,
}

pub enum FetchOutcome {
    Page(Page),
    /// The body never parsed: dead-letter it and stop this pass.
    Undecodable {
        reason: &'static str,
        message: String,
        body_prefix: Vec<u8>,
        body_len: usize,
    },
    /// Retries exhausted (or shutdown): stop this pass, the cursor stays.
    GaveUp(String),
    /// The API refused us for a reason retrying cannot fix.
    Fatal(String),
}

pub async fn fetch_page(
    client: &reqwest::Client,
    req: &PageRequest<'_>,
    shutdown: &CancellationToken,
) -> FetchOutcome {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    let mut body_failures = 0u32;
    let mut query: Vec<(String, String)> = req.base_query.to_vec();
    match req.position {
        PagePosition::Start => {}
        PagePosition::Cursor(c) => query.push(("cursor".into(), c.clone())),
        PagePosition::After(id) => query.push(("after".into(), id.clone())),
    }
    loop {
        if shutdown.is_cancelled() {
            return FetchOutcome::GaveUp("shutting down".into());
        }
        if backoff.attempts() >= MAX_TRANSIENT_ATTEMPTS {
            return FetchOutcome::GaveUp(format!(
                "the Parsec API did not answer successfully after {MAX_TRANSIENT_ATTEMPTS} attempts; retrying at the next poll"
            ));
        }
        let sent = client
            .get(req.url)
            .query(&query)
            .bearer_auth(req.api_key)
            .timeout(req.timeout)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %without_url(&e), ?delay, "Parsec request failed; retrying the same cursor");
                if !sleep_or_shutdown(delay, shutdown).await {
                    return FetchOutcome::GaveUp("shutting down".into());
                }
                continue;
            }
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return FetchOutcome::Fatal(format!(
                "the Parsec API rejected the API key (HTTP {}); check `api_key` (e.g. the PARSEC_API_KEY variable) and that the key belongs to team `team_id`",
                status.as_u16()
            ));
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let computed = backoff.next_delay();
            let delay = retry_after(response.headers()).unwrap_or(computed);
            tracing::warn!(
                status = status.as_u16(),
                ?delay,
                "Parsec API asked us to slow down or failed; retrying the same cursor"
            );
            if !sleep_or_shutdown(delay, shutdown).await {
                return FetchOutcome::GaveUp("shutting down".into());
            }
            continue;
        }
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return FetchOutcome::Fatal(format!(
                "the Parsec API answered HTTP {} ({shown}); check `team_id`, `event_names`, `user_id` and `start_at`",
                status.as_u16()
            ));
        }
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %without_url(&e), ?delay, "reading a Parsec response failed; retrying the same cursor");
                if !sleep_or_shutdown(delay, shutdown).await {
                    return FetchOutcome::GaveUp("shutting down".into());
                }
                continue;
            }
        };
        match decode_page(&body) {
            Ok(page) => return FetchOutcome::Page(page),
            Err((reason, message)) => {
                body_failures += 1;
                if body_failures >= MAX_BODY_ATTEMPTS {
                    return FetchOutcome::Undecodable {
                        reason,
                        message: format!(
                            "{message} (same result on {body_failures} attempts; paging stopped until the next poll)"
                        ),
                        body_prefix: body[..body.len().min(BODY_PREFIX)].to_vec(),
                        body_len: body.len(),
                    };
                }
                let delay = backoff.next_delay();
                tracing::warn!(%message, ?delay, "Parsec page did not decode (truncated?); fetching it again");
                if !sleep_or_shutdown(delay, shutdown).await {
                    return FetchOutcome::GaveUp("shutting down".into());
                }
            }
        }
    }
}

/// reqwest errors print the URL; ours carries no secret, but keep messages short and stable.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else {
        "request error"
    };
    let mut msg = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

fn decode_page(body: &[u8]) -> Result<Page, (&'static str, String)> {
    let trimmed = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = serde_json::from_slice(trimmed)
        .map_err(|e| ("invalid_json", format!("page body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(("not_an_object", "page body is not a JSON object".into()));
    };
    let data = match obj.remove("data") {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => {
            return Err(("missing_field", "page body has no \"data\" array".into()))
        }
        Some(_) => return Err(("wrong_type", "page \"data\" is not an array".into())),
    };
    let next_cursor = match obj.remove("next_cursor") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::String(_)) | Some(Value::Null) | None => None,
        Some(_) => return Err(("wrong_type", "page \"next_cursor\" is not a string".into())),
    };
    Ok(Page {
        data,
        next_cursor,
        bytes: body.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_caps() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn pages_decode_and_truncated_bodies_do_not() {
        let p = decode_page(br#"{"data":[{"id":"a"}],"next_cursor":null}"#)
            .ok()
            .unwrap();
        assert_eq!(p.data.len(), 1);
        assert_eq!(p.next_cursor, None);
        let p = decode_page(br#"{"data":[],"next_cursor":"x"}"#)
            .ok()
            .unwrap();
        assert_eq!(p.next_cursor.as_deref(), Some("x"));
        assert_eq!(
            decode_page(br#"{"data":[{"id":"#).err().unwrap().0,
            "invalid_json"
        );
        assert_eq!(
            decode_page(br#"{"next_cursor":null}"#).err().unwrap().0,
            "missing_field"
        );
    }
}
