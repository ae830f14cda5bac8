//! Virtual servers: a `VirtualServer` becomes a KubeVirt VirtualMachine with its disks,
//! cloud-init Secret, Service, NetworkPolicy and scheduled snapshots.
//!
//! The pure rooms decide: [`admission`] (may the server run at all), [`build`] (the objects),
//! [`schedule`] (backups, maintenance windows), [`restore`] (restores from a backup),
//! [`status`] (phase, conditions, restarts);
//! [`controller`] reconciles one server with them, [`watch`] runs the controller on its
//! watches and fills its caches ([`records`] for the children, [`namespace_index`]).

pub mod admission;
pub mod build;
pub mod controller;
pub mod namespace_index;
pub mod records;
pub mod restore;
pub mod schedule;
pub mod status;
pub mod watch;
