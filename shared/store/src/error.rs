use thiserror::Error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("DynamoDB request failed")]
    Dynamo(#[source] BoxError),
    #[error("a stored item could not be read")]
    Corrupt(#[source] serde_dynamo::Error),
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
