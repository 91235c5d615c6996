//! How long the fleet waits on NATS: below every other module here, so
//! that the lowest ones (`exclusive`) need nothing above them.

use std::time::Duration;

/// Any one NATS request or publish.
pub const TIMEOUT: Duration = Duration::from_secs(10);
