//! The webhook sender: a batch of the webhook queue in, each event signed and POSTed to `WEBHOOK_URL`; what the
//! endpoint did not take comes back later (partial batch failures), what it has not taken for a day is parked.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, run, service_fn};
use runtime::config::{Env, ProcessEnv};
use runtime::{Deferred, secrets};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use webhooks::{HttpSender, Policy, Secrets, SqsParking};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runtime::init_tracing();
    let env = Env(ProcessEnv);
    let url = env.url("WEBHOOK_URL")?;
    let secret_id = env.required("WEBHOOK_SECRET_ID")?;
    let defaults = Policy::default();
    let policy = Policy {
        first: env.seconds_or("WEBHOOK_RETRY_FIRST_SECONDS", defaults.first.as_secs())?,
        give_up_after: env.seconds_or("WEBHOOK_GIVE_UP_SECONDS", defaults.give_up_after.as_secs())?,
        ..defaults
    };
    let aws = runtime::aws_config().await;
    let parking = SqsParking::new(
        aws_sdk_sqs::Client::new(&aws),
        env.required("WEBHOOK_QUEUE_URL")?,
        env.required("WEBHOOK_DEAD_LETTER_QUEUE_URL")?,
    );
    let sender = HttpSender::new(url.as_str(), policy.timeout);
    // Read at cold start; if Secrets Manager cannot answer then, at the next batch (which is handed back meanwhile).
    let secretsmanager = runtime::secretsmanager(&aws);
    let secrets = Deferred::new(move || {
        let (client, id) = (secretsmanager.clone(), secret_id.clone());
        async move { Ok(Secrets::parse(&secrets::read(&client, &id).await?)?) }
    })
    .await;
    let (sender, parking, policy, secrets) = (&sender, &parking, &policy, &secrets);
    run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        let Some(secrets) = secrets.get().await else {
            return Ok::<_, lambda_runtime::Error>(runtime::sqs::hand_back_all(&event.payload));
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
        Ok(webhooks::deliver(sender, parking, secrets, policy, event.payload, now).await)
    }))
    .await
}
