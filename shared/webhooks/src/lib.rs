//! Webhooks, for products that are not on AWS: every event of the stack's bus (`docs/events.md`) reaches a queue
//! through a rule, and the webhook sender POSTs each to the deployment's endpoint, as EventBridge delivered it (the
//! whole envelope: `id`, `source`, `detail-type`, `time`, `detail`), signed:
//!
//! ```text
//! Atlassian-Connector-Signature: t=1764633600,v1=5257a869…
//! Atlassian-Connector-Event-Id: 6f1d…            (the detail's event_id: drop duplicates by it)
//! ```
//!
//! `v1` is the hex HMAC-SHA256 of `"{t}.{body}"` with the webhook secret; while the secret is rotated there is one
//! `v1` per secret. A receiver checks one of them and that `t` is recent ([`verify`], five minutes by default), so a
//! captured delivery cannot be replayed later. A delivery that is not answered `2xx` in ten seconds is retried with
//! exponential backoff (30 s doubling, at most an hour between tries) for a day, then parked on the dead-letter
//! queue, from which `aws sqs start-message-move-task` sends it again.

mod deliver;
mod signature;

pub use deliver::{
    Decision, HttpSender, Parking, ParkingError, Policy, SendError, Sender, SqsParking, decide, deliver,
};
pub use signature::{EVENT_ID_HEADER, SIGNATURE_HEADER, Secrets, VerifyError, sign, verify};
