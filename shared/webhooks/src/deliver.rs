//! One batch of the webhook queue: each event signed and POSTed; what the endpoint did not take is tried again
//! later (its message hidden for the backoff, and handed back), and what it has not taken for a day is parked on the
//! dead-letter queue.

use crate::signature::{EVENT_ID_HEADER, SIGNATURE_HEADER, Secrets, sign};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use std::future::Future;
use std::time::Duration;
use thiserror::Error;

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The first wait after a failed delivery; each next one doubles, up to `max`.
    pub first: Duration,
    pub max: Duration,
    /// How long a delivery is tried before it is parked.
    pub give_up_after: Duration,
    /// How long the endpoint has to answer.
    pub timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(30),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(86_400),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What becomes of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    RetryIn(Duration),
    Park,
}

/// After the `receives`th try of a delivery first queued `age` ago, answered `answer`.
pub fn decide(policy: &Policy, receives: u32, age: Duration, answer: &Result<u16, SendError>) -> Decision {
    if matches!(answer, Ok(status) if (200..300).contains(status)) {
        return Decision::Delivered;
    }
    let doublings = receives.saturating_sub(1).min(20);
    let delay = policy.first.saturating_mul(1 << doublings).min(policy.max);
    if age + delay > policy.give_up_after { Decision::Park } else { Decision::RetryIn(delay) }
}

#[derive(Debug, Error)]
pub enum SendError {
    #[error("the endpoint could not be reached or did not answer in time")]
    Unreachable(#[source] reqwest::Error),
    #[error("the HTTP client could not be built")]
    Setup(#[source] std::sync::Arc<reqwest::Error>),
}

/// The webhook queue or its dead-letter queue refused a move.
#[derive(Debug, Error)]
#[error("the webhook queue refused to {what}")]
pub struct ParkingError {
    what: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl ParkingError {
    pub fn new(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { what, source: Box::new(source) }
    }
}

/// Where deliveries go.
pub trait Sender: Send + Sync {
    /// POSTs `body` with `headers`; answers the status.
    fn post(
        &self,
        body: &str,
        headers: &[(&'static str, String)],
    ) -> impl Future<Output = Result<u16, SendError>> + Send;
}

/// The deployment's endpoint, over HTTPS (or HTTP on loopback), no redirects followed.
pub struct HttpSender {
    client: Result<reqwest::Client, std::sync::Arc<reqwest::Error>>,
    url: String,
}

impl HttpSender {
    pub fn new(url: &str, timeout: Duration) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("atlassian-connector-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(std::sync::Arc::new);
        Self { client, url: url.to_owned() }
    }
}

impl Sender for HttpSender {
    async fn post(&self, body: &str, headers: &[(&'static str, String)]) -> Result<u16, SendError> {
        let client = self.client.as_ref().map_err(|e| SendError::Setup(std::sync::Arc::clone(e)))?;
        let mut request = client.post(&self.url).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.map_err(SendError::Unreachable)?;
        Ok(response.status().as_u16())
    }
}

/// What happens to a delivery that is not done.
pub trait Parking: Send + Sync {
    /// Hides the message for `delay` before it comes back (the next try).
    fn retry_in(&self, receipt: &str, delay: Duration) -> impl Future<Output = Result<(), ParkingError>> + Send;
    /// Puts the delivery on the dead-letter queue, with why.
    fn park(&self, body: &str, reason: &str) -> impl Future<Output = Result<(), ParkingError>> + Send;
}

/// The webhook queue and its dead-letter queue.
pub struct SqsParking {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letter_url: String,
}

impl SqsParking {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, dead_letter_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into(), dead_letter_url: dead_letter_url.into() }
    }
}

impl Parking for SqsParking {
    async fn retry_in(&self, receipt: &str, delay: Duration) -> Result<(), ParkingError> {
        let seconds = delay.as_secs().min(43_200) as i32;
        let change = self.client.change_message_visibility().queue_url(&self.queue_url).receipt_handle(receipt);
        change.visibility_timeout(seconds).send().await.map(|_| ()).map_err(|e| ParkingError::new("delay a retry", e))
    }

    async fn park(&self, body: &str, reason: &str) -> Result<(), ParkingError> {
        use aws_sdk_sqs::types::MessageAttributeValue;
        let reason = MessageAttributeValue::builder().data_type("String").string_value(reason).build();
        let send = self.client.send_message().queue_url(&self.dead_letter_url).message_body(body);
        let send = send.message_attributes("reason", reason.map_err(|e| ParkingError::new("park a delivery", e))?);
        send.send().await.map(|_| ()).map_err(|e| ParkingError::new("park a delivery", e))
    }
}

/// Delivers a batch of the webhook queue at `now` (Unix seconds); answers the messages to hand back.
pub async fn deliver<S: Sender, P: Parking>(
    sender: &S,
    parking: &P,
    secrets: &Secrets,
    policy: &Policy,
    event: SqsEvent,
    now: i64,
) -> SqsBatchResponse {
    // All at once: one slow endpoint answer must not hold the batch's others for its ten seconds.
    let done = futures_util::future::join_all(
        event.records.iter().map(|message| deliver_one(sender, parking, secrets, policy, message, now)),
    )
    .await;
    let undone = event.records.iter().zip(done).filter(|(_, done)| !done);
    runtime::sqs::hand_back(undone.map(|(message, _)| message.message_id.clone().unwrap_or_default()))
}

/// Whether the message is done with (delivered or parked).
async fn deliver_one<S: Sender, P: Parking>(
    sender: &S,
    parking: &P,
    secrets: &Secrets,
    policy: &Policy,
    message: &SqsMessage,
    now: i64,
) -> bool {
    let body = message.body.clone().unwrap_or_default();
    let attribute = |name: &str| message.attributes.get(name).and_then(|v| v.parse::<u64>().ok());
    let receives = attribute("ApproximateReceiveCount").unwrap_or(1) as u32;
    let sent_ms = attribute("SentTimestamp").unwrap_or((now.max(0) as u64) * 1000);
    let age = Duration::from_millis(((now.max(0) as u64) * 1000).saturating_sub(sent_ms));
    let event_id = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|e| e["detail"]["event_id"].as_str().map(str::to_owned));
    let Some(event_id) = event_id else {
        // Not an event of the bus: nothing a retry can change.
        tracing::error!(message_id = ?message.message_id, "a webhook message is not an event; parking it");
        return parking.park(&body, "not an event").await.is_ok();
    };
    let headers = [
        ("content-type", "application/json".to_owned()),
        (SIGNATURE_HEADER, sign(secrets, now, body.as_bytes())),
        (EVENT_ID_HEADER, event_id.clone()),
    ];
    let answer = sender.post(&body, &headers).await;
    let decision = decide(policy, receives, age, &answer);
    let status = answer.as_ref().ok().copied();
    match decision {
        Decision::Delivered => {
            tracing::info!(event_id, receives, "webhook delivered");
            true
        }
        Decision::RetryIn(delay) => {
            let error = answer.as_ref().err().map(|e| runtime::error_chain(e));
            tracing::warn!(
                event_id,
                receives,
                ?status,
                ?error,
                delay_s = delay.as_secs(),
                "webhook not taken; retrying"
            );
            if let Some(receipt) = &message.receipt_handle
                && let Err(error) = parking.retry_in(receipt, delay).await
            {
                let error = runtime::error_chain(&error);
                tracing::warn!(event_id, error, "could not delay the webhook's next try; it comes back sooner");
            }
            false
        }
        Decision::Park => {
            tracing::error!(
                event_id,
                receives,
                ?status,
                "webhook not taken for a day; parked on the dead-letter queue"
            );
            let reason = match status {
                Some(status) => format!("the endpoint answered HTTP {status}"),
                None => "the endpoint could not be reached".to_owned(),
            };
            match parking.park(&body, &reason).await {
                Ok(()) => true,
                Err(error) => {
                    let error = runtime::error_chain(&error);
                    tracing::error!(event_id, error, "could not park the webhook; the queue tries it again");
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
