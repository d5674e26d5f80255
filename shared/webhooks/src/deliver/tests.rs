use super::*;
use crate::signature::verify;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Mutex;

#[test]
fn retries_double_up_to_an_hour_and_stop_after_a_day() {
    let policy = Policy::default();
    let failed: Result<u16, SendError> = Ok(500);
    let minutes = |m: u64| Duration::from_secs(m * 60);
    assert_eq!(decide(&policy, 1, Duration::ZERO, &Ok(204)), Decision::Delivered);
    assert_eq!(decide(&policy, 1, Duration::ZERO, &failed), Decision::RetryIn(Duration::from_secs(30)));
    assert_eq!(decide(&policy, 2, minutes(1), &failed), Decision::RetryIn(Duration::from_secs(60)));
    assert_eq!(decide(&policy, 9, minutes(200), &Ok(404)), Decision::RetryIn(Duration::from_secs(3600)), "capped");
    assert_eq!(decide(&policy, 40, minutes(60 * 23), &Ok(503)), Decision::RetryIn(Duration::from_secs(3600)));
    assert_eq!(decide(&policy, 41, minutes(60 * 23 + 1), &Ok(503)), Decision::Park, "past a day");
    // A day of tries: how many before parking.
    let (mut age, mut tries) = (Duration::ZERO, 1u32);
    while let Decision::RetryIn(delay) = decide(&policy, tries, age, &failed) {
        age += delay;
        tries += 1;
    }
    assert!((28..=34).contains(&tries), "{tries} tries in a day");
}

#[derive(Default)]
struct Endpoint {
    statuses: Mutex<Vec<u16>>,
    received: Mutex<Vec<(String, HashMap<&'static str, String>)>>,
}

impl Sender for Endpoint {
    async fn post(&self, body: &str, headers: &[(&'static str, String)]) -> Result<u16, SendError> {
        self.received.lock().unwrap().push((body.to_owned(), headers.iter().cloned().collect()));
        Ok(self.statuses.lock().unwrap().pop().unwrap_or(200))
    }
}

#[derive(Default)]
struct Queue {
    delayed: Mutex<Vec<(String, Duration)>>,
    parked: Mutex<Vec<(String, String)>>,
}

impl Parking for Queue {
    async fn retry_in(&self, receipt: &str, delay: Duration) -> Result<(), ParkingError> {
        self.delayed.lock().unwrap().push((receipt.to_owned(), delay));
        Ok(())
    }
    async fn park(&self, body: &str, reason: &str) -> Result<(), ParkingError> {
        self.parked.lock().unwrap().push((body.to_owned(), reason.to_owned()));
        Ok(())
    }
}

fn message(id: &str, body: &str, receives: u32, sent_s: i64) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.into());
    message.receipt_handle = Some(format!("receipt-{id}"));
    message.body = Some(body.into());
    message.attributes.insert("ApproximateReceiveCount".into(), receives.to_string());
    message.attributes.insert("SentTimestamp".into(), (sent_s * 1000).to_string());
    message
}

#[tokio::test]
async fn a_batch_is_signed_delivered_retried_and_parked_message_by_message() {
    let secrets = Secrets::parse(&SecretString::from("whsec_0123456789abcdef")).unwrap();
    let now = 1_764_720_000;
    let event = |id: &str| format!(r#"{{"detail-type": "Object Created", "detail": {{"event_id": "{id}"}}}}"#);
    let mut batch = SqsEvent::default();
    batch.records = vec![
        message("m1", &event("e1"), 1, now - 1),       // taken
        message("m2", &event("e2"), 3, now - 600),     // refused: retried in 2 minutes
        message("m3", &event("e3"), 30, now - 90_000), // refused for more than a day: parked
        message("m4", "not json", 1, now),             // never an event: parked at once
    ];
    // Answers in reverse order of the posts: m3's, m2's, m1's.
    let endpoint = Endpoint { statuses: Mutex::new(vec![500, 502, 204]), ..Endpoint::default() };
    let queue = Queue::default();
    let response = deliver(&endpoint, &queue, &secrets, &Policy::default(), batch, now).await;
    let handed_back: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(handed_back, ["m2"]);
    assert_eq!(*queue.delayed.lock().unwrap(), [("receipt-m2".to_owned(), Duration::from_secs(120))]);
    let parked = queue.parked.lock().unwrap();
    assert_eq!(parked.len(), 2);
    assert_eq!((parked[0].0.as_str(), parked[0].1.as_str()), (event("e3").as_str(), "the endpoint answered HTTP 500"));
    assert_eq!(parked[1].1, "not an event");
    let received = endpoint.received.lock().unwrap();
    assert_eq!(received.len(), 3, "the non-event is never posted");
    for (body, headers) in received.iter() {
        assert_eq!(verify(&secrets, &headers[SIGNATURE_HEADER], body.as_bytes(), now, 300), Ok(()));
        assert!(body.contains(&headers[EVENT_ID_HEADER]));
        assert_eq!(headers["content-type"], "application/json");
    }
}
