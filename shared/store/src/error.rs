use thiserror::Error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Error)]
pub enum StoreError {
    /// DynamoDB itself refused or failed the request (the SDK's error is the source).
    #[error("DynamoDB request failed")]
    Dynamo(#[source] BoxError),
    /// A put that must not overwrite found its key taken (a session or state id drawn twice).
    #[error("a {0} with this key already exists")]
    Exists(&'static str),
    /// DynamoDB kept answering part of a batch unprocessed (throttling) past the retries.
    #[error("DynamoDB kept {0} unprocessed after every retry")]
    Unprocessed(&'static str),
    /// Too many workers updated the same points pool at once, past the retries.
    #[error("the points pool stayed contended after {0} attempts")]
    Contended(u32),
    #[error("a stored item could not be read")]
    Corrupt(#[source] serde_dynamo::Error),
    /// An item is missing or malformed where the store's own layout says it must be there.
    #[error("the stored data is inconsistent: {0}")]
    Inconsistent(String),
    #[error("the listing cursor is not one this store gave out")]
    InvalidCursor,
}

impl StoreError {
    pub(crate) fn dynamo(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Dynamo(Box::new(error))
    }
}

#[derive(Debug, Error)]
pub enum CompleteError {
    /// The connect session is gone or was already used: nothing was written.
    #[error("the connect session was already used")]
    SessionUsed,
    #[error(transparent)]
    Store(#[from] StoreError),
}
