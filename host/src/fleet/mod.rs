//! The fleet: runs requested through NATS JetStream and executed by any
//! number of workers, sharing journals and leases with every CLI that
//! points at the same NATS.
//!
//! - [`nats`]: the connection, the streams and bucket, and the check that
//!   refuses one configured against the fleet's guarantees.
//! - [`store`]: journals and leases in JetStream, a [`crate::journal::Store`].
//! - [`request`]: a run request, as `submit` publishes it.
//! - [`worker`]: pulls requests and runs them; acknowledges when a run has
//!   ended, so a dead worker's run continues elsewhere from its journal.
//! - [`parked`]: runs waiting for an approval, `approve`, escalation.
//! - [`health`]: a worker's `/healthz` and `/metrics`.

pub mod health;
pub mod nats;
pub mod parked;
pub mod request;
pub mod store;
pub mod worker;
