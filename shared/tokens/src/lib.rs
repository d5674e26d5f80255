//! The token lifecycle: connect sessions, the authorize URL, the code exchange and the sealing of tokens at rest.

pub mod admin;
pub mod connect;
pub mod credentials;
pub mod crypto;
mod error;
pub mod ids;
pub mod refresh;
pub mod scopes;

pub use crypto::KeyRing;
pub use error::ConnectError;
