//! Routing: which site a job goes to, or whether it goes at all.
//!
//! - [`dispatcher`]: recipient domain → MX ([`mx`], hickory-resolver) → site, in a bounded LRU
//!   cache; routes each job to its site's scheduler.
//! - [`drains`]: operators' drain orders, applied as a job is routed.

pub mod dispatcher;
pub mod drains;
pub mod mx;
