//! The fleet: runs requested through NATS JetStream and executed by any
//! number of workers, sharing journals and leases with every CLI that
//! points at the same NATS. Workers run through `runbook_engine::Engine`
//! like the CLI does; nothing here knows the command line.
//!
//! - [`nats`]: the connection, the streams and bucket, and the check that
//!   refuses one configured against the fleet's guarantees.
//! - [`exclusive`]: revision-checked writes that hold on a 2.9 cluster;
//!   [`timeouts`]: how long any NATS request may take.
//! - [`store`]: journals and leases in JetStream, a [`runbook_journal::store::Store`].
//! - [`request`]: a run request, as `submit` publishes it.
//! - [`worker`]: pulls requests and runs them; acknowledges when a run has
//!   ended, so a dead worker's run continues elsewhere from its journal.
//! - [`parked`]: runs waiting for an approval, `approve`, escalation;
//!   [`halted`]: runs a halt stopped, queued again by `resume-all`.
//! - [`page`]: paging people about parked runs (the notify capability).
//! - [`health`]: a worker's `/healthz` and `/metrics`.
//! - [`triggers`]: the triggers file (which alarm starts which runbook).
//! - [`sns`]: SNS deliveries, their signatures checked as AWS documents.
//! - [`alertmanager`]: Alertmanager's webhook payload and its credentials.
//! - [`intake`]: `runbook serve`, alarms in, run requests out; [`tls`]:
//!   its HTTPS and Alertmanager's client certificates.
//! - [`fuzzing`]: fuzz targets for the network parsers.

pub mod alertmanager;
pub mod exclusive;
pub mod fuzzing;
pub mod halted;
pub mod health;
pub mod intake;
pub mod nats;
pub mod page;
pub mod parked;
pub mod request;
pub mod sns;
pub mod store;
pub mod timeouts;
pub mod tls;
pub mod triggers;
pub mod worker;
