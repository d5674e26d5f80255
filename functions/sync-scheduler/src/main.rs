use jobs::SqsQueue;
use lambda_runtime::{LambdaEvent, run, service_fn};
use runtime::config::{Env, ProcessEnv};
use store::DynamoStore;
use sync_scheduler::{Request, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runtime::init_tracing();
    let env = Env(ProcessEnv);
    let table = env.required("STATE_TABLE")?;
    let queue_url = env.required("SYNC_QUEUE_URL")?;
    let aws = runtime::aws_config().await;
    let store = DynamoStore::new(runtime::dynamodb(&aws), table);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), queue_url);
    run(service_fn(|event: LambdaEvent<Request>| {
        let (store, queue) = (&store, &queue);
        async move { handle(store, queue, event.payload).await }
    }))
    .await
}
