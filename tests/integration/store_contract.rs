//! The DynamoDB stores keep the contract every store keeps, and store what they must the way they must.

use super::*;

#[tokio::test]
async fn dynamo_stores_keep_the_contract() {
    let stack = Stack::from_env();
    let mirror = store::DynamoMirror::new(stack.dynamodb(), &stack.mirror_table);
    contract::run_all(std::sync::Arc::new(store()), &mirror).await;
}

#[tokio::test]
async fn sessions_and_states_are_stored_hashed_with_a_ttl() {
    let stack = Stack::from_env();
    let store = store();
    let session = contract::session(&unique("tenant"));
    store.put_session(&session).await.unwrap();
    let item = stack
        .dynamodb()
        .get_item()
        .table_name(&stack.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("SESSION#{}", session.id_hash)))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("SESSION".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the session item");
    let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl, session.expires_at.unix_timestamp());
    assert!(!item.contains_key("used_at"), "an unused session has no used_at attribute");
}
