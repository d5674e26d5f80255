//! The event publisher: a batch of stream records from the state or the mirror table in, the product's events
//! out on the stack's bus. A batch that cannot be published fails whole and Lambda delivers it again (the events'
//! ids let consumers drop what they already had).

use events::stream::StreamBatch;
use events::{EventBridgeBus, publish};
use lambda_runtime::{LambdaEvent, run, service_fn};
use runtime::config::{Env, ProcessEnv};
use store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runtime::init_tracing();
    let env = Env(ProcessEnv);
    let table = env.required("STATE_TABLE")?;
    let bus_name = env.required("EVENT_BUS_NAME")?;
    let aws = runtime::aws_config().await;
    let store = DynamoStore::new(runtime::dynamodb(&aws), table);
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&aws), bus_name);
    run(service_fn(|event: LambdaEvent<StreamBatch>| {
        let (store, bus) = (&store, &bus);
        async move {
            let records = event.payload.records.len();
            match publish(store, bus, &event.payload).await {
                Ok(published) => {
                    tracing::info!(
                        records,
                        events = published.events,
                        dropped = published.dropped,
                        unreadable = published.unreadable,
                        repeated = published.repeated,
                        "published"
                    );
                    Ok(())
                }
                Err(error) => {
                    tracing::error!(error = %runtime::error_chain(&error), records, "a stream batch was not published");
                    Err(lambda_runtime::Error::from(error))
                }
            }
        }
    }))
    .await
}
