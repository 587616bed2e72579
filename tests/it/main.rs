//! One integration-test binary: a module per area, sharing `support`.

mod support;

mod actors;
mod cli;
mod docs;
mod golden;
mod protocol;
mod rel_crafted;
mod rel_diskfull;
mod rel_faults;
mod rel_integrity;
mod rel_kill9;
mod rel_net;
mod rel_paths;
mod rel_races;
mod rel_util;
mod scheduler;
mod snapshots;
