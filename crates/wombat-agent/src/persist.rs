//! The backend writes of an answered run: the agent message (and the plan
//! document of a kickoff), keyed so that a request stores at most one.

use http::StatusCode;
use serde_json::{Value, json};
use wombat_core::controlplane::{ActorType, NewDocument, NewMessage};

use crate::ApiError;
use crate::deadline::Deadline;
use crate::host::Host;
use crate::run::{Answer, RunInfo, backend, backend_error};

const DEFAULT_PLAN_TITLE: &str = "Plan";

/// The code of a send whose notification already has a stored reply.
pub const NOTIFICATION_ALREADY_ANSWERED: &str = "notification_already_answered";

/// The idempotency key of a request's reply message.
pub(crate) fn message_key(request_key: &str) -> String {
    // Not `format!`: once per send, and the formatting machinery costs
    // more than the copy.
    let mut key = String::with_capacity(4 + request_key.len());
    key.push_str("msg:");
    key.push_str(request_key);
    key
}

/// The key a request's writes are derived from: random per request, except
/// for a dispatched notification (`metadata.notification_id`), whose reply
/// is keyed by the notification id so that a redelivery (acknowledgement
/// lost) cannot store a second message.
pub(crate) fn request_key<H: Host>(p: &RunInfo<H>) -> String {
    notification_id(p).map_or_else(random_key, |id| {
        wombat_controlplane::notification_message_key(&id)
    })
}

/// A random v4 UUID as 32 lowercase hex digits (encoded in place, not
/// through `Display`).
fn random_key() -> String {
    let mut text = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut text)
        .to_owned()
}

/// `metadata.notification_id` (a string or a number), which the dispatcher
/// sends with every notification it delivers.
fn notification_id<H: Host>(p: &RunInfo<H>) -> Option<String> {
    match p.req.metadata.as_ref()?.get("notification_id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Writes the reply (and the plan document) to the backend.
async fn persist<H: Host>(
    host: &H,
    p: &RunInfo<H>,
    task_id: &str,
    a: &Answer,
    request_key: &str,
) -> Result<(String, Option<String>), ApiError> {
    let backend = backend(host)?;
    let agent = backend.agent(p.key.user_id(), p.key.role());
    let message = agent
        .post_message(NewMessage {
            task_id: task_id.to_owned(),
            content: a.text.clone(),
            actor_type: Some(ActorType::Agent),
            actor_id: None,
            agent_role: Some(p.key.role().to_owned()),
            attachments: Some(a.attachment()),
            idempotency_key: Some(message_key(request_key)),
        })
        .await
        .map_err(|e| match (&e, notification_id(p)) {
            // The reply key of a notification is derived from its id, so a
            // 409 means a reply to it is already stored: a redelivery after
            // a lost acknowledgement, answered differently by a
            // non-deterministic model. Not a backend failure: the dispatcher
            // takes it as delivered instead of retrying (and paying) again.
            (wombat_controlplane::Error::Status { status: 409, .. }, Some(id)) => ApiError::new(
                StatusCode::CONFLICT,
                NOTIFICATION_ALREADY_ANSWERED,
                format!(
                    "a reply to notification {} is already stored; this one was not",
                    json!(id)
                ),
            ),
            _ => backend_error(host, "posting the message", &e),
        })?;
    let document_id = if p.opts.kickoff_plan {
        let doc = agent
            .post_document(NewDocument {
                title: p
                    .opts
                    .plan_title
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PLAN_TITLE.to_owned()),
                content: a.text.clone(),
                doc_type: Some("plan".to_owned()),
                task_id: task_id.to_owned(),
                idempotency_key: Some(format!("doc:{request_key}")),
            })
            .await
            .map_err(|e| backend_error(host, "posting the plan document", &e))?;
        Some(doc.id)
    } else {
        None
    };
    Ok((message.id, document_id))
}

/// Why a backend write did not happen.
#[derive(Debug)]
pub enum WriteFailure {
    /// The backend refused or failed (after the client's retries).
    Failed(ApiError),
    /// The request deadline (plus the grace) passed first; the write may
    /// still land.
    TimedOut,
}

impl WriteFailure {
    /// What to tell the caller.
    pub fn message(&self) -> String {
        match self {
            Self::Failed(e) => e.message.clone(),
            Self::TimedOut => {
                "backend write did not finish within the request deadline; it may still be stored"
                    .to_owned()
            }
        }
    }
}

/// Writes an answered reply under the request deadline. The idempotency key
/// is derived from `request_key`, made once per request: the control-plane
/// client's own retries resend the same body, so at most one message (and
/// one plan document) is stored per request.
pub(crate) async fn persist_within<H: Host>(
    host: &H,
    p: &RunInfo<H>,
    task_id: &str,
    a: &Answer,
    request_key: &str,
    deadline: &mut Deadline<'_>,
) -> Result<(String, Option<String>), WriteFailure> {
    match deadline
        .write(std::pin::pin!(persist(host, p, task_id, a, request_key)))
        .await
    {
        Some(Ok(ids)) => Ok(ids),
        Some(Err(e)) => Err(WriteFailure::Failed(e)),
        None => {
            host.backend_failed();
            Err(WriteFailure::TimedOut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_hex_and_messages_prefixed() {
        let (a, b) = (random_key(), random_key());
        assert_ne!(a, b);
        for key in [&a, &b] {
            assert_eq!(key.len(), 32, "{key}");
            assert!(
                key.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{key}"
            );
            assert!(uuid::Uuid::parse_str(key).is_ok_and(|u| u.get_version_num() == 4));
        }
        assert_eq!(message_key(&a), format!("msg:{a}"));
    }
}
