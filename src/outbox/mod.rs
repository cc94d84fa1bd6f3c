//! The outbox: what happens to a ban between `banshare ban` (or the
//! monitor) and the shared log. Nothing here knows which transport carries
//! the records; each piece makes sure none is lost on the way:
//!
//! - [`append`]: turning a ban into records and delivering or spooling
//!   them, within a deadline;
//! - [`journal`]: each `ban` run's records on local disk, kept until their
//!   delivery is confirmed;
//! - [`detach`]: the delivering child process a `ban` run can walk away
//!   from when the log hangs;
//! - [`spool`]: where records wait while the log is out of reach, and their
//!   later delivery.
//!
//! The lock that keeps writers on several hosts from tearing each other's
//! lines belongs to the file transports that need it
//! ([`crate::transport::lock`]): the outbox sits above the transports, and
//! they never reach back into it.

pub mod append;
pub mod detach;
pub mod journal;
pub mod spool;
