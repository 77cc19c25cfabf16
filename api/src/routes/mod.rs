//! One router per resource, merged in [`crate::server::app`].

pub mod campaigns;
pub mod health;
pub mod import;
pub mod lists;
pub mod subscribers;
pub mod suppressions;
pub mod tracking;
pub mod unsubscribe;
