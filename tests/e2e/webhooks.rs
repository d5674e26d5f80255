//! Webhooks end to end: an event the product's endpoint refuses is retried with backoff (each try signed anew),
//! parked on the dead-letter queue when the endpoint has not taken it in time, and delivered once it is sent again
//! from there. `make test` shrinks the backoff to a second and the day to eight seconds.

use super::*;

#[tokio::test]
async fn a_refused_webhook_is_retried_then_parked_and_delivered_when_replayed_end_to_end() {
    let stack = Stack::from_env();
    let id = unique("con_webhook");
    let event_id = unique("webhook-event");
    let connection = serde_json::json!({
        "pk": {"S": format!("CONN#{id}")}, "sk": {"S": "CONN"}, "connection_id": {"S": id}, "tenant_id": {"S": "t"},
        "mode": {"S": "oauth"}, "status": {"S": "active"}, "sites": {"L": []}, "scopes": {"L": []},
        "account_id": {"S": "a"}, "created_at": {"S": "2026-12-01T00:00:00Z"}, "updated_at": {"S": "2026-12-01T00:00:00Z"},
    });
    let record = serde_json::json!({
        "eventID": event_id, "eventName": "INSERT", "eventSource": "aws:dynamodb",
        "dynamodb": {"Keys": {"pk": connection["pk"], "sk": connection["sk"]}, "NewImage": connection},
    });
    // The endpoint refuses this event (and only it: the other tests' events keep flowing).
    stack.webhook_refuse(&event_id, true).await.unwrap();
    let published = OffsetDateTime::now_utc().unix_timestamp();
    let url = stack.url("/2015-03-31/functions/event-publisher/invocations");
    let response = harness::client().post(url).json(&serde_json::json!({"Records": [record]})).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // Refused, tried again, each try signed anew; then parked.
    let sqs = stack.sqs();
    // (Behind whatever the other tests' syncs put on the webhook queue: up to a few minutes on a loaded machine.)
    let mut parked = None;
    for _ in 0..360 {
        let messages = sqs
            .receive_message()
            .queue_url(&stack.webhook_dead_letter_queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        parked = messages.into_iter().find(|m| m.body().unwrap_or_default().contains(&event_id));
        if parked.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let parked = parked.expect("the refused delivery was parked on the dead-letter queue");
    let tries: Vec<Value> =
        stack.webhook_deliveries().await.unwrap().into_iter().filter(|d| d["event_id"] == event_id.as_str()).collect();
    assert!(tries.iter().all(|t| t["verified"] == true && t["refused"] == true), "{tries:?}");
    // Retried before it was parked, each try signed at its own time: unless the other tests' backlog held the event
    // on the queue for most of the (8 s) day before its first try, which leaves no time for a second.
    let first: i64 = tries.iter().map(|t| t["t"].as_str().unwrap().parse::<i64>().unwrap()).min().unwrap();
    if first - published <= 3 {
        let times: std::collections::BTreeSet<&str> = tries.iter().map(|t| t["t"].as_str().unwrap()).collect();
        assert!(tries.len() >= 3 && times.len() >= 2, "retried before it was parked: {tries:?}");
    }

    // Sent again from the dead-letter queue (what `aws sqs start-message-move-task` does), it is delivered.
    stack.webhook_refuse(&event_id, false).await.unwrap();
    sqs.send_message().queue_url(&stack.webhook_queue_url).message_body(parked.body().unwrap()).send().await.unwrap();
    sqs.delete_message()
        .queue_url(&stack.webhook_dead_letter_queue_url)
        .receipt_handle(parked.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    let mut delivered = false;
    for _ in 0..360 {
        let deliveries = stack.webhook_deliveries().await.unwrap();
        delivered = deliveries.iter().any(|d| d["event_id"] == event_id.as_str() && d["refused"] == false);
        if delivered {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(delivered, "the replayed delivery was taken");
    let taken = stack.webhook_deliveries().await.unwrap();
    let taken: Vec<&Value> =
        taken.iter().filter(|d| d["event_id"] == event_id.as_str() && d["refused"] == false).collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(
        (taken[0]["verified"].as_bool(), taken[0]["detail_type"].as_str()),
        (Some(true), Some("Connection Connected"))
    );
}
