//! Virtual servers: a `VirtualServer` becomes a KubeVirt VirtualMachine with its disks,
//! cloud-init Secret, Service, NetworkPolicy and scheduled snapshots.

pub mod admission;
pub mod build;
pub mod controller;
pub mod schedule;
pub mod status;
