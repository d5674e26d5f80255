//! A DynamoDB stream batch as Lambda delivers it. Read here rather than through `aws_lambda_events`' `dynamodb`
//! feature, which would bring `chrono` into the build for one timestamp.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct StreamBatch {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    /// Unique per change: a record delivered twice has the same id, and so do the events derived from it.
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// `INSERT`, `MODIFY` or `REMOVE`.
    #[serde(rename = "eventName")]
    pub event_name: String,
    pub dynamodb: Change,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Change {
    /// Seconds since the epoch (DynamoDB's is to the second or finer).
    #[serde(rename = "ApproximateCreationDateTime", default)]
    pub created: Option<f64>,
    #[serde(rename = "Keys", default)]
    pub keys: Option<serde_dynamo::Item>,
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<serde_dynamo::Item>,
    #[serde(rename = "OldImage", default)]
    pub old_image: Option<serde_dynamo::Item>,
    #[serde(rename = "SequenceNumber", default)]
    pub sequence_number: Option<String>,
}
