//! Property tests of the webhook sender's inputs: whatever the webhook queue delivers (any body, event-like JSON
//! with ids of any type, receive counts and timestamps that are garbage or absurd, no receipt handle) and however
//! the endpoint answers, a batch is answered without a panic, every message ends delivered, retried or parked
//! (never dropped), only events are POSTed and each POST carries a signature a receiver accepts; and a receiver's
//! check of any signature header never panics and accepts only the real one.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use proptest::collection::vec;
use proptest::prelude::*;
use secrecy::SecretString;
use std::sync::Mutex;
use std::time::Duration;
use webhooks::{Parking, ParkingError, Policy, Secrets, SendError, Sender, deliver, sign, verify};

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn body() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        3 => "[a-z0-9-]{1,20}".prop_map(serde_json::Value::from),
        1 => any::<i64>().prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::Null),
    ];
    prop_oneof![
        3 => (id, text(30)).prop_map(|(id, t)| {
            serde_json::json!({"detail-type": "Object Created", "detail": {"event_id": id, "x": t}}).to_string()
        }),
        1 => Just(r#"{"detail": []}"#.to_owned()),
        1 => text(60),
    ]
}

fn number() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => (0u64..100).prop_map(|n| Some(n.to_string())),
        1 => any::<u64>().prop_map(|n| Some(n.to_string())),
        1 => text(6).prop_map(Some),
        1 => Just(None),
    ]
}

fn message() -> impl Strategy<Value = SqsMessage> {
    ("[a-z0-9]{1,8}", body(), number(), number(), any::<bool>()).prop_map(|(id, body, receives, sent, handle)| {
        let mut message = SqsMessage::default();
        message.receipt_handle = handle.then(|| format!("receipt-{id}"));
        message.message_id = Some(id);
        message.body = Some(body);
        if let Some(receives) = receives {
            message.attributes.insert("ApproximateReceiveCount".into(), receives);
        }
        if let Some(sent) = sent {
            message.attributes.insert("SentTimestamp".into(), sent);
        }
        message
    })
}

/// An endpoint that answers each POST with the next status (200 when there is none left), and keeps what it got.
struct Endpoint {
    answers: Mutex<Vec<u16>>,
    /// Each POST: its body, its signature header, and the status it was answered.
    got: Mutex<Vec<(String, String, u16)>>,
}

impl Sender for Endpoint {
    async fn post(&self, body: &str, headers: &[(&'static str, String)]) -> Result<u16, SendError> {
        let signature = headers.iter().find(|(name, _)| *name == webhooks::SIGNATURE_HEADER).map(|(_, v)| v.clone());
        let status = self.answers.lock().unwrap().pop().unwrap_or(200);
        self.got.lock().unwrap().push((body.to_owned(), signature.unwrap_or_default(), status));
        Ok(status)
    }
}

#[derive(Default)]
struct Queue {
    delayed: Mutex<Vec<String>>,
    parked: Mutex<Vec<String>>,
}

impl Parking for Queue {
    async fn retry_in(&self, receipt: &str, _: Duration) -> Result<(), ParkingError> {
        self.delayed.lock().unwrap().push(receipt.to_owned());
        Ok(())
    }
    async fn park(&self, body: &str, _: &str) -> Result<(), ParkingError> {
        self.parked.lock().unwrap().push(body.to_owned());
        Ok(())
    }
}

fn secrets() -> Secrets {
    Secrets::parse(&SecretString::from("whsec_0123456789abcdef")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_batch_is_answered_and_no_message_is_lost(
        messages in vec(message(), 1..8),
        answers in vec(100u16..600, 0..8),
    ) {
        let now = 1_764_720_000;
        // SQS's message ids are unique within a batch.
        let messages: Vec<SqsMessage> = messages
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                m.message_id = Some(format!("m{i}"));
                m
            })
            .collect();
        let endpoint = Endpoint { answers: Mutex::new(answers), got: Mutex::new(Vec::new()) };
        let queue = Queue::default();
        let mut batch = SqsEvent::default();
        batch.records = messages.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let answer = runtime.block_on(deliver(&endpoint, &queue, &secrets(), &Policy::default(), batch, now));
        let handed_back: Vec<String> =
            answer.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        let got = endpoint.got.lock().unwrap();
        let parked = queue.parked.lock().unwrap();
        // Only events are POSTed, each signed so that a receiver accepts it.
        for (body, signature, _) in got.iter() {
            let event: serde_json::Value = serde_json::from_str(body).unwrap();
            prop_assert!(event["detail"]["event_id"].is_string(), "{body}");
            prop_assert!(verify(&secrets(), signature, body.as_bytes(), now, 300).is_ok());
        }
        // Message by message (posted in the batch's order): taken (2xx) and done; refused and handed back for a
        // retry, or parked; never posted and parked. None is dropped.
        let mut posts = got.iter();
        let mut parked_left: Vec<String> = parked.clone();
        for message in &messages {
            let body = message.body.clone().unwrap();
            let id = message.message_id.clone().unwrap();
            let back = handed_back.contains(&id);
            let mut park = || parked_left.iter().position(|p| *p == body).map(|i| parked_left.remove(i)).is_some();
            let is_event = serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|e| e["detail"]["event_id"].is_string());
            if !is_event {
                prop_assert!(!back && park(), "{body:?}: never an event, parked");
                continue;
            }
            let (posted, _, status) = posts.next().expect("every event is posted");
            prop_assert_eq!(posted, &body);
            if (200..300).contains(status) {
                prop_assert!(!back, "{body:?}: taken, done");
            } else {
                prop_assert!(back != park(), "{body:?}: refused, so retried or parked (status {status})");
            }
        }
        prop_assert!(posts.next().is_none() && parked_left.is_empty(), "nothing else was posted or parked");
        prop_assert!(handed_back.len() <= messages.len());
    }

    #[test]
    fn any_signature_header_is_checked_without_panic_and_only_the_real_one_passes(
        header in prop_oneof![
            text(80),
            "t=-?[0-9]{0,19},v1=[0-9a-f]{0,64}(,v1=[0-9a-f]{0,64})?",
            Just("t=-9223372036854775808,v1=00".to_owned()),
            Just("t=9223372036854775807,v1=00".to_owned()),
        ],
        body in text(40),
        now in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0i64)],
    ) {
        let real = sign(&secrets(), now, body.as_bytes());
        prop_assert_eq!(verify(&secrets(), &header, body.as_bytes(), now, 300).is_ok(), header == real);
        prop_assert!(verify(&secrets(), &real, body.as_bytes(), now, 300).is_ok());
    }
}
