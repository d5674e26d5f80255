//! Answers of a queue consumer (SQS with partial batch failures): which messages go back to the queue.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

/// Hands back the messages `ids` name: they come again after their visibility timeout; the others are done.
pub fn hand_back(ids: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = ids
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// Hands back every message of the batch, untouched (the consumer cannot work now: its secrets are unreadable).
pub fn hand_back_all(event: &SqsEvent) -> SqsBatchResponse {
    hand_back(event.records.iter().map(|message| message.message_id.clone().unwrap_or_default()))
}
